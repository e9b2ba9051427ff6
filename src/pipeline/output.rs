//! Collecting `/kratix/output` after a Pipeline, with the safety checks a host runner needs.
//!
//! Kratix accepts any file type at any depth, ignores empty directories and includes dotfiles
//! (kratix-contract.md §2.2). promised additionally rejects what could escape or break a state
//! store: symlinks, device files, FIFOs and sockets, names that are not UTF-8, `..` or absolute
//! paths, backslashes and `.git` segments (the state stores' own path rule), and outputs larger
//! than the cap. Rules that depend on the store and the final path (S3 key characters and
//! length, `.promised/`) are checked per placement by the reconcile engine.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Error;

/// One regular file of `/kratix/output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputFile {
    /// Path relative to `/kratix/output`, `/`-separated (e.g. `backstage/component.yaml`).
    pub path: String,
    /// File contents.
    #[serde(skip)]
    pub bytes: Vec<u8>,
    /// Lower-case hex SHA-256 of `bytes`.
    pub sha256: String,
}

/// Collects every regular file under `root`, sorted by path, checking each entry.
///
/// Errors: [`Error::UnsafeOutput`] (symlink, special file, non-UTF-8 name, a path
/// [`check_relative`] refuses), [`Error::OutputTooLarge`] when the files together exceed `cap_bytes`,
/// [`Error::Io`] when the directory cannot be read.
pub fn collect(root: &Path, cap_bytes: u64) -> Result<Vec<OutputFile>, Error> {
    let mut files = Vec::new();
    let mut total: u64 = 0;
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.map_err(|e| Error::Io {
            context: format!("reading {}", root.display()),
            message: e.to_string(),
        })?;
        let rel_os = entry
            .path()
            .strip_prefix(root)
            .map_err(|e| Error::Io {
                context: "walking output".into(),
                message: e.to_string(),
            })?
            .to_path_buf();
        let Some(rel) = rel_os.to_str().map(str::to_string) else {
            return Err(Error::UnsafeOutput {
                path: rel_os.to_string_lossy().into_owned(),
                reason: "file name is not valid UTF-8".into(),
            });
        };
        let ft = entry.file_type();
        if ft.is_symlink() {
            return Err(Error::UnsafeOutput {
                path: rel,
                reason: "symbolic links are not allowed in /kratix/output".into(),
            });
        }
        if ft.is_dir() {
            continue; // checked with the files in it (an empty directory is not output)
        }
        check_relative(&rel)?;
        if !ft.is_file() {
            return Err(Error::UnsafeOutput {
                path: rel,
                reason: "only regular files are allowed (found a device, FIFO or socket)".into(),
            });
        }
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        total = total.saturating_add(len);
        if total > cap_bytes {
            return Err(Error::OutputTooLarge {
                bytes: total,
                cap: cap_bytes,
            });
        }
        let bytes = std::fs::read(entry.path()).map_err(|e| Error::Io {
            context: format!("reading output file {rel}"),
            message: e.to_string(),
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        files.push(OutputFile {
            path: rel,
            bytes,
            sha256,
        });
    }
    Ok(files)
}

/// Names of the directories directly under `root` (for selector checks).
pub fn top_level_dirs(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                && let Some(n) = e.file_name().to_str()
            {
                out.insert(n.to_string());
            }
        }
    }
    out
}

/// Rejects what no state store can store, with the state stores' own rule
/// ([`statestores::validate_relative_path`]): absolute paths, `..`/`.`/empty segments, NUL,
/// backslashes and `.git` segments in any case or disguise (`.GIT`, `.git.`, `git~1`, …), which
/// Git refuses. Checked here so such output fails its own request, not the whole commit.
pub fn check_relative(rel: &str) -> Result<(), Error> {
    statestores::validate_relative_path(rel).map_err(|e| match e {
        statestores::Error::InvalidPath { path, reason } => Error::UnsafeOutput { path, reason },
        other => Error::UnsafeOutput {
            path: rel.to_string(),
            reason: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_sorted_with_hashes_and_rejects_unsafe() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("b/c")).unwrap();
        std::fs::create_dir_all(d.path().join("empty")).unwrap();
        std::fs::write(d.path().join("b/c/x.yaml"), "x").unwrap();
        std::fs::write(d.path().join(".hidden"), "").unwrap();
        let files = collect(d.path(), 1024).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [".hidden", "b/c/x.yaml"]);
        assert_eq!(
            files[1].sha256,
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
        assert_eq!(top_level_dirs(d.path()).len(), 2);

        assert!(matches!(
            collect(d.path(), 0),
            Err(Error::OutputTooLarge { bytes: 1, cap: 0 })
        ));

        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        match collect(d.path(), 1024) {
            Err(Error::UnsafeOutput { path, reason }) => {
                assert_eq!(path, "link");
                assert!(reason.contains("symbolic"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relative_checks() {
        assert!(check_relative("a/b.yaml").is_ok());
        assert!(check_relative("/etc/x").is_err());
        assert!(check_relative("a/../b").is_err());
        assert!(check_relative("a//b").is_err());
        assert!(check_relative("sub/.git/config").is_err());
        assert!(check_relative("sub/.Git/config").is_err());
        assert!(check_relative("a\\b").is_err());
        assert!(check_relative("sub/.gitignore").is_ok());
    }
}
