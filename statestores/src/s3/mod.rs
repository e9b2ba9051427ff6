//! S3 state store (Kratix `BucketStateStore`, `kratix-contract.md` §1.5, §4.3, §4.4), on
//! `object_store`'s S3 client (path-style requests, SigV4).
//!
//! Same interface, same key layout and same ownership-index semantics as the Git store: keys are
//! exactly the [`FileWrite::path`](crate::FileWrite::path)s the engine computes
//! (`<spec.path>/<destination path>/...`), unchanged objects are not rewritten, drift is
//! detected and repaired, pruned files are deleted.
//!
//! # The ownership index and the commit point
//!
//! One JSON object per store at `<spec.path>/.promised/index.json` (outside every
//! `<spec.path>/<destination path>/` directory that a GitOps agent consumes, like the Git
//! store's `.promised/`):
//!
//! ```json
//! { "version": 1, "generation": 7,
//!   "entries": [ { "path": "...", "sha256": "...", "oid": "...", "owner": { ... } } ],
//!   "etags":   { "<path>": "<etag the server returned when we wrote it>" },
//!   "pending": [ "<paths an interrupted or unfinished apply may have written or must delete>" ] }
//! ```
//!
//! `entries` are the same [`IndexEntry`] records as in the Git store. `generation` is the version
//! number of the bucket's content; [`ApplyOutcome::version`] is that number in decimal. Every
//! write of the index is a compare-and-swap (`If-None-Match: *` for the first one, `If-Match:
//! <etag>` after that, `object_store` `PutMode::Create` / `PutMode::Update`), so two daemons
//! cannot overwrite each other's index: the loser reloads and rebuilds its change from desired
//! state (bounded by [`S3Options::max_attempts`], then [`Error::Conflict`]).
//! [`StateStore::check`] detects servers that ignore conditional writes and warns
//! ([`S3StateStore::conditional_writes`]).
//!
//! # One apply, step by step, and what a Flux `Bucket` source can observe
//!
//! S3 has no multi-object transaction, and consumers (Flux `Bucket`, which lists the bucket and
//! downloads every key) read **fixed keys**, so no design can make an in-place update of several
//! keys appear at one instant to a plain lister. Kratix's writer (PUT each, then delete stale)
//! can even show a directory with files missing. This store orders the steps so that the index
//! object is a single atomic commit point and a lister never sees a file disappear early:
//!
//! 1. **Intent** (only when objects will be written): the index is rewritten (CAS) with the same
//!    `generation` and `entries`, and `pending` += every key about to be written. Content is
//!    unchanged; a lister sees the old state.
//! 2. **Write**: new and changed objects are PUT (up to [`S3Options::concurrency`] at once);
//!    unchanged ones are skipped. *Observable:* the index still names generation `g`; **every
//!    key of generation `g` is present** (nothing is deleted yet); a key is present with either
//!    its old or its new content; new keys appear one by one. So a listing is a superset of the
//!    old key set, but a key updated in place may already carry new content: *this is the one
//!    mixed state S3 cannot avoid for fixed keys*, and it only ever mixes old and new content of
//!    this change set (never a third state, never a missing file).
//! 3. **Commit**: one PUT of the index (CAS) with `generation` `g+1`, the new `entries` and
//!    `etags`, and `pending` = the stale keys still to delete. *Observable:* from this instant,
//!    **every key the index names is present with exactly the indexed content** (all writes
//!    finished before it).
//! 4. **Delete**: after [`S3Options::delete_grace`] (default 2 s), stale keys (pruned, removed,
//!    leftovers of an interrupted apply) are deleted. *Observable:* the complete new set, plus a
//!    shrinking subset of stale old keys.
//! 5. **Clean**: the index is rewritten with `pending: []`.
//!
//! A listing is itself not an atomic snapshot (S3 pages it; servers walk directories), so a
//! listing that starts during step 2 and ends during step 4 could miss a late new key and an
//! early-deleted old key at once: the grace pause in step 4 is what rules that out for listings
//! shorter than it.
//!
//! The guarantee, as the 1,000-object polling test asserts it for every listing that takes less
//! than `delete_grace`: *a listing contains either every key of the old generation, or every key
//! of the new generation with its new content*; and if the index read **after** the listing still names the old generation, every
//! old key was present, and if the index read **before** the listing already names the new
//! generation, every new key was present with its new content. A Flux `Bucket` source that
//! happens to poll during step 2 may therefore build an artifact in which some files of this
//! change set are new and others old (never missing); its revision (a digest of the listing)
//! changes again when the apply finishes, so Flux converges at its next interval. A reader that
//! needs a strict snapshot reads the index, downloads the keys it names and compares their
//! sha256 with the index, retrying on mismatch.
//!
//! # Failure in the middle ("half state")
//!
//! A *half state* is: a key we wrote that the index does not own, an owned key whose content
//! differs from the index, a stale key not deleted, or a non-empty `pending` list. An apply that
//! fails (server gone, timeout) returns the error and leaves at most such a half state, recorded
//! in `pending`; the next apply (retry) deletes pending keys that are not desired any more, does
//! not report our own interrupted writes as drift, and ends with no half state.
//!
//! # Drift
//!
//! An owned object whose ETag differs from the ETag recorded at write time (or that is gone) is
//! drift: reported in [`ApplyOutcome::drift`] and restored in the same apply, from the desired
//! content if the change set covers its placement, otherwise from the local blob cache
//! ([`S3Options::state_dir`]). Objects we never wrote are never touched unless a placement claims
//! their exact key (then they are skipped when their ETag equals the MD5 of the desired content,
//! Kratix's rule).

