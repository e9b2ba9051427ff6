//! Path safety for unpacking: splitting tar paths ([`path_components`]), relative symlinks
//! that climb out ([`climbs_out`]), the in-root resolver ([`resolve_in_root`]) and removing a
//! tree without following symlinks ([`remove_path`]).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest chain of symlinks followed while resolving one path inside the root (Linux's
/// `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;

/// The plain components of a tar path: refuses absolute paths and `..`; drops `.` and empty
/// components.
pub(super) fn path_components(raw: &[u8]) -> Result<Vec<&OsStr>, &'static str> {
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

/// Whether the relative symlink `target`, placed in a directory `depth` levels below the
/// root, climbs above the root.
pub(super) fn climbs_out(mut depth: usize, target: &[u8]) -> bool {
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
