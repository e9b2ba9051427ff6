//! Dry run: the state stores of `promised plan`.
//!
//! An engine made with [`super::Engine::for_plan`] goes through every stage of a pass exactly as
//! `promised reconcile` does; only its state stores are wrapped in a [`DryRunStore`]. The
//! wrapper reads the real store (ownership index and files, at the branch head, once) into an
//! in-memory copy, and [`StateStore::apply`] changes that copy instead of the store: nothing is
//! committed, pushed or uploaded. Every file the apply would add, change, remove or restore is
//! recorded as a [`PlannedFile`] with its content before and after. A later pass of the same
//! engine (`promised plan --base REF` makes two) sees the copy as the previous pass left it.
//!
//! The rules are those of the real apply (`statestores` crate, `plan.rs`): a placement write
//! is the owner's complete file set (its indexed files not listed are removed), a removal
//! deletes every file the index gives that owner, identical content is left alone, an
//! indexed file someone edited or deleted is restored (drift), and files we never indexed are
//! touched only when a placement claims their exact path.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;
use statestores::{
    ApplyOutcome, ChangeSet, Drift, DriftKind, Error, IndexEntry, Owner, Sha256Sum, StateStore,
    StoredFile,
};

use crate::state::{StateDir, sha256_hex};

/// What a planned apply does to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileChangeKind {
    /// The file does not exist yet.
    Added,
    /// The file exists with other content.
    Changed,
    /// The file is deleted (pruned, or its owner removed).
    Removed,
    /// Someone edited or deleted a file we own; the apply puts our content back (drift).
    Restored,
}

/// One file a planned apply would write or delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFile {
    /// `<kind>/<name>` of the state store.
    pub store: String,
    /// The Destination it belongs to (the index's owner; `""` when unknown).
    pub destination: String,
    /// Store-relative path (including the store's `spec.path`).
    pub path: String,
    /// What happens to it.
    pub change: FileChangeKind,
    /// The placement that owns it (state store index owner).
    pub owner: Owner,
    /// Content at the branch head (`None`: absent).
    #[serde(skip)]
    pub before: Option<Vec<u8>>,
    /// Content after the apply (`None`: deleted; also for a restore whose indexed content is
    /// not in the blob cache).
    #[serde(skip)]
    pub after: Option<Vec<u8>>,
    /// sha256 (hex) of the content after the apply, when it is written.
    pub sha256: Option<String>,
}

/// Collects the [`PlannedFile`]s of every [`DryRunStore`] of one engine.
#[derive(Debug, Default)]
pub struct Recorder {
    files: Mutex<Vec<PlannedFile>>,
}

impl Recorder {
    /// Everything recorded since the last [`Recorder::take`], in apply order.
    pub fn take(&self) -> Vec<PlannedFile> {
        std::mem::take(&mut *self.files.lock().expect("recorder lock"))
    }

    fn push(&self, f: PlannedFile) {
        self.files.lock().expect("recorder lock").push(f);
    }
}

/// The store as the dry run sees it: files at the head plus its ownership index.
#[derive(Debug, Default)]
struct Copy {
    files: BTreeMap<String, Vec<u8>>,
    index: BTreeMap<String, IndexEntry>,
    version: u32,
}

/// A [`StateStore`] that reads through to `inner` and applies to an in-memory copy.
pub struct DryRunStore {
    key: String,
    inner: Arc<dyn StateStore>,
    recorder: Arc<Recorder>,
    /// The engine's blob cache: the content of a drifted file to restore, by sha256.
    blobs: StateDir,
    copy: tokio::sync::Mutex<Option<Copy>>,
}

impl DryRunStore {
    /// Wraps `inner` (state store `key`, `<kind>/<name>`); applies are recorded in `recorder`,
    /// restored content is looked up in `blobs`.
    pub fn new(
        key: String,
        inner: Arc<dyn StateStore>,
        recorder: Arc<Recorder>,
        blobs: StateDir,
    ) -> Self {
        DryRunStore {
            key,
            inner,
            recorder,
            blobs,
            copy: tokio::sync::Mutex::new(None),
        }
    }

