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
//!
//! # Layout
//!
//! - this file: [`S3StateStore`], its keys and error mapping, and its [`StateStore`] impl;
//! - `config`: [`S3Options`] and the `object_store` client/credentials setup;
//! - `bucket`: the ownership index object ([`S3Index`]), its reads and compare-and-swap
//!   writes, and the bucket listing;
//! - `apply`: the write protocol (intent, write, commit, delete, clean) and the blob cache;
//! - `check`: the write-permission check and the conditional-write probe.

mod apply;
mod bucket;
mod check;
pub mod config;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use async_trait::async_trait;
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjPath;

pub use bucket::S3Index;
pub use config::{BeforeCommit, BucketAuthMethod, BucketStateStoreSpec, S3Options, SecretRef};

use crate::index::IndexEntry;
use crate::secrets::Secrets;
use crate::{ApplyOutcome, ChangeSet, Error, StateStore, plan};

/// Name of the metadata directory under `spec.path`.
pub const META_DIR: &str = ".promised";

/// The longest object key S3 accepts, in bytes of UTF-8 (the bucket's `spec.path` included).
pub const MAX_KEY_BYTES: usize = 1024;

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

    async fn read_files(
        &self,
        prefix: &str,
        suffixes: &[&str],
    ) -> Result<Vec<crate::StoredFile>, Error> {
        let suffixes: Vec<String> = suffixes.iter().map(|s| s.to_string()).collect();
        self.bounded("read files", self.read_files_unbounded(prefix, &suffixes))
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
