//! The ownership index: JSON files at `.promised/index/<destination>/<shard>.json`, one per
//! Destination and shard (see the crate docs for why it lives at the repository root).
//!
//! A placement's entries all go to one shard, `shard_of(owner key)`: one of 256, named by two
//! lower-case hex digits. A one-request change therefore rewrites one shard (a few KB at
//! 10,000 requests) instead of the Destination's whole index (1.35 MB at 3,300 requests per
//! Destination, re-hashed, compressed, pushed and unpacked by the server on every change:
//! docs/benchmarks.md, "Fifth round"). Earlier versions kept one file per Destination at
//! `.promised/index/<destination>.json`; such a file is still read, and the first write to the
//! store replaces it with shards ([`crate::plan::plan`]).
//!
//! Format of each file (stable, sorted by path, one entry per line, so that `git diff` of the
//! index shows one changed line per changed file):
//!
//! ```json
//! {"version":1,"destination":"worker-1","entries":[
//! {"path":"...","sha256":"<64 hex>","oid":"<40 hex git blob id>","owner":{...}},
//! {"path":"...","sha256":"<64 hex>","oid":"<40 hex git blob id>","owner":{...}}
//! ]}
//! ```
//!
//! Any JSON of this shape decodes (indexes written pretty-printed by earlier versions too).

use std::sync::Arc;

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use crate::{Error, Owner};

/// Directory (repository-root relative) holding the per-destination index files.
pub const INDEX_DIR: &str = ".promised/index";

/// One file we own.
///
/// Kept compact, since a store holds one per file it owns between applies and a plan builds
/// a second set: the digests are bytes, written as hex, and entries of one placement share one
/// [`Owner`] (with hex strings and an owner of five strings per entry, an entry held about
/// 450 bytes besides its path; docs/benchmarks.md, "Memory", eighth round).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Store-relative path.
    pub path: String,
    /// sha256 of the content (backend-independent content identity); in the file, 64
    /// lower-case hex digits.
    pub sha256: Sha256Sum,
    /// Git blob id of the content (lets drift detection compare tree entries without reading
    /// blobs); in the file, 40 lower-case hex digits.
    #[serde(with = "hex_oid")]
    pub oid: ObjectId,
    /// The placement that produced it.
    pub owner: Arc<Owner>,
}

/// A sha256 digest; displayed, serialised and parsed as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Sum(pub [u8; 32]);

impl Sha256Sum {
    /// The sha256 of `content`.
    pub fn of(content: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(content).into())
    }
}

impl std::fmt::Display for Sha256Sum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 64];
        let hex = hex::encode_to_slice(self.0, &mut buf)
            .ok()
            .and_then(|()| std::str::from_utf8(&buf).ok())
            .ok_or(std::fmt::Error)?;
        f.write_str(hex)
    }
}

impl std::fmt::Debug for Sha256Sum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Sha256Sum {
    type Err = hex::FromHexError;

    /// 64 hex digits, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Self(out))
    }
}

impl Serialize for Sha256Sum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Sum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("sha256 {s:?}: {e}")))
    }
}

/// Serde for a Git object id as 40 lower-case hex digits (gix's own serde writes bytes).
mod hex_oid {
    use gix::ObjectId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(oid: &ObjectId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(oid)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ObjectId::from_hex(s.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("git object id {s:?}: {e}")))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    destination: String,
    entries: Vec<IndexEntry>,
}

/// The shard of the placement with owner key `key`, one of 256: the low byte of the key's 32-bit FNV-1a
/// hash (a published, stable function: the layout must not change between versions or
/// platforms).
pub fn shard_of(key: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as u8
}

/// Repository path of shard `shard` of the index of `destination`:
/// `.promised/index/<destination>/<two hex digits>.json`.
pub fn index_path(destination: &str, shard: u8) -> String {
    format!("{INDEX_DIR}/{destination}/{shard:02x}.json")
}

/// The Destination whose index file `path` is: `.promised/index/<destination>/<shard>.json`,
/// or an earlier version's `.promised/index/<destination>.json`. `None` for any other path.
pub fn destination_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(INDEX_DIR)?.strip_prefix('/')?;
    let rest = rest.strip_suffix(".json")?;
    match rest.split_once('/') {
        Some((dest, shard)) if !dest.is_empty() && !shard.contains('/') => Some(dest),
        Some(_) => None,
        None => Some(rest).filter(|d| !d.is_empty()),
    }
}

/// Serialise the entries of one destination to the canonical bytes (sorted by path: `entries`
/// is sorted in place).
pub fn encode_sorted(destination: &str, entries: &mut [IndexEntry]) -> Vec<u8> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    encode(destination, entries)
}

/// Serialise the entries of one destination, already sorted by path, to the canonical bytes
/// (what [`encode_sorted`] writes).
pub fn encode(destination: &str, entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entries.len() * 320);
    out.extend_from_slice(b"{\"version\":1,\"destination\":");
    serde_json::to_writer(&mut out, destination).expect("strings always serialise");
    out.extend_from_slice(b",\"entries\":[");
    for (i, e) in entries.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        serde_json::to_writer(&mut out, e).expect("index entries always serialise");
    }
    out.extend_from_slice(b"\n]}\n");
    // The estimate above is generous; the bytes are kept until the commit is written.
    out.shrink_to_fit();
    out
}

