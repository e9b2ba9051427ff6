//! `git gc` when a repository's packs or loose objects pile up (state store clones and the
//! config repo's clone).

use super::repo;

/// The shortest time between two `git gc` runs in one repository ([`gc_if_needed`]).
pub const GC_BACKOFF: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `git gc --quiet` in the repository at `git_dir` (bare or `.git`) when packs (more
/// than 25: every fetch or apply with new objects adds one) or loose objects (about 3,000)
/// have piled up, as `git gc --auto` would, without spawning anything otherwise, and at most
/// once per [`GC_BACKOFF`] per repository (per process). `env` is
/// added to git's environment. Returns true when gc ran and succeeded; the caller should
/// reopen its gix repository then. A failure is logged (warning), not returned: the
/// repository stays usable, only slower.
pub fn gc_if_needed(git_dir: &std::path::Path, env: &[(String, String)]) -> bool {
    if !repo::needs_gc(git_dir) {
        return false;
    }
    // At most one gc per repository in GC_BACKOFF: when gc cannot bring the count down (kept
    // packs, a repository git refuses to touch), it must not run on every fetch.
    {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};
        static LAST: OnceLock<Mutex<HashMap<std::path::PathBuf, std::time::Instant>>> =
            OnceLock::new();
        let mut last = LAST
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last
            .get(git_dir)
            .is_some_and(|t| now.duration_since(*t) < GC_BACKOFF)
        {
            return false;
        }
        last.insert(git_dir.to_path_buf(), now);
    }
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(git_dir)
        .args(["gc", "--quiet"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("GIT_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => true,
        other => {
            tracing::warn!(path = %git_dir.display(), result = ?other, "git gc failed");
            false
        }
    }
}
