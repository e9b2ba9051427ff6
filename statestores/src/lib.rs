//! State store backends for `promised`.
//!
//! Kratix writes each WorkPlacement to a *state store* (a Git repository or an S3 bucket) that
//! Argo CD or Flux consume (`kratix-contract.md` §1.4, §4). This crate provides one interface,
//! [`StateStore`], an S3 backend ([`s3`], Kratix `BucketStateStore`: ordered write / index commit /
//! delete with compare-and-swap on the ownership index; its module docs state exactly what a Flux
//! `Bucket` source can observe during an apply) and two Git backends (see [`git`]):
//!
//! - a **remote** repository (`https://`, `ssh://`, scp-like `git@host:path`, `http://` with a
//!   warning, `git://`), kept as one persistent bare clone under the daemon's state directory,
//!   fetched with gix and pushed with `git push --force-with-lease`;
//! - a **local** bare repository on disk (a plain path or `file://` URL), written directly with
//!   gix. It is the embedded default for a first run: no server needed.
//!
//! Both are opened with the Kratix spec of their kind, declared once in [`spec`] (the daemon's
//! object model uses the same types); [`secrets`] reads the keys a spec's `secretRef` names.
//!
//! # The contract
//!
//! The reconcile engine computes full store-relative paths (Kratix layout, `<spec.path>/<dest
//! path>/resources/...`) and hands over one [`ChangeSet`]: for each placement the **complete**
//! desired file set, plus placements to remove. [`StateStore::apply`] turns it into exactly one
//! atomic version (one Git commit), or none when nothing changed.
//!
//! ```text
//! check()          write-permission check (Kratix: an empty `git push`)
//! owned(prefix)    what our ownership index says we own under a prefix (path, sha256, owner)
//! apply(changes)   one commit per call; prunes, skips unchanged content, repairs drift
//! ```
//!
//! ```no_run
//! use statestores::git::{GitOptions, GitStateStoreSpec};
//! use statestores::{ChangeSet, CommitMeta, FileWrite, GitStateStore, Owner, PlacementWrite, StateStore};
//!
//! # async fn demo() -> Result<(), statestores::Error> {
//! // `spec` comes from a GitStateStore document; a plain path selects the local backend.
//! let spec = GitStateStoreSpec::new("/var/lib/promised/state.git");
//! let store = GitStateStore::open("default", spec, GitOptions::new("/var/lib/promised"))?;
//! store.check().await?; // at start-up
//! let owner = Owner {
//!     key: "worker-1/resources/default/redis/example/instance-configure/5058f".into(),
//!     destination: "worker-1".into(),
//!     promise: "redis".into(),
//!     resource: Some("default/example".into()),
//!     pipeline: Some("instance-configure".into()),
//! };
//! let changes = ChangeSet {
//!     writes: vec![PlacementWrite {
//!         files: vec![FileWrite {
//!             path: format!("worker-1/resources/default/redis/example/instance-configure/5058f/redis.yaml"),
//!             content: b"apiVersion: v1\nkind: ConfigMap\n".to_vec(),
//!         }],
//!         owner: owner.into(),
//!     }],
//!     removals: vec![],
//!     meta: CommitMeta { config_commit: Some("1a2b3c4d".into()), ..Default::default() },
//! };
//! let outcome = store.apply(&changes).await?;
//! // outcome.version: Some(commit sha) or None when nothing changed; outcome.drift: repaired edits.
//! # let _ = outcome; Ok(()) }
//! ```
//!
//! Errors are typed ([`Error`]); [`Error::is_transient`] separates "requeue soon" (lost races,
//! transport) from "needs a person" (credentials, hooks, configuration). Secrets never appear
//! in errors, logs, process arguments or commits.
//!
//! Caveats: one `GitStateStore` per repository and branch per process (applies are serialised
//! inside it; two daemons sharing one `state_dir` clone are not coordinated, although their
//! pushes stay correct thanks to the lease). The local backend moves the branch ref directly;
//! point it at a bare repository, not at a checked-out branch of a working copy.
//!
//! # Where the ownership index lives, and why
//!
//! For every file we wrote, the index records its path, its sha256, its git blob id and the
//! placement that produced it ([`Owner`]). It is committed **in the same commit** as the files
//! (so content and index can never disagree) as JSON files per destination, sharded by
//! placement, at `.promised/index/<destination>/<shard>.json` at the **repository root**
//! (format and sharding: [`index_path`], [`shard_of`]), outside every
//! `<spec.path>/<destination path>` directory that GitOps agents consume:
//!
//! - Flux's auto-generated kustomization fails the whole Kustomization on any YAML file that is
//!   not a Kubernetes object, and the default source ignores do not cover arbitrary
//!   dot-directories (`users-and-peers.md` §3.2);
//! - Argo CD parses every `.yaml`/`.json` under a directory source, including dot-directories
//!   (§3.1).
//!
//! Kratix's own flat-mode `.kratix/` state files sit *inside* the destination path and need a
//! `.sourceignore` entry; ours need nothing. Caveat: a Destination whose path is the repository
//! root (`spec.path` and `destination.path` both empty) would still see `.promised/`; the main
//! crate warns about that layout.
//!
//! # Drift
//!
//! Before writing, the store compares the branch head's blob at every indexed path with the
//! indexed git blob id. A mismatch (someone edited or deleted one of our files) is reported in
//! [`ApplyOutcome::drift`] and repaired in the same commit: with the desired content when the
//! change set covers that placement, otherwise with the indexed blob from history. Files we
//! never wrote are never touched, unless a placement now claims their exact path.

