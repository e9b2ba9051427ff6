//! Run directories that outlive a killed process are removed at the next start.
//!
//! Each process creates its Pipeline run directories inside one directory of its own,
//! `<work_dir>/promised-proc-<random>/`, which it holds an exclusive `flock` on for as long as
//! it lives (the kernel drops the lock when the process dies, SIGKILL included). The first
//! time a process uses a work directory it removes every sibling `promised-proc-*` whose lock
//! it can take: their process is gone. Several processes (a daemon, `promised reconcile`,
//! parallel tests) can share one work directory such as `/dev/shm`: a live process's
//! directory is never touched, whatever its PID or age.
//!
//! The directory is created under a hidden temporary name, locked, and only then renamed to
//! its `promised-proc-` name, so no sweeper can see it unlocked.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{FlockOperation, flock};

use super::Error;

/// Prefix of a process's directory under the work directory.
pub const PROCESS_DIR_PREFIX: &str = "promised-proc-";

/// Work directory → (this process's directory in it, the locked handle that keeps it).
static OWN: Mutex<BTreeMap<PathBuf, (PathBuf, File)>> = Mutex::new(BTreeMap::new());

/// This process's directory under `work_dir` (created, and stale siblings removed, on first
/// use). Errors: the work directory cannot be created, or the directory cannot be created or
/// locked.
pub fn process_dir(work_dir: &Path) -> Result<PathBuf, Error> {
    let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((dir, _)) = own.get(work_dir)
        && dir.is_dir()
    {
        return Ok(dir.clone());
    }
    let io = |context: &'static str| {
        move |e: std::io::Error| Error::Io {
            context: context.to_string(),
            message: e.to_string(),
        }
    };
    std::fs::create_dir_all(work_dir).map_err(io("creating the work directory"))?;
    let removed = remove_stale(work_dir);
    if removed > 0 {
        tracing::info!(work_dir = %work_dir.display(), removed,
            "removed run directories left by a process that was killed");
    }
    let tmp = tempfile::Builder::new()
        .prefix(".promised-new-")
        .tempdir_in(work_dir)
        .map_err(io("creating the run directory"))?;
    let handle = File::open(tmp.path()).map_err(io("opening the run directory"))?;
    flock(&handle, FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| io("locking the run directory")(e.into()))?;
    let name = tmp
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(".promised-new-"))
        .unwrap_or_default()
        .to_string();
    let dir = work_dir.join(format!("{PROCESS_DIR_PREFIX}{name}"));
    std::fs::rename(tmp.path(), &dir).map_err(io("naming the run directory"))?;
    std::mem::forget(tmp); // renamed: nothing left to clean up under the old name
    own.insert(work_dir.to_path_buf(), (dir.clone(), handle));
    Ok(dir)
}

/// Removes this process's directories (at exit; a killed process leaves them to the next
/// start's sweep).
pub fn remove_own() {
    let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    for (_, (dir, _handle)) in std::mem::take(&mut *own) {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Removes every `promised-proc-*` directory of `work_dir` whose lock is free (its process
/// is gone). Returns how many were removed.
pub fn remove_stale(work_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(PROCESS_DIR_PREFIX) {
            continue;
        }
        let path = e.path();
        let Ok(handle) = File::open(&path) else {
            continue;
        };
        if flock(&handle, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a live process holds it
        }
        match remove_dir(&path) {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(dir = %path.display(), error = %err, "cannot remove a stale run directory")
            }
        }
    }
    removed
}

/// Removes `path` and what it holds: `Ok(false)` when it was already gone. Another process
/// may remove the same stale directory first, or its owner may remove it at exit after this
/// one opened it: the directory is gone either way, which is no failure (parallel tests
/// sharing `/dev/shm` logged a spurious warning).
fn remove_dir(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_already_gone_is_not_a_failure() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(format!("{PROCESS_DIR_PREFIX}x"));
        assert!(matches!(remove_dir(&dir), Ok(false)));
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::write(dir.join("run/f"), "x").unwrap();
        assert!(matches!(remove_dir(&dir), Ok(true)));
        assert!(!dir.exists());
        // A stale directory is removed and counted; one gone is neither.
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(remove_stale(d.path()), 1);
        assert_eq!(remove_stale(d.path()), 0);
    }
}
