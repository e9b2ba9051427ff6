//! Applying layers (tar streams, optionally gzip- or zstd-compressed) to a root directory.
//!
//! Every entry stays inside the root:
//! - an entry whose path is absolute or has a `..` component is refused;
//! - the parent directories of an entry are resolved *inside* the root
//!   ([`resolve_in_root`]): a symlinked parent is followed as if the root were `/` (an
//!   absolute target restarts at the root, `..` stops at the root), never on the host;
//! - a symlink entry keeps its target verbatim when it is absolute (the sandbox interprets it
//!   inside the root, as Docker does); a relative target that climbs above the root is
//!   refused;
//! - a hard link must name a regular file already in the root;
//! - device and FIFO entries are skipped.
//!
//! Whiteouts: `.wh.NAME` removes `NAME` of the lower layers (`.wh..` and `.wh...` are refused),
//! `.wh..wh..opq` empties its
//! directory of lower content (entries of the same layer stay, in any order). A later entry
//! replaces an earlier one (a directory over a directory is merged).
//!
//! Files are owned by the daemon user; permission bits are kept except setuid/setgid;
//! directories are made owner-writable (`u+rwx`) so later layers and prune can change them.
//!
//! Files: `paths` (tar path checks, the in-root resolver, removing a tree), `zstd` (the
//! multi-frame zstd reader), `tests`.

mod paths;
#[cfg(test)]
mod tests;
mod zstd;

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::Digest;

use super::error::ImageError;

pub(crate) use paths::{ResolveError, remove_path, resolve_in_root};
use paths::{climbs_out, path_components};
use zstd::ZstdFrames;

/// One layer to apply: its blob on disk and what it must decompress to.
pub struct Layer {
    /// The compressed blob's digest (`sha256:…`), for messages.
    pub digest: String,
    /// The layer's media type (decides the decompressor).
    pub media_type: String,
    /// `rootfs.diff_ids[i]` of the config: the SHA-256 of the uncompressed tar.
    pub diff_id: String,
    /// The verified blob file.
    pub path: PathBuf,
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

impl Compression {
    /// The compression of a layer media type, `None` if it is not a layer type handled here.
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }
}

/// Applies `layers` in order to `root` (an existing, empty directory). Returns the bytes of
/// regular file content written. `max_unpacked` caps the uncompressed tar bytes of all
/// layers together.
pub fn apply_layers(
    image: &str,
    manifest_digest: &str,
    root: &Path,
    layers: &[Layer],
    max_unpacked: u64,
) -> Result<u64, ImageError> {
    let mut budget = Budget {
        used: 0,
        limit: max_unpacked,
    };
    let mut written_bytes = 0;
    for layer in layers {
        written_bytes += apply_layer(image, manifest_digest, root, layer, &mut budget)?;
    }
    Ok(written_bytes)
}

struct Budget {
    used: u64,
    limit: u64,
}