#![forbid(unsafe_code)]

pub mod crash;
pub mod error;
pub mod git;
mod index;
mod message;
pub mod net;
mod plan;
pub mod s3;
pub mod secrets;
pub mod spec;

pub use error::Error;
pub use git::{GitOptions, GitStateStore};
pub use index::{IndexEntry, Sha256Sum, index_path, shard_of};
pub use net::NetworkTimeouts;
pub use plan::{validate_path, validate_relative_path};
pub use s3::S3StateStore;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Who produced a file: the Kratix WorkPlacement identity, flattened.
///
/// `key` is what the index groups by; the other fields are provenance for commit trailers and
/// for people reading the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    /// Unique placement key, for example
    /// `worker-1/resources/default/redis/example/instance-configure/5058f`.
    pub key: String,
    /// Destination name; selects the index directory `.promised/index/<destination>/`.
    /// Must be a single path segment.
    pub destination: String,
    /// Promise name; empty for files no Promise produced (Destination canary files, the
    /// `aggregatedYAML` file), which get no `Promised-Promise:` trailer.
    pub promise: String,
    /// `namespace/name` of the resource request, `None` for Promise-level (dependency) output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Pipeline name, `None` for static dependencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
}

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// Store-relative path, `/`-separated, already including `GitStateStore.spec.path`.
    /// No leading `/`, no `.`/`..`/empty segments, not under `.promised/` or `.git`.
    pub path: String,
    /// The exact bytes to store.
    pub content: Vec<u8>,
}

/// The complete desired file set of one owner. Files the index attributes to this owner that are
/// not listed here are deleted (Kratix: "remove the whole `<id5>/` dir, then write").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementWrite {
    /// Who produces these files (shared with the index entries a plan makes of them).
    pub owner: std::sync::Arc<Owner>,
    /// All files of that owner.
    pub files: Vec<FileWrite>,
}