/// Parse one index file.
pub fn decode(path: &str, bytes: &[u8]) -> Result<Vec<IndexEntry>, Error> {
    let file: IndexFile = serde_json::from_slice(bytes).map_err(|e| Error::CorruptIndex {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if file.version != 1 {
        return Err(Error::CorruptIndex {
            path: path.to_owned(),
            message: format!("unsupported index version {}", file.version),
        });
    }
    let mut entries = file.entries;
    share_owners(&mut entries);
    Ok(entries)
}

/// Makes entries with equal owners next to each other share one [`Owner`] (a placement's
/// files sit together in a path-sorted index): decoding gives each entry its own.
pub fn share_owners(entries: &mut [IndexEntry]) {
    for i in 1..entries.len() {
        let (before, rest) = entries.split_at_mut(i);
        let (prev, cur) = (&before[i - 1].owner, &mut rest[0].owner);
        if !Arc::ptr_eq(prev, cur) && prev == cur {
            *cur = Arc::clone(prev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> IndexEntry {
        IndexEntry {
            path: path.into(),
            sha256: Sha256Sum([0; 32]),
            oid: ObjectId::null(gix::hash::Kind::Sha1),
            owner: Arc::new(Owner {
                key: "k".into(),
                destination: "d".into(),
                promise: "p".into(),
                resource: None,
                pipeline: None,
            }),
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // FNV-1a 32 of "" is 0x811c9dc5 and of "a" is 0xe40c292c (the published test vectors).
        assert_eq!(shard_of(""), 0xc5);
        assert_eq!(shard_of("a"), 0x2c);
        let mut seen = [0usize; 256];
        for i in 0..10_000 {
            seen[usize::from(shard_of(&format!("resource/ns/request-{i}/configure")))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 10 && n < 80), "{seen:?}");
        assert_eq!(index_path("w-1", 0x0a), ".promised/index/w-1/0a.json");
    }

    #[test]
    fn index_paths_name_their_destination() {
        assert_eq!(destination_of(".promised/index/w-1/0a.json"), Some("w-1"));
        assert_eq!(destination_of(".promised/index/w-1.json"), Some("w-1"));
        assert_eq!(
            destination_of(".promised/index/a.json/ff.json"),
            Some("a.json")
        );
        assert_eq!(destination_of(".promised/index/w/x/0a.json"), None);
        assert_eq!(destination_of(".promised/index/w-1/0a.yaml"), None);
        assert_eq!(destination_of(".promised/indexes/w.json"), None);
        assert_eq!(destination_of("clusters/w.json"), None);
    }

    #[test]
    fn encode_is_sorted_and_roundtrips() {
        let bytes = encode_sorted("d", &mut [entry("b"), entry("a")]);
        let back = decode("x", &bytes).unwrap();
        assert_eq!(back[0].path, "a");
        assert_eq!(back[1].path, "b");
        let mut back = back;
        assert_eq!(encode_sorted("d", &mut back), bytes);
    }

    #[test]
    fn each_entry_is_one_line_and_an_empty_index_is_valid_json() {
        let bytes = encode_sorted("w\"1", &mut [entry("b"), entry("a"), entry("c")]);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], r#"{"version":1,"destination":"w\"1","entries":["#);
        assert!(lines[1].starts_with(&format!(
            r#"{{"path":"a","sha256":"{}","oid":"{}","owner":{{"#,
            "0".repeat(64),
            "0".repeat(40)
        )));
        assert!(lines[1].ends_with("},"), "{}", lines[1]);
        assert!(lines[3].starts_with(r#"{"path":"c""#) && !lines[3].ends_with(','));
        assert_eq!(lines[4], "]}");
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed["destination"], "w\"1");
        let empty = encode_sorted("d", &mut []);
        assert_eq!(decode("x", &empty).unwrap(), Vec::<IndexEntry>::new());
    }

    #[test]
    fn a_pretty_printed_index_of_an_earlier_version_still_decodes() {
        let mut entries = vec![entry("b"), entry("a")];
        let earlier = serde_json::to_vec_pretty(&serde_json::json!({
            "version": 1,
            "destination": "d",
            "entries": entries,
        }))
        .unwrap();
        let back = decode("x", &earlier).unwrap();
        assert_eq!(back, entries);
        // Rewritten, it takes the line layout (and fewer bytes).
        let now = encode_sorted("d", &mut entries);
        assert!(now.len() < earlier.len());
        assert_eq!(decode("x", &now).unwrap(), vec![entry("a"), entry("b")]);
    }

    #[test]
    fn decoded_entries_of_one_placement_share_its_owner() {
        let bytes = encode_sorted("d", &mut [entry("b"), entry("a"), entry("c")]);
        let back = decode("x", &bytes).unwrap();
        assert!(Arc::ptr_eq(&back[0].owner, &back[1].owner));
        assert!(Arc::ptr_eq(&back[1].owner, &back[2].owner));
        let mut other = entry("d");
        Arc::make_mut(&mut other.owner).key = "k2".into();
        let back = decode("x", &encode_sorted("d", &mut [entry("a"), other])).unwrap();
        assert!(!Arc::ptr_eq(&back[0].owner, &back[1].owner));
        assert_eq!(back[1].owner.key, "k2");
    }

    #[test]
    fn digests_are_hex_and_a_bad_one_names_the_file() {
        let mut e = entry("a");
        e.sha256 = Sha256Sum::of(b"x");
        e.oid = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, b"x")
            .expect("sha1 of a buffer");
        let text = String::from_utf8(encode_sorted("d", &mut [e.clone()])).unwrap();
        // sha256("x") and `git hash-object` of "x".
        assert!(
            text.contains(r#""sha256":"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881","oid":"c1b0730e0133447badcfd47fd144e254807b06e1""#),
            "{text}"
        );
        assert_eq!(decode("x", text.as_bytes()).unwrap(), vec![e]);
        let bad = text.replace("2d7116", "zz7116");
        match decode(".promised/index/d/00.json", bad.as_bytes()) {
            Err(Error::CorruptIndex { path, message }) => {
                assert_eq!(path, ".promised/index/d/00.json");
                assert!(message.contains("sha256"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
