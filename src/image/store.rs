//! [`ImageStore`]: opening the cache, the per-key locks and in-flight digests, the registry
//! target of a reference (mirrors, credentials) and resolving a reference to the platform
//! manifest digest ([`ImageStore::resolve`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_client::Reference;
use statestores::NetworkTimeouts;

use super::cache::{Layout, RefRecord};
use super::error::ImageError;
use super::manifest::{Manifest, choose_entry, parse_manifest};
use super::registry::{Registries, Target};
use super::{ImageSettings, PullPolicy, Resolved, auth, cache};

/// The image cache and puller. `Send + Sync`: share one per cache directory through an
/// `Arc`. Concurrent [`ImageStore::ensure`] calls for the same image download and unpack it
/// once (a lock per digest); the others wait and get the same root.
pub struct ImageStore {
    pub(super) settings: ImageSettings,
    pub(super) layout: Layout,
    auth_file: Option<PathBuf>,
    pub(super) registries: Registries,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Digests of blobs an ensure is using (count per digest): prune keeps them.
    pub(super) in_flight: Mutex<BTreeMap<String, usize>>,
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
pub(super) struct InFlight<'a> {
    store: &'a ImageStore,
    digests: Vec<String>,
}

impl InFlight<'_> {
    pub(super) fn add(&mut self, digest: &str) {
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ImageStore {
    /// Opens (creating it if needed) the cache at [`ImageSettings::cache_dir`], default
    /// `<state_dir>/images`, and removes what an interrupted run left behind (temporary
    /// entries of processes no longer running: a daemon's pull under way is left alone by a
    /// second store opened on its cache, e.g. by `promised images pull`). `network`
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

    pub(super) fn parse(image: &str) -> Result<Reference, ImageError> {
        let reference =
            super::reference::parse(image).map_err(|e| ImageError::InvalidReference {
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

    pub(super) async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }

    pub(super) fn in_flight(&self) -> InFlight<'_> {
        InFlight {
            store: self,
            digests: Vec::new(),
        }
    }

    /// Where `reference` is pulled from: the mirror of its registry if configured, with the
    /// credentials for that host.
    pub(super) fn target(&self, reference: &Reference) -> Result<Target, ImageError> {
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
}