/// Metadata for the commit message (see [`CommitMeta::subject_template`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitMeta {
    /// The config-repo commit the change was computed from; becomes the
    /// `Promised-Config-Commit:` trailer and `{config_short}` (first 7 characters).
    pub config_commit: Option<String>,
    /// Subject template. Placeholders: `{updated}`, `{deleted}`, `{unchanged}`, `{restored}`,
    /// `{placements}`, `{config}`, `{config_short}`, `{promises}` and `{requests}` (the first
    /// three names of the changed Promises and requests, `<promise>/<namespace>/<name>`, then
    /// `+N`), `{promise_count}`, `{request_count}`. Default:
    /// `promised: {updated} updated, {deleted} deleted (config {config_short})`.
    pub subject_template: Option<String>,
    /// Extra free text appended to the body before the trailers.
    pub note: Option<String>,
    /// What the config was when there is no `config_commit` (a plain directory, e.g.
    /// `directory /srv/platform`): `{config}` and `{config_short}` in the subject. `None`:
    /// `unknown`.
    pub config_label: Option<String>,
    /// `<image>@sha256:<hex>` of every pipeline image whose output this change writes (the
    /// image runtime's provenance); one `Promised-Image:` trailer each, sorted.
    pub images: Vec<String>,
    /// `Name <email>` of the config commit's author: the `Promised-Requested-By:` trailer.
    pub requested_by: Option<String>,
    /// `<principal> <key fingerprint>` of the config commit's verified signature: the
    /// `Promised-Signed-By:` trailer.
    pub signed_by: Option<String>,
    /// More trailers, whole `Key: value` lines (e.g. `Promised-Parent: <child> -> <parent>`
    /// for a compound Promise's children, `Promised-Rollout: …` for a rollout's steps), written
    /// after the others, sorted and without duplicates.
    pub trailers: Vec<String>,
}

/// One atomic unit of change across any number of placements and destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Placements to (re)write, each with its complete file set.
    pub writes: Vec<PlacementWrite>,
    /// Owner keys whose files are all deleted (and dropped from the index).
    pub removals: Vec<String>,
    /// Commit message inputs.
    pub meta: CommitMeta,
}

/// How an owned file drifted from what we wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DriftKind {
    /// The file exists with other content.
    Modified,
    /// The file is gone.
    Deleted,
}

/// One owned file that someone changed behind our back; it was restored by the same apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// Store-relative path.
    pub path: String,
    /// Who owns it according to the index.
    pub owner: Owner,
    /// What happened to it.
    pub kind: DriftKind,
}

/// The result of [`StateStore::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The new version (for Git, the commit SHA in hex); `None` when nothing changed and no
    /// commit was made.
    pub version: Option<String>,
    /// The store's version once this apply is done: [`Self::version`] when it wrote, else the
    /// version it found (the branch head, the index generation); `None` for an empty store.
    /// A caller that records versions compares it with the last one it recorded: they differ
    /// when an earlier write landed but was never recorded (its process was killed between
    /// the write and recording it, see the crash loop in docs/reliability.md).
    pub head: Option<String>,
    /// Files written (added, changed or restored).
    pub written: usize,
    /// Files deleted (pruned or removed).
    pub deleted: usize,
    /// Desired files already present with identical content.
    pub unchanged: usize,
    /// Owned files found edited or deleted by someone else, all restored by this apply.
    pub drift: Vec<Drift>,
    /// How many times the change was rebuilt because the branch moved (0 = first try won).
    pub conflicts_retried: u32,
}

/// A file read from a state store by [`StateStore::read_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Store-relative path (including the store's `spec.path`).
    pub path: String,
    /// Its content.
    pub content: Vec<u8>,
}

/// Whether `path` is under the directory `prefix` (`""`: everything) and ends with one of
/// `suffixes` (any, when empty).
pub(crate) fn wanted(path: &str, prefix: &str, suffixes: &[String]) -> bool {
    let prefix = prefix.trim_matches('/');
    let under = prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'));
    under && (suffixes.is_empty() || suffixes.iter().any(|s| path.ends_with(s.as_str())))
}

