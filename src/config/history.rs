//! Older Promise versions from a Git config repo's history: what rebuilds a revision a fresh
//! host does not have (README "Promise versions and ResourceBindings").
//!
//! A revision (`<stateDir>/revisions/`) holds a Promise version's document and folder. When
//! the state directory is new, only the current versions exist; a request pinned to an older
//! version would be stuck. [`History::find`] walks the commits that touched the Promise's file
//! (newest first, following first parents, at most [`MAX_COMMITS`]) for the newest one whose
//! document has that `metadata.name` and `kratix.io/promise-version` label, and exports the
//! Promise's folder at that commit. It uses Git itself (`git log`, `git show`, `git archive`)
//! on the local repository or promised's bare cache of a remote: no fetch.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Commits looked at per search.
pub const MAX_COMMITS: usize = 500;

/// A Git config repository's history at a head commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The repository's Git directory.
    pub git_dir: PathBuf,
    /// The commit searches start from (the config commit of the pass).
    pub head: String,
}

/// A Promise version found in history.
#[derive(Debug, Clone)]
pub struct Found {
    /// The commit it was found at.
    pub commit: String,
    /// The Promise document there.
    pub document: Value,
}

impl History {
    /// The newest commit, from `head` back, whose `file` holds Promise `promise` at `version`.
    /// `None` when there is none (or Git fails: history is a fallback, not a requirement).
    pub fn find(&self, file: &str, promise: &str, version: &str) -> Option<Found> {
        let limit = MAX_COMMITS.to_string();
        let log = self.git(&[
            "log",
            "--first-parent",
            "--format=%H",
            "-n",
            &limit,
            &self.head,
            "--",
            file,
        ])?;
        for commit in String::from_utf8_lossy(&log).lines() {
            let Some(text) = self.git(&["show", &format!("{commit}:{file}")]) else {
                continue;
            };
            let Ok(text) = String::from_utf8(text) else {
                continue;
            };
            let Some(doc) = promise_document(&text, promise) else {
                continue;
            };
            let labelled = doc
                .pointer("/metadata/labels")
                .and_then(|l| l.get(crate::model::PROMISE_VERSION_LABEL))
                .and_then(Value::as_str);
            if labelled == Some(version) {
                return Some(Found {
                    commit: commit.to_string(),
                    document: doc,
                });
            }
        }
        None
    }

    /// Writes the folder `dir` (repository-relative; `""` for the root) of `commit` under
    /// `dest` (which must not exist). Errors as text.
    pub fn export(&self, commit: &str, dir: &str, dest: &Path) -> Result<(), String> {
        let treeish = if dir.is_empty() {
            commit.to_string()
        } else {
            format!("{commit}:{dir}")
        };
        let tar = self
            .git(&["archive", "--format=tar", &treeish])
            .ok_or_else(|| format!("git archive {treeish} failed"))?;
        std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        let mut archive = tar::Archive::new(std::io::Cursor::new(tar));
        archive.set_preserve_permissions(true);
        archive
            .unpack(dest)
            .map_err(|e| format!("unpacking {treeish}: {e}"))
    }

    fn git(&self, args: &[&str]) -> Option<Vec<u8>> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.git_dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    }
}

/// The `Promise` document named `name` among the YAML documents of `text`.
fn promise_document(text: &str, name: &str) -> Option<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).ok()?;
    docs.into_iter().find(|d| {
        d.get("kind").and_then(Value::as_str) == Some("Promise")
            && d.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
    })
}
