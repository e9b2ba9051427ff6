//! The snapshot of the state directory every page is built from, cached until one of its
//! files changes ([`fingerprint`]): a page at 10,000 requests then costs its rendering, not
//! reading `state.json` again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::records::{self, PassRecord};
use crate::config::verify::Refused;
use crate::infra::InfraStatus;
use crate::rollout::Rollouts;
use crate::state::{ObjectRecord, State, StateDir};

/// Files of the state directory whose change makes a new snapshot.
pub const WATCHED: [&str; 6] = [
    "state.json",
    "state.journal",
    crate::infra::FILE,
    crate::rollout::ROLLOUTS_FILE,
    records::LAST_PASS_FILE,
    crate::config::verify::REFUSED_FILE,
];

/// Everything the pages show, read from one state directory at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// [`fingerprint`] of the files it was read from.
    pub version: String,
    /// Promise and request records (shared with the snapshot before when `state.json` and
    /// `state.journal` did not change).
    pub state: Arc<State>,
    /// Destinations and state stores.
    pub infra: InfraStatus,
    /// UpgradePlans' rollouts.
    pub rollouts: Rollouts,
    /// The config commit refused by verification, if any.
    pub refused: Option<Refused>,
    /// The last pass of `promised run`.
    pub last_pass: Option<PassRecord>,
    /// Parent request key → its children's keys (compound Promises).
    pub children: Arc<BTreeMap<String, Vec<String>>>,
    /// Promise name → its requests' keys.
    pub by_promise: Arc<BTreeMap<String, Vec<String>>>,
    /// [`fingerprint`] of `state.json` and `state.journal` alone.
    state_version: String,
}

impl Snapshot {
    /// Reads `dir`. Errors: the directory is missing or `state.json` is corrupt.
    pub fn load(dir: &Path) -> Result<Snapshot, String> {
        Self::load_reusing(dir, None)
    }

    /// [`Snapshot::load`], taking the records (and what is derived from them) from `before`
    /// when `state.json` and `state.journal` are as they were then: after a pass that changed
    /// no record, only the small files (last pass, Destinations, rollouts) are read again,
    /// not the 10 MB snapshot of 10,000 requests.
    pub fn load_reusing(dir: &Path, before: Option<Arc<Snapshot>>) -> Result<Snapshot, String> {
        let version = fingerprint(dir);
        let state_version = fingerprint_of(dir, &STATE_FILES);
        let (state, children, by_promise) = match &before {
            Some(b) if b.state_version == state_version => {
                (b.state.clone(), b.children.clone(), b.by_promise.clone())
            }
            _ => {
                // The old records go before the new ones are read (pages still showing them
                // keep their own reference): at 10,000 requests each set is tens of MB
                // (docs/benchmarks.md, "Memory").
                drop(before);
                let (state, children, by_promise) = Self::load_state(dir)?;
                (Arc::new(state), Arc::new(children), Arc::new(by_promise))
            }
        };
        Ok(Snapshot {
            version,
            infra: crate::infra::load(dir),
            rollouts: crate::rollout::load(dir).unwrap_or_default(),
            refused: crate::config::verify::load_refusal(dir),
            last_pass: records::load_pass(dir),
            state,
            children,
            by_promise,
            state_version,
        })
    }

    /// The records of `dir` without what no page shows, and the keys by parent and Promise.
    #[allow(clippy::type_complexity)]
    fn load_state(
        dir: &Path,
    ) -> Result<
        (
            State,
            BTreeMap<String, Vec<String>>,
            BTreeMap<String, Vec<String>>,
        ),
        String,
    > {
        // What no page shows is not read: records' documents and cached pipeline outputs
        // (most of a record), so a daemon's console costs little memory, also while it loads.
        let state = StateDir::open_read_only(dir)
            .and_then(|d| d.load_without_documents())
            .map_err(|e| e.to_string())?;
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut by_promise: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, r) in &state.requests {
            if let Some(p) = &r.status.parent {
                children.entry(p.clone()).or_default().push(k.clone());
            }
            by_promise
                .entry(r.status.promise.to_string())
                .or_default()
                .push(k.clone());
        }
        Ok((state, children, by_promise))
    }

    /// The record of a Promise by name.
    pub fn promise(&self, name: &str) -> Option<&ObjectRecord> {
        self.state
            .promises
            .get(&crate::model::promise_key(name))
            .map(|r| &**r)
    }
}

