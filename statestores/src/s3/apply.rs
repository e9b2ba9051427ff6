//! The S3 write protocol of one apply: plan against the listing, then intent, write, commit,
//! delete and clean (the numbered steps of the module docs of [`crate::s3`]), retried from
//! desired state when the index changes under us; and the local blob cache that restores
//! drifted objects of placements outside the change set.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::{StreamExt, TryStreamExt};
use gix::ObjectId;
use md5::{Digest, Md5};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutPayload};

use super::S3StateStore;
use super::bucket::{S3Index, norm_etag};
use crate::index::{self, INDEX_DIR, IndexEntry};
use crate::{ApplyOutcome, ChangeSet, Error, plan};

/// Hex MD5 of `content`: the ETag S3 gives an object written in one PUT.
fn md5_hex(content: &[u8]) -> String {
    hex::encode(Md5::digest(content))
}

/// Why an attempt failed.
enum AttemptError {
    Stale,
    Fatal(Error),
}

impl From<Error> for AttemptError {
    fn from(e: Error) -> Self {
        AttemptError::Fatal(e)
    }
}

impl S3StateStore {
    /// One apply without the operation timeout: [`Self::attempt`] retried from desired state
    /// with exponential backoff (50 ms to 2 s, jittered) while the index changes under us, at
    /// most [`S3Options::max_attempts`](super::S3Options::max_attempts) times in all, then
    /// [`Error::Conflict`].
    pub(super) async fn apply_unbounded(&self, changes: &ChangeSet) -> Result<ApplyOutcome, Error> {
        let mut attempt = 0u32;
        let max = self.inner.opts.max_attempts;
        let run = || {
            attempt += 1;
            let n = attempt;
            async move { self.attempt(changes, n).await }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(max.saturating_sub(1) as usize)
            .with_jitter();
        let result = run
            .retry(backoff)
            .when(|e| matches!(e, AttemptError::Stale))
            .notify(|_, d| {
                tracing::info!(store = %self.inner.display, delay = ?d,
                    "ownership index changed under us; rebuilding from desired state");
            })
            .await;
        match result {
            Ok(mut o) => {
                o.conflicts_retried = attempt.saturating_sub(1);
                Ok(o)
            }
            Err(AttemptError::Stale) => Err(Error::Conflict { attempts: attempt }),
            Err(AttemptError::Fatal(e)) => Err(e),
        }
    }

    /// Where the blob cache keeps the content of blob `oid`; `None` without
    /// [`S3Options::state_dir`](super::S3Options::state_dir).
    fn cache_path(&self, oid: &ObjectId) -> Option<PathBuf> {
        self.inner.cache.as_ref().map(|c| c.join(oid.to_string()))
    }

    /// [`Self::validate_key`] for every file of `changes`, before anything is written.
    fn validate_keys(&self, changes: &ChangeSet) -> Result<(), Error> {
        for w in &changes.writes {
            for f in &w.files {
                self.validate_key(&f.path)?;
            }
        }
        Ok(())
    }

    /// One attempt (`attempt` counts from 1): plan against the current index and listing, then
    /// steps 1 to 5 of the module docs of [`crate::s3`]. [`AttemptError::Stale`] when a
    /// compare-and-swap of the index lost a race (the caller rebuilds from desired state).
    async fn attempt(
        &self,
        changes: &ChangeSet,
        attempt: u32,
    ) -> Result<ApplyOutcome, AttemptError> {
        self.validate_keys(changes)?;
        let head = self.load().await?;
        let old = &head.index.clone();

        // Desired content per key (last claim wins, as in the plan).
        let mut desired: HashMap<&str, &[u8]> = HashMap::new();
        for w in &changes.writes {
            for f in &w.files {
                desired.insert(f.path.as_str(), f.content.as_slice());
            }
        }
        let by_path: HashMap<&str, &IndexEntry> =
            old.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        // Some servers (s3s-fs) omit ETags from listings: HEAD the keys that matter.
        let blind: Vec<String> = head
            .listing
            .iter()
            .filter(|(k, e)| {
                e.is_empty()
                    && (by_path.contains_key(k.as_str()) || desired.contains_key(k.as_str()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut head = head;
        if !blind.is_empty() {
            // `try_collect` stops at the first failure (a dead server fails fast).
            let heads: Vec<(String, Option<String>)> = futures::stream::iter(blind)
                .map(|k| self.head_etag(k))
                .buffer_unordered(self.inner.opts.concurrency.max(1))
                .try_collect()
                .await?;
            for h in heads {
                match h {
                    (k, Some(e)) => {
                        head.listing.insert(k, e);
                    }
                    (k, None) => {
                        head.listing.remove(&k);
                    }
                }
            }
        }
        let head = head;
        let old = &head.index;
        // Translate the listing into "git blob ids" so the backend-independent plan applies:
        // an owned key whose ETag is the one we recorded has its indexed id; a key whose ETag is
        // the MD5 of the desired content has that content's id; anything else is foreign.
        // Keys an interrupted apply may have written are never trusted (their ETag metadata may
        // be torn on some servers): they are rewritten with the content they must have.
        let pending: BTreeSet<&str> = old.pending.iter().map(String::as_str).collect();
        let mut head_files: HashMap<String, ObjectId> = HashMap::new();
        for (key, etag) in &head.listing {
            if pending.contains(key.as_str()) {
                head_files.insert(
                    key.clone(),
                    plan::blob_oid(format!("promised-s3-pending {etag}").as_bytes()),
                );
                continue;
            }
            let indexed = by_path
                .get(key.as_str())
                .filter(|_| old.etags.get(key) == Some(etag))
                .map(|e| e.oid);
            let oid = match indexed {
                Some(oid) => oid,
                None => match desired.get(key.as_str()) {
                    Some(c) if md5_hex(c) == *etag => plan::blob_oid(c),
                    _ => plan::blob_oid(format!("promised-s3-foreign-etag {etag}").as_bytes()),
                },
            };
            head_files.insert(key.clone(), oid);
        }
        let mut p = plan::plan(&head_files, old.entries.clone(), changes, |oid| {
            self.cache_path(oid).is_some_and(|p| p.is_file())
        })?;

        // The plan also emits Git-style per-destination index files; collect the new entries
        // from them instead of writing them.
        let mut new_entries: Vec<IndexEntry> = Vec::new();
        let mut upserts = Vec::new();
        for u in std::mem::take(&mut p.upserts) {
            if u.path.starts_with(INDEX_DIR) {
                match &u.content {
                    plan::Content::Index { range, .. } => {
                        new_entries.extend_from_slice(&p.index[range.clone()]);
                    }
                    plan::Content::Bytes(bytes) => {
                        new_entries.extend(index::decode(&u.path, bytes)?);
                    }
                    plan::Content::Existing => {}
                }
            } else {
                upserts.push(u);
            }
        }
        new_entries.sort_by(|a, b| a.path.cmp(&b.path));
        let new_paths: BTreeSet<&str> = new_entries.iter().map(|e| e.path.as_str()).collect();
        let mut removes: Vec<String> = p
            .removes
            .iter()
            .filter(|r| !r.starts_with(INDEX_DIR))
            .cloned()
            .collect();
        let mut deleted = p.deleted;
        // Leftovers of an interrupted apply: delete what is no longer owned.
        for k in &old.pending {
            if !new_paths.contains(k.as_str())
                && head.listing.contains_key(k)
                && !removes.contains(k)
                && !by_path.contains_key(k.as_str())
            {
                removes.push(k.clone());
                deleted += 1;
            }
        }
        removes.sort();
        // Our own interrupted writes are not drift.
        p.drift.retain(|d| !pending.contains(d.path.as_str()));

        let mut outcome = ApplyOutcome {
            version: None,
            // The generation found; the one committed below once written.
            head: head
                .index_etag
                .is_some()
                .then(|| old.generation.to_string()),
            written: p.written,
            deleted,
            unchanged: p.unchanged,
            drift: p.drift.clone(),
            conflicts_retried: 0,
        };
        // ETags to record for entries this apply does not write: the listed one only when the
        // object is known to hold the indexed content; otherwise keep the old record, so a
        // drift that could not be repaired now is detected again next time.
        let mut etags: BTreeMap<String, String> = new_entries
            .iter()
            .filter_map(|e| {
                let known = head_files.get(&e.path) == Some(&e.oid);
                if known {
                    head.listing
                        .get(&e.path)
                        .map(|t| (e.path.clone(), t.clone()))
                } else {
                    old.etags.get(&e.path).map(|t| (e.path.clone(), t.clone()))
                }
            })
            .collect();
        if upserts.is_empty()
            && removes.is_empty()
            && old.pending.is_empty()
            && new_entries == old.entries
            && etags == old.etags
        {
            return Ok(outcome);
        }

        // 1. Intent.
        let mut expected = head.index_etag.clone();
        if !upserts.is_empty() {
            let mut intent = old.clone();
            let mut pending: BTreeSet<String> = old.pending.iter().cloned().collect();
            pending.extend(upserts.iter().map(|u| u.path.to_string()));
            intent.pending = pending.into_iter().collect();
            match self.put_index(&intent, expected.as_deref()).await? {
                Some(e) => expected = Some(e),
                None => return Err(AttemptError::Stale),
            }
        }

        // 2. Write.
        let items: Vec<(String, ObjectId, Option<Vec<u8>>)> = upserts
            .iter()
            .map(|u| (u.path.to_string(), u.oid, p.bytes(u).map(|c| c.to_vec())))
            .collect();
        drop(upserts);
        let results: Vec<(String, String)> = futures::stream::iter(items)
            .map(|item| self.put_one(item))
            .buffer_unordered(self.inner.opts.concurrency.max(1))
            .try_collect()
            .await?;
        for (path, etag) in results {
            if new_paths.contains(path.as_str()) {
                etags.insert(path, etag);
            }
        }

        if let Some(hook) = self.inner.opts.before_commit.clone() {
            tokio::task::spawn_blocking(move || hook(attempt))
                .await
                .map_err(|e| Error::Task(e.to_string()))?;
        }

        // 3. Commit.
        let generation = old.generation + 1;
        let mut committed = S3Index {
            version: 1,
            generation,
            entries: new_entries,
            etags,
            pending: removes.clone(),
        };
        let Some(mut etag) = self.put_index(&committed, expected.as_deref()).await? else {
            return Err(AttemptError::Stale);
        };
        outcome.version = Some(generation.to_string());
        outcome.head = outcome.version.clone();
        crate::crash::point("s3-committed");

        // 4. Delete, after a grace period for listings that started before the commit.
        if !removes.is_empty() {
            tokio::time::sleep(self.inner.opts.delete_grace).await;
            futures::stream::iter(removes.clone())
                .map(|k| self.delete_one(k))
                .buffer_unordered(self.inner.opts.concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await?;
            // 5. Clean.
            committed.pending.clear();
            match self.put_index(&committed, Some(&etag)).await {
                Ok(Some(e)) => etag = e,
                Ok(None) => tracing::info!(store = %self.inner.display,
                    "index changed after our commit; pending deletions are cleared by the next apply"),
                Err(e) => tracing::warn!(store = %self.inner.display, error = %e,
                    "cannot clear pending deletions; the next apply does it"),
            }
        }
        let _ = etag;
        self.gc_cache(&committed.entries).await;
        Ok(outcome)
    }

    /// PUT one object (content from the change set or the blob cache); returns its key and ETag.
    async fn put_one(
        &self,
        (path, oid, content): (String, ObjectId, Option<Vec<u8>>),
    ) -> Result<(String, String), Error> {
        let bytes = match content {
            Some(c) => c,
            None => {
                let cp = self
                    .cache_path(&oid)
                    .ok_or_else(|| Error::Task(format!("no cached content for {path}")))?;
                tokio::fs::read(&cp).await.map_err(|e| Error::io(&cp, e))?
            }
        };
        let r = self
            .inner
            .client
            .put(
                &ObjPath::from(path.as_str()),
                PutPayload::from(bytes.clone()),
            )
            .await
            .map_err(|e| self.map_err(&format!("put {path}"), e))?;
        crate::crash::point("s3-upload");
        if let Some(cp) = self.cache_path(&oid)
            && !cp.is_file()
        {
            let write = async {
                if let Some(d) = cp.parent() {
                    tokio::fs::create_dir_all(d).await?;
                }
                let tmp = cp.with_extension(format!("tmp{}", std::process::id()));
                tokio::fs::write(&tmp, &bytes).await?;
                tokio::fs::rename(&tmp, &cp).await
            };
            if let Err(e) = write.await {
                tracing::warn!(path = %cp.display(), error = %e, "cannot cache written object");
            }
        }
        Ok((path, norm_etag(r.e_tag.as_deref().unwrap_or_default())))
    }

    /// DELETE one object; a missing object is fine.
    async fn delete_one(&self, key: String) -> Result<(), Error> {
        match self.inner.client.delete(&ObjPath::from(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(&format!("delete {key}"), e)),
        }
    }

    /// Drop cached blobs no owned file refers to any more. Best effort.
    async fn gc_cache(&self, entries: &[IndexEntry]) {
        let Some(dir) = self.inner.cache.clone() else {
            return;
        };
        let keep: BTreeSet<String> = entries.iter().map(|e| e.oid.to_string()).collect();
        let _ = tokio::task::spawn_blocking(move || {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                return;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        })
        .await;
    }
}
