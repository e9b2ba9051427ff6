//! The daemon's state directory: what was applied before, so a pass can skip unchanged
//! requests, keep placements sticky and run delete pipelines for objects that left the config
//! repo, across restarts.
//!
//! Layout of `<state dir>`:
//!
//! | path | what |
//! |---|---|
//! | `state.json` | [`State`] snapshot: per Promise and request the input hash, placements, status, last object |
//! | `state.journal` | changes since the snapshot: one JSON line per pass with the records it changed |
//! | `blobs/<sha256>` | content of every file promised placed (content-addressed cache) |
//! | `stores/…` | persistent clones of the state stores (owned by `statestores`) |
//!
//! Guarantees: `state.json` is replaced atomically (write to a temporary file, fsync, rename),
//! so a crash leaves either the old or the new snapshot. A pass that changed a few records
//! appends them to `state.journal` (one line, then `fdatasync`) instead of rewriting every
//! record: at 10,000 requests the snapshot is ~25 MB, a one-request pass appends ~5 KB. The
//! journal names the snapshot it extends ([`State::generation`]); a journal of another
//! snapshot, or a torn last line after a crash, is ignored (that pass's work is redone). When
//! the journal outgrows the snapshot, the next save writes a new snapshot and drops it.
//! A missing or unreadable `state.json` is not fatal: [`StateDir::load`] reports it and the
//! engine rebuilds placements from the state stores' ownership indexes. Blobs are written
//! without fsync and verified (sha256) when read: a blob torn by a crash reads as missing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::status::{StatusRow, Text};

mod compact;
mod document;
mod hash_text;
mod journal;
mod record;
pub use compact::CompactValue;
pub use document::StoredDocument;
pub use hash_text::HashText;

/// Version of the `state.json` format.
pub const STATE_VERSION: u32 = 1;

/// Records by key, boxed: B-tree nodes of inline 800-byte records stood half empty (8 MB).
pub type Records = BTreeMap<String, Box<ObjectRecord>>;

/// Everything promised remembers between passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// Per Promise name.
    #[serde(default)]
    pub promises: Records,
    /// Per request key `<promise>/<namespace>/<name>`.
    #[serde(default)]
    #[serde(deserialize_with = "request_records")]
    pub requests: Records,
    /// Per Destination name: what was registered (canary files written).
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationRecord>,
    /// Config commit of the last pass (Git sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_commit: Option<String>,
    /// Per config file and document index: the last good documents of its Destinations and
    /// state stores, so a
    /// file that stops loading keeps them (a bad file never prunes; see
    /// [`crate::reconcile::held`]). Promises and requests are kept in their own records.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub infra_documents: BTreeMap<String, BTreeMap<usize, Value>>,
    /// Identifies the snapshot on disk; `state.journal` extends the snapshot with the same
    /// generation. Set by [`StateDir::save`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generation: String,
}

impl State {
    /// The status rows of every object: Promises first, then requests, each by key (what
    /// `promised status` prints).
    pub fn status_rows(&self) -> Vec<StatusRow> {
        self.promises
            .iter()
            .chain(self.requests.iter())
            .map(|(k, r)| StatusRow {
                key: k.clone(),
                status: (*r.status).clone(),
            })
            .collect()
    }
}

/// Which parts of a [`State`] a pass changed (what [`StateDir::save_changes`] writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Everything may have changed: write a whole snapshot.
    pub all: bool,
    /// Promise keys whose record changed or was removed.
    pub promises: BTreeSet<String>,
    /// Request keys whose record changed or was removed.
    pub requests: BTreeSet<String>,
    /// `destinations`, `config_commit` or `infra_documents` changed.
    pub globals: bool,
    /// Of those, only `config_commit` changed (a pass repeated at the new commit would change
    /// none of them: `reconcile::quiet`).
    pub commit_only: bool,
}

impl Dirty {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all && !self.globals && self.promises.is_empty() && self.requests.is_empty()
    }
}

/// One line of `state.journal`: the records a pass changed (`None` = removed).
#[derive(Debug, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(serialize = "P: Serialize", deserialize = "P: Deserialize<'de>")
)]
struct JournalEntry<P = ObjectRecord> {
    generation: String,
    #[serde(default)]
    promises: BTreeMap<String, Option<P>>,
    #[serde(default, deserialize_with = "request_records")]
    requests: BTreeMap<String, Option<P>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destinations: Option<BTreeMap<String, DestinationRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_commit: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    infra_documents: Option<BTreeMap<String, BTreeMap<usize, Value>>>,
}