pub mod config;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use futures::{StreamExt, TryStreamExt};
use gix::ObjectId;
use md5::{Digest, Md5};
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

pub use config::{BeforeCommit, BucketAuthMethod, BucketStateStoreSpec, S3Options, SecretRef};

use crate::git::credentials::Secrets;
use crate::index::{self, INDEX_DIR, IndexEntry};
use crate::{ApplyOutcome, ChangeSet, Error, StateStore, plan};

/// Name of the metadata directory under `spec.path`.
pub const META_DIR: &str = ".promised";

/// The longest object key S3 accepts, in bytes of UTF-8 (the bucket's `spec.path` included).
pub const MAX_KEY_BYTES: usize = 1024;

/// The index object as stored (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Index {
    /// Format version, always 1.
    pub version: u32,
    /// Content generation; increases by one per committed apply.
    pub generation: u64,
    /// Owned files, sorted by path.
    pub entries: Vec<IndexEntry>,
    /// ETag of each owned object as returned by the server when we wrote it (quotes removed).
    #[serde(default)]
    pub etags: BTreeMap<String, String>,
    /// Keys an unfinished apply may have written (before commit) or must still delete (after).
    #[serde(default)]
    pub pending: Vec<String>,
}

impl S3Index {
    fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Task(format!("cannot serialise the ownership index: {e}")))?;
        out.push(b'\n');
        Ok(out)
    }
}

const COND_UNKNOWN: u8 = 0;
const COND_OK: u8 = 1;
const COND_IGNORED: u8 = 2;

struct Inner {
    spec: BucketStateStoreSpec,
    opts: S3Options,
    client: AmazonS3,
    /// `spec.path` without leading/trailing `/`.
    prefix: String,
    secrets: Secrets,
    display: String,
    cache: Option<PathBuf>,
    conditional: AtomicU8,
    lock: tokio::sync::Mutex<()>,
}

/// An S3 state store (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct S3StateStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for S3StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3StateStore")
            .field("location", &self.inner.display)
            .finish()
    }
}

/// The full text of an error and its sources, each source once.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

fn norm_etag(e: &str) -> String {
    e.trim_start_matches("W/").trim_matches('"').to_owned()
}

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

/// What the bucket holds right now.
struct Head {
    index: S3Index,
    index_etag: Option<String>,
    /// key -> ETag (quotes removed), excluding our metadata keys.
    listing: BTreeMap<String, String>,
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() { "store".into() } else { s }
}

