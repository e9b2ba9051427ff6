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
    /// Promise and request records.
    pub state: State,
    /// Destinations and state stores.
    pub infra: InfraStatus,
    /// UpgradePlans' rollouts.
    pub rollouts: Rollouts,
    /// The config commit refused by verification, if any.
    pub refused: Option<Refused>,
    /// The last pass of `promised run`.
    pub last_pass: Option<PassRecord>,
    /// Parent request key → its children's keys (compound Promises).
    pub children: BTreeMap<String, Vec<String>>,
    /// Promise name → its requests' keys.
    pub by_promise: BTreeMap<String, Vec<String>>,
}

impl Snapshot {
    /// Reads `dir`. Errors: the directory is missing or `state.json` is corrupt.
    pub fn load(dir: &Path) -> Result<Snapshot, String> {
        let version = fingerprint(dir);
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
                .entry(r.status.promise.clone())
                .or_default()
                .push(k.clone());
        }
        Ok(Snapshot {
            version,
            infra: crate::infra::load(dir),
            rollouts: crate::rollout::load(dir).unwrap_or_default(),
            refused: crate::config::verify::load_refusal(dir),
            last_pass: records::load_pass(dir),
            state,
            children,
            by_promise,
        })
    }

    /// The record of a Promise by name.
    pub fn promise(&self, name: &str) -> Option<&ObjectRecord> {
        self.state.promises.get(&crate::model::promise_key(name))
    }
}

/// A fingerprint of the state directory's [`WATCHED`] files (size and modification time):
/// hex, equal while nothing changed.
pub fn fingerprint(dir: &Path) -> String {
    let mut h = Sha256::new();
    for f in WATCHED {
        match std::fs::metadata(dir.join(f)) {
            Ok(m) => {
                let t = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .unwrap_or_default();
                h.update(format!("{f} {} {}\n", m.len(), t.as_nanos()));
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
        // The old snapshot goes before the new one is read (pages still showing it keep their
        // own reference): at 10,000 requests each is tens of MB, and the daemon reloads it after
        // every pass (docs/benchmarks.md, "Memory").
        *last = None;
        let s = Arc::new(Snapshot::load(dir)?);
        *last = Some(s.clone());
        Ok(s)
    }
}