/// What promised remembers about one Promise or request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRecord {
    /// Hash of every input of the configure workflow; unchanged ⇒ no re-run.
    pub input_hash: HashText,
    /// True when the last configure workflow ran to completion (not failed, not suspended).
    pub completed: bool,
    /// The object as last admitted (`/kratix/input/object.yaml` for a delete pipeline after
    /// the object left the config repo).
    /// Read from `state.json` as text, parsed on first use ([`StoredDocument`]).
    #[serde(deserialize_with = "document")]
    pub object: StoredDocument,
    /// Promises: the last valid Promise document (its delete workflow outlives the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise: Option<Value>,
    /// Promises: repository-relative folder of `promise.yaml` (mounted at `/promise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise_dir: Option<String>,
    /// Cached output of the last successful run of each pipeline (placement is recomputed
    /// from it on every pass without re-running anything).
    #[serde(default, deserialize_with = "outputs")]
    pub outputs: Vec<OutputRecord>,
    /// Where the output went (as last written).
    #[serde(default)]
    pub placements: Vec<PlacementRecord>,
    /// Hash of the request's own spec (tells a Promise edit from a request edit).
    #[serde(default, skip_serializing_if = "HashText::is_empty")]
    pub spec_hash: HashText,
    /// Consecutive failed runs (exponential backoff in the daemon).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// RFC 3339 time before which a failed workflow is not retried (daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// The object left the config repo; the record goes once its files are pruned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// Set when a pass left the request fully reconciled: the hash of its placement context
    /// (Destinations, the Promise's selectors and availability). A later pass with the same
    /// context, the same input hash, the request at the same place in the repo
    /// (`status.source`) and no re-run due skips the request entirely (no placement, no
    /// status change, nothing written).
    #[serde(default, skip_serializing_if = "HashText::is_empty")]
    pub steady: HashText,
    /// Inputs (spec, binding, version) of an upgrade that failed: while they stay the same,
    /// the upgrade is not tried again (`reconcile::versions`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failed_upgrade: String,
    /// Last status.
    pub status: crate::status::SharedStatus,
}

std::thread_local! {
    /// Set by [`StateDir::load_without_documents`] on its thread while it parses.
    static SKIP_DOCUMENTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set while the request records of a snapshot or journal line are parsed (Promise
    /// records keep their documents: the console's Promise page shows them).
    static IN_REQUESTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a request record's document and outputs are skipped now.
fn skipping() -> bool {
    SKIP_DOCUMENTS.with(std::cell::Cell::get) && IN_REQUESTS.with(std::cell::Cell::get)
}

/// The request records of a snapshot or journal line (marked for [`skipping`]).
fn request_records<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    let before = IN_REQUESTS.with(|f| f.replace(true));
    let records = BTreeMap::deserialize(d);
    IN_REQUESTS.with(|f| f.set(before));
    records
}

/// `ObjectRecord::object`, or `null` without reading it for a request record under
/// [`StateDir::load_without_documents`].
fn document<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StoredDocument, D::Error> {
    if skipping() {
        serde::de::IgnoredAny::deserialize(d)?;
        return Ok(StoredDocument::default());
    }
    StoredDocument::deserialize(d)
}

/// `ObjectRecord::outputs`, or empty without parsing them for a request record under
/// [`StateDir::load_without_documents`].
fn outputs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<OutputRecord>, D::Error> {
    if skipping() {
        serde::de::IgnoredAny::deserialize(d)?;
        return Ok(Vec::new());
    }
    Vec::<OutputRecord>::deserialize(d)
}

/// One placement: a workload group of one pipeline on one Destination (a Kratix
/// WorkPlacement).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementRecord {
    /// Owner key in the state store index (unique per store).
    pub key: String,
    /// `<kind>/<name>` of the state store (shared: [`Text`]).
    pub store: Text,
    /// Destination name (shared).
    pub destination: Text,
    /// Pipeline name (`""` for static dependencies; shared).
    pub pipeline: Text,
    /// Workload group id (hex md5 of its directory).
    pub group_id: Text,
    /// Store-relative directory of the placement.
    pub dir: String,
    /// The Destination no longer matches (kept, not moved).
    #[serde(default)]
    pub misplaced: bool,
    /// Files: store-relative path and sha256 (content in `blobs/`).
    pub files: Vec<FileRecord>,
}

