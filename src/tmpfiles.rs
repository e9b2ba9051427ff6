//! Temporary files of the state directory that a killed process leaves behind.
//!
//! Every file promised writes atomically in the state directory (`state.json`, blobs,
//! `destinations.json`, revisions, rollouts, the refused config commit) is first written to a
//! temporary file in the same directory, named `.promised-tmp-<pid>-<random>`, then renamed.
//! A process killed between the two (SIGKILL, OOM, power loss) leaves that file: as big as the
//! snapshot (about 25 MB at 10,000 requests), once per kill. [`remove_stale`] removes those of
//! processes that are gone when a state directory is opened; a running process's (another
//! promised sharing the directory) are kept. Found by the crash loop (docs/reliability.md).

use std::path::Path;

/// Name prefix of the temporary files: `.promised-tmp-<pid>-`.
pub const PREFIX: &str = ".promised-tmp-";

/// A new temporary file in `dir`, named for this process (see the module docs). Errors: I/O.
pub fn create_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempfile_in(dir)
}

/// Removes the temporary files in `dir` (not below it) of processes that no longer run.
/// Best effort: a file that cannot be removed is left; returns how many were removed.
pub fn remove_stale(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        // ESRCH: no such process. EPERM (another user's) or Ok: it runs.
        let gone = matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        );
        if gone && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_of_processes_that_are_gone_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let mine = create_in(d.path()).unwrap();
        // A pid that cannot run (above the kernel's pid_max, 2^22).
        let gone = d.path().join(format!("{PREFIX}99999999-abc"));
        std::fs::write(&gone, b"torn").unwrap();
        let other = d.path().join(".tmpXYZ");
        std::fs::write(&other, b"not ours").unwrap();
        assert_eq!(remove_stale(d.path()), 1);
        assert!(!gone.exists());
        assert!(mine.path().exists() && other.exists());
    }
}
