//! The resident sandbox: namespace set-up paid once per daemon, not once per container.
//!
//! bubblewrap costs 4–9 ms of wall time per container on the 2-core bench machine, most of
//! it its own start (a dynamically linked `execve`), creating and tearing down a user and a
//! network namespace, and re-reading `/proc/self/mountinfo` for every read-only bind
//! (docs/benchmarks.md, "Sandbox and cold pass"). The resident sandbox is one helper process
//! ([`helper`], `promised sandbox-helper`) that holds a user namespace and an empty network
//! namespace and forks each run into fresh mount, PID, network, IPC and UTS namespaces, building the
//! same tree bwrap would from the same description ([`request`]): what the README promises
//! (no network, read-only host, private `/tmp`, writable only `/kratix/output`,
//! `/kratix/metadata` and the root of an image run, the whole run killed on timeout) holds
//! for both.
//!
//! Each run has a network namespace of its own with only `lo`, up, as bwrap's
//! `--unshare-net` gives (the pipeline API's forwarder listens there); runs with network
//! (`allowNetwork`, the Pipeline annotation, an override's `network`) still use bwrap. The
//! helper's own network namespace is empty, so nothing it forks starts with the host's.
//!
//! [`Resident::run`] returns `None` when the helper cannot run a container (it did not
//! start, it died, the run needs the host network): the caller then runs bwrap; why the
//! helper is unusable is logged once.

// The one module of the crate with `unsafe`: fork, unshare, mount, pivot_root and execve.
#[allow(unsafe_code)]
pub mod helper;
pub mod request;

use std::collections::HashMap;
use std::io::{BufRead, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::runtime::{Finished, collect, read_capped};
pub use request::{Message, Op, Root, RunRequest};

/// One helper process, shared by every runner of this process that names the same
/// executable ([`Resident::for_exe`]).
#[derive(Debug)]
pub struct Resident {
    exe: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    NotStarted,
    Running {
        child: std::process::Child,
        sock: OwnedFd,
    },
    Failed,
}

impl Drop for Resident {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock()
            && let State::Running { mut child, sock } = std::mem::replace(&mut *s, State::Failed)
        {
            // The helper ends when its socket closes.
            drop(sock);
            let _ = child.wait();
        }
    }
}

/// The helper of `exe` for this process (started on first use).
static HELPERS: Mutex<Option<HashMap<PathBuf, Arc<Resident>>>> = Mutex::new(None);

impl Resident {
    /// The resident sandbox whose helper is `exe sandbox-helper` (`exe`: the `promised`
    /// binary), shared process-wide.
    pub fn for_exe(exe: &Path) -> Arc<Resident> {
        let mut all = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
        all.get_or_insert_with(HashMap::new)
            .entry(exe.to_path_buf())
            .or_insert_with(|| {
                Arc::new(Resident {
                    exe: exe.to_path_buf(),
                    state: Mutex::new(State::NotStarted),
                })
            })
            .clone()
    }