/// One pipeline's scheduled output, cached so placement can be recomputed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputRecord {
    /// Pipeline name (`""` for static `spec.dependencies`).
    pub pipeline: Text,
    /// Files relative to `/kratix/output`, with the sha256 of their content (in `blobs/`).
    pub files: Vec<FileRecord>,
    /// Parsed `destination-selectors.yaml`.
    #[serde(default)]
    pub selectors: Vec<crate::scheduler::WorkflowSelector>,
    /// Whether some YAML file of the output mentions `HealthDefinition`: the health stage
    /// reads the files of such outputs only (`health::checks::declared`). `None` in records
    /// written before promised kept it: their files are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<bool>,
}

/// Whether the output file `path` with content `bytes` may declare a health check: a YAML
/// file that mentions `HealthDefinition` (what [`OutputRecord::health`] records).
pub fn may_declare_health(path: &str, bytes: &[u8]) -> bool {
    const KIND: &[u8] = b"HealthDefinition";
    (path.ends_with(".yaml") || path.ends_with(".yml"))
        && bytes.windows(KIND.len()).any(|w| w == KIND)
}

/// One placed file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileRecord {
    /// Store-relative path.
    pub path: String,
    /// Hex sha256 of the content.
    pub sha256: std::sync::Arc<str>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A registered Destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRecord {
    /// `<kind>/<name>` of its state store.
    pub store: String,
    /// `spec.cleanup == all`: remove its files when it leaves the config repo.
    pub cleanup_all: bool,
    /// Owner key of its canary files, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_key: Option<String>,
    /// Hash of the canary files last written (paths and content): unchanged canaries are
    /// not sent again (their drift is repaired through the ownership index).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub canary_hash: String,
}

/// Why the state could not be read; the engine then rebuilds from the state stores.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O on the state directory.
    #[error("state directory {path}: {source}")]
    Io {
        /// File or directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A directory opened with [`StateDir::open_read_only`] does not exist.
    #[error("state directory {path} does not exist")]
    Missing {
        /// The directory.
        path: String,
    },
    /// Another process reconciles from this state directory ([`StateDir::lock`]).
    #[error(
        "state directory {path} is in use by another promised process ({holder}); stop it, or give this one its own --state-dir"
    )]
    InUse {
        /// The directory.
        path: String,
        /// What the holder wrote in the lock file (`pid 1234: promised run`).
        holder: String,
    },
    /// `state.json` is not valid.
    #[error("state file {path} is corrupt ({message}); it will be rebuilt from the state stores")]
    Corrupt {
        /// File.
        path: String,
        /// Parse error.
        message: String,
    },
}

/// A state directory taken by this process ([`StateDir::lock`]); released on drop.
#[derive(Debug)]
pub struct StateLock {
    /// The locked descriptor: the lock lives as long as it is open.
    _file: std::fs::File,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// Opened by [`StateDir::open_read_only`]: loading never writes (a torn journal is not
    /// cut, as its writer may still be appending).
    read_only: bool,
}

