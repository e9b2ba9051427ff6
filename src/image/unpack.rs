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
//! Whiteouts: `.wh.NAME` removes `NAME` of the lower layers, `.wh..wh..opq` empties its
//! directory of lower content (entries of the same layer stay, in any order). A later entry
//! replaces an earlier one (a directory over a directory is merged).
//!
//! Files are owned by the daemon user; permission bits are kept except setuid/setgid;
//! directories are made owner-writable (`u+rwx`) so later layers and prune can change them.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::Digest;

use super::error::ImageError;

/// Longest chain of symlinks followed while resolving one path inside the root (Linux's
/// `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;

/// One layer to apply: its blob on disk and what it must decompress to.
pub(crate) struct Layer {
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
pub(crate) fn apply_layers(
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

/// The plain components of a tar path: refuses absolute paths and `..`; drops `.` and empty
/// components.
fn path_components(raw: &[u8]) -> Result<Vec<&OsStr>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path with a '..' component"),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
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

/// Whether the relative symlink `target`, placed in a directory `depth` levels below the
/// root, climbs above the root.
fn climbs_out(mut depth: usize, target: &[u8]) -> bool {
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    false
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

/// Removes a file, symlink or directory tree without following symlinks.
pub(crate) fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => make_tree_writable(path).and_then(|()| fs::remove_dir_all(path)),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Adds `u+rwx` to every directory of the tree at `path` (symlinks are not followed), so
/// `remove_dir_all` can empty them.
fn make_tree_writable(path: &Path) -> io::Result<()> {
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let m = fs::symlink_metadata(&dir)?;
        if !m.is_dir() {
            continue;
        }
        let mode = m.permissions().mode();
        if mode & 0o700 != 0o700 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o700))?;
        }
        for child in fs::read_dir(&dir)? {
            let child = child?;
            if child.file_type()?.is_dir() {
                stack.push(child.path());
            }
        }
    }
    Ok(())
}

/// Why [`resolve_in_root`] failed.
pub(crate) enum ResolveError {
    /// Creating a missing directory failed.
    Io(PathBuf, io::Error),
    /// The path cannot be resolved to a directory inside the root.
    Refused(String),
}

/// Resolves the directory path `comps` inside `root` as if `root` were `/`: symlinks found on
/// the way are read and followed inside the root (absolute targets restart at the root, `..`
/// stops at the root), at most [`MAX_SYMLINK_HOPS`] of them; nothing is followed on the host.
/// Returns the resolved path relative to the root, every component a real directory. With
/// `create`, missing directories are created (mode 0755); else a missing one is refused.
pub(crate) fn resolve_in_root(
    root: &Path,
    comps: &[&OsStr],
    create: bool,
) -> Result<PathBuf, ResolveError> {
    let mut todo: std::collections::VecDeque<Vec<u8>> =
        comps.iter().map(|c| c.as_bytes().to_vec()).collect();
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let rel: PathBuf = done
            .iter()
            .map(|d| OsStr::from_bytes(d))
            .chain([OsStr::from_bytes(&c)])
            .collect();
        let host = root.join(&rel);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ResolveError::Refused(format!(
                        "more than {MAX_SYMLINK_HOPS} symlinks while resolving {}",
                        rel.display()
                    )));
                }
                let target = fs::read_link(&host).map_err(|e| ResolveError::Io(host.clone(), e))?;
                let target = target.as_os_str().as_bytes();
                if target.first() == Some(&b'/') {
                    done.clear();
                }
                for t in target.split(|b| *b == b'/').rev() {
                    todo.push_front(t.to_vec());
                }
            }
            Ok(m) if m.is_dir() => done.push(c),
            Ok(_) => {
                return Err(ResolveError::Refused(format!(
                    "{} is not a directory in the image root",
                    rel.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&host)
                    .map_err(|e| ResolveError::Io(host.clone(), e))?;
                done.push(c);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ResolveError::Refused(format!(
                    "{} does not exist in the image root",
                    rel.display()
                )));
            }
            Err(e) => return Err(ResolveError::Io(host, e)),
        }
    }
    Ok(done.iter().map(|d| OsStr::from_bytes(d)).collect())
}