/// A fingerprint of the state directory's [`WATCHED`] files (size, modification time, inode):
/// hex, equal while nothing changed.
pub fn fingerprint(dir: &Path) -> String {
    fingerprint_of(dir, &WATCHED)
}

/// The files of the records themselves (a part of [`WATCHED`]).
const STATE_FILES: [&str; 2] = ["state.json", "state.journal"];

/// [`fingerprint`] over `files`.
fn fingerprint_of(dir: &Path, files: &[&str]) -> String {
    let mut h = Sha256::new();
    for f in files {
        match std::fs::metadata(dir.join(f)) {
            Ok(m) => {
                let t = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .unwrap_or_default();
                // The inode too: `state.json` is replaced by a rename, which may keep its size
                // and, within one clock tick, its modification time.
                let ino = std::os::unix::fs::MetadataExt::ino(&m);
                h.update(format!("{f} {} {} {ino}\n", m.len(), t.as_nanos()));
            }
            Err(_) => h.update(format!("{f} -\n")),
        }
    }
    hex::encode(&h.finalize()[..8])
}

/// The last snapshot, reloaded when the fingerprint moves.
#[derive(Default)]
pub struct Cache {
    last: Mutex<Option<Arc<Snapshot>>>,
}

impl Cache {
    /// The snapshot of `dir` now. Errors: see [`Snapshot::load`].
    pub fn get(&self, dir: &Path) -> Result<Arc<Snapshot>, String> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = fingerprint(dir);
        if let Some(s) = &*last
            && s.version == now
        {
            return Ok(s.clone());
        }
        let s = Arc::new(Snapshot::load_reusing(dir, last.take())?);
        *last = Some(s.clone());
        Ok(s)
    }

    /// Lets the cached snapshot go (the next [`Cache::get`] reads the state directory).
    pub fn clear(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether a snapshot is cached.
    pub fn holds(&self) -> bool {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hash: &str) -> ObjectRecord {
        let id = crate::model::ObjectRef {
            kind: "Redis".into(),
            namespace: Some("default".into()),
            name: "a".into(),
        };
        ObjectRecord {
            input_hash: hash.into(),
            completed: true,
            object: Arc::new(serde_json::Value::Null).into(),
            ..ObjectRecord::new(crate::status::ObjectStatus::new(id, "redis"))
        }
    }

    /// A pass that changed no record rewrites only the last-pass file: the next snapshot
    /// shares the records of the one before. A changed record (journal line or a new
    /// `state.json`, even of the same size) is read again.
    #[test]
    fn records_are_reread_only_when_the_state_files_change() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        let mut state = State {
            version: crate::state::STATE_VERSION,
            ..State::default()
        };
        state
            .requests
            .insert("redis/default/a".into(), Box::new(record("h1")));
        dir.save(&mut state).unwrap();
        let cache = Cache::default();
        let first = cache.get(tmp.path()).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(tmp.path()).unwrap()));

        let pass = records::PassRecord::default();
        records::save_pass(tmp.path(), &pass).unwrap();
        let second = cache.get(tmp.path()).unwrap();
        assert_ne!(first.version, second.version);
        assert!(second.last_pass.is_some());
        assert!(Arc::ptr_eq(&first.state, &second.state));

        // Same size, rewritten at once: still seen.
        state
            .requests
            .get_mut("redis/default/a")
            .unwrap()
            .input_hash = "h2".into();
        dir.save(&mut state).unwrap();
        let third = cache.get(tmp.path()).unwrap();
        assert!(!Arc::ptr_eq(&second.state, &third.state));
        assert_eq!(third.state.requests["redis/default/a"].input_hash, "h2");

        let mut dirty = crate::state::Dirty::default();
        dirty.requests.insert("redis/default/a".into());
        state
            .requests
            .get_mut("redis/default/a")
            .unwrap()
            .input_hash = "h3".into();
        dir.save_changes(&mut state, &dirty).unwrap();
        let fourth = cache.get(tmp.path()).unwrap();
        assert_eq!(fourth.state.requests["redis/default/a"].input_hash, "h3");
    }
}
