//! Which shard a Promise is in, and which replica should hold which shard: pure functions, the
//! same in every replica and every version (SHA-256, not `std`'s randomly keyed hasher).
//!
//! - [`shard_of`]: a Promise's shard, from its name; a request goes with its Promise.
//! - [`wanted`]: rendezvous (highest-random-weight) hashing: shard `i` goes to the live member
//!   with the highest [`score`]`(member, i)`. A member leaving moves only the shards it had
//!   (each to its runner-up); a member joining takes only the shards it now scores highest on.
//! - [`live_members`]: the members whose membership Lease is held and unexpired.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use sha2::{Digest, Sha256};

/// Label of membership Leases, valued with the `leaseName`: the replicas of one daemon list
/// each other with `promised.dev/lease-group=<leaseName>`.
pub const MEMBER_LABEL: &str = "promised.dev/lease-group";

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The shard (`0..shards`) of the Promise named `promise`; `0` when `shards` ≤ 1.
pub fn shard_of(promise: &str, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    (hash64(&[promise.as_bytes()]) % u64::from(shards)) as u32
}

/// The rendezvous weight of `member` for `shard`.
pub fn score(member: &str, shard: u32) -> u64 {
    hash64(&[member.as_bytes(), &shard.to_be_bytes()])
}

/// The member that should hold `shard` among `members` (highest [`score`], ties by name).
pub fn owner(members: &BTreeSet<String>, shard: u32) -> Option<&str> {
    members
        .iter()
        .max_by_key(|m| (score(m, shard), m.as_str()))
        .map(String::as_str)
}

/// The shards `me` should hold when `members` are live (`me` counts as live).
pub fn wanted(me: &str, members: &BTreeSet<String>, shards: u32) -> BTreeSet<u32> {
    let mut all = members.clone();
    all.insert(me.to_string());
    (0..shards.max(1))
        .filter(|&i| owner(&all, i) == Some(me))
        .collect()
}

/// The `holderIdentity` of every membership Lease in `leases` that is held and whose
/// `renewTime + leaseDurationSeconds` is after `now`.
pub fn live_members(leases: &[Lease], now: SystemTime) -> BTreeSet<String> {
    leases
        .iter()
        .filter_map(|l| {
            let spec = l.spec.as_ref()?;
            let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
            let renewed: SystemTime = spec.renew_time.as_ref()?.0.into();
            let duration = Duration::from_secs(spec.lease_duration_seconds?.max(0) as u64);
            (renewed + duration > now).then_some(holder)
        })
        .collect()
}

/// The name of the membership Lease of `identity`: `<leaseName>-member-<identity>`, with
/// characters a Lease name cannot have replaced by `-` and cut to 253 characters.
pub fn member_lease_name(lease_name: &str, identity: &str) -> String {
    let clean: String = identity
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("{lease_name}-member-{clean}");
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

/// The Lease of shard `shard`: `<leaseName>` with one shard, else `<leaseName>-shard-<i>`.
pub fn shard_lease_name(lease_name: &str, shards: u32, shard: u32) -> String {
    if shards <= 1 {
        lease_name.to_string()
    } else {
        format!("{lease_name}-shard-{shard}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_leaving_member_moves_only_its_shards_and_a_joining_one_takes_only_its_own() {
        let three = set(&["a", "b", "c"]);
        let two = set(&["a", "b"]);
        for shard in 0..64 {
            let before = owner(&three, shard).unwrap();
            let after = owner(&two, shard).unwrap();
            if before != "c" {
                assert_eq!(
                    before, after,
                    "shard {shard} moved without its owner leaving"
                );
            }
            // Joining is the same change backwards.
            if after != before {
                assert_eq!(before, "c");
            }
        }
        let every: BTreeSet<u32> = ["a", "b", "c"]
            .iter()
            .flat_map(|m| wanted(m, &three, 64))
            .collect();
        assert_eq!(every.len(), 64, "every shard is wanted by someone");
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("redis", 1), 0);
        assert_eq!(shard_of("redis", 7), shard_of("redis", 7));
        assert!((0..100).all(|i| shard_of(&format!("p{i}"), 4) < 4));
        assert_eq!(shard_lease_name("promised", 1, 0), "promised");
        assert_eq!(shard_lease_name("promised", 3, 2), "promised-shard-2");
        assert_eq!(
            member_lease_name("promised", "Pod_1"),
            "promised-member-pod-1"
        );
    }
}
