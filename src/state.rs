//! The daemon's state directory: what was applied before, so a pass can skip unchanged
//! requests, keep placements sticky and run delete pipelines for objects that left the config
//! repo, across restarts.
//!
//! Layout of `<state dir>`:
//!
//! | path | what |
//! |---|---|
//! | `state.json` | [`State`]: per Promise and request the input hash, placements, status, last object |
//! | `blobs/<sha256>` | content of every file promised placed (content-addressed cache) |
//! | `stores/…` | persistent clones of the state stores (owned by `statestores`) |
//!
//! Guarantees: `state.json` is replaced atomically (write to a temporary file, fsync, rename),
//! so a crash leaves either the old or the new state. A missing or unreadable `state.json`
//! is not fatal: [`State::load`] reports it and the engine rebuilds placements from the state
//! stores' ownership indexes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::status::ObjectStatus;

/// Version of the `state.json` format.
pub const STATE_VERSION: u32 = 1;

/// Everything promised remembers between passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// Per Promise name.
    #[serde(default)]
    pub promises: BTreeMap<String, ObjectRecord>,
    /// Per request key `<promise>/<namespace>/<name>`.
    #[serde(default)]
    pub requests: BTreeMap<String, ObjectRecord>,
    /// Per Destination name: what was registered (canary files written).
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationRecord>,
    /// Config commit of the last pass (Git sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_commit: Option<String>,
}

/// What promised remembers about one Promise or request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRecord {
    /// Hash of every input of the configure workflow; unchanged ⇒ no re-run.
    pub input_hash: String,
    /// True when the last configure workflow ran to completion (not failed, not suspended).
    pub completed: bool,
    /// The object as last admitted (`/kratix/input/object.yaml` for a delete pipeline after
    /// the object left the config repo).
    pub object: Value,
    /// Promises: the last valid Promise document (its delete workflow outlives the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise: Option<Value>,
    /// Promises: repository-relative folder of `promise.yaml` (mounted at `/promise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise_dir: Option<String>,
    /// Cached output of the last successful run of each pipeline (placement is recomputed
    /// from it on every pass without re-running anything).
    #[serde(default)]
    pub outputs: Vec<OutputRecord>,
    /// Where the output went (as last written).
    #[serde(default)]
    pub placements: Vec<PlacementRecord>,
    /// Hash of the request's own spec (tells a Promise edit from a request edit).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spec_hash: String,
    /// Consecutive failed runs (exponential backoff in the daemon).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// RFC 3339 time before which a failed workflow is not retried (daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// The object left the config repo; the record goes once its files are pruned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// Last status.
    pub status: ObjectStatus,
}

/// One placement: a workload group of one pipeline on one Destination (a Kratix
/// WorkPlacement).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementRecord {
    /// Owner key in the state store index (unique per store).
    pub key: String,
    /// `<kind>/<name>` of the state store.
    pub store: String,
    /// Destination name.
    pub destination: String,
    /// Pipeline name (`""` for static dependencies).
    pub pipeline: String,
    /// Workload group id (hex md5 of its directory).
    pub group_id: String,
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
    pub pipeline: String,
    /// Files relative to `/kratix/output`, with the sha256 of their content (in `blobs/`).
    pub files: Vec<FileRecord>,
    /// Parsed `destination-selectors.yaml`.
    #[serde(default)]
    pub selectors: Vec<crate::scheduler::WorkflowSelector>,
}

/// One placed file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileRecord {
    /// Store-relative path.
    pub path: String,
    /// Hex sha256 of the content.
    pub sha256: String,
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
    /// `state.json` is not valid.
    #[error("state file {path} is corrupt ({message}); it will be rebuilt from the state stores")]
    Corrupt {
        /// File.
        path: String,
        /// Parse error.
        message: String,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
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
        }
        Ok(StateDir { root })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where state store clones live.
    pub fn stores_dir(&self) -> PathBuf {
        self.root.join("stores")
    }

    fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Loads `state.json`. A missing file is an empty state; a corrupt one is an error the caller
    /// reports before starting from an empty state.
    pub fn load(&self) -> Result<State, StateError> {
        let path = self.state_file();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
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
        let state: State = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Corrupt {
                path: path.display().to_string(),
                message: format!(
                    "format version {} (expected {STATE_VERSION})",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Replaces `state.json` atomically.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(state).expect("state serialises: plain data");
        write_atomic(&self.state_file(), &bytes)
    }

    /// Stores `content` under its sha256; returns the hex digest.
    pub fn put_blob(&self, content: &[u8]) -> Result<String, StateError> {
        let sha = sha256_hex(content);
        let path = self.root.join("blobs").join(&sha);
        if !path.exists() {
            write_atomic(&path, content)?;
        }
        Ok(sha)
    }

    /// True when the blob is in the cache.
    pub fn has_blob(&self, sha256: &str) -> bool {
        self.root.join("blobs").join(sha256).is_file()
    }

    /// Reads a blob stored by [`StateDir::put_blob`].
    pub fn get_blob(&self, sha256: &str) -> Result<Vec<u8>, StateError> {
        let path = self.root.join("blobs").join(sha256);
        std::fs::read(&path).map_err(|source| StateError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` to `path` via a temporary file in the same directory, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path().join("s")).unwrap();
        let empty = dir.load().unwrap();
        assert!(empty.requests.is_empty());
        let mut st = empty.clone();
        st.config_commit = Some("abc".into());
        dir.save(&st).unwrap();
        assert_eq!(dir.load().unwrap(), st);
        std::fs::write(tmp.path().join("s/state.json"), b"{not json").unwrap();
        assert!(matches!(dir.load(), Err(StateError::Corrupt { .. })));
        let sha = dir.put_blob(b"hello").unwrap();
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(dir.get_blob(&sha).unwrap(), b"hello");
    }
}
