//! The on-disk cache, content-addressed and shared between images:
//!
//! ```text
//! <cache>/blobs/sha256/<hex>            manifests, indexes, configs, compressed layers
//! <cache>/roots/<manifest hex>/rootfs/  an unpacked image (read-only for callers)
//! <cache>/roots/<manifest hex>/image.json   its config, layers and size
//! <cache>/refs/<sha256 of reference>.json    a resolved reference: digest, when, from where
//! ```
//!
//! Everything is written beside its final name as `.tmp-…` and renamed when complete, so a
//! half-written blob or half-unpacked root is never used; a crash leaves only `.tmp-…`
//! entries (named with the writer's pid), removed by [`Layout::open`] once their writer is no
//! longer running.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::ImageConfig;
use super::error::ImageError;
use super::unpack::remove_path;

/// Prefix of every temporary entry.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// The cache directory's layout.
pub(crate) struct Layout {
    /// The cache directory.
    pub dir: PathBuf,
    counter: AtomicU64,
}

/// A resolved reference (`refs/<sha256 of reference>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RefRecord {
    /// The reference, normalized (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// The platform manifest's digest.
    pub digest: String,
    /// The digest the reference itself named on the registry (an index's digest when it
    /// named one), to notice a moved tag with a HEAD request.
    pub top_digest: String,
    /// The registry host contacted.
    pub pulled_from: String,
    /// When it was resolved (milliseconds since the Unix epoch).
    pub resolved_at_ms: u64,
}

/// An unpacked image's record (`roots/<hex>/image.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageRecord {
    /// The manifest digest.
    pub digest: String,
    /// The config blob's digest.
    pub config_digest: String,
    /// The layer blobs' digests, in order.
    pub layers: Vec<String>,
    /// The runtime config.
    pub config: ImageConfig,
    /// Bytes of regular file content in the root.
    pub size: u64,
}

/// The hex part of a `sha256:<64 lower-case hex>` digest; anything else (other algorithms,
/// path characters) is refused, so a digest is always safe as a file name.
pub(crate) fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

/// Whether the process that writes the temporary entry `name` (`.tmp-<stem>-<pid>-<n>`,
/// [`Layout::temp_in`]) is still running: another process sharing the cache (`promised images
/// pull` beside the daemon) or this one (a store opened again on reload) may be writing it
/// right now. A name without a pid, or a pid not running, is a leftover.
fn writer_alive(name: &str) -> bool {
    let mut parts = name.rsplitn(3, '-');
    let (Some(n), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    if n.parse::<u64>().is_err() {
        return false;
    }
    match pid.parse::<u32>() {
        Ok(pid) if pid > 0 => Path::new("/proc").join(pid.to_string()).exists(),
        _ => false,
    }
}

impl Layout {
    /// Creates the directories under `dir` and removes what an interrupted run left behind
    /// (`.tmp-…` entries of processes no longer running: several stores, in this process or
    /// another one such as `promised images pull` beside the daemon, may share the cache).
    pub fn open(dir: &Path) -> Result<Layout, ImageError> {
        let layout = Layout {
            dir: dir.to_path_buf(),
            counter: AtomicU64::new(0),
        };
        for d in [layout.blobs_dir(), layout.roots_dir(), layout.refs_dir()] {
            std::fs::create_dir_all(&d).map_err(|e| ImageError::io("create", &d, e))?;
            for entry in std::fs::read_dir(&d).map_err(|e| ImageError::io("list", &d, e))? {
                let entry = entry.map_err(|e| ImageError::io("list", &d, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(TMP_PREFIX) && !writer_alive(&name) {
                    tracing::info!(path = %entry.path().display(), "image cache: removing an unfinished download or unpack");
                    remove_path(&entry.path())
                        .map_err(|e| ImageError::io("remove", entry.path(), e))?;
                }
            }
        }
        Ok(layout)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    pub fn roots_dir(&self) -> PathBuf {
        self.dir.join("roots")
    }

    fn refs_dir(&self) -> PathBuf {
        self.dir.join("refs")
    }

    /// A fresh temporary path in `dir` (not created).
    pub fn temp_in(&self, dir: &Path, stem: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        dir.join(format!("{TMP_PREFIX}{stem}-{}-{n}", std::process::id()))
    }

    /// The path of blob `digest`, `None` for a digest that is not `sha256:<64 hex>`.
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        Some(self.blobs_dir().join(digest_hex(digest)?))
    }

    /// A temporary path beside the blobs.
    pub fn blob_temp(&self, digest: &str) -> PathBuf {
        self.temp_in(&self.blobs_dir(), digest_hex(digest).unwrap_or("blob"))
    }

    /// The directory of unpacked image `digest`.
    pub fn root_dir(&self, digest: &str) -> Option<PathBuf> {
        Some(self.roots_dir().join(digest_hex(digest)?))
    }

    /// Whether blob `digest` is present and its content matches the digest (streamed, not
    /// read into memory). A blob that does not match is deleted (and reported in the log).
    #[cfg(test)]
    pub fn blob_ok(&self, digest: &str) -> Result<bool, ImageError> {
        match self.blob_path(digest) {
            Some(path) => verify_blob_file(&path, digest),
            None => Ok(false),
        }
    }

    /// Blob `digest` read into memory if present and matching (small blobs: manifests and
    /// configs); a mismatching one is deleted.
    pub fn read_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, ImageError> {
        let Some(path) = self.blob_path(digest) else {
            return Ok(None);
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io("read", &path, e)),
        };
        let actual = super::registry::sha256_digest(&bytes);
        if actual != digest {
            tracing::warn!(digest, actual, path = %path.display(), "image cache: blob does not match its digest (corrupt or truncated); deleted, it will be downloaded again");
            std::fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e))?;
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Stores `bytes` as blob `digest` (the caller checked the digest).
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let Some(path) = self.blob_path(digest) else {
            return Ok(());
        };
        write_atomic(&path, &self.blob_temp(digest), bytes)
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let key = hex::encode(sha2::Sha256::digest(reference.as_bytes()));
        self.refs_dir().join(format!("{key}.json"))
    }

    /// The record of `reference` (normalized), if any; an unreadable one counts as absent.
    pub fn read_ref(&self, reference: &str) -> Option<RefRecord> {
        let bytes = std::fs::read(self.ref_path(reference)).ok()?;
        let record: RefRecord = serde_json::from_slice(&bytes).ok()?;
        (record.reference == reference && digest_hex(&record.digest).is_some()).then_some(record)
    }

    /// Records a resolved reference.
    pub fn write_ref(&self, record: &RefRecord) -> Result<(), ImageError> {
        let path = self.ref_path(&record.reference);
        let tmp = self.temp_in(&self.refs_dir(), "ref");
        let bytes = serde_json::to_vec_pretty(record).expect("a ref record serializes");
        write_atomic(&path, &tmp, &bytes)
    }

    /// Every reference record.
    pub fn refs(&self) -> Result<Vec<(PathBuf, RefRecord)>, ImageError> {
        let dir = self.refs_dir();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| ImageError::io("list", &dir, e))? {
            let entry = entry.map_err(|e| ImageError::io("list", &dir, e))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            if let Some(r) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<RefRecord>(&b).ok())
            {
                out.push((path, r));
            }
        }
        Ok(out)
    }

    /// The record of unpacked image `digest`, if it is complete.
    pub fn read_image(&self, digest: &str) -> Result<Option<ImageRecord>, ImageError> {
        let Some(dir) = self.root_dir(digest) else {
            return Ok(None);
        };
        let path = dir.join("image.json");
        match std::fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("read", &path, e)),
        }
    }

    /// All blob digests present.
    pub fn blob_digests(&self) -> Result<Vec<String>, ImageError> {
        digests_in(&self.blobs_dir())
    }

    /// All unpacked images' digests (complete ones).
    pub fn root_digests(&self) -> Result<Vec<String>, ImageError> {
        digests_in(&self.roots_dir())
    }
}

