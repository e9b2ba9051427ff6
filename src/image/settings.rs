//! The `images:` section of the daemon config ([`ImageSettings`], its defaults) and the
//! Kubernetes-style [`PullPolicy`] deciding when a registry is asked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::ImageStore;

/// Default [`ImageSettings::resolve_interval`]: 5 minutes.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(300);
/// Default [`ImageSettings::max_layer_bytes`]: 2 GiB.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 2 << 30;
/// Default [`ImageSettings::max_unpacked_bytes`]: 8 GiB.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 8 << 30;

/// The daemon config's `images:` section. Keys in camelCase; unknown keys are errors; every
/// key has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ImageSettings {
    /// Where images are cached. Default: `<stateDir>/images` (the state directory is passed
    /// to [`ImageStore::new`]).
    pub cache_dir: Option<PathBuf>,
    /// Registry host → mirror `host[:port]` contacted instead, e.g. `ghcr.io:
    /// 127.0.0.1:5055`. The repository path, tag and digest stay the same; credentials are
    /// looked up for the mirror; results keep the original name. `docker.io` (or
    /// `index.docker.io`) names Docker Hub. Default: none.
    pub mirrors: BTreeMap<String, String>,
    /// Registries (`host[:port]`, exactly as contacted, mirrors included) spoken to over
    /// plain HTTP instead of HTTPS. Default: none.
    pub insecure_registries: Vec<String>,
    /// A Docker `config.json` whose `auths` section holds registry credentials (the format
    /// of Kubernetes `imagePullSecrets`, `.dockerconfigjson`). A relative path resolves
    /// against `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) when set. Read on every
    /// pull, so a rotated secret needs no restart. Credential helpers are never run.
    /// Default: none (anonymous pulls).
    pub auth_file: Option<PathBuf>,
    /// How long a moving tag resolved from the registry is trusted before asking again,
    /// for references pulled with policy `Always` (the default for `:latest` and untagged
    /// images). `0s` = ask on every use. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub resolve_interval: Duration,
    /// Largest compressed layer (bytes), checked against the manifest's size before the
    /// download and while downloading. Default 2 GiB.
    pub max_layer_bytes: u64,
    /// Largest uncompressed image: all layers' tar streams together (bytes), checked while
    /// unpacking. Default 8 GiB.
    pub max_unpacked_bytes: u64,
}

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings {
            cache_dir: None,
            mirrors: BTreeMap::new(),
            insecure_registries: Vec::new(),
            auth_file: None,
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            max_unpacked_bytes: DEFAULT_MAX_UNPACKED_BYTES,
        }
    }
}

/// When to ask the registry, as Kubernetes' `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PullPolicy {
    /// Resolve the tag at the registry (at most every [`ImageSettings::resolve_interval`]),
    /// pull what is missing.
    Always,
    /// Use the digest the tag resolved to earlier, if any; else resolve and pull.
    IfNotPresent,
    /// Never contact a registry: the image must be in the cache.
    Never,
}

impl PullPolicy {
    /// Kubernetes' default: `Always` for `:latest` or an untagged image without digest, else
    /// `IfNotPresent`.
    pub fn default_for(image: &str) -> PullPolicy {
        match super::reference::parse(image) {
            Ok(r) if r.digest().is_none() && r.tag().is_none_or(|t| t == "latest") => {
                PullPolicy::Always
            }
            Ok(_) => PullPolicy::IfNotPresent,
            Err(_) => PullPolicy::Always,
        }
    }

    /// The policy of a container: its `imagePullPolicy` when given (parsed with
    /// [`FromStr`]), else [`PullPolicy::default_for`] its image.
    pub fn for_container(
        image_pull_policy: Option<&str>,
        image: &str,
    ) -> Result<PullPolicy, String> {
        match image_pull_policy {
            Some(p) => p.parse(),
            None => Ok(PullPolicy::default_for(image)),
        }
    }
}

impl FromStr for PullPolicy {
    type Err = String;

    /// `Always`, `IfNotPresent` or `Never` (exactly, as Kubernetes); the error message lists
    /// them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            other => Err(format!(
                "imagePullPolicy {other:?} is not one of Always, IfNotPresent, Never"
            )),
        }
    }
}
