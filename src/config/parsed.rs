//! The parse cache's entries ([`Cached`]) and its record on disk: what the last `promised
//! reconcile` parsed, by Git blob id, so the next process does not parse an unchanged file
//! again. YAML parsing was 27% of a whole-process no-op at 10,000 requests
//! (docs/benchmarks.md, "No-op", seventh round).
//!
//! In memory, each document is kept as its compact JSON text and read back on each use: the
//! daemon's cache of 10,000 requests held 23 MB as `serde_json::Value`s, most of a request's
//! few hundred bytes of text being map nodes (docs/benchmarks.md, "Memory", fourth round).
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
use serde_json::value::RawValue;

use super::{ParseCache, Parsed};
use crate::diag::Code;
use crate::state::CompactValue;

/// Format of the record: bumped when parsing rules change (what a YAML file parses into or
/// whether it is refused), together with the crate version.
const FORMAT: &str = concat!("promised parse cache 1, ", env!("CARGO_PKG_VERSION"));

#[derive(Serialize, Deserialize)]
struct Record<D> {
    format: String,
    blobs: HashMap<String, Vec<D>>,
}

/// One file in the parse cache: its documents (each kept as compact JSON text unless that
/// would not read back exactly, [`CompactValue`]), or the one problem that made it unreadable
/// (kept, so the same diagnostic comes back without parsing again).
#[derive(Debug)]
pub(super) struct Cached(Result<Vec<CompactValue>, (Code, String)>);

impl Cached {
    /// What `parsed` (a file's parse result) is kept as.
    pub(super) fn new(parsed: Parsed) -> Cached {
        Cached(parsed.map(|docs| docs.into_iter().map(CompactValue::new).collect()))
    }

    /// Whether the entry goes into the record: the file parsed, and every document is text.
    pub(super) fn recordable(&self) -> bool {
        self.0
            .as_ref()
            .is_ok_and(|docs| docs.iter().all(CompactValue::is_text))
    }

    /// The file's documents, read back from their text; or the file's problem. Errors: a text
    /// that does not read back (only a record edited by hand could hold one) is reported as
    /// the file's problem, naming the cache.
    pub(super) fn documents(&self) -> Result<Vec<Arc<Value>>, (Code, String)> {
        let docs = self.0.as_ref().map_err(Clone::clone)?;
        docs.iter()
            .map(|d| {
                d.try_value().map_err(|e| {
                    (
                        Code::Read,
                        format!("the parse cache's copy of this file does not read back ({e}); remove config-cache/parsed.json from the state directory"),
                    )
                })
            })
            .collect()
    }
}

impl ParseCache {
    /// A cache holding the record at `path`; empty when there is none or it cannot be used
    /// (logged at debug level: the files are parsed instead).
    pub fn read_record(path: &Path) -> ParseCache {
        let Ok(bytes) = std::fs::read(path) else {
            return ParseCache::default();
        };
        let record: Record<Box<RawValue>> = match serde_json::from_slice(&bytes) {
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
                Some((
                    oid,
                    Cached(Ok(docs.into_iter().map(CompactValue::from_text).collect())),
                ))
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
            .filter(|(_, c)| c.recordable())
            .filter_map(|(oid, c)| {
                let docs = c.0.as_ref().ok()?;
                Some((
                    oid.to_string(),
                    docs.iter().filter_map(CompactValue::text).collect(),
                ))
            })
            .collect();
        let record = Record::<&RawValue> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawFile;
    use crate::config::tests::file;

    /// `f` with its bytes left out, as the loader passes a cached blob.
    fn unread(f: &RawFile) -> RawFile {
        RawFile {
            bytes: Vec::new(),
            ..f.clone()
        }
    }

    #[test]
    fn documents_kept_as_text_read_back_exactly_and_floats_stay_values() {
        let files = [
            file(
                "a.yaml",
                "kind: A\nspec:\n  n: -3\n  big: 18446744073709551615\n  s: \"x\\ty\"\n  list: [a, {b: null}]\n",
            ),
            file(
                "f.yaml",
                "kind: F\nspec:\n  ratio: 0.30000000000000004\n  e: 1e300\n",
            ),
        ];
        let mut cache = ParseCache::default();
        let (first, diags) = cache.parse(&files);
        assert!(diags.is_empty(), "{diags:?}");
        let text: Vec<bool> = files
            .iter()
            .map(|f| cache.parsed[&f.oid].recordable())
            .collect();
        assert_eq!(
            text,
            [true, false],
            "text, and the float document kept as a value"
        );
        let (again, diags) = cache.parse(&files.each_ref().map(unread));
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(again, first, "read back from the cache as parsed");
    }

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
