//! Test hook for the crash loop (`tests/crash_loop.rs`, docs/reliability.md "Crash loop"):
//! `PROMISED_CRASH_AT=<point>[:<nth>]` makes the process kill itself with SIGKILL when
//! execution reaches the named point for the `nth` time (default 1), as a power cut or the
//! OOM killer would: no destructor, no flush, no cleanup.
//!
//! The variable is read once, on the first [`point`] reached; unset (the normal case), a point
//! costs one initialised-`OnceLock` read and a branch. A point name that no code reaches, or an
//! `nth` never reached, does nothing. An unparsable value is ignored with a warning.
//!
//! The points ([`POINTS`]), in the order a pass reaches them:
//!
//! | point | where |
//! |---|---|
//! | `pipeline` | a workflow starts (others may be running: "mid pipeline runs") |
//! | `state-journal` | finished workflows are journalled in `state.journal`, line written, before its `fdatasync` |
//! | `git-tree-write` | a Git state store commit's objects are being written: half of them are on disk |
//! | `git-pushed` | the commit is on the remote (pushed, or the local ref moved), before anything else records it |
//! | `s3-upload` | an object of a BucketStateStore apply was uploaded (after the intent, before the index commit) |
//! | `s3-committed` | the bucket's index names the new files; the deletions and the clean-up are not done |
//! | `state-save` | the end-of-pass `state.json` is written to its temporary file, before the rename |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the point: `<point>[:<nth>]`, e.g. `git-pushed` or
/// `pipeline:17`.
pub const ENV: &str = "PROMISED_CRASH_AT";

/// Every point name the code reaches (see the module docs).
pub const POINTS: &[&str] = &[
    "pipeline",
    "state-journal",
    "git-tree-write",
    "git-pushed",
    "s3-upload",
    "s3-committed",
    "state-save",
];

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn armed() -> Option<&'static (String, u64)> {
    ARMED
        .get_or_init(|| {
            let v = std::env::var(ENV).ok()?;
            let (name, nth) = match v.split_once(':') {
                Some((n, k)) => (n, k.parse::<u64>().ok().filter(|k| *k > 0)),
                None => (v.as_str(), Some(1)),
            };
            match nth {
                Some(nth) if POINTS.contains(&name) => Some((name.to_owned(), nth)),
                _ => {
                    tracing::warn!(value = %v, "{ENV}: not <point>[:<nth>] with a known point; ignored");
                    None
                }
            }
        })
        .as_ref()
}

/// Marks crash point `name` (one of [`POINTS`]): SIGKILLs this process when `PROMISED_CRASH_AT`
/// names it and this is its `nth` hit; otherwise does nothing. Writes one line
/// `promised: crash point <name>:<nth> reached, SIGKILL` to stderr first, so a harness can
/// tell which kill happened.
pub fn point(name: &str) {
    let Some((at, nth)) = armed() else {
        return;
    };
    if at != name {
        return;
    }
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
        eprintln!("promised: crash point {name}:{nth} reached, SIGKILL");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL cannot be caught: delivery ends the process before this returns for long.
        loop {
            std::thread::park();
        }
    }
}
