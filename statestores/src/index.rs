//! The ownership index: one JSON file per destination at `.promised/index/<destination>.json`
//! (see the crate docs for why it lives at the repository root).
//!
//! Format (stable, sorted by path, one entry per line, so that `git diff` of the index shows
//! one changed line per changed file):
//!
//! ```json
//! {"version":1,"destination":"worker-1","entries":[
//! {"path":"...","sha256":"<64 hex>","oid":"<40 hex git blob id>","owner":{...}},
//! {"path":"...","sha256":"<64 hex>","oid":"<40 hex git blob id>","owner":{...}}
//! ]}
//! ```
//!
//! Any JSON of this shape decodes (indexes written pretty-printed by earlier versions too); the
//! line layout is what keeps a one-request change small: the index of a destination with
//! 3,000 files is about 1 MB in it and 1.7 MB pretty-printed, and every write re-hashes,
//! compresses and pushes it (docs/benchmarks.md, "One change, third round").

use serde::{Deserialize, Serialize};

use crate::{Error, Owner};

/// Directory (repository-root relative) holding the per-destination index files.
pub const INDEX_DIR: &str = ".promised/index";

/// One file we own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Store-relative path.
    pub path: String,
    /// Lower-case hex sha256 of the content (backend-independent content identity).
    pub sha256: String,
    /// Lower-case hex git blob id of the content (lets drift detection compare tree entries
    /// without reading blobs).
    pub oid: String,
    /// The placement that produced it.
    pub owner: Owner,
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    destination: String,
    entries: Vec<IndexEntry>,
}

/// Repository path of the index file of `destination`.
pub fn index_path(destination: &str) -> String {
    format!("{INDEX_DIR}/{destination}.json")
}

/// Serialise the entries of one destination to the canonical bytes (sorted by path: `entries`
/// is sorted in place).
pub fn encode_sorted(destination: &str, entries: &mut [IndexEntry]) -> Vec<u8> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::with_capacity(64 + entries.len() * 320);
    out.extend_from_slice(b"{\"version\":1,\"destination\":");
    serde_json::to_writer(&mut out, destination).expect("strings always serialise");
    out.extend_from_slice(b",\"entries\":[");
    for (i, e) in entries.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        serde_json::to_writer(&mut out, e).expect("index entries always serialise");
    }
    out.extend_from_slice(b"\n]}\n");
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
    Ok(file.entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> IndexEntry {
        IndexEntry {
            path: path.into(),
            sha256: "00".into(),
            oid: "11".into(),
            owner: Owner {
                key: "k".into(),
                destination: "d".into(),
                promise: "p".into(),
                resource: None,
                pipeline: None,
            },
        }
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
        assert!(lines[1].starts_with(r#"{"path":"a","sha256":"00","oid":"11","owner":{"#));
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
}