    /// The copy, read from the store on first use.
    async fn copy(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Copy>>, Error> {
        let mut guard = self.copy.lock().await;
        if guard.is_none() {
            let index = self.inner.owned("").await?;
            let files = self.inner.read_files("", &[]).await?;
            *guard = Some(Copy {
                files: files.into_iter().map(|f| (f.path, f.content)).collect(),
                index: index.into_iter().map(|e| (e.path.clone(), e)).collect(),
                version: 0,
            });
        }
        Ok(guard)
    }

    fn record(
        &self,
        owner: &Owner,
        path: &str,
        change: FileChangeKind,
        before: Option<Vec<u8>>,
        after: Option<Vec<u8>>,
    ) {
        self.recorder.push(PlannedFile {
            store: self.key.clone(),
            destination: owner.destination.clone(),
            path: path.to_string(),
            change,
            owner: owner.clone(),
            sha256: after.as_deref().map(sha256_hex),
            before,
            after,
        });
    }
}

/// The index entry of `content` at `path` for `owner`.
fn entry(path: &str, content: &[u8], owner: &Arc<Owner>) -> IndexEntry {
    IndexEntry {
        path: path.to_string(),
        sha256: Sha256Sum::of(content),
        oid: gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, content)
            .expect("sha1 hashing of an in-memory buffer cannot fail"),
        owner: Arc::clone(owner),
    }
}