impl StateDir {
    /// Opens (creating if needed) the state directory at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        for sub in ["", "blobs", "stores"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(|source| StateError::Io {
                path: p.display().to_string(),
                source,
            })?;
            // What killed processes left ([`crate::tmpfiles`]).
            crate::tmpfiles::remove_stale(&p);
        }
        // The pipeline log tails of the web console (written with `write_atomic` too), and
        // the parse cache of `promised reconcile` (`config::parsed`).
        crate::tmpfiles::remove_stale(&root.join("logs"));
        crate::tmpfiles::remove_stale(&root.join("config-cache"));
        Ok(StateDir {
            root,
            read_only: false,
        })
    }

    /// Opens an existing state directory to read it (`promised status`): neither it nor
    /// anything in it is created or changed. Errors when `root` does not exist or is not a
    /// directory. Only [`StateDir::load`] is meant for such a directory.
    pub fn open_read_only(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        let path = root.display().to_string();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(StateDir {
                root,
                read_only: true,
            }),
            Ok(_) => Err(StateError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StateError::Missing { path }),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the directory for this process's engine: an exclusive `flock` on `<root>/lock`,
    /// held until the [`StateLock`] is dropped (the kernel releases it when a process dies),
    /// with this process's id and command line in the file for the message another one gets.
    /// Two engines writing one state directory would interleave their journals and records.
    ///
    /// Errors: [`StateError::InUse`] naming the holder; [`StateError::Io`].
    pub fn lock(&self) -> Result<StateLock, StateError> {
        let path = self.root.join("lock");
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        // Locked through a read-only descriptor: a file held open for writing would keep the
        // file system from being remounted read-only under the daemon.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let file = std::fs::File::open(&path).map_err(io)?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            return Err(StateError::InUse {
                path: self.root.display().to_string(),
                holder: if holder.is_empty() {
                    "unknown process".into()
                } else {
                    holder.to_string()
                },
            });
        }
        let args: Vec<String> = std::env::args().take(2).collect();
        let line = format!("pid {}: {}\n", std::process::id(), args.join(" "));
        std::fs::write(&path, line).map_err(io)?;
        Ok(StateLock { _file: file })
    }

    /// Where state store clones live.
    pub fn stores_dir(&self) -> PathBuf {
        self.root.join("stores")
    }

    fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    fn journal_file(&self) -> PathBuf {
        self.root.join("state.journal")
    }

    /// Loads `state.json`. A missing file is an empty state; a corrupt one is an error the caller
    /// reports before starting from an empty state.
    pub fn load(&self) -> Result<State, StateError> {
        self.load_with(false)
    }

    /// [`StateDir::load`] without what only the engine needs: every request record's
    /// `object` is `null` and its `outputs` empty, and `state.json` is parsed as it is read instead of
    /// read whole first. For the web console's snapshot, which the daemon re-reads after
    /// each pass next to its own state: at 10,000 requests the full load holds the 25 MB file
    /// and every request document at once (docs/benchmarks.md, "Memory").
    pub fn load_without_documents(&self) -> Result<State, StateError> {
        /// Clears the flag also when parsing panics (the thread may load the engine's state
        /// next).
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                SKIP_DOCUMENTS.with(|s| s.set(false));
                IN_REQUESTS.with(|s| s.set(false));
            }
        }
        SKIP_DOCUMENTS.with(|s| s.set(true));
        let _reset = Reset;
        self.load_with(true)
    }

    fn load_with(&self, streaming: bool) -> Result<State, StateError> {
        let path = self.state_file();
        let corrupt = |e: serde_json::Error| StateError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let read = if streaming {
            std::fs::File::open(&path).map(|f| {
                serde_json::from_reader(std::io::BufReader::with_capacity(1 << 16, f))
                    .map_err(corrupt)
            })
        } else {
            std::fs::read(&path).map(|b| serde_json::from_slice(&b).map_err(corrupt))
        };
        let state: State = match read {
            Ok(s) => s?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: STATE_VERSION,
                    ..State::default()
                });
            }
            Err(source) => {
                return Err(StateError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let mut state: State = state;
        if state.version != STATE_VERSION {
            return Err(StateError::Corrupt {
                path: path.display().to_string(),
                message: format!(
                    "format version {} (expected {STATE_VERSION})",
                    state.version
                ),
            });
        }
        self.replay_journal(&mut state);
        Ok(state)
    }

    /// Applies `state.journal` to the snapshot it extends. A journal of another snapshot is
    /// ignored; so is a line that does not parse (a write torn by a crash: that pass's
    /// changes are redone) and everything after it.
    fn replay_journal(&self, state: &mut State) {
        let path = self.journal_file();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        // Later appends must not land behind a torn line: cut the journal where it stops
        // making sense (or drop it when it belongs to another snapshot).
        let truncate = |len: usize| {
            if self.read_only {
                return;
            }
            let res = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(len as u64));
            if let Err(e) = res {
                tracing::warn!(file = %path.display(), error = %e, "cannot truncate the state journal");
            }
        };
        let mut offset = 0;
        for (n, line) in text.split_inclusive('\n').enumerate() {
            let parsed = if line.ends_with('\n') {
                serde_json::from_str::<JournalEntry>(line).map_err(|e| e.to_string())
            } else {
                Err("incomplete line".to_string())
            };
            let entry = match parsed {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(file = %path.display(), line = n + 1, error = %e,
                        "ignoring the rest of the state journal (torn write?)");
                    truncate(offset);
                    return;
                }
            };
            if state.generation.is_empty() || entry.generation != state.generation {
                tracing::warn!(file = %path.display(), "ignoring a state journal of another snapshot");
                truncate(0);
                return;
            }
            offset += line.len();
            for (map, changes) in [
                (&mut state.promises, entry.promises),
                (&mut state.requests, entry.requests),
            ] {
                for (k, v) in changes {
                    match v {
                        Some(r) => map.insert(k, Box::new(r)),
                        None => map.remove(&k),
                    };
                }
            }
            if let Some(d) = entry.destinations {
                state.destinations = d;
            }
            if let Some(c) = entry.config_commit {
                state.config_commit = c;
            }
            if let Some(d) = entry.infra_documents {
                state.infra_documents = d;
            }
        }
    }

    /// Writes a whole snapshot: `state.json` replaced atomically (with a new
    /// [`State::generation`]), then the journal removed. `state.generation` is updated.
    pub fn save(&self, state: &mut State) -> Result<(), StateError> {
        state.generation = new_generation();
        // Streamed to the file: at 10,000 requests the snapshot is ~25 MB, which would
        // otherwise be held in memory a second time.
        let path = self.state_file();
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut tmp = crate::tmpfiles::create_in(&self.root).map_err(io)?;
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
            serde_json::to_writer(&mut w, &*state).map_err(|e| io(e.into()))?;
            w.flush().map_err(io)?;
        }
        tmp.as_file().sync_all().map_err(io)?;
        statestores::crash::point("state-save");
        tmp.persist(&path).map_err(|e| io(e.error))?;
        match std::fs::remove_file(self.journal_file()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                path: self.journal_file().display().to_string(),
                source,
            }),
        }
    }

    /// Persists what a pass changed: nothing when `dirty` is empty; one journal line when the
    /// journal stays smaller than the snapshot; a whole snapshot ([`StateDir::save`]) when
    /// `dirty.all`, when there is no snapshot yet, when the journal has outgrown it, or when
    /// the line would be longer than `journal::LINE_MAX` (4 MiB).
    pub fn save_changes(&self, state: &mut State, dirty: &Dirty) -> Result<(), StateError> {
        if dirty.is_empty() {
            return Ok(());
        }
        let snapshot_len = std::fs::metadata(self.state_file()).map_or(0, |m| m.len());
        if dirty.all || state.generation.is_empty() || snapshot_len == 0 {
            return self.save(state);
        }
        let entry = JournalEntry::<&ObjectRecord> {
            generation: state.generation.clone(),
            promises: journal::pick(&state.promises, &dirty.promises),
            requests: journal::pick(&state.requests, &dirty.requests),
            destinations: dirty.globals.then(|| state.destinations.clone()),
            config_commit: dirty.globals.then(|| state.config_commit.clone()),
            infra_documents: dirty.globals.then(|| state.infra_documents.clone()),
        };
        let path = self.journal_file();
        let journal_len = std::fs::metadata(&path).map_or(0, |m| m.len());
        let limit = snapshot_len
            .saturating_sub(journal_len)
            .min(journal::LINE_MAX);
        let Some(line) = journal::line(&entry, limit) else {
            return self.save(state);
        };
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(&line).map_err(io)?;
        statestores::crash::point("state-journal");
        f.sync_data().map_err(io)
    }

    /// Stores `content` under its sha256; returns the hex digest. Not fsynced: the blob cache
    /// is verified on read ([`StateDir::get_blob`]), so a torn blob reads as missing.
    pub fn put_blob(&self, content: &[u8]) -> Result<String, StateError> {
        let sha = sha256_hex(content);
        let path = self.root.join("blobs").join(&sha);
        if !path.exists() {
            let io = |source| StateError::Io {
                path: path.display().to_string(),
                source,
            };
            let mut tmp = crate::tmpfiles::create_in(&self.root.join("blobs")).map_err(io)?;
            tmp.write_all(content).map_err(io)?;
            tmp.persist(&path).map_err(|e| io(e.error))?;
        }
        Ok(sha)
    }

    /// True when the blob is in the cache (not verified: [`StateDir::get_blob`] does).
    pub fn has_blob(&self, sha256: &str) -> bool {
        self.root.join("blobs").join(sha256).is_file()
    }

    /// Reads a blob stored by [`StateDir::put_blob`]. Errors: I/O (including a missing blob),
    /// and content that does not match its sha256 (reported as `InvalidData`).
    pub fn get_blob(&self, sha256: &str) -> Result<Vec<u8>, StateError> {
        let path = self.root.join("blobs").join(sha256);
        let bytes = std::fs::read(&path).map_err(|source| StateError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if sha256_hex(&bytes) != sha256 {
            return Err(StateError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "content does not match its sha256 (torn write?)",
                ),
            });
        }
        Ok(bytes)
    }
}

/// A fresh snapshot id: nanoseconds since the epoch and the process id, in hex.
fn new_generation() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

/// Hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename, without
/// waiting for the disk: readers see the old or the new content, never a mix, but after a power
/// loss the file may be empty or missing. For what may be lost and is rebuilt (the web
/// console's log tails): an `fsync` per workflow run held up the loop that absorbs results
/// (docs/benchmarks.md, "Cold pass"). Errors: I/O on the directory or the file.
pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    replace_file(path, bytes, false)
}

/// Writes `bytes` to `path` via a temporary file in the same directory, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    replace_file(path, bytes, true)
}

fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = crate::tmpfiles::create_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    if durable {
        tmp.as_file().sync_all().map_err(io)?;
    }
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests;
