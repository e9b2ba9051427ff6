//! A discrete-step simulation of sharding: 100 Promises in 10 shards, replicas joining,
//! leaving (releasing their Leases) and crashing (going silent), over an in-memory Lease store
//! with compare-and-swap updates (a stale `resourceVersion` is refused, as the API's 409).
//! Each replica follows the controller's rules ([`super::election`]): renew its membership
//! Lease, renew the shard Leases it holds (a failed renewal drops the shard), list the live
//! members, release the shards it no longer wins ([`shards::wanted`]) and then try to take
//! the free or expired ones it wins. A shard counts as owned while the owner's fence is open
//! (its last renewal younger than `RENEW_DEADLINE`, below `DURATION`).
//!
//! Checked after every single replica step: no Promise is owned by two replicas. Checked once
//! settled: every Promise is owned by exactly one live replica, the rendezvous winner, and a
//! change of membership moved only the shards of the replica that left (or to the one that
//! joined).

use std::collections::{BTreeMap, BTreeSet};

use super::shards;

const SHARDS: u32 = 10;
const DURATION: u64 = 3;
const RENEW_DEADLINE: u64 = 2;

#[derive(Clone, Default)]
struct SimLease {
    holder: Option<String>,
    renewed: u64,
    rv: u64,
}

#[derive(Default)]
struct Store {
    leases: BTreeMap<String, SimLease>,
}

impl Store {
    fn read(&self, name: &str) -> SimLease {
        self.leases.get(name).cloned().unwrap_or_default()
    }

    /// Compare-and-swap: applied only if the Lease is still at `read.rv`.
    fn cas(&mut self, name: &str, read: &SimLease, holder: Option<String>, now: u64) -> bool {
        let cur = self.leases.entry(name.to_string()).or_default();
        if cur.rv != read.rv {
            return false;
        }
        *cur = SimLease {
            holder,
            renewed: now,
            rv: cur.rv + 1,
        };
        true
    }

    fn live(&self, l: &SimLease, now: u64) -> bool {
        l.holder.is_some() && l.renewed + DURATION > now
    }
}

struct Replica {
    id: String,
    /// Shard → when this replica last renewed it (its fence).
    held: BTreeMap<u32, u64>,
}

fn member(id: &str) -> String {
    format!("member-{id}")
}

fn shard_lease(s: u32) -> String {
    format!("shard-{s}")
}

impl Replica {
    fn step(&mut self, store: &mut Store, now: u64) {
        // Membership.
        let m = store.read(&member(&self.id));
        if m.holder.as_deref() == Some(&self.id) || !store.live(&m, now) {
            store.cas(&member(&self.id), &m, Some(self.id.clone()), now);
        }
        // Renew held shards; a shard whose Lease is someone else's is dropped.
        let held: Vec<u32> = self.held.keys().copied().collect();
        for s in held {
            let l = store.read(&shard_lease(s));
            if l.holder.as_deref() == Some(&self.id)
                && store.cas(&shard_lease(s), &l, Some(self.id.clone()), now)
            {
                self.held.insert(s, now);
            } else {
                self.held.remove(&s);
            }
        }
        // Members, then release what is no longer ours before taking what is.
        let members: BTreeSet<String> = store
            .leases
            .iter()
            .filter(|(n, l)| n.starts_with("member-") && store.live(l, now))
            .filter_map(|(_, l)| l.holder.clone())
            .collect();
        let wanted = shards::wanted(&self.id, &members, SHARDS);
        let unwanted: Vec<u32> = self
            .held
            .keys()
            .filter(|s| !wanted.contains(s))
            .copied()
            .collect();
        for s in unwanted {
            self.held.remove(&s);
            let l = store.read(&shard_lease(s));
            store.cas(&shard_lease(s), &l, None, now);
        }
        for s in wanted {
            if self.held.contains_key(&s) {
                continue;
            }
            let l = store.read(&shard_lease(s));
            if !store.live(&l, now) && store.cas(&shard_lease(s), &l, Some(self.id.clone()), now) {
                self.held.insert(s, now);
            }
        }
    }

    /// Leaves: releases every Lease it holds.
    fn leave(self, store: &mut Store, now: u64) {
        for s in self.held.keys() {
            let l = store.read(&shard_lease(*s));
            if l.holder.as_deref() == Some(&self.id) {
                store.cas(&shard_lease(*s), &l, None, now);
            }
        }
        let m = store.read(&member(&self.id));
        store.cas(&member(&self.id), &m, None, now);
    }

