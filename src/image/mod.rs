//! The image store: pulls OCI images (Kratix pipeline containers) from registries, verifies
//! every blob against its digest, caches them on disk by digest and unpacks each image once
//! into a read-only root file system that sandboxes run from.
//!
//! - Registries: OCI distribution (oci-client), anonymous, Basic or Bearer token flow, with
//!   credentials from a Docker `config.json` ([`ImageSettings::auth_file`]), mirrors
//!   ([`ImageSettings::mirrors`]) and plain-HTTP registries
//!   ([`ImageSettings::insecure_registries`]).
//! - Manifests: OCI and Docker v2 schema 2; image indexes and manifest lists resolved to
//!   `linux` and this host's architecture (variant considered).
//! - Layers: plain, gzip and zstd tar, checked against the blob digest and the config's
//!   `rootfs.diff_ids`; whiteouts and opaque directories applied; nothing is ever written
//!   outside the root (see [`ImageError::UnsafeEntry`]).
//! - Cache layout: see the `cache` module; `<cache>` is [`ImageSettings::cache_dir`] or
//!   `<stateDir>/images`.
//!
//! Symlinks with absolute targets are kept verbatim in the root: the sandbox interprets them
//! inside the root (the root is `/` there), as Docker does. Callers must never read through
//! such a symlink on the host.

mod auth;
mod cache;
mod error;
mod platform;
mod registry;
mod unpack;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci_client::Reference;
use serde::{Deserialize, Serialize};
use statestores::NetworkTimeouts;

pub use error::ImageError;

use cache::{ImageRecord, Layout, RefRecord};
use registry::{Registries, Target};

/// Default [`ImageSettings::resolve_interval`]: 5 minutes.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(300);
/// Default [`ImageSettings::max_layer_bytes`]: 2 GiB.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 2 << 30;
/// Default [`ImageSettings::max_unpacked_bytes`]: 8 GiB.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 8 << 30;
/// Largest manifest or config blob read into memory (bytes).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

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
        match image.parse::<Reference>() {
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

/// A reference resolved to the manifest to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The reference as written by the caller.
    pub image: String,
    /// `sha256:<hex>` of the platform manifest (for an index: the entry for this host).
    pub digest: String,
    /// The registry host (`host[:port]`) it was resolved at: the mirror when one is
    /// configured.
    pub pulled_from: String,
}

/// An image ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The reference as written by the caller.
    pub image: String,
    /// `sha256:<hex>` of the platform manifest.
    pub digest: String,
    /// The unpacked root file system. Shared by every user of this image and read-only by
    /// contract: callers never write into it (bind it read-only, or put an overlay over
    /// it). It holds the mount points `proc`, `dev`, `tmp`, `kratix/input`,
    /// `kratix/output`, `kratix/metadata` and the working directory, created when missing.
    /// Absolute symlinks inside it point inside the root once it is `/`.
    pub rootfs: PathBuf,
    /// The image's runtime config.
    pub config: ImageConfig,
    /// Bytes of regular file content in the root (hard links counted once).
    pub size: u64,
}

/// The runtime part of an image config (`config` in the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// `Entrypoint`; empty when unset.
    pub entrypoint: Vec<String>,
    /// `Cmd`; empty when unset.
    pub cmd: Vec<String>,
    /// `Env`, in order, split at the first `=` (an entry without `=` has an empty value).
    pub env: Vec<(String, String)>,
    /// `WorkingDir`, when set and not empty.
    pub working_dir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`, …), when set and not empty.
    pub user: Option<String>,
}

/// One unpacked image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// Bytes of regular file content in its root.
    pub size: u64,
    /// The references (normalized, e.g. `docker.io/library/busybox:latest`) last resolved to
    /// it, sorted.
    pub references: Vec<String>,
    /// Its root file system.
    pub rootfs: PathBuf,
}

/// What [`ImageStore::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Digests of the unpacked images removed.
    pub removed_images: Vec<String>,
    /// How many blobs were removed.
    pub removed_blobs: usize,
    /// Bytes of blob files removed (unpacked roots not counted).
    pub removed_blob_bytes: u64,
    /// References forgotten because they resolved to a removed image.
    pub removed_references: Vec<String>,
}