impl S3StateStore {
    /// Open the store named `name` (the BucketStateStore's metadata name).
    ///
    /// Reads the credentials now (a missing secret key fails here) and builds the client. No
    /// network I/O; call [`StateStore::check`] for that.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty bucket, an endpoint with a scheme or path, a missing
    /// `secretRef` or secret key, or `max_attempts == 0`.
    pub fn open(name: &str, spec: BucketStateStoreSpec, opts: S3Options) -> Result<Self, Error> {
        if opts.max_attempts == 0 {
            return Err(Error::Config("max_attempts must be at least 1".into()));
        }
        let (client, secrets) = config::build(&spec, &opts)?;
        let prefix = spec.path.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            plan::validate_path(&prefix).map_err(|_| {
                Error::Config(format!(
                    "BucketStateStore spec.path {:?} is not a valid key prefix",
                    spec.path
                ))
            })?;
        }
        let endpoint = config::endpoint_url(&spec)?;
        let display = format!("s3://{}/{} at {endpoint}", spec.bucket_name.trim(), prefix);
        let cache = opts.state_dir.as_ref().map(|d| {
            let h =
                plan::sha256_hex(format!("{endpoint}\n{}\n{prefix}", spec.bucket_name).as_bytes());
            d.join("s3")
                .join(format!("{}-{}", sanitize(name), &h[..12]))
                .join("blobs")
        });
        Ok(Self {
            inner: Arc::new(Inner {
                spec,
                opts,
                client,
                prefix,
                secrets,
                display,
                cache,
                conditional: AtomicU8::new(COND_UNKNOWN),
                lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The spec this store was opened with.
    pub fn spec(&self) -> &BucketStateStoreSpec {
        &self.inner.spec
    }

    /// `Some(true)` when the last [`StateStore::check`] saw the server honour conditional writes,
    /// `Some(false)` when it ignored them (two daemons could then overwrite each other's index),
    /// `None` before any check.
    pub fn conditional_writes(&self) -> Option<bool> {
        match self.inner.conditional.load(Ordering::Relaxed) {
            COND_OK => Some(true),
            COND_IGNORED => Some(false),
            _ => None,
        }
    }

    /// Key of the index object: `<spec.path>/.promised/index.json`.
    pub fn index_key(&self) -> String {
        self.meta_key("index.json")
    }

    fn meta_key(&self, name: &str) -> String {
        if self.inner.prefix.is_empty() {
            format!("{META_DIR}/{name}")
        } else {
            format!("{}/{META_DIR}/{name}", self.inner.prefix)
        }
    }

    fn is_meta(&self, key: &str) -> bool {
        let meta = self.meta_key("");
        key.starts_with(&meta) || key == meta.trim_end_matches('/')
    }

    /// `operation` (`list`, `put <key>`, …) starts the message.
    fn map_err(&self, operation: &str, e: object_store::Error) -> Error {
        let message = format!(
            "{operation}: {}",
            self.inner.secrets.redact(&error_text(&e))
        );
        match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Error::Auth {
                url_without_secrets: self.inner.display.clone(),
                message: match &self.inner.spec.secret_ref {
                    Some(r) => format!("{message} (credentials from secret {:?})", r.name),
                    None => format!("{message} (authMethod {:?})", self.inner.spec.auth_method),
                },
            },
            _ => Error::Transport {
                url_without_secrets: self.inner.display.clone(),
                message,
            },
        }
    }

    /// `fut` (the whole `operation`), given up at `network.operationTimeout` with a
    /// transport error naming the store and the operation.
    async fn bounded<T>(
        &self,
        operation: &str,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let limit = self.inner.opts.network.operation;
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Transport {
                url_without_secrets: self.inner.display.clone(),
                message: format!(
                    "{operation}: no result within {} (network.operationTimeout)",
                    crate::net::human(limit)
                ),
            }),
        }
    }

    async fn load_index(&self) -> Result<(S3Index, Option<String>), Error> {
        let key = self.index_key();
        match self.inner.client.get(&ObjPath::from(key.as_str())).await {
            Ok(r) => {
                let etag = r.meta.e_tag.clone();
                let bytes = r.bytes().await.map_err(|e| self.map_err("get index", e))?;
                let idx: S3Index =
                    serde_json::from_slice(&bytes).map_err(|e| Error::CorruptIndex {
                        path: key.clone(),
                        message: e.to_string(),
                    })?;
                if idx.version != 1 {
                    return Err(Error::CorruptIndex {
                        path: key,
                        message: format!("unsupported index version {}", idx.version),
                    });
                }
                Ok((idx, etag))
            }
            Err(object_store::Error::NotFound { .. }) => Ok((
                S3Index {
                    version: 1,
                    ..Default::default()
                },
                None,
            )),
            Err(e) => Err(self.map_err("get index", e)),
        }
    }

    async fn load(&self) -> Result<Head, Error> {
        let (index, index_etag) = self.load_index().await?;
        let prefix =
            (!self.inner.prefix.is_empty()).then(|| ObjPath::from(self.inner.prefix.as_str()));
        let metas: Vec<object_store::ObjectMeta> = self
            .inner
            .client
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.map_err("list", e))?;
        let listing = metas
            .into_iter()
            .map(|m| {
                let key = m.location.as_ref().to_owned();
                (key, norm_etag(m.e_tag.as_deref().unwrap_or_default()))
            })
            .filter(|(k, _)| !self.is_meta(k))
            .collect();
        Ok(Head {
            index,
            index_etag,
            listing,
        })
    }