    fn owns(&self, shard: u32, now: u64) -> bool {
        self.held
            .get(&shard)
            .is_some_and(|&renewed| renewed + RENEW_DEADLINE > now)
    }
}

struct Sim {
    store: Store,
    replicas: Vec<Replica>,
    /// Crashed replicas: silent, their fences run out.
    crashed: Vec<Replica>,
    now: u64,
    promises: Vec<String>,
}

impl Sim {
    /// Shard → owners with an open fence (live and crashed replicas).
    fn owners(&self) -> BTreeMap<u32, Vec<String>> {
        let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for r in self.replicas.iter().chain(&self.crashed) {
            for s in 0..SHARDS {
                if r.owns(s, self.now) {
                    out.entry(s).or_default().push(r.id.clone());
                }
            }
        }
        out
    }

    fn check_exclusive(&self) {
        let owners = self.owners();
        for p in &self.promises {
            let s = shards::shard_of(p, SHARDS);
            let o = owners.get(&s).cloned().unwrap_or_default();
            assert!(
                o.len() <= 1,
                "at {}: Promise {p} (shard {s}) owned by {o:?}",
                self.now
            );
        }
    }

    /// One round: every live replica steps (the order turns each round), checked after each.
    fn round(&mut self) {
        let n = self.replicas.len();
        for i in 0..n {
            let k = (i + self.now as usize) % n;
            self.replicas[k].step(&mut self.store, self.now);
            self.check_exclusive();
        }
        self.now += 1;
        self.check_exclusive();
    }

    /// Runs rounds until ownership settles; returns Promise → owner, each exactly one, the
    /// rendezvous winner among the live replicas.
    fn settle(&mut self) -> BTreeMap<String, String> {
        for _ in 0..(3 * DURATION + 3) {
            self.round();
        }
        let owners = self.owners();
        let live: BTreeSet<String> = self.replicas.iter().map(|r| r.id.clone()).collect();
        self.promises
            .iter()
            .map(|p| {
                let s = shards::shard_of(p, SHARDS);
                let o = owners.get(&s).cloned().unwrap_or_default();
                assert_eq!(o.len(), 1, "Promise {p} (shard {s}) owned by {o:?}");
                assert_eq!(Some(o[0].as_str()), shards::owner(&live, s));
                (p.clone(), o[0].clone())
            })
            .collect()
    }

    fn join(&mut self, id: &str) {
        self.replicas.push(Replica {
            id: id.into(),
            held: BTreeMap::new(),
        });
    }

    fn remove(&mut self, id: &str) -> Replica {
        let i = self.replicas.iter().position(|r| r.id == id).unwrap();
        self.replicas.remove(i)
    }
}

/// Promises whose owner changed between `a` and `b`, with both owners.
fn moved(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    a.iter()
        .filter(|(p, o)| b[*p] != **o)
        .map(|(p, o)| (p.clone(), o.clone(), b[p].clone()))
        .collect()
}

#[test]
fn shards_move_only_with_the_replica_that_leaves_or_joins_and_never_have_two_owners() {
    let mut sim = Sim {
        store: Store::default(),
        replicas: Vec::new(),
        crashed: Vec::new(),
        now: 0,
        promises: (0..100).map(|i| format!("promise-{i}")).collect(),
    };
    for id in ["a", "b", "c"] {
        sim.join(id);
    }
    let three = sim.settle();
    let per: BTreeSet<&String> = three.values().collect();
    assert_eq!(per.len(), 3, "all three replicas own Promises");

    // c leaves (SIGTERM: releases its Leases): only c's Promises move.
    let c = sim.remove("c");
    let now = sim.now;
    c.leave(&mut sim.store, now);
    let two = sim.settle();
    let m = moved(&three, &two);
    assert!(!m.is_empty());
    assert!(m.iter().all(|(_, from, _)| from == "c"), "{m:?}");

    // d joins: it takes only what it now wins, from whoever had it.
    sim.join("d");
    let with_d = sim.settle();
    let m = moved(&two, &with_d);
    assert!(!m.is_empty());
    assert!(m.iter().all(|(_, _, to)| to == "d"), "{m:?}");

    // a crashes (goes silent, Leases not released): only a's Promises move, after its
    // Leases expire, and never while its fence is open.
    let a = sim.remove("a");
    sim.crashed.push(a);
    let after_crash = sim.settle();
    let m = moved(&with_d, &after_crash);
    assert!(!m.is_empty());
    assert!(m.iter().all(|(_, from, _)| from == "a"), "{m:?}");
}