/// A reader that hashes and counts what passes through it, and fails once more than
/// `remaining` bytes were read.
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
    remaining: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.remaining {
            self.exceeded.set(true);
            return Err(io::Error::other("unpacked size limit exceeded"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn apply_layer(
    image: &str,
    manifest_digest: &str,
    root: &Path,
    layer: &Layer,
    budget: &mut Budget,
) -> Result<u64, ImageError> {
    let compression = Compression::of_media_type(&layer.media_type).ok_or_else(|| {
        ImageError::UnsupportedMediaType {
            image: image.to_string(),
            what: "layer".to_string(),
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        }
    })?;
    let file = fs::File::open(&layer.path).map_err(|e| ImageError::io("open", &layer.path, e))?;
    let file = BufReader::with_capacity(256 * 1024, file);
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(ZstdFrames::new(file)),
    };
    let exceeded = Rc::new(Cell::new(false));
    let reader = Hashing {
        inner: decompressed,
        hasher: sha2::Sha256::new(),
        count: 0,
        remaining: budget.limit.saturating_sub(budget.used),
        exceeded: exceeded.clone(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut applier = Applier {
        image,
        layer: &layer.digest,
        root,
        written: HashSet::new(),
        bytes: 0,
    };
    let mut failure = None;
    match archive.entries() {
        Err(e) => failure = Some(ApplyError::Read(e)),
        Ok(entries) => {
            for entry in entries {
                let result = match entry {
                    Ok(mut entry) => applier.apply(&mut entry),
                    Err(e) => Err(ApplyError::Read(e)),
                };
                if let Err(e) = result {
                    failure = Some(e);
                    break;
                }
            }
        }
    }
    let mut reader = archive.into_inner();
    if failure.is_none() {
        // Tar stops at its end blocks: the diff_id covers the whole stream.
        if let Err(e) = io::copy(&mut reader, &mut io::sink()) {
            failure = Some(ApplyError::Read(e));
        }
    }
    match failure {
        None => {}
        Some(ApplyError::Image(e)) => return Err(e),
        Some(ApplyError::Read(_)) if exceeded.get() => {
            return Err(ImageError::TooLarge {
                image: image.to_string(),
                what: "unpacked image".to_string(),
                digest: manifest_digest.to_string(),
                size: budget.used + reader.count,
                limit: budget.limit,
                setting: "maxUnpackedBytes".to_string(),
            });
        }
        Some(ApplyError::Read(e)) => {
            return Err(ImageError::invalid(
                image,
                format!(
                    "layer {} cannot be read as a {} tar: {e}; the blob is corrupt or not a layer",
                    layer.digest,
                    match compression {
                        Compression::None => "plain",
                        Compression::Gzip => "gzip-compressed",
                        Compression::Zstd => "zstd-compressed",
                    }
                ),
            ));
        }
    }
    budget.used += reader.count;
    let actual = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
    if actual != layer.diff_id {
        return Err(ImageError::DigestMismatch {
            image: image.to_string(),
            what: format!("uncompressed layer {} (diff_id)", layer.digest),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    Ok(applier.bytes)
}

enum ApplyError {
    /// Refused or failed on the host side.
    Image(ImageError),
    /// Reading the entry's content failed (the stream is broken or over the limit).
    Read(io::Error),
}

impl From<ImageError> for ApplyError {
    fn from(e: ImageError) -> Self {
        ApplyError::Image(e)
    }
}

struct Applier<'a> {
    image: &'a str,
    layer: &'a str,
    root: &'a Path,
    /// In-root paths (resolved, relative) written by this layer: an opaque whiteout keeps
    /// them.
    written: HashSet<PathBuf>,
    bytes: u64,
}

impl Applier<'_> {
    fn unsafe_entry(&self, entry: &[u8], reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            image: self.image.to_string(),
            layer: self.layer.to_string(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    fn host_io(&self, op: &str, path: &Path, e: io::Error) -> ImageError {
        ImageError::io(op, path, e)
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), ApplyError> {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let comps = path_components(&raw).map_err(|r| self.unsafe_entry(&raw, r))?;
        let Some((name, parents)) = comps.split_last() else {
            // The root itself ("./"): its mode is ours.
            return Ok(());
        };
        let name_bytes = name.as_bytes();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            tracing::debug!(image = self.image, layer = self.layer, entry = %String::from_utf8_lossy(&raw), "device or FIFO entry skipped");
            return Ok(());
        }
        let parent = self.resolve(&raw, parents, true)?;
        if name_bytes == b".wh..wh..opq" {
            self.opaque(&parent)?;
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(b".wh.") {
            if hidden.starts_with(b".wh.") || hidden.is_empty() {
                return Ok(()); // aufs bookkeeping (.wh..wh.plnk etc.)
            }
            if hidden == b"." || hidden == b".." {
                // `.wh..` would remove the directory itself and `.wh...` the one above it
                // (above the root for a top-level entry): found by the layer_tar fuzz target.
                return Err(self
                    .unsafe_entry(
                        &raw,
                        "a whiteout must name an entry of its directory, not . or ..",
                    )
                    .into());
            }
            let victim = parent.join(OsStr::from_bytes(hidden));
            self.remove(&self.root.join(&victim))?;
            return Ok(());
        }
        let rel = parent.join(name);
        let host = self.root.join(&rel);
        // With its parents: directories created implicitly for it stay under an opaque
        // marker of the same layer.
        for a in rel.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            self.written.insert(a.to_path_buf());
        }
        let existing = fs::symlink_metadata(&host).ok();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;

        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    self.remove(&host)?;
                    self.mkdir(&host, mode)?;
                }
                None => self.mkdir(&host, mode)?,
            }
            let perms = fs::Permissions::from_mode(dir_mode(mode));
            fs::set_permissions(&host, perms).map_err(|e| self.host_io("chmod", &host, e))?;
            return Ok(());
        }

        if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            if target.is_empty() {
                return Err(self
                    .unsafe_entry(&raw, "symlink with an empty target")
                    .into());
            }
            if target.first() != Some(&b'/') && climbs_out(parent.components().count(), &target) {
                return Err(self
                    .unsafe_entry(
                        &raw,
                        format!(
                            "symlink to {:?} points outside the image root",
                            String::from_utf8_lossy(&target)
                        ),
                    )
                    .into());
            }
            if existing.is_some() {
                self.remove(&host)?;
            }
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), &host)
                .map_err(|e| self.host_io("create the symlink", &host, e))?;
            return Ok(());
        }

        if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let tcomps = path_components(&target).map_err(|r| {
                self.unsafe_entry(
                    &raw,
                    format!("hard link to {:?}: {r}", String::from_utf8_lossy(&target)),
                )
            })?;
            let Some((tname, tparents)) = tcomps.split_last() else {
                return Err(self
                    .unsafe_entry(&raw, "hard link to the image root")
                    .into());
            };
            let not_file = || {
                self.unsafe_entry(
                    &raw,
                    format!(
                        "hard link to {:?}, which is not a regular file in the image root",
                        String::from_utf8_lossy(&target)
                    ),
                )
            };
            let tparent = self
                .resolve(&raw, tparents, false)
                .map_err(|_| not_file())?;
            let source = self.root.join(tparent.join(tname));
            match fs::symlink_metadata(&source) {
                Ok(m) if m.file_type().is_file() => {}
                _ => return Err(not_file().into()),
            }
            if source == host {
                return Ok(());
            }
            if existing.is_some() {
                self.remove(&host)?;
            }
            fs::hard_link(&source, &host).map_err(|e| self.host_io("hard-link", &host, e))?;
            return Ok(());
        }

        if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            if existing.is_some() {
                self.remove(&host)?;
            }
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&host)
                .map_err(|e| self.host_io("create", &host, e))?;
            let n = copy_entry(entry, &mut file).map_err(|e| match e {
                CopyError::Read(e) => ApplyError::Read(e),
                CopyError::Write(e) => ApplyError::Image(self.host_io("write", &host, e)),
            })?;
            self.bytes += n;
            if let Ok(mtime) = entry.header().mtime() {
                let _ = file
                    .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
            }
            // Keep rwx and the sticky bit; never setuid/setgid.
            file.set_permissions(fs::Permissions::from_mode(mode & 0o1777))
                .map_err(|e| self.host_io("chmod", &host, e))?;
            return Ok(());
        }

        // Other types (GNU volume labels, unknown extensions) carry nothing for a root.
        tracing::debug!(image = self.image, layer = self.layer, entry = %String::from_utf8_lossy(&raw), kind = ?kind, "tar entry of an unhandled type skipped");
        Ok(())
    }

    fn mkdir(&self, host: &Path, mode: u32) -> Result<(), ImageError> {
        fs::DirBuilder::new()
            .mode(dir_mode(mode))
            .create(host)
            .map_err(|e| self.host_io("create the directory", host, e))
    }

    /// Removes `host` (a path inside the root) without following symlinks.
    fn remove(&self, host: &Path) -> Result<(), ImageError> {
        remove_path(host).map_err(|e| self.host_io("remove", host, e))
    }

    /// Resolves `comps` (a directory path) inside the root; with `create`, missing
    /// directories are created (0755).
    fn resolve(&self, raw: &[u8], comps: &[&OsStr], create: bool) -> Result<PathBuf, ImageError> {
        resolve_in_root(self.root, comps, create).map_err(|e| match e {
            ResolveError::Io(path, e) => self.host_io("create the directory", &path, e),
            ResolveError::Refused(reason) => self.unsafe_entry(raw, reason),
        })
    }

    /// `.wh..wh..opq` in `dir`: removes everything below it that this layer did not write.
    fn opaque(&self, dir: &Path) -> Result<(), ImageError> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(rel) = stack.pop() {
            let host = self.root.join(&rel);
            let list = match fs::read_dir(&host) {
                Ok(l) => l,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.host_io("list", &host, e)),
            };
            for child in list {
                let child = child.map_err(|e| self.host_io("list", &host, e))?;
                let child_rel = rel.join(child.file_name());
                if !self.written.contains(&child_rel) {
                    self.remove(&child.path())?;
                } else if child.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(child_rel);
                }
            }
        }
        Ok(())
    }
}

/// Directory modes: owner rwx always (so later layers and prune can write), no setuid/setgid,
/// the sticky bit kept.
fn dir_mode(mode: u32) -> u32 {
    (mode & 0o1777) | 0o700
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

fn copy_entry(from: &mut impl Read, to: &mut fs::File) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let got = match from.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..got]).map_err(CopyError::Write)?;
        n += got as u64;
    }
}
