//! The checks of the crash loop after a restart converged ([`World::check`]; the list is in
//! the module docs of `tests/crash_loop.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::git;
use super::{S3_INDEX, Snapshot, World, promised_bin, requests};

/// `cmd` run to its end: (exit code, stdout, stderr); -1 for a signal.
fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `git ls-tree -r <rev>` of `bare`: path to blob id.
fn tree_files(bare: &Path, rev: &str) -> BTreeMap<String, String> {
    git(bare, &["ls-tree", "-r", "--full-tree", rev])
        .lines()
        .map(|l| {
            let (meta, path) = l.split_once('\t').unwrap();
            (path.to_owned(), meta.rsplit(' ').next().unwrap().to_owned())
        })
        .collect()
}

/// The `(path, id)` pairs of ownership entries; `id` is the field `field` of each entry.
fn entry_pairs(entries: &serde_json::Value, field: &str) -> BTreeSet<(String, String)> {
    entries
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["path"].as_str().unwrap_or_default().to_owned(),
                        e[field].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `git fsck --strict --no-dangling` in `repo`: `None` when clean, else its output.
fn fsck(repo: &Path) -> Option<String> {
    let out = Command::new("git")
        .args(["fsck", "--strict", "--no-dangling", "--no-progress"])
        .current_dir(repo)
        .output()
        .unwrap();
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

impl World {
    /// Every check of the module docs against `clean` (variant `b`, `n` base requests): one
    /// line per difference found.
    pub(super) fn check(&self, clean: &Snapshot, n: usize, b: bool) -> Vec<String> {
        let mut diffs = Vec::new();
        // 1. The same stores as a clean run.
        let snap = self.snapshot();
        if snap.git_tree != clean.git_tree {
            diffs.push(format!(
                "Git tree {} is not the clean run's {}",
                snap.git_tree, clean.git_tree
            ));
        }
        if snap.s3_objects != clean.s3_objects {
            let (ours, theirs): (BTreeSet<_>, BTreeSet<_>) = (
                snap.s3_objects.iter().collect(),
                clean.s3_objects.iter().collect(),
            );
            diffs.push(format!(
                "bucket differs from the clean run's: extra {:?}, missing {:?}",
                ours.difference(&theirs).take(5).collect::<Vec<_>>(),
                theirs.difference(&ours).take(5).collect::<Vec<_>>()
            ));
        }
        if snap.s3_entries != clean.s3_entries {
            diffs.push("bucket ownership entries differ from the clean run's".into());
        }
        // 2. The ownership index matches the tree and the bucket.
        let files = tree_files(&self.stores.bare, "main");
        let mut owned = BTreeSet::new();
        for path in files.keys().filter(|p| p.starts_with(".promised/index/")) {
            let text = git(&self.stores.bare, &["show", &format!("main:{path}")]);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            owned.extend(entry_pairs(&v["entries"], "oid"));
        }
        let stored: BTreeSet<(String, String)> = files
            .iter()
            .filter(|(p, _)| !p.starts_with(".promised/"))
            .map(|(p, o)| (p.clone(), o.clone()))
            .collect();
        if owned != stored {
            diffs.push(format!(
                "Git ownership index and tree differ: orphaned {:?}, missing {:?}",
                stored.difference(&owned).take(5).collect::<Vec<_>>(),
                owned.difference(&stored).take(5).collect::<Vec<_>>()
            ));
        }
        let bucket = self.bucket();
        let index: serde_json::Value = bucket
            .get(S3_INDEX)
            .map(|b| serde_json::from_slice(b).unwrap())
            .unwrap_or_default();
        let owned = entry_pairs(&index["entries"], "sha256");
        let stored: BTreeSet<(String, String)> = snap
            .s3_objects
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        if owned != stored {
            diffs.push(format!(
                "bucket ownership index and objects differ: orphaned {:?}, missing {:?}",
                stored.difference(&owned).take(5).collect::<Vec<_>>(),
                owned.difference(&stored).take(5).collect::<Vec<_>>()
            ));
        }
        if index["pending"].as_array().is_some_and(|p| !p.is_empty()) {
            diffs.push(format!(
                "bucket index has pending keys: {}",
                index["pending"]
            ));
        }
        // 3. git fsck: the remote and promised's persistent clone.
        if let Some(e) = fsck(&self.stores.bare) {
            diffs.push(format!("git fsck of the remote: {e}"));
        }
        let clones: Vec<PathBuf> = walkdir::WalkDir::new(self.state.join("stores"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_dir() && e.path().join("objects").is_dir())
            .map(|e| e.into_path())
            .collect();
        if clones.is_empty() {
            diffs.push("no persistent clone of the Git store in the state directory".into());
        }
        for c in &clones {
            if let Some(e) = fsck(c) {
                diffs.push(format!("git fsck of {}: {e}", c.display()));
            }
        }
        // 4. `promised status` agrees with the stores.
        diffs.extend(self.check_status(&files, &bucket, &index, n, b));
        // 5. Nothing left blocks the next run: it exits 0, runs and writes nothing.
        for e in walkdir::WalkDir::new(&self.state)
            .into_iter()
            .filter_map(Result::ok)
        {
            let name = e.file_name().to_string_lossy();
            // Temporary files of killed processes: removed when the restart opened the state
            // directory (`src/tmpfiles.rs`); Git's own `.tmp*` under the clone are not ours.
            let tmp = (name.starts_with(".promised-tmp-") || name.starts_with(".tmp"))
                && !e.path().starts_with(self.state.join("stores"));
            if name.ends_with(".lock") || name.ends_with(".keep") || tmp {
                diffs.push(format!(
                    "left in the state directory: {}",
                    e.path().display()
                ));
            }
        }
        let left: Vec<String> = std::fs::read_dir(&self.run_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !left.is_empty() {
            diffs.push(format!("run directories left: {left:?}"));
        }
        let head = self.git_head();
        let index_bytes = bucket.get(S3_INDEX).cloned();
        let (out, _) = self.reconcile();
        if !out.status.success() {
            diffs.push(format!(
                "the next run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        } else {
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if report["pipelines_run"] != 0 {
                diffs.push(format!(
                    "the next run ran {} pipelines",
                    report["pipelines_run"]
                ));
            }
        }
        if self.git_head() != head {
            diffs.push("the next run committed to the Git store".into());
        }
        if self.bucket().get(S3_INDEX) != index_bytes.as_ref() {
            diffs.push("the next run wrote the bucket's index".into());
        }
        diffs
    }

    /// `promised status` (from the state directory) against the Git tree `files`, the
    /// `bucket` and its `index`.
    fn check_status(
        &self,
        files: &BTreeMap<String, String>,
        bucket: &BTreeMap<String, Vec<u8>>,
        index: &serde_json::Value,
        n: usize,
        b: bool,
    ) -> Vec<String> {
        let mut diffs = Vec::new();
        let state = self.state.to_str().unwrap();
        let status = |args: &[&str]| -> serde_json::Value {
            let mut cmd = Command::new(promised_bin());
            cmd.arg("status")
                .args(args)
                .args(["--state-dir", state, "--output", "json"])
                .args(["--listen", "127.0.0.1:1"]);
            let (code, out, err) = output(&mut cmd);
            assert_eq!(code, 0, "promised status {args:?}: {err}");
            serde_json::from_str(&out).unwrap()
        };
        let rows = status(&[]);
        let want = requests(n, b);
        let mut seen = BTreeSet::new();
        let mut commit_files: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for row in rows.as_array().unwrap() {
            let Some(name) = row["key"]
                .as_str()
                .and_then(|k| k.strip_prefix("namespace/default/"))
            else {
                continue;
            };
            seen.insert(name.to_owned());
            let s = &row["status"];
            let reconciled = s["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Reconciled" && c["status"] == "True");
            if !reconciled {
                diffs.push(format!("status: {name} is not Reconciled: {s}"));
                continue;
            }
            let dests = s["destinations"].as_array().cloned().unwrap_or_default();
            if dests.is_empty() {
                diffs.push(format!("status: {name} has no destination"));
            }
            for d in dests {
                let path = format!("{}/", d["path"].as_str().unwrap_or_default());
                let there = match d["destination"].as_str() {
                    Some("dev") => files.keys().any(|f| f.starts_with(&path)),
                    // The bucket's paths include the store's `path`.
                    Some("prod") => bucket.keys().any(|k| k.starts_with(&path)),
                    other => {
                        diffs.push(format!("status: {name} placed on {other:?}"));
                        continue;
                    }
                };
                if !there {
                    diffs.push(format!(
                        "status: {name}'s files at {path} are not in the store"
                    ));
                }
                if d["destination"] == "dev" {
                    match s["commits"]["GitStateStore/git"].as_str() {
                        None => diffs.push(format!("status: {name} names no Git commit")),
                        Some(c) => {
                            let at = commit_files
                                .entry(c.to_owned())
                                .or_insert_with(|| tree_files(&self.stores.bare, c));
                            if !at.keys().any(|f| f.starts_with(&path)) {
                                diffs.push(format!(
                                    "status: {name}'s commit {c} does not hold its files"
                                ));
                            }
                        }
                    }
                }
            }
        }
        let want: BTreeSet<String> = want.into_keys().collect();
        if seen != want {
            diffs.push(format!(
                "status lists other requests: extra {:?}, missing {:?}",
                seen.difference(&want).take(5).collect::<Vec<_>>(),
                want.difference(&seen).take(5).collect::<Vec<_>>()
            ));
        }
        let git_store = status(&["GitStateStore/git"]);
        if git_store["status"] != "Ready"
            || git_store["lastSuccessfulWrite"]["version"].as_str()
                != Some(self.git_head().as_str())
        {
            diffs.push(format!(
                "status of the Git store does not name its head {}: {git_store}",
                self.git_head()
            ));
        }
        let s3_store = status(&["BucketStateStore/s3"]);
        let generation = index["generation"].to_string();
        if s3_store["status"] != "Ready"
            || s3_store["lastSuccessfulWrite"]["version"].as_str() != Some(generation.as_str())
        {
            diffs.push(format!(
                "status of the bucket does not name its generation {generation}: {s3_store}"
            ));
        }
        diffs
    }
}
