//! Consumer lint after a pass ([`crate::lint`]): the files placed on each Destination are
//! linted when they changed, and the findings kept in its status (`destinations.json`) and in
//! the pass report, as warnings. A pass that made no commit on a Destination's state store
//! (the common no-op pass) costs one hash of the lint settings; one that did reads and parses
//! only the files whose path or hash is new since the last lint ([`crate::lint::LintCache`]).

use std::collections::BTreeMap;

use super::Engine;
use crate::infra::{DestinationStatus, MAX_LINT};
use crate::state::sha256_hex;

impl Engine {
    /// Lints the files placed on Destination `s.name` (every request's and Promise's
    /// placements there, misplaced ones included) unless their paths and hashes and the lint
    /// settings are those of the last lint; `wrote` says whether its state store got a new
    /// commit in this pass (without one, only a change of the settings re-lints). New findings
    /// are logged as warnings. The fingerprint is `<settings hash>-<files hash>`.
    pub(super) fn lint_destination(&mut self, s: &mut DestinationStatus, wrote: bool) {
        let name = s.name.as_str();
        let settings = sha256_hex(
            serde_json::to_string(&self.settings.lint)
                .unwrap_or_default()
                .as_bytes(),
        );
        let settings = &settings[..16];
        if !wrote && s.lint_fingerprint.starts_with(&format!("{settings}-")) {
            return;
        }
        let mut files: BTreeMap<&str, &str> = BTreeMap::new();
        for r in self
            .state
            .requests
            .values()
            .chain(self.state.promises.values())
        {
            for p in r.placements.iter().filter(|p| p.destination == name) {
                for f in &p.files {
                    files.insert(&f.path, &f.sha256);
                }
            }
        }
        let mut listing = String::new();
        for (path, sha) in &files {
            listing.push_str(&format!("{path} {sha}\n"));
        }
        let fingerprint = format!("{settings}-{}", sha256_hex(listing.as_bytes()));
        if fingerprint == s.lint_fingerprint {
            return;
        }
        // Only files not linted before are read. A blob that left the cache is not linted;
        // its request re-runs and brings it back.
        let dir = &self.dir;
        let mut findings = crate::lint::lint_destination_with(
            name,
            &files,
            |sha| dir.get_blob(sha).ok(),
            self.lint_cache.entry(name.to_string()).or_default(),
            &self.settings.lint,
        );
        for f in findings.iter().filter(|f| !s.lint.contains(f)) {
            tracing::warn!(destination = %name, file = %f.file, rule = f.rule.name(), "lint: {f}");
        }
        s.lint_omitted = findings.len().saturating_sub(MAX_LINT);
        findings.truncate(MAX_LINT);
        s.lint = findings;
        s.lint_fingerprint = fingerprint;
    }
}
