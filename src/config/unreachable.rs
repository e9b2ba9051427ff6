//! A Git config remote that cannot be reached: what `promised run` keeps doing and how it
//! says so.
//!
//! While the config remote cannot be fetched (or polled), the daemon keeps reconciling the
//! last config it loaded (requests stay reconciled, drift is repaired, nothing is pruned for a
//! missing config) and records why in `<stateDir>/config-unreachable.json`, which `promised
//! status` prints as the table's first line and `/readyz` as a line of its body. The file is
//! removed as soon as a fetch or a poll succeeds again. Kratix has no equivalent: Flux's
//! source-controller keeps the last artifact and sets `Ready=False` on the `GitRepository`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file in the state directory.
pub const UNREACHABLE_FILE: &str = "config-unreachable.json";

/// Why the config remote cannot be reached, since when, and which commit is served instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreachable {
    /// The fetch's or poll's error text (credentials redacted by the fetch).
    pub error: String,
    /// RFC 3339 time of the first failure of this outage.
    pub since: String,
    /// The config commit still in force; `None` when none was loaded since the daemon started
    /// (no pass runs then; the state stores keep what they have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config remote unreachable since {}: ", self.since)?;
        // One line: git's messages put the address on a line of its own.
        let mut first = true;
        for line in self.error.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(line)?;
            first = false;
        }
        match &self.serving {
            Some(c) => write!(
                f,
                "; the last good config (commit {}) stays in force",
                &c[..c.len().min(12)]
            ),
            None => f.write_str("; no config loaded yet, so no pass runs"),
        }
    }
}

/// Records (`Some`) or clears (`None`) the outage in `state_dir`; a no-op when the file
/// already says the same. Errors: the file cannot be written or removed.
pub fn save(state_dir: &Path, unreachable: Option<&Unreachable>) -> std::io::Result<()> {
    let path = state_dir.join(UNREACHABLE_FILE);
    match unreachable {
        Some(u) => {
            if load(state_dir).as_ref() == Some(u) {
                return Ok(());
            }
            let bytes = serde_json::to_vec_pretty(u).expect("an outage serialises");
            let mut tmp = tempfile::NamedTempFile::new_in(state_dir)?;
            std::io::Write::write_all(&mut tmp, &bytes)?;
            tmp.persist(&path).map(|_| ()).map_err(|e| e.error)
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// The outage recorded in `state_dir`, if any.
pub fn load(state_dir: &Path) -> Option<Unreachable> {
    let bytes = std::fs::read(state_dir.join(UNREACHABLE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_naming_the_error_and_the_commit_in_force() {
        let u = Unreachable {
            error: "fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused\n".into(),
            since: "2026-12-05T10:00:00Z".into(),
            serving: Some("0123456789abcdef0123".into()),
        };
        assert_eq!(
            u.to_string(),
            "config remote unreachable since 2026-12-05T10:00:00Z: fatal: unable to connect to 127.0.0.1: 127.0.0.1[0: 127.0.0.1]: errno=Connection refused; the last good config (commit 0123456789ab) stays in force"
        );
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), Some(&u)).unwrap();
        assert_eq!(load(dir.path()), Some(u));
        save(dir.path(), None).unwrap();
        assert_eq!(load(dir.path()), None);
        save(dir.path(), None).unwrap();
    }
}