/// The image cache and puller. `Send + Sync`: share one per cache directory through an
/// `Arc`. Concurrent [`ImageStore::ensure`] calls for the same image download and unpack it
/// once (a lock per digest); the others wait and get the same root.
pub struct ImageStore {
    settings: ImageSettings,
    layout: Layout,
    auth_file: Option<PathBuf>,
    registries: Registries,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Digests of blobs an ensure is using (count per digest): prune keeps them.
    in_flight: Mutex<BTreeMap<String, usize>>,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<ImageStore>();
};

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("cache_dir", &self.layout.dir)
            .finish_non_exhaustive()
    }
}

/// Holds digests in [`ImageStore::in_flight`] until dropped.
struct InFlight<'a> {
    store: &'a ImageStore,
    digests: Vec<String>,
}

impl InFlight<'_> {
    fn add(&mut self, digest: &str) {
        let mut map = self
            .store
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *map.entry(digest.to_string()).or_default() += 1;
        self.digests.push(digest.to_string());
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self
            .store
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for d in &self.digests {
            if let Some(n) = map.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    map.remove(d);
                }
            }
        }
    }
}

/// A manifest's essentials: either an image or an index.
enum Manifest {
    Image {
        config: Blob,
        layers: Vec<Blob>,
    },
    Index {
        entries: Vec<(String, Option<platform::Platform>)>,
    },
}