    /// CAS write of the index. `Ok(Some(etag))` on success, `Ok(None)` on a lost race.
    async fn put_index(
        &self,
        idx: &S3Index,
        expected: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let mode = match expected {
            None => PutMode::Create,
            Some(e) => PutMode::Update(UpdateVersion {
                e_tag: Some(e.to_owned()),
                version: None,
            }),
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let key = ObjPath::from(self.index_key().as_str());
        match self
            .inner
            .client
            .put_opts(&key, PutPayload::from(idx.encode()?), opts)
            .await
        {
            Ok(r) => Ok(Some(r.e_tag.unwrap_or_default())),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(None),
            Err(e) => Err(self.map_err("put index", e)),
        }
    }

    fn cache_path(&self, oid: &ObjectId) -> Option<PathBuf> {
        self.inner.cache.as_ref().map(|c| c.join(oid.to_string()))
    }

    fn validate_keys(&self, changes: &ChangeSet) -> Result<(), Error> {
        for w in &changes.writes {
            for f in &w.files {
                self.validate_key(&f.path)?;
            }
        }
        Ok(())
    }

    /// The key rules: [`plan::validate_path`], inside the store's `spec.path`, not in our
    /// metadata, stored verbatim (no character the S3 client would percent-encode: control
    /// characters, the backtick and any of `\ { ^ } % ] " > [ ~ < # | * ?`) and at most
    /// [`MAX_KEY_BYTES`] long.
    fn validate_key(&self, path: &str) -> Result<(), Error> {
        let bad = |reason: String| {
            Err(Error::InvalidPath {
                path: path.to_owned(),
                reason,
            })
        };
        plan::validate_path(path)?;
        if !self.inner.prefix.is_empty() && !path.starts_with(&format!("{}/", self.inner.prefix)) {
            return bad(format!(
                "outside the store's spec.path {:?} (keys must include it)",
                self.inner.prefix
            ));
        }
        let meta = self.meta_key("");
        if path.starts_with(&meta) {
            return bad(format!(
                "`{meta}` is reserved for promised's ownership index"
            ));
        }
        if ObjPath::from(path).as_ref() != path {
            return bad(
                "contains characters that are not stored verbatim as an S3 key \
                 (control characters or one of \\{^}%`]\">[~<#|*?)"
                    .into(),
            );
        }
        if path.len() > MAX_KEY_BYTES {
            return bad(format!(
                "S3 keys are at most {MAX_KEY_BYTES} bytes, this one is {}",
                path.len()
            ));
        }
        Ok(())
    }

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
                .and_then(|e| ObjectId::from_hex(e.oid.as_bytes()).ok());
            let oid = match indexed {
                Some(oid) => oid,
                None => match desired.get(key.as_str()) {
                    Some(c) if md5_hex(c) == *etag => plan::blob_oid(c),
                    _ => plan::blob_oid(format!("promised-s3-foreign-etag {etag}").as_bytes()),
                },
            };
            head_files.insert(key.clone(), oid);
        }
        let mut p = plan::plan(&head_files, &old.entries, changes, |oid| {
            self.cache_path(oid).is_some_and(|p| p.is_file())
        })?;