/// `sha256:<hex>` of every entry of `dir` named by a digest's hex (temporary and other entries
/// are skipped).
fn digests_in(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| ImageError::io("list", dir, e))? {
        let entry = entry.map_err(|e| ImageError::io("list", dir, e))?;
        let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
        if digest_hex(&digest).is_some() {
            out.push(digest);
        }
    }
    Ok(out)
}

/// Whether the blob file at `path` exists and matches `digest`; one that does not match is
/// deleted (and reported in the log).
pub(crate) fn verify_blob_file(path: &Path, digest: &str) -> Result<bool, ImageError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ImageError::io("open", path, e)),
    };
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| ImageError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual == digest {
        return Ok(true);
    }
    tracing::warn!(digest, actual, path = %path.display(), "image cache: blob does not match its digest (corrupt or truncated); deleted, it will be downloaded again");
    std::fs::remove_file(path).map_err(|e| ImageError::io("remove", path, e))?;
    Ok(false)
}

/// Writes `bytes` to `tmp`, syncs it, renames it to `path`.
pub(crate) fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let result = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        ImageError::io("write", path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_safe_file_names() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest_hex(&ok), Some("a".repeat(64).as_str()));
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(digest_hex("sha256:../../etc/passwd").is_none());
        assert!(digest_hex(&format!("sha512:{}", "a".repeat(128))).is_none());
    }

    #[test]
    fn corrupt_blobs_are_not_used() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::open(d.path()).unwrap();
        let body = b"{\"hello\":1}";
        let digest = super::super::registry::sha256_digest(body);
        layout.write_blob(&digest, body).unwrap();
        assert!(layout.blob_ok(&digest).unwrap());
        assert_eq!(layout.read_blob(&digest).unwrap().unwrap(), body);
        std::fs::write(layout.blob_path(&digest).unwrap(), b"{\"hello\"").unwrap();
        assert!(!layout.blob_ok(&digest).unwrap());
        assert!(!layout.blob_path(&digest).unwrap().exists());
        assert!(layout.read_blob(&digest).unwrap().is_none());
    }

    #[test]
    fn open_removes_leftovers_of_processes_no_longer_running() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::open(d.path()).unwrap();
        // No process has this pid (above any pid_max).
        let dead = layout
            .roots_dir()
            .join(format!("{TMP_PREFIX}x-{}-0", u32::MAX));
        std::fs::create_dir_all(dead.join("rootfs/a")).unwrap();
        let nameless = layout.blobs_dir().join(format!("{TMP_PREFIX}junk"));
        std::fs::write(&nameless, b"x").unwrap();
        // This process is alive: what it writes stays while another store opens the cache.
        let live = layout.temp_in(&layout.roots_dir(), "x");
        std::fs::create_dir_all(live.join("rootfs/a")).unwrap();
        drop(layout);
        Layout::open(d.path()).unwrap();
        assert!(!dead.exists());
        assert!(!nameless.exists());
        assert!(live.exists());
    }
}
