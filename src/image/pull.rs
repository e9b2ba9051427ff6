//! Pulling: [`ImageStore::ensure`] downloads and verifies the blobs an image lacks
//! ([`ImageStore::fetch_blob`]) and unpacks it once into its root ([`unpack_root`]).

use std::ffi::OsStr;
use std::path::Path;

use super::cache::ImageRecord;
use super::error::ImageError;
use super::manifest::{
    Blob, CONFIG_TYPES, MAX_CONFIG_BYTES, Manifest, image_config, parse_manifest,
};
use super::registry::Target;
use super::{ImageStore, PullPolicy, Pulled, cache, unpack};

impl ImageStore {
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
