//! Image references already found valid, kept between processes: checking one compiles the
//! distribution reference grammar (with oci-spec's own grammar, about 30 ms of CPU and 7 MB,
//! a fifth of a whole-process no-op at 10,000 requests: docs/benchmarks.md, "No-op", seventh
//! round; ASCII references now use a smaller compile of the same grammar, `image::reference`).
//! oci-spec's rules stay the judge: a reference is remembered only after it passed, and a
//! record of another build of promised is ignored.
//!
//! The record, `<stateDir>/config-cache/references.json`, is
//! `{"format": "…", "references": ["…", …]}`, written by `promised reconcile` when it checked
//! a new reference (temporary file, then rename). The state directory is trusted as
//! `state.json` is: what the record lists is taken as valid.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::ImageError;

/// Format of the record, with the crate version (a new build may bring a new grammar).
const FORMAT: &str = concat!("promised checked references 1, ", env!("CARGO_PKG_VERSION"));

/// References that passed [`super::store::ImageStore::parse`].
#[derive(Debug, Default)]
pub struct CheckedReferences {
    valid: BTreeSet<String>,
    /// A reference was added since the record was read or written.
    changed: bool,
}

#[derive(Serialize, Deserialize)]
struct Record {
    format: String,
    references: BTreeSet<String>,
}

impl CheckedReferences {
    /// Checks `image` as [`super::check_reference`] does, unless it passed before.
    pub fn check(&mut self, image: &str) -> Result<(), ImageError> {
        if self.valid.contains(image) {
            return Ok(());
        }
        super::store::ImageStore::parse(image)?;
        self.valid.insert(image.to_string());
        self.changed = true;
        Ok(())
    }

    /// Adds the references of the record at `path`; a missing, torn or other-format record
    /// adds nothing.
    pub fn read_record(&mut self, path: &Path) {
        let Ok(bytes) = std::fs::read(path) else {
            return;
        };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if r.format == FORMAT => self.valid.extend(r.references),
            Ok(_) => {
                tracing::debug!(file = %path.display(), "checked references of another format")
            }
            Err(e) => {
                tracing::debug!(file = %path.display(), error = %e, "checked references not read")
            }
        }
    }

    /// Writes the record at `path` when a reference was added since it was read or written.
    /// Errors: the file cannot be written.
    pub fn write_record(&mut self, path: &Path) -> std::io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        let record = Record {
            format: FORMAT.to_string(),
            references: self.valid.clone(),
        };
        let bytes = serde_json::to_vec(&record)?;
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        crate::state::write_replace(path, &bytes).map_err(std::io::Error::other)?;
        self.changed = false;
        Ok(())
    }
}

/// The references this process found valid ([`super::check_reference`]).
pub(super) static CHECKED: Mutex<Option<CheckedReferences>> = Mutex::new(None);

/// Runs `f` on this process's [`CheckedReferences`].
pub(super) fn with<T>(f: impl FnOnce(&mut CheckedReferences) -> T) -> T {
    let mut guard = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(CheckedReferences::default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_is_remembered_only_once_it_passed_and_the_record_carries_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache").join("references.json");
        let mut first = CheckedReferences::default();
        assert!(first.check("Not A Reference").is_err());
        first.check("ghcr.io/acme/pipeline:v1").unwrap();
        first.write_record(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("ghcr.io/acme/pipeline:v1"), "{text}");
        assert!(!text.contains("Not A Reference"), "{text}");

        // What the record lists is taken as checked: a record naming a bad reference (written
        // by hand here) shows that the grammar is not run again for it.
        std::fs::write(
            &path,
            text.replace("ghcr.io/acme/pipeline:v1", "Not A Reference"),
        )
        .unwrap();
        let mut second = CheckedReferences::default();
        second.read_record(&path);
        assert!(second.check("Not A Reference").is_ok());
        second.write_record(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text.replace("ghcr.io/acme/pipeline:v1", "Not A Reference"),
            "nothing new, not written"
        );

        // Another format, or a torn record, is ignored.
        std::fs::write(&path, text.replace("references 1", "references 0")).unwrap();
        let mut third = CheckedReferences::default();
        third.read_record(&path);
        assert!(third.valid.is_empty());
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        third.read_record(&path);
        assert!(third.valid.is_empty());
    }
}