        // The plan also emits Git-style per-destination index files; collect the new entries
        // from them instead of writing them.
        let mut new_entries: Vec<IndexEntry> = Vec::new();
        let mut upserts = Vec::new();
        for u in std::mem::take(&mut p.upserts) {
            if u.path.starts_with(INDEX_DIR) {
                if let Some(bytes) = &u.content {
                    new_entries.extend(index::decode(&u.path, bytes)?);
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
                let known = ObjectId::from_hex(e.oid.as_bytes())
                    .ok()
                    .is_some_and(|oid| head_files.get(&e.path) == Some(&oid));
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
            pending.extend(upserts.iter().map(|u| u.path.clone()));
            intent.pending = pending.into_iter().collect();
            match self.put_index(&intent, expected.as_deref()).await? {
                Some(e) => expected = Some(e),
                None => return Err(AttemptError::Stale),
            }
        }

        // 2. Write.
        let items: Vec<(String, ObjectId, Option<Vec<u8>>)> = upserts
            .iter()
            .map(|u| {
                (
                    u.path.clone(),
                    u.oid,
                    u.content.as_ref().map(|c| c.to_vec()),
                )
            })
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

    /// The ETag of one object (quotes removed), `None` when it is gone.
    async fn head_etag(&self, key: String) -> Result<(String, Option<String>), Error> {
        match self.inner.client.head(&ObjPath::from(key.as_str())).await {
            Ok(m) => {
                let e = norm_etag(m.e_tag.as_deref().unwrap_or_default());
                Ok((key, Some(e)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok((key, None)),
            Err(e) => Err(self.map_err(&format!("head {key}"), e)),
        }
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
        let keep: BTreeSet<String> = entries.iter().map(|e| e.oid.clone()).collect();
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

    async fn probe_conditional(&self) -> Result<bool, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = ObjPath::from(
            self.meta_key(&format!(
                "write-permission-check-{}-{nanos}",
                std::process::id()
            ))
            .as_str(),
        );
        let create = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let body = || PutPayload::from_static(b"promised write-permission check\n");
        let c = &self.inner.client;
        c.put_opts(&key, body(), create())
            .await
            .map_err(|e| self.map_err("write-permission check (put probe)", e))?;
        let second = c.put_opts(&key, body(), create()).await;
        let update = c
            .put_opts(
                &key,
                body(),
                PutOptions {
                    mode: PutMode::Update(UpdateVersion {
                        e_tag: Some("\"promised-no-such-etag\"".into()),
                        version: None,
                    }),
                    ..Default::default()
                },
            )
            .await;
        let cleanup = c.delete(&key).await;
        let refused = |r: &Result<object_store::PutResult, object_store::Error>| {
            matches!(
                r,
                Err(object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. })
            )
        };
        let honoured = refused(&second) && refused(&update);
        if !honoured && second.is_err() && update.is_err() {
            // A real failure (not a 412): report the first one.
            for r in [second, update] {
                if let Err(e) = r
                    && !matches!(
                        e,
                        object_store::Error::AlreadyExists { .. }
                            | object_store::Error::Precondition { .. }
                    )
                {
                    return Err(self.map_err("write-permission check (conditional put)", e));
                }
            }
        }
        cleanup.map_err(|e| self.map_err("write-permission check (delete probe)", e))?;
        Ok(honoured)
    }
}

#[async_trait]
impl StateStore for S3StateStore {
    /// Write-permission check (Kratix: `NewMultipartUpload` + abort of
    /// `<path>/.kratix-write-permission-check`). Here: create a probe object under
    /// `<path>/.promised/` with `If-None-Match: *`, try to create it again and to update it with a
    /// wrong `If-Match` (both must fail with 412), delete it, then read and parse the index. A
    /// server that ignores conditional writes is logged as a warning (an error with
    /// [`S3Options::require_conditional_writes`]).
    async fn check(&self) -> Result<(), Error> {
        self.bounded("write-permission check", self.check_unbounded())
            .await
    }

    async fn owned(&self, prefix: &str) -> Result<Vec<IndexEntry>, Error> {
        self.bounded("read ownership index", self.owned_unbounded(prefix))
            .await
    }

    fn check_path(&self, path: &str) -> Result<(), Error> {
        self.validate_key(path)
    }

    async fn apply(&self, changes: &ChangeSet) -> Result<ApplyOutcome, Error> {
        let _guard = self.inner.lock.lock().await;
        self.bounded("apply", self.apply_unbounded(changes)).await
    }
}

impl S3StateStore {
    async fn check_unbounded(&self) -> Result<(), Error> {
        let honoured = self.probe_conditional().await?;
        self.inner.conditional.store(
            if honoured { COND_OK } else { COND_IGNORED },
            Ordering::Relaxed,
        );
        if !honoured {
            let msg = format!(
                "the S3 server at {} ignores conditional writes (If-None-Match / If-Match); two daemons writing this bucket could overwrite each other's ownership index",
                self.inner.display
            );
            if self.inner.opts.require_conditional_writes {
                return Err(Error::Config(msg));
            }
            tracing::warn!("{msg}");
        }
        self.load_index().await?;
        Ok(())
    }

    async fn owned_unbounded(&self, prefix: &str) -> Result<Vec<IndexEntry>, Error> {
        let (idx, _) = self.load_index().await?;
        let prefix = prefix.trim_matches('/');
        let mut out: Vec<IndexEntry> = idx
            .entries
            .into_iter()
            .filter(|e| {
                prefix.is_empty()
                    || e.path == prefix
                    || e.path
                        .strip_prefix(prefix)
                        .is_some_and(|r| r.starts_with('/'))
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    async fn apply_unbounded(&self, changes: &ChangeSet) -> Result<ApplyOutcome, Error> {
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
}
