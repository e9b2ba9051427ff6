//! The ownership index: one JSON file per destination at `.promised/index/<destination>.json`
//! (see the crate docs for why it lives at the repository root).
//!
//! Format (stable, sorted by path, one entry per file, pretty-printed so that `git diff` of
//! the index is readable):
//!
//! ```json
//! {
//!   "version": 1,
//!   "destination": "worker-1",
//!   "entries": [
//!     { "path": "...", "sha256": "<64 hex>", "oid": "<40 hex git blob id>", "owner": { ... } }
//!   ]
//! }
//! ```

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
    #[derive(Serialize)]
    struct IndexFileRef<'a> {
        version: u32,
        destination: &'a str,
        entries: &'a [IndexEntry],
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let file = IndexFileRef {
        version: 1,
        destination,
        entries,
    };
    let mut out = serde_json::to_vec_pretty(&file).expect("index entries always serialise");
    out.push(b'\n');
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
}
