//! The parse cache on disk: what the last `promised reconcile` parsed, by Git blob id, so the
//! next process does not parse an unchanged file again. YAML parsing was 27% of a whole-process
//! no-op at 10,000 requests (docs/benchmarks.md, "No-op", seventh round).
//!
//! The record is one JSON file, `{"format": "…", "blobs": {"<blob id>": [document, …]}}`.
//! It is a cache and nothing more: a record that is missing, torn, of another format or of
//! another build of promised is ignored (every file is parsed), and it is replaced whole
//! (temporary file, then rename; no fsync: a record torn by a crash does not parse). A blob
//! id names the file's exact content, so a cached entry cannot go stale. Left out of the
//! record: files that did not parse (their error is found again) and documents holding a
//! floating-point number (`serde_json` reads a float back to within one unit in the last
//! place, not always exactly).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Doc, ParseCache};

/// Format of the record: bumped when parsing rules change (what a YAML file parses into or
/// whether it is refused), together with the crate version.
const FORMAT: &str = concat!("promised parse cache 1, ", env!("CARGO_PKG_VERSION"));

#[derive(Serialize, Deserialize)]
struct Record<D> {
    format: String,
    blobs: HashMap<String, Vec<D>>,
}

impl ParseCache {
    /// A cache holding the record at `path`; empty when there is none or it cannot be used
    /// (logged at debug level: the files are parsed instead).
    pub fn read_record(path: &Path) -> ParseCache {
        let Ok(bytes) = std::fs::read(path) else {
            return ParseCache::default();
        };
        let record: Record<Value> = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(file = %path.display(), error = %e, "parse cache record not read");
                return ParseCache::default();
            }
        };
        if record.format != FORMAT {
            tracing::debug!(file = %path.display(), format = %record.format, "parse cache record of another format");
            return ParseCache::default();
        }
        let parsed = record
            .blobs
            .into_iter()
            .filter_map(|(oid, docs)| {
                let oid = gix::ObjectId::from_hex(oid.as_bytes()).ok()?;
                // Values, not `Doc::new`: a process that reads the record is short-lived,
                // and every admission would read the text again (5 ms of a no-op).
                let docs = docs.into_iter().map(|d| Doc::Value(Arc::new(d))).collect();
                Some((oid, Arc::new(Ok(docs))))
            })
            .collect();
        ParseCache {
            parsed,
            changed: false,
        }
    }

    /// Writes the cache to `path` when it changed since [`ParseCache::read_record`] (a file
    /// was parsed, or a blob left). Errors: the file cannot be written (the caller logs it;
    /// the next process parses again).
    pub fn write_record(&mut self, path: &Path) -> std::io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        let blobs = self
            .parsed
            .iter()
            .filter(|(_, parsed)| recordable(parsed))
            .filter_map(|(oid, parsed)| {
                let docs = parsed.as_ref().as_ref().ok()?;
                Some((oid.to_string(), docs.iter().collect()))
            })
            .collect();
        let record = Record::<&Doc> {
            format: FORMAT.to_string(),
            blobs,
        };
        let bytes = serde_json::to_vec(&record)?;
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        crate::state::write_replace(path, &bytes).map_err(std::io::Error::other)?;
        self.changed = false;
        Ok(())
    }
}

/// Whether a parse result goes into the record: the file parsed, and holds no float.
pub(super) fn recordable(parsed: &super::Parsed) -> bool {
    parsed.as_ref().is_ok_and(|docs| {
        !docs.iter().any(|d| match d {
            Doc::Value(v) => holds_float(v),
            Doc::Lazy(_) => false, // text only when it reads back exactly
        })
    })
}

/// Whether `v` holds a floating-point number anywhere.
fn holds_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(holds_float),
        Value::Object(m) => m.values().any(holds_float),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawFile;
    use crate::config::tests::file;

    #[test]
    fn the_same_content_in_two_files_is_parsed_once_and_given_to_both() {
        let a = file("a.yaml", "kind: A\n");
        let b = RawFile {
            path: "b.yaml".into(),
            ..a.clone()
        };
        let mut cache = ParseCache::default();
        let (docs, _) = cache.parse(&[a.clone(), b.clone()]);
        let files: Vec<&str> = docs.iter().map(|d| d.origin.file.as_str()).collect();
        assert_eq!(files, ["a.yaml", "b.yaml"]);
        let unread = |f: &RawFile| RawFile {
            bytes: Vec::new(),
            ..f.clone()
        };
        let (again, _) = cache.parse(&[unread(&a), unread(&b)]);
        assert_eq!(again, docs, "both copies come back from one cached blob");
    }

    #[test]
    fn a_new_process_reads_unchanged_files_from_the_record_without_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("parsed.json");
        let good = file("a.yaml", "kind: A\nspec:\n  n: 1\n---\nkind: B\n");
        let floats = file("f.yaml", "kind: F\nspec:\n  ratio: 0.1\n");
        let bad = file("bad.yaml", "kind: [\n");
        let mut first = ParseCache::default();
        let (docs, diags) = first.parse(&[good.clone(), floats.clone(), bad.clone()]);
        assert_eq!((docs.len(), diags.len()), (3, 1));
        first.write_record(&record).unwrap();

        let mut second = ParseCache::read_record(&record);
        assert!(second.has(&good.oid), "a parsed file is in the record");
        assert!(!second.has(&floats.oid), "a file with a float is left out");
        assert!(
            !second.has(&bad.oid),
            "a file that did not parse is left out"
        );
        // The reader leaves the bytes of cached blobs empty (`RawFile::bytes`).
        let unread = RawFile {
            bytes: Vec::new(),
            ..good.clone()
        };
        let (again, diags_again) = second.parse(&[unread, floats, bad]);
        assert_eq!(again, docs, "the same documents as parsing the files");
        assert_eq!(diags_again, diags, "the unparsable file is found again");
    }

    #[test]
    fn a_record_is_written_only_when_the_cache_changed_and_another_format_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("parsed.json");
        let a = file("a.yaml", "kind: A\n");
        let mut cache = ParseCache::default();
        cache.parse(std::slice::from_ref(&a));
        cache.write_record(&record).unwrap();

        let mut read = ParseCache::read_record(&record);
        std::fs::remove_file(&record).unwrap();
        let unread = RawFile {
            bytes: Vec::new(),
            ..a.clone()
        };
        read.parse(std::slice::from_ref(&unread));
        read.write_record(&record).unwrap();
        assert!(!record.exists(), "nothing changed, nothing written");
        read.parse(&[]);
        read.write_record(&record).unwrap();
        assert!(record.exists(), "a blob that left is a change");

        let mut fresh = ParseCache::default();
        fresh.parse(std::slice::from_ref(&a));
        fresh.write_record(&record).unwrap();
        assert!(ParseCache::read_record(&record).has(&a.oid));
        let text = std::fs::read_to_string(&record).unwrap();
        std::fs::write(&record, text.replace("parse cache 1", "parse cache 0")).unwrap();
        assert!(
            !ParseCache::read_record(&record).has(&a.oid),
            "another format is ignored"
        );
        std::fs::write(&record, &text[..text.len() / 2]).unwrap();
        assert!(
            !ParseCache::read_record(&record).has(&a.oid),
            "a torn record is ignored"
        );
    }
}
