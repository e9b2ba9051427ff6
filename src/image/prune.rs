//! Listing and pruning the cache: [`ImageStore::pulled`] and [`ImageStore::prune`].

use std::collections::{BTreeMap, BTreeSet};

use super::error::ImageError;
use super::manifest::{Manifest, parse_manifest};
use super::{CachedImage, ImageStore, PruneReport, unpack};

impl ImageStore {
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