#[derive(Debug, Clone)]
struct Blob {
    media_type: String,
    digest: String,
    size: u64,
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const IMAGE_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

fn parse_manifest(image: &str, digest: &str, bytes: &[u8]) -> Result<Manifest, ImageError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let bad = |e: &dyn std::fmt::Display| {
        ImageError::invalid(image, format!("manifest {digest} is not valid: {e}"))
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
    if probe.schema_version != Some(2) {
        return Err(ImageError::UnsupportedMediaType {
            image: image.to_string(),
            what: "manifest".to_string(),
            digest: digest.to_string(),
            media_type: format!(
                "{} (schemaVersion {:?}; only schema 2 is supported)",
                probe.media_type.as_deref().unwrap_or("none"),
                probe.schema_version
            ),
        });
    }
    let is_index = match probe.media_type.as_deref() {
        Some(t) if INDEX_TYPES.contains(&t) => true,
        Some(t) if IMAGE_TYPES.contains(&t) => false,
        None => probe.manifests.is_some(),
        Some(t) => {
            return Err(ImageError::UnsupportedMediaType {
                image: image.to_string(),
                what: "manifest".to_string(),
                digest: digest.to_string(),
                media_type: t.to_string(),
            });
        }
    };
    if is_index {
        let index: oci_spec::image::ImageIndex =
            serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
        let entries = index
            .manifests()
            .iter()
            .map(|d| {
                let platform = d.platform().as_ref().map(|p| platform::Platform {
                    os: p.os().to_string(),
                    architecture: p.architecture().to_string(),
                    variant: p.variant().clone(),
                });
                (d.digest().to_string(), platform)
            })
            .collect();
        return Ok(Manifest::Index { entries });
    }
    let m: oci_spec::image::ImageManifest = serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
    let blob = |d: &oci_spec::image::Descriptor| Blob {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size(),
    };
    Ok(Manifest::Image {
        config: blob(m.config()),
        layers: m.layers().iter().map(blob).collect(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn image_config(config: &oci_spec::image::ImageConfiguration) -> ImageConfig {
    let Some(c) = config.config() else {
        return ImageConfig::default();
    };
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c
            .env()
            .iter()
            .flatten()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect(),
        working_dir: nonempty(c.working_dir()),
        user: nonempty(c.user()),
    }
}

impl ImageStore {
    /// Opens (creating it if needed) the cache at [`ImageSettings::cache_dir`], default
    /// `<state_dir>/images`, and removes what an interrupted run left behind. `network`
    /// bounds connecting (`connect`), silences (`read`) and each manifest request
    /// (`operation`); a layer download is bounded by `read` only, since a large layer may
    /// legitimately take longer than `operation`.
    ///
    /// Errors: [`ImageError::Settings`] for an invalid mirror or registry name,
    /// [`ImageError::Io`] when the cache directory cannot be created.
    pub fn new(
        settings: &ImageSettings,
        state_dir: &Path,
        network: &NetworkTimeouts,
    ) -> Result<ImageStore, ImageError> {
        for (from, to) in &settings.mirrors {
            for host in [from, to] {
                if host.is_empty() || host.contains('/') || host.contains("://") {
                    return Err(ImageError::Settings {
                        reason: format!(
                            "mirrors: {from:?} -> {to:?}: write registry hosts as host[:port], \
                             without scheme or path"
                        ),
                    });
                }
            }
        }
        for host in &settings.insecure_registries {
            if host.is_empty() || host.contains('/') {
                return Err(ImageError::Settings {
                    reason: format!(
                        "insecureRegistries: {host:?}: write host[:port], without scheme or path"
                    ),
                });
            }
        }
        let dir = settings
            .cache_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("images"));
        let layout = Layout::open(&dir)?;
        Ok(ImageStore {
            settings: settings.clone(),
            layout,
            auth_file: auth::resolve_auth_file(settings.auth_file.as_deref()),
            registries: Registries::new(settings.insecure_registries.clone(), *network),
            locks: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(BTreeMap::new()),
        })
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.layout.dir
    }

    fn parse(image: &str) -> Result<Reference, ImageError> {
        let reference = image
            .parse::<Reference>()
            .map_err(|e| ImageError::InvalidReference {
                image: image.to_string(),
                reason: e.to_string(),
            })?;
        if let Some(d) = reference.digest()
            && cache::digest_hex(d).is_none()
        {
            return Err(ImageError::InvalidReference {
                image: image.to_string(),
                reason: format!(
                    "digest {d:?} is not sha256:<64 lower-case hex>; only sha256 is supported"
                ),
            });
        }
        Ok(reference)
    }

    async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }

    fn in_flight(&self) -> InFlight<'_> {
        InFlight {
            store: self,
            digests: Vec::new(),
        }
    }

    /// Where `reference` is pulled from: the mirror of its registry if configured, with the
    /// credentials for that host.
    fn target(&self, reference: &Reference) -> Result<Target, ImageError> {
        let (contact, host) = match self.mirror_for(reference) {
            Some(m) => {
                let r = match (reference.digest(), reference.tag()) {
                    (Some(d), _) => Reference::with_digest(
                        m.clone(),
                        reference.repository().to_string(),
                        d.to_string(),
                    ),
                    (None, t) => Reference::with_tag(
                        m.clone(),
                        reference.repository().to_string(),
                        t.unwrap_or("latest").to_string(),
                    ),
                };
                (r, m.clone())
            }
            None => (reference.clone(), reference.resolve_registry().to_string()),
        };
        let credentials = auth::credentials_for(self.auth_file.as_deref(), &host)?;
        Ok(Target {
            reference: contact,
            registry: host,
            credentials,
        })
    }

    /// Resolves `image` to the digest of the manifest to run on this host.
    ///
    /// - A digest reference (`…@sha256:…`) needs no network once its manifest is cached (an
    ///   index digest is resolved to this platform's entry from the cached index).
    /// - A tag: `Never` uses the cached resolution or fails with
    ///   [`ImageError::NotPresent`]; `IfNotPresent` uses the cached resolution if there is
    ///   one; `Always` uses it while younger than [`ImageSettings::resolve_interval`], else
    ///   asks the registry (a HEAD first: an unchanged tag costs no manifest download). As
    ///   in Kubernetes, `Always` fails when the registry cannot be asked: it does not fall
    ///   back to a stale resolution.
    ///
    /// Errors: every registry failure ([`ImageError::NotFound`],
    /// [`ImageError::Unauthorized`], [`ImageError::Unreachable`], [`ImageError::Registry`]),
    /// [`ImageError::NoPlatform`], [`ImageError::DigestMismatch`],
    /// [`ImageError::InvalidReference`], [`ImageError::AuthFile`].
    pub async fn resolve(&self, image: &str, policy: PullPolicy) -> Result<Resolved, ImageError> {
        let reference = Self::parse(image)?;
        let normalized = reference.whole();
        let _guard = self.lock(format!("ref:{normalized}")).await;
        let cached = self.layout.read_ref(&normalized);
        if let Some(top) = reference.digest() {
            if let Some(c) = cached.filter(|c| c.top_digest == top) {
                return Ok(Resolved {
                    image: image.to_string(),
                    digest: c.digest,
                    pulled_from: c.pulled_from,
                });
            }
            if let Some(bytes) = self.layout.read_blob(top)? {
                let digest = self.platform_digest(image, top, &bytes)?;
                let pulled_from = self.target_host(&reference);
                self.record(&normalized, &digest, top, &pulled_from)?;
                return Ok(Resolved {
                    image: image.to_string(),
                    digest,
                    pulled_from,
                });
            }
            if policy == PullPolicy::Never {
                return Err(ImageError::NotPresent {
                    image: image.to_string(),
                });
            }
            return self.resolve_remote(image, &reference, None).await;
        }
        let fresh = |c: &RefRecord| {
            now_ms().saturating_sub(c.resolved_at_ms)
                < self.settings.resolve_interval.as_millis() as u64
        };
        match (policy, cached) {
            (PullPolicy::Never | PullPolicy::IfNotPresent, Some(c)) => Ok(Resolved {
                image: image.to_string(),
                digest: c.digest,
                pulled_from: c.pulled_from,
            }),
            (PullPolicy::Never, None) => Err(ImageError::NotPresent {
                image: image.to_string(),
            }),
            (PullPolicy::Always, Some(c)) if fresh(&c) => Ok(Resolved {
                image: image.to_string(),
                digest: c.digest,
                pulled_from: c.pulled_from,
            }),
            (_, cached) => self.resolve_remote(image, &reference, cached).await,
        }
    }

    /// The registry host `reference` is pulled from (mirror applied), without credentials.
    fn target_host(&self, reference: &Reference) -> String {
        self.mirror_for(reference)
            .cloned()
            .unwrap_or_else(|| reference.resolve_registry().to_string())
    }

    /// The mirror configured for `reference`'s registry (`docker.io` also as
    /// `index.docker.io`).
    fn mirror_for(&self, reference: &Reference) -> Option<&String> {
        let registry = reference.registry();
        self.settings.mirrors.get(registry).or_else(|| {
            (registry == "docker.io")
                .then(|| self.settings.mirrors.get("index.docker.io"))
                .flatten()
        })
    }

    fn record(
        &self,
        normalized: &str,
        digest: &str,
        top: &str,
        pulled_from: &str,
    ) -> Result<(), ImageError> {
        self.layout.write_ref(&RefRecord {
            reference: normalized.to_string(),
            digest: digest.to_string(),
            top_digest: top.to_string(),
            pulled_from: pulled_from.to_string(),
            resolved_at_ms: now_ms(),
        })
    }

    /// The platform manifest digest for a cached manifest `top` (itself, or the index entry
    /// for this host).
    fn platform_digest(&self, image: &str, top: &str, bytes: &[u8]) -> Result<String, ImageError> {
        match parse_manifest(image, top, bytes)? {
            Manifest::Image { .. } => Ok(top.to_string()),
            Manifest::Index { entries } => choose_entry(image, top, &entries),
        }
    }

    async fn resolve_remote(
        &self,
        image: &str,
        reference: &Reference,
        cached: Option<RefRecord>,
    ) -> Result<Resolved, ImageError> {
        let target = self.target(reference)?;
        let normalized = reference.whole();
        // An unchanged tag: one HEAD, no manifest download.
        if let Some(c) = cached.filter(|c| c.pulled_from == target.registry)
            && self.layout.blob_path(&c.digest).is_some_and(|p| p.exists())
        {
            let top = self
                .registries
                .manifest_digest(image, &target, &target.reference)
                .await?;
            if top == c.top_digest {
                self.record(&normalized, &c.digest, &top, &target.registry)?;
                return Ok(Resolved {
                    image: image.to_string(),
                    digest: c.digest,
                    pulled_from: target.registry,
                });
            }
        }
        let (bytes, top) = self
            .registries
            .manifest(image, &target, &target.reference)
            .await?;
        self.layout.write_blob(&top, &bytes)?;
        let digest = match parse_manifest(image, &top, &bytes)? {
            Manifest::Image { .. } => top.clone(),
            Manifest::Index { entries } => {
                let chosen = choose_entry(image, &top, &entries)?;
                if self.layout.read_blob(&chosen)?.is_none() {
                    let r = target.reference.clone_with_digest(chosen.clone());
                    let (bytes, d) = self.registries.manifest(image, &target, &r).await?;
                    if !matches!(parse_manifest(image, &d, &bytes)?, Manifest::Image { .. }) {
                        return Err(ImageError::invalid(
                            image,
                            format!("index {top} names {d}, which is not an image manifest"),
                        ));
                    }
                    self.layout.write_blob(&d, &bytes)?;
                }
                chosen
            }
        };
        tracing::info!(image, digest, from = target.registry, "image resolved");
        self.record(&normalized, &digest, &top, &target.registry)?;
        Ok(Resolved {
            image: image.to_string(),
            digest,
            pulled_from: target.registry,
        })
    }

    /// Resolves `image` (see [`ImageStore::resolve`]), downloads the blobs the cache lacks
    /// (each checked against its digest; a cached blob that does not match is downloaded
    /// again) and unpacks the image once. Idempotent: an image already unpacked costs no
    /// download (and with `IfNotPresent`/`Never`, or `Always` within the resolve interval,
    /// no network at all).
    ///
    /// Errors: those of [`ImageStore::resolve`], plus [`ImageError::TooLarge`],
    /// [`ImageError::UnsafeEntry`], [`ImageError::DigestMismatch`] (blob or diff_id),
    /// [`ImageError::UnsupportedMediaType`], [`ImageError::InvalidImage`],
    /// [`ImageError::NotPresent`] (policy `Never` and a blob is not cached: `Never` unpacks
    /// from cached blobs, never downloads), [`ImageError::Io`].
    pub async fn ensure(&self, image: &str, policy: PullPolicy) -> Result<Pulled, ImageError> {
        let resolved = self.resolve(image, policy).await?;
        let digest = resolved.digest;
        if let Some(p) = self.load_pulled(image, &digest)? {
            return Ok(p);
        }
        let _guard = self.lock(format!("digest:{digest}")).await;
        if let Some(p) = self.load_pulled(image, &digest)? {
            return Ok(p);
        }
        let mut in_flight = self.in_flight();
        in_flight.add(&digest);
        let reference = Self::parse(image)?;
        // `Never` unpacks from cached blobs only.
        let target = match policy {
            PullPolicy::Never => None,
            _ => Some(self.target(&reference)?),
        };
        let not_present = || ImageError::NotPresent {
            image: image.to_string(),
        };

        let manifest_bytes = match self.layout.read_blob(&digest)? {
            Some(b) => b,
            None => {
                let target = target.as_ref().ok_or_else(not_present)?;
                let r = target.reference.clone_with_digest(digest.clone());
                let (bytes, _) = self.registries.manifest(image, target, &r).await?;
                self.layout.write_blob(&digest, &bytes)?;
                bytes
            }
        };
        let Manifest::Image { config, layers } = parse_manifest(image, &digest, &manifest_bytes)?
        else {
            return Err(ImageError::invalid(
                image,
                format!("{digest} is an index, not an image manifest"),
            ));
        };
        in_flight.add(&config.digest);
        for l in &layers {
            in_flight.add(&l.digest);
            if cache::digest_hex(&l.digest).is_none() {
                return Err(ImageError::invalid(
                    image,
                    format!(
                        "layer digest {:?} is not sha256:<64 hex> (other algorithms are not supported)",
                        l.digest
                    ),
                ));
            }
            if l.size > self.settings.max_layer_bytes {
                return Err(ImageError::TooLarge {
                    image: image.to_string(),
                    what: "layer".to_string(),
                    digest: l.digest.clone(),
                    size: l.size,
                    limit: self.settings.max_layer_bytes,
                    setting: "maxLayerBytes".to_string(),
                });
            }
            if unpack::Compression::of_media_type(&l.media_type).is_none() {
                return Err(ImageError::UnsupportedMediaType {
                    image: image.to_string(),
                    what: "layer".to_string(),
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                });
            }
        }
        if !CONFIG_TYPES.contains(&config.media_type.as_str()) {
            return Err(ImageError::UnsupportedMediaType {
                image: image.to_string(),
                what: "config (not a container image: an artifact?)".to_string(),
                digest: config.digest.clone(),
                media_type: config.media_type.clone(),
            });
        }
        if cache::digest_hex(&config.digest).is_none() || config.size > MAX_CONFIG_BYTES {
            return Err(ImageError::invalid(
                image,
                format!(
                    "config {} ({} bytes) is not a sha256 blob of at most {MAX_CONFIG_BYTES} bytes",
                    config.digest, config.size
                ),
            ));
        }
        self.fetch_blob(image, target.as_ref(), "config", &config)
            .await?;
        let config_bytes = self.layout.read_blob(&config.digest)?.ok_or_else(|| {
            ImageError::invalid(image, format!("config {} vanished", config.digest))
        })?;
        let parsed_config: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| {
                ImageError::invalid(image, format!("config {} is not valid: {e}", config.digest))
            })?;
        let diff_ids = parsed_config.rootfs().diff_ids();
        if diff_ids.len() != layers.len() {
            return Err(ImageError::invalid(
                image,
                format!(
                    "config {} lists {} diff_ids for {} layers",
                    config.digest,
                    diff_ids.len(),
                    layers.len()
                ),
            ));
        }
        for l in &layers {
            self.fetch_blob(image, target.as_ref(), "layer", l).await?;
        }
        let runtime = image_config(&parsed_config);
        let unpack_layers: Vec<unpack::Layer> = layers
            .iter()
            .zip(diff_ids)
            .map(|(l, diff_id)| unpack::Layer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                diff_id: diff_id.clone(),
                path: self.layout.blob_path(&l.digest).expect("checked above"),
            })
            .collect();
        let record = ImageRecord {
            digest: digest.clone(),
            config_digest: config.digest.clone(),
            layers: layers.iter().map(|l| l.digest.clone()).collect(),
            config: runtime,
            size: 0,
        };
        let final_dir = self.layout.root_dir(&digest).expect("a checked digest");
        let temp_dir = self.layout.temp_in(
            &self.layout.roots_dir(),
            cache::digest_hex(&digest).unwrap_or("root"),
        );
        let max_unpacked = self.settings.max_unpacked_bytes;
        let image_owned = image.to_string();
        let record = tokio::task::spawn_blocking(move || {
            let result = unpack_root(
                &image_owned,
                &temp_dir,
                &final_dir,
                unpack_layers,
                record,
                max_unpacked,
            );
            if result.is_err() {
                let _ = unpack::remove_path(&temp_dir);
            }
            result
        })
        .await
        .map_err(|e| ImageError::invalid(image, format!("unpacking panicked: {e}")))??;
        tracing::info!(image, digest, size = record.size, "image unpacked");
        drop(in_flight);
        Ok(self.pulled_from_record(image, record))
    }

    fn pulled_from_record(&self, image: &str, record: ImageRecord) -> Pulled {
        let dir = self
            .layout
            .root_dir(&record.digest)
            .expect("a checked digest");
        Pulled {
            image: image.to_string(),
            digest: record.digest,
            rootfs: dir.join("rootfs"),
            config: record.config,
            size: record.size,
        }
    }

    fn load_pulled(&self, image: &str, digest: &str) -> Result<Option<Pulled>, ImageError> {
        Ok(self
            .layout
            .read_image(digest)?
            .filter(|r| r.digest == digest)
            .map(|r| self.pulled_from_record(image, r)))
    }

    /// Makes blob `blob` present and verified in the cache: a cached copy is checked (and
    /// deleted when corrupt), a missing one downloaded into a temporary file and renamed
    /// only when its digest matches. Without a `target` (policy `Never`) a missing blob is
    /// [`ImageError::NotPresent`].
    async fn fetch_blob(
        &self,
        image: &str,
        target: Option<&Target>,
        what: &str,
        blob: &Blob,
    ) -> Result<(), ImageError> {
        let path = self.layout.blob_path(&blob.digest).expect("checked digest");
        let layout_ok = {
            let (path, digest) = (path.clone(), blob.digest.clone());
            // Hash a possibly large file off the async threads.
            tokio::task::spawn_blocking(move || cache::verify_blob_file(&path, &digest))
                .await
                .map_err(|e| {
                    ImageError::invalid(image, format!("checking a blob panicked: {e}"))
                })??
        };
        if layout_ok {
            return Ok(());
        }
        let Some(target) = target else {
            return Err(ImageError::NotPresent {
                image: image.to_string(),
            });
        };
        let temp = self.layout.blob_temp(&blob.digest);
        let result = self
            .registries
            .blob(
                image,
                target,
                what,
                &blob.media_type,
                &blob.digest,
                blob.size,
                &temp,
            )
            .await;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        std::fs::rename(&temp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            ImageError::io("rename", &path, e)
        })?;
        tracing::info!(
            image,
            digest = blob.digest,
            bytes = blob.size,
            from = target.registry,
            "image blob downloaded"
        );
        Ok(())
    }

    /// The unpacked images in the cache, sorted by digest, each with the references last
    /// resolved to it.
    ///
    /// Errors: [`ImageError::Io`] when the cache cannot be listed.
    pub fn pulled(&self) -> Result<Vec<CachedImage>, ImageError> {
        let mut references: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, r) in self.layout.refs()? {
            references.entry(r.digest).or_default().push(r.reference);
        }
        let mut out = Vec::new();
        for digest in self.layout.root_digests()? {
            let Some(record) = self.layout.read_image(&digest)? else {
                continue;
            };
            let mut refs = references.remove(&digest).unwrap_or_default();
            refs.sort();
            out.push(CachedImage {
                rootfs: self
                    .layout
                    .root_dir(&digest)
                    .expect("a listed digest")
                    .join("rootfs"),
                digest,
                size: record.size,
                references: refs,
            });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Removes every unpacked image whose manifest digest is not in `keep_digests`, the
    /// references resolved to them, and every blob that no kept image (nor a pull under way)
    /// uses. Blocks while it runs (call it from `spawn_blocking`); pulls that start meanwhile
    /// wait for it. A root in use by a running sandbox must be in `keep_digests`.
    ///
    /// Errors: [`ImageError::Io`] when something cannot be listed or removed (what was
    /// removed before stays removed).
    pub fn prune(&self, keep_digests: &BTreeSet<String>) -> Result<PruneReport, ImageError> {
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = PruneReport::default();
        let mut used: BTreeSet<String> = in_flight.keys().cloned().collect();
        for digest in self.layout.root_digests()? {
            if keep_digests.contains(&digest) || in_flight.contains_key(&digest) {
                continue;
            }
            let dir = self.layout.root_dir(&digest).expect("a listed digest");
            unpack::remove_path(&dir).map_err(|e| ImageError::io("remove", &dir, e))?;
            report.removed_images.push(digest);
        }
        for (path, r) in self.layout.refs()? {
            if keep_digests.contains(&r.digest) || in_flight.contains_key(&r.digest) {
                used.insert(r.top_digest);
                continue;
            }
            std::fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e))?;
            report.removed_references.push(r.reference);
        }
        for digest in keep_digests {
            used.insert(digest.clone());
            if let Some(record) = self.layout.read_image(digest)? {
                used.insert(record.config_digest);
                used.extend(record.layers);
            } else if let Some(bytes) = self.layout.read_blob(digest)?
                && let Ok(Manifest::Image { config, layers }) = parse_manifest("", digest, &bytes)
            {
                used.insert(config.digest);
                used.extend(layers.into_iter().map(|l| l.digest));
            }
        }
        for digest in self.layout.blob_digests()? {
            if used.contains(&digest) {
                continue;
            }
            let path = self.layout.blob_path(&digest).expect("a listed digest");
            let size = std::fs::symlink_metadata(&path)
                .map(|m| m.len())
                .unwrap_or(0);
            std::fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e))?;
            report.removed_blobs += 1;
            report.removed_blob_bytes += size;
        }
        report.removed_references.sort();
        tracing::info!(
            images = report.removed_images.len(),
            blobs = report.removed_blobs,
            bytes = report.removed_blob_bytes,
            "image cache pruned"
        );
        Ok(report)
    }
}