/// One state store. Implementations serialise their own writes; callers may share it via `Arc`.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Write-permission check (Kratix `ValidatePermissions`: an empty `git push`). promised runs
    /// it when it opens a store, before the first write: in every `promised reconcile`, and in
    /// `promised run` at start-up and whenever the store's spec changes (`/readyz` reports it).
    /// Git: a fetch, then the handshake of a push (the server's `git-receive-pack` ref
    /// advertisement, as `git push --dry-run` does, in process), which the server never runs
    /// hooks for, so a pre-receive hook or branch protection that refuses real pushes is
    /// only reported by the first [`StateStore::apply`] (as in Kratix). Local repositories: a
    /// probe file is created in `objects/` and `refs/heads/`. S3: a conditional write of a
    /// probe object, then the index is read.
    ///
    /// # Errors
    /// [`Error::Auth`], [`Error::Transport`], [`Error::Rejected`], [`Error::Io`].
    async fn check(&self) -> Result<(), Error>;

    /// What the ownership index at the current branch head says we own under `prefix`
    /// (a store-relative directory such as a destination path; `""` for everything), sorted by
    /// path.
    ///
    /// # Errors
    /// Transport, auth and [`Error::CorruptIndex`] errors.
    async fn owned(&self, prefix: &str) -> Result<Vec<IndexEntry>, Error>;

    /// Apply `changes` as one atomic version. Retries lost races up to the configured bound by
    /// rebuilding from desired state on the new head (never a textual rebase).
    ///
    /// # Errors
    /// [`Error::Conflict`] when retries ran out, [`Error::Rejected`] with the server's text,
    /// [`Error::Auth`], [`Error::InvalidPath`], transport and I/O errors.
    async fn apply(&self, changes: &ChangeSet) -> Result<ApplyOutcome, Error>;

    /// [`StateStore::apply`] of a change set the caller gives away: a store that hands the
    /// work to a blocking thread (Git) then needs no copy of every file's content (5 MB of
    /// the daemon's peak at 10,000 requests, docs/benchmarks.md "Memory", fourth round).
    ///
    /// # Errors
    /// Those of [`StateStore::apply`].
    async fn apply_shared(
        &self,
        changes: std::sync::Arc<ChangeSet>,
    ) -> Result<ApplyOutcome, Error> {
        self.apply(&changes).await
    }

    /// Every file under `prefix` (a store-relative directory including the store's
    /// `spec.path`; `""` for everything) whose path ends with one of `suffixes` (all files
    /// when empty), with its content, sorted by path, at the current head (Git: fetched
    /// first; S3: listed now). Our own metadata (`.promised/`) is never listed. For files
    /// others write into a store, such as HealthRecords from health agents; `apply` never
    /// touches files it does not own, so reading them does not disturb writes.
    ///
    /// # Errors
    /// Transport, auth and I/O errors naming the store.
    async fn read_files(&self, prefix: &str, suffixes: &[&str]) -> Result<Vec<StoredFile>, Error>;

    /// Whether [`StateStore::apply`] would accept a file at `path` (store-relative, including
    /// the store's `spec.path`). The same rule `apply` checks every path of a change set with
    /// before it writes anything, so a caller can leave out the one object whose path would
    /// make the whole apply fail. Git: [`validate_path`]; S3 adds the key rules.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] naming the path and the reason.
    fn check_path(&self, path: &str) -> Result<(), Error> {
        validate_path(path)
    }

    /// How much longer an [`StateStore::apply`] with nothing to write would read nothing
    /// from the store: the store trusts what it last saw of it until then, so it would find
    /// no drift before that. `None` (the default): every apply reads the store, so a caller
    /// that skips an apply would miss drift. Git (remote): the rest of
    /// `GitOptions::trust_head_for` since the branch head was last seen; S3 and local
    /// repositories: `None`. The daemon answers a repeated trigger from its last pass only
    /// within this time (`promised::reconcile`, quiet passes).
    fn quiet_for(&self) -> Option<std::time::Duration> {
        None
    }
}