#[async_trait]
impl StateStore for DryRunStore {
    /// Nothing is written, so there is no write permission to check.
    async fn check(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn owned(&self, prefix: &str) -> Result<Vec<IndexEntry>, Error> {
        let guard = self.copy().await?;
        let copy = guard.as_ref().expect("loaded");
        let prefix = prefix.trim_matches('/');
        Ok(copy
            .index
            .values()
            .filter(|e| {
                prefix.is_empty() || e.path == prefix || e.path.starts_with(&format!("{prefix}/"))
            })
            .cloned()
            .collect())
    }

    async fn read_files(&self, prefix: &str, suffixes: &[&str]) -> Result<Vec<StoredFile>, Error> {
        let guard = self.copy().await?;
        let copy = guard.as_ref().expect("loaded");
        let prefix = prefix.trim_matches('/');
        Ok(copy
            .files
            .iter()
            .filter(|(p, _)| {
                (prefix.is_empty() || p.starts_with(&format!("{prefix}/")))
                    && (suffixes.is_empty() || suffixes.iter().any(|s| p.ends_with(s)))
            })
            .map(|(p, c)| StoredFile {
                path: p.clone(),
                content: c.clone(),
            })
            .collect())
    }

    async fn apply(&self, changes: &ChangeSet) -> Result<ApplyOutcome, Error> {
        for w in &changes.writes {
            for f in &w.files {
                self.inner.check_path(&f.path)?;
            }
        }
        let mut guard = self.copy().await?;
        let copy = guard.as_mut().expect("loaded");
        let mut out = ApplyOutcome::default();
        let written: BTreeSet<&str> = changes
            .writes
            .iter()
            .map(|w| w.owner.key.as_str())
            .collect();
        let removed: BTreeSet<&str> = changes.removals.iter().map(String::as_str).collect();
        // Drift: indexed files whose content is not what we wrote, of owners this change set
        // does not rewrite or remove, are restored from the indexed content.
        let drifted: Vec<IndexEntry> = copy
            .index
            .values()
            .filter(|e| {
                !written.contains(e.owner.key.as_str()) && !removed.contains(e.owner.key.as_str())
            })
            .filter(|e| {
                copy.files
                    .get(&e.path)
                    .is_none_or(|c| Sha256Sum::of(c) != e.sha256)
            })
            .cloned()
            .collect();
        for e in drifted {
            let before = copy.files.get(&e.path).cloned();
            out.drift.push(Drift {
                path: e.path.clone(),
                owner: Owner::clone(&e.owner),
                kind: if before.is_some() {
                    DriftKind::Modified
                } else {
                    DriftKind::Deleted
                },
            });
            let after = self.blobs.get_blob(&e.sha256.to_string()).ok();
            if let Some(a) = &after {
                copy.files.insert(e.path.clone(), a.clone());
            }
            out.written += 1;
            self.record(&e.owner, &e.path, FileChangeKind::Restored, before, after);
        }
        // Writes: each owner's complete file set.
        for w in &changes.writes {
            let wanted: BTreeSet<&str> = w.files.iter().map(|f| f.path.as_str()).collect();
            let stale: Vec<String> = copy
                .index
                .values()
                .filter(|e| e.owner.key == w.owner.key && !wanted.contains(e.path.as_str()))
                .map(|e| e.path.clone())
                .collect();
            for path in stale {
                copy.index.remove(&path);
                if let Some(before) = copy.files.remove(&path) {
                    out.deleted += 1;
                    self.record(&w.owner, &path, FileChangeKind::Removed, Some(before), None);
                }
            }
            for f in &w.files {
                let before = copy.files.get(&f.path);
                let drifted = copy
                    .index
                    .get(&f.path)
                    .is_some_and(|e| before.is_none_or(|b| Sha256Sum::of(b) != e.sha256));
                let change = match before {
                    Some(b) if *b == f.content => {
                        copy.index
                            .insert(f.path.clone(), entry(&f.path, &f.content, &w.owner));
                        out.unchanged += 1;
                        continue;
                    }
                    Some(_) => FileChangeKind::Changed,
                    None => FileChangeKind::Added,
                };
                if drifted {
                    let e = &copy.index[&f.path];
                    out.drift.push(Drift {
                        path: f.path.clone(),
                        owner: Owner::clone(&e.owner),
                        kind: if before.is_some() {
                            DriftKind::Modified
                        } else {
                            DriftKind::Deleted
                        },
                    });
                }
                let before = before.cloned();
                copy.files.insert(f.path.clone(), f.content.clone());
                copy.index
                    .insert(f.path.clone(), entry(&f.path, &f.content, &w.owner));
                out.written += 1;
                self.record(&w.owner, &f.path, change, before, Some(f.content.clone()));
            }
        }
        // Removals: every indexed file of the owner.
        for key in &changes.removals {
            let gone: Vec<IndexEntry> = copy
                .index
                .values()
                .filter(|e| &e.owner.key == key)
                .cloned()
                .collect();
            for e in gone {
                copy.index.remove(&e.path);
                if let Some(before) = copy.files.remove(&e.path) {
                    out.deleted += 1;
                    self.record(
                        &e.owner,
                        &e.path,
                        FileChangeKind::Removed,
                        Some(before),
                        None,
                    );
                }
            }
        }
        if out.written + out.deleted > 0 {
            copy.version += 1;
            out.version = Some(format!("plan-{}", copy.version));
        }
        Ok(out)
    }

    fn check_path(&self, path: &str) -> Result<(), Error> {
        self.inner.check_path(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statestores::{FileWrite, PlacementWrite};

    /// A store holding `files` (path, content, owner key or `None` for files we never wrote).
    struct Fake {
        files: Vec<(String, Vec<u8>, Option<String>)>,
    }

    fn owner(key: &str) -> Owner {
        Owner {
            key: key.into(),
            destination: "dev".into(),
            promise: "app".into(),
            resource: Some("default/a".into()),
            pipeline: Some("configure".into()),
        }
    }

    #[async_trait]
    impl StateStore for Fake {
        async fn check(&self) -> Result<(), Error> {
            panic!("a dry run never checks write permission")
        }
        async fn owned(&self, _: &str) -> Result<Vec<IndexEntry>, Error> {
            Ok(self
                .files
                .iter()
                .filter_map(|(p, c, o)| o.as_ref().map(|o| entry(p, c, &owner(o).into())))
                .collect())
        }
        async fn apply(&self, _: &ChangeSet) -> Result<ApplyOutcome, Error> {
            panic!("a dry run never applies")
        }
        async fn read_files(&self, _: &str, _: &[&str]) -> Result<Vec<StoredFile>, Error> {
            Ok(self
                .files
                .iter()
                .map(|(p, c, _)| StoredFile {
                    path: p.clone(),
                    content: c.clone(),
                })
                .collect())
        }
    }

    fn write(key: &str, files: &[(&str, &str)]) -> PlacementWrite {
        PlacementWrite {
            owner: owner(key).into(),
            files: files
                .iter()
                .map(|(p, c)| FileWrite {
                    path: p.to_string(),
                    content: c.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    /// The apply rules: identical content is left alone, an owner's unlisted files are
    /// removed, a removal deletes every file of its owner, a claimed foreign path changes,
    /// drift of an owner not in the change set is restored from the blob cache; the store is
    /// never checked nor applied, and a second apply sees the first one's result.
    #[tokio::test]
    async fn applies_to_a_copy_with_the_stores_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = StateDir::open(tmp.path()).unwrap();
        let drifted_sha = blobs.put_blob(b"ours\n").unwrap();
        let fake = Fake {
            files: vec![
                ("d/a/keep.yaml".into(), b"same\n".to_vec(), Some("a".into())),
                ("d/a/old.yaml".into(), b"old\n".to_vec(), Some("a".into())),
                ("d/b/x.yaml".into(), b"x\n".to_vec(), Some("b".into())),
                ("d/foreign.yaml".into(), b"theirs\n".to_vec(), None),
                ("d/c/c.yaml".into(), b"edited\n".to_vec(), Some("c".into())),
            ],
        };
        let recorder = Arc::new(Recorder::default());
        let store = DryRunStore::new(
            "GitStateStore/s".into(),
            Arc::new(fake),
            recorder.clone(),
            blobs,
        );
        // `c`'s index says "ours", the head has "edited": drift.
        {
            let mut guard = store.copy().await.unwrap();
            let copy = guard.as_mut().unwrap();
            copy.index.get_mut("d/c/c.yaml").unwrap().sha256 = drifted_sha.parse().unwrap();
        }
        store.check().await.unwrap();
        let set = ChangeSet {
            writes: vec![
                write(
                    "a",
                    &[("d/a/keep.yaml", "same\n"), ("d/a/new.yaml", "new\n")],
                ),
                write("f", &[("d/foreign.yaml", "mine\n")]),
            ],
            removals: vec!["b".into()],
            meta: Default::default(),
        };
        let out = store.apply(&set).await.unwrap();
        let got: Vec<(String, FileChangeKind)> = recorder
            .take()
            .into_iter()
            .map(|f| (f.path, f.change))
            .collect();
        assert_eq!(
            got,
            [
                ("d/c/c.yaml".to_string(), FileChangeKind::Restored),
                ("d/a/old.yaml".to_string(), FileChangeKind::Removed),
                ("d/a/new.yaml".to_string(), FileChangeKind::Added),
                ("d/foreign.yaml".to_string(), FileChangeKind::Changed),
                ("d/b/x.yaml".to_string(), FileChangeKind::Removed),
            ]
        );
        assert_eq!((out.written, out.deleted, out.unchanged), (3, 2, 1));
        assert_eq!(out.drift.len(), 1);
        assert!(out.version.is_some());
        // The copy moved on: the same change set again changes nothing.
        let again = store.apply(&set).await.unwrap();
        assert!(recorder.take().is_empty());
        assert_eq!((again.version, again.unchanged), (None, 3));
        let files = store.read_files("d/a", &[]).await.unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["d/a/keep.yaml", "d/a/new.yaml"]);
    }
}
