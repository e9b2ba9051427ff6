//! `git:` in the daemon config: Git state store options.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use statestores::git::signing::SigningKey;

/// Git state store options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GitSettings {
    /// Skip TLS certificate verification for https remotes (Kratix always skips; we never do
    /// unless told). Default false.
    pub insecure_skip_tls_verify: bool,
    /// Push attempts before giving up on a contended branch. Default 5.
    pub max_push_attempts: u32,
    /// Commit subject template; placeholders `{updated}`, `{deleted}`, `{unchanged}`,
    /// `{restored}`, `{placements}`, `{config}`, `{config_short}`, `{promises}`, `{requests}`
    /// (first three names, then `+N`), `{promise_count}`, `{request_count}`.
    pub commit_subject: Option<String>,
    /// How long the daemon trusts a remote state store branch it verified or pushed without
    /// fetching it again: passes with nothing to write within it touch no remote, and writes
    /// build on it (the push's `--force-with-lease` catches anyone who pushed meanwhile, and
    /// the retry repairs what they changed). So drift pushed by someone else is found at the
    /// latest after this long. `0s` = fetch on every pass. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub drift_check_interval: Duration,
    /// Commit signing per Git state store: the store's name (or `*` for every Git state
    /// store without an entry of its own) → its key. Missing = unsigned commits.
    pub signing: BTreeMap<String, SigningKey>,
}

impl GitSettings {
    /// The signing key of the Git state store `store`: its own entry, else the `*` entry.
    pub fn signing_for(&self, store: &str) -> Option<&SigningKey> {
        self.signing.get(store).or_else(|| self.signing.get("*"))
    }
}

impl Default for GitSettings {
    fn default() -> Self {
        GitSettings {
            insecure_skip_tls_verify: false,
            max_push_attempts: 5,
            commit_subject: None,
            drift_check_interval: Duration::from_secs(30),
            signing: BTreeMap::new(),
        }
    }
}
