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
//!
//! Files: `settings` ([`ImageSettings`], [`PullPolicy`]), `types` (the public value types),
//! `store` ([`ImageStore`], resolving), `pull` ([`ImageStore::ensure`]), `prune` (listing
//! and pruning), `manifest` (manifest and config parsing), `registry`, `auth`, `cache`,
//! `platform`, `unpack`, `error`, `checked` (references found valid, kept between processes).

mod auth;
mod cache;
mod checked;
mod error;
mod manifest;
mod platform;
mod prune;
mod pull;
mod reference;
mod registry;
mod settings;
mod store;
mod types;
mod unpack;

pub use error::ImageError;
pub use settings::{
    DEFAULT_MAX_LAYER_BYTES, DEFAULT_MAX_UNPACKED_BYTES, DEFAULT_RESOLVE_INTERVAL, ImageSettings,
    PullPolicy,
};
pub use store::ImageStore;

/// Checks that `image` is a reference the image store can pull (`[registry[:port]/]repository
/// [:tag][@sha256:<64 hex>]`, the distribution reference grammar, lower case), without any
/// I/O. `promised validate` uses it so a bad reference is refused at commit time.
///
/// Errors: [`ImageError::InvalidReference`] naming the image and what is wrong.
pub fn check_reference(image: &str) -> Result<(), ImageError> {
    checked::with(|c| c.check(image))
}

/// Takes the references listed in the record at `path` as checked by [`check_reference`]
/// (`promised reconcile`: `<stateDir>/config-cache/references.json`); see `image::checked`.
pub fn read_checked_references(path: &std::path::Path) {
    checked::with(|c| c.read_record(path));
}

/// Writes the references [`check_reference`] found valid to the record at `path`, when it
/// found a new one. Errors: the file cannot be written.
pub fn write_checked_references(path: &std::path::Path) -> std::io::Result<()> {
    checked::with(|c| c.write_record(path))
}
pub use types::{CachedImage, ImageConfig, PruneReport, Pulled, Resolved};
/// Layer unpacking, public for the fuzz targets (`tests/fuzz.rs`); the image store calls it
/// for every pull.
pub use unpack::{Layer, apply_layers};