    /// Sends `msg` with `fds`; starts the helper first if needed. `false` when there is no
    /// working helper.
    fn send(&self, msg: &[u8], fds: &[OwnedFd]) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, State::NotStarted) {
            *state = match self.start() {
                Ok(s) => s,
                Err(why) => {
                    tracing::warn!(
                        helper = %self.exe.display(),
                        error = %why,
                        "the resident sandbox cannot start; every container runs in its own bwrap"
                    );
                    State::Failed
                }
            };
        }
        let State::Running { sock, .. } = &*state else {
            return false;
        };
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            cmsg.push(SendAncillaryMessage::ScmRights(&borrowed));
        }
        match rustix::net::sendmsg(sock, &[IoSlice::new(msg)], &mut cmsg, SendFlags::NOSIGNAL) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the resident sandbox helper is gone; every container runs in its own bwrap from now on"
                );
                *state = State::Failed;
                false
            }
        }
    }

    fn start(&self) -> Result<State, String> {
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        let mut child = std::process::Command::new(&self.exe)
            .arg("sandbox-helper")
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{}: {e}", self.exe.display()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        if line.trim() == "ready" {
            return Ok(State::Running { child, sock: ours });
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(match line.trim().strip_prefix("error ") {
            Some(e) => e.to_string(),
            None => "the helper exited before it was ready".into(),
        })
    }

    /// Runs one container. `None`: the helper is not available (the caller runs bwrap);
    /// `Some(Err)` only when the pipes cannot be made. The timeout kills the whole run (its
    /// PID namespace) and sets [`Finished::timed_out`] with signal 9, as
    /// [`super::runtime::run`] does; so does dropping the future.
    pub async fn run(
        self: &Arc<Self>,
        req: RunRequest,
        timeout: Duration,
        log_cap: usize,
    ) -> Option<std::io::Result<Finished>> {
        let msg = serde_json::to_vec(&Message::Run(Box::new(req))).ok()?;
        if msg.len() > helper::MAX_MESSAGE {
            return None;
        }
        let pipes = (|| -> std::io::Result<_> {
            let (out_tx, out_rx) = tokio::net::unix::pipe::pipe()?;
            let (err_tx, err_rx) = tokio::net::unix::pipe::pipe()?;
            let (st_tx, st_rx) = tokio::net::unix::pipe::pipe()?;
            let fds = [
                out_tx.into_blocking_fd()?,
                err_tx.into_blocking_fd()?,
                st_tx.into_blocking_fd()?,
            ];
            Ok((fds, out_rx, err_rx, st_rx))
        })();
        let (fds, out_rx, err_rx, st_rx) = match pipes {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        if !self.send(&msg, &fds) {
            return None;
        }
        // Only the helper's copies stay open: EOF comes when the run is over.
        drop(fds);
        let out = tokio::spawn(read_capped(out_rx, log_cap));
        let err = tokio::spawn(read_capped(err_rx, log_cap));
        let mut status = BufReader::new(st_rx);
        let mut first = String::new();
        let _ = status.read_line(&mut first).await;
        let guard = first
            .trim()
            .strip_prefix("pid ")
            .and_then(|p| p.parse::<i32>().ok())
            .map(|pid| Supervisor {
                resident: self.clone(),
                pid,
            });
        let mut rest = String::new();
        let timed_out = match tokio::time::timeout(timeout, status.read_to_string(&mut rest)).await
        {
            Ok(_) => false,
            Err(_) => {
                if let Some(g) = &guard {
                    g.kill();
                }
                true
            }
        };
        drop(guard);
        let last = if timed_out { "" } else { rest.trim() };
        let (exit_code, signal) = match last.split_once(' ') {
            Some(("exit", c)) => (c.parse().ok(), None),
            Some(("signal", s)) => (None, s.parse().ok()),
            // Killed (the supervisor) or ended without a word (the helper died).
            _ => (None, Some(9)),
        };
        let stdout = collect(Some(out)).await;
        let mut stderr = collect(Some(err)).await;
        if !timed_out && last.is_empty() && first.is_empty() {
            stderr.push_str("promised sandbox: the helper ended the run without a status\n");
        }
        Some(Ok(Finished {
            exit_code,
            signal,
            timed_out,
            stdout,
            stderr,
        }))
    }
}

/// A run's supervisor process: killed when the run is abandoned, always reaped by the
/// helper once the daemon is done with the pid.
struct Supervisor {
    resident: Arc<Resident>,
    pid: i32,
}

impl Supervisor {
    fn kill(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // A no-op when the run ended; the pid cannot have been reused, as the helper has
        // not reaped it yet.
        self.kill();
        if let Ok(msg) = serde_json::to_vec(&Message::Reap(self.pid)) {
            self.resident.send(&msg, &[]);
        }
    }
}

/// Where a process-runtime run's root is mounted: an empty directory beside the Pipeline's
/// contract directories, made on first use.
pub fn mountpoint(run_root: &Path, container: usize) -> std::io::Result<PathBuf> {
    let p = run_root.join(format!("sandbox-root-{container}"));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