/// The index entry for this host, or [`ImageError::NoPlatform`] listing what there is.
fn choose_entry(
    image: &str,
    index: &str,
    entries: &[(String, Option<platform::Platform>)],
) -> Result<String, ImageError> {
    let platforms: Vec<Option<platform::Platform>> =
        entries.iter().map(|(_, p)| p.clone()).collect();
    match platform::choose(&platforms) {
        Some(i) if cache::digest_hex(&entries[i].0).is_none() => Err(ImageError::invalid(
            image,
            format!(
                "index {index} names {:?} for this platform: only sha256 digests are supported",
                entries[i].0
            ),
        )),
        Some(i) => Ok(entries[i].0.clone()),
        None => Err(ImageError::NoPlatform {
            image: image.to_string(),
            index: index.to_string(),
            wanted: platform::host_description(),
            available: {
                let list: Vec<String> = platforms
                    .iter()
                    .map(|p| p.as_ref().map_or("unknown".to_string(), |p| p.to_string()))
                    .collect();
                if list.is_empty() {
                    "nothing".to_string()
                } else {
                    list.join(", ")
                }
            },
        }),
    }
}

/// Unpacks `layers` into `<temp_dir>/rootfs`, adds the mount points, writes
/// `<temp_dir>/image.json` and renames `temp_dir` to `final_dir`.
fn unpack_root(
    image: &str,
    temp_dir: &Path,
    final_dir: &Path,
    layers: Vec<unpack::Layer>,
    mut record: ImageRecord,
    max_unpacked: u64,
) -> Result<ImageRecord, ImageError> {
    use std::os::unix::fs::DirBuilderExt;
    let rootfs = temp_dir.join("rootfs");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(temp_dir)
        .map_err(|e| ImageError::io("create", temp_dir, e))?;
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&rootfs)
        .map_err(|e| ImageError::io("create", &rootfs, e))?;
    record.size = unpack::apply_layers(image, &record.digest, &rootfs, &layers, max_unpacked)?;
    let mut mount_points = vec![
        "proc".to_string(),
        "dev".to_string(),
        "tmp".to_string(),
        "kratix/input".to_string(),
        "kratix/output".to_string(),
        "kratix/metadata".to_string(),
    ];
    if let Some(w) = &record.config.working_dir {
        mount_points.push(w.clone());
    }
    for m in &mount_points {
        let comps: Vec<&OsStr> = m
            .split('/')
            .filter(|c| !c.is_empty() && *c != "." && *c != "..")
            .map(OsStr::new)
            .collect();
        if unpack::resolve_in_root(&rootfs, &comps, true).is_err() {
            tracing::warn!(
                image,
                path = m,
                "image root: cannot create this mount point (a file is in the way)"
            );
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp = rootfs.join("tmp");
    if std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_dir()) {
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777));
    }
    let json = serde_json::to_vec_pretty(&record).expect("an image record serializes");
    let json_path = temp_dir.join("image.json");
    std::fs::write(&json_path, json).map_err(|e| ImageError::io("write", &json_path, e))?;
    match std::fs::rename(temp_dir, final_dir) {
        Ok(()) => Ok(record),
        // Another process finished the same image first: use theirs.
        Err(_) if final_dir.join("image.json").exists() => {
            let _ = unpack::remove_path(temp_dir);
            Ok(record)
        }
        Err(e) => Err(ImageError::io("rename", final_dir, e)),
    }
}
