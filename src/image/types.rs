//! The public value types the image store hands out: [`Resolved`], [`Pulled`],
//! [`ImageConfig`], [`CachedImage`] and [`PruneReport`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::ImageStore;

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