/// A reader over a zstd stream of any number of frames (skippable frames skipped), with the
/// pure-Rust `ruzstd` decoder, whose `StreamingDecoder` reads one frame only.
struct ZstdFrames<R> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> Self {
        ZstdFrames {
            source,
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                if self.decoder.can_collect() > 0 {
                    return self.decoder.read(buf);
                }
                if self.decoder.is_finished() {
                    self.in_frame = false;
                    continue;
                }
                self.decoder
                    .decode_blocks(
                        &mut self.source,
                        ruzstd::decoding::BlockDecodingStrategy::UptoBytes(1024 * 1024),
                    )
                    .map_err(io::Error::other)?;
                continue;
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = io::copy(
                        &mut (&mut self.source).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                    if skipped != u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "zstd skippable frame truncated",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_refuse_escapes() {
        assert!(path_components(b"/etc/passwd").is_err());
        assert!(path_components(b"a/../../x").is_err());
        assert!(path_components(b"..").is_err());
        assert_eq!(path_components(b"./a//b/.").unwrap().len(), 2);
    }

    #[test]
    fn relative_symlinks_that_climb_out() {
        assert!(climbs_out(0, b".."));
        assert!(climbs_out(1, b"../../x"));
        assert!(!climbs_out(1, b"../x"));
        assert!(!climbs_out(0, b"a/../b"));
        assert!(climbs_out(0, b"a/../../b"));
    }

    #[test]
    fn resolver_stays_in_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let c = |s: &'static str| -> Vec<&OsStr> { s.split('/').map(OsStr::new).collect() };
        let ok = |s| match resolve_in_root(&root, &c(s), true) {
            Ok(p) => p,
            Err(ResolveError::Refused(r)) => panic!("{s}: {r}"),
            Err(ResolveError::Io(p, e)) => panic!("{s}: {} {e}", p.display()),
        };
        assert_eq!(ok("lib/x"), PathBuf::from("usr/lib/x"));
        assert_eq!(ok("up/etc"), PathBuf::from("etc"));
        assert!(root.join("etc").is_dir());
        assert!(matches!(
            resolve_in_root(&root, &c("loop/x"), true),
            Err(ResolveError::Refused(_))
        ));
    }

    fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o4755); // setuid: dropped
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o555); // read-only: made owner-writable
                }
            }
            b.append_data(&mut h, path, data.unwrap_or(b"")).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn layer(dir: &Path, name: &str, tar: &[u8]) -> Layer {
        let path = dir.join(name);
        fs::write(&path, tar).unwrap();
        Layer {
            digest: format!("sha256:{name}"),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            diff_id: format!("sha256:{}", hex::encode(sha2::Sha256::digest(tar))),
            path,
        }
    }

    #[test]
    fn whiteouts_and_opaque_directories() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir(&root).unwrap();
        let l1 = tar_of(&[
            ("a", None),
            ("a/old", Some(b"old")),
            ("a/sub", None),
            ("a/sub/deep", Some(b"deep")),
            ("x", Some(b"x")),
            ("keep", Some(b"keep")),
        ]);
        // New content first, the opaque marker after it; a/sub2 has no directory entry; a/sub
        // is written again, so its lower content must still go.
        let l2 = tar_of(&[
            ("a/sub2/new", Some(b"new")),
            ("a/sub/fresh", Some(b"fresh")),
            ("a/.wh..wh..opq", Some(b"")),
            (".wh.x", Some(b"")),
        ]);
        let layers = [layer(d.path(), "l1", &l1), layer(d.path(), "l2", &l2)];
        let written = apply_layers("img", "sha256:m", &root, &layers, 1 << 20).unwrap();
        assert_eq!(written, 3 + 4 + 1 + 4 + 3 + 5);
        assert!(!root.join("x").exists() && !root.join(".wh.x").exists());
        assert!(root.join("keep").exists());
        let mut names: Vec<String> = fs::read_dir(root.join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["sub", "sub2"]);
        assert!(!root.join("a/sub/deep").exists());
        assert_eq!(fs::read(root.join("a/sub2/new")).unwrap(), b"new");
        let mode = fs::metadata(root.join("keep"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        let mode = fs::metadata(root.join("a")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);

        // A wrong diff_id is refused; so is a layer over the size budget.
        let root2 = d.path().join("root2");
        fs::create_dir(&root2).unwrap();
        let mut bad = layer(d.path(), "l1b", &l1);
        bad.diff_id = format!("sha256:{}", "0".repeat(64));
        let e = apply_layers("img", "sha256:m", &root2, &[bad], 1 << 20).unwrap_err();
        assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
        let root3 = d.path().join("root3");
        fs::create_dir(&root3).unwrap();
        let e = apply_layers(
            "img",
            "sha256:m",
            &root3,
            &[layer(d.path(), "l1c", &l1)],
            1000,
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn zstd_multiple_frames_and_skippable() {
        // Two frames of "hello " and "world" (raw blocks), with a skippable frame between.
        fn raw_frame(data: &[u8]) -> Vec<u8> {
            let mut f = vec![0x28, 0xB5, 0x2F, 0xFD];
            // Frame header descriptor: single segment, FCS 1 byte.
            f.push(0x20);
            f.push(data.len() as u8);
            // Last block, raw, size.
            let header = 1u32 | ((data.len() as u32) << 3);
            f.extend_from_slice(&header.to_le_bytes()[..3]);
            f.extend_from_slice(data);
            f
        }
        let mut s = raw_frame(b"hello ");
        s.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        s.extend(raw_frame(b"world"));
        let mut out = String::new();
        ZstdFrames::new(&s[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }
}
