//! Spawning one container as a host process: its own process group, stdout and stderr read
//! concurrently into capped buffers, a timeout that kills the whole process group, and a
//! final sweep of the group when the main process exits (like a container ending: nothing it
//! started outlives it).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// One process to run.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Program (e.g. `/usr/bin/bwrap` or the container command).
    pub program: OsString,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Complete environment (the parent's environment is not inherited).
    pub env: Vec<(String, String)>,
    /// Working directory on the host, if any.
    pub cwd: Option<PathBuf>,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Bytes of stdout and of stderr kept (the last ones; earlier bytes are dropped).
    pub log_cap: usize,
}

/// What happened to one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Exit code; `None` when killed by a signal (including the timeout).
    pub exit_code: Option<i32>,
    /// Signal that ended the process, if any.
    pub signal: Option<i32>,
    /// True when the timeout fired and the process group was killed.
    pub timed_out: bool,
    /// Captured stdout (last `log_cap` bytes, lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (last `log_cap` bytes, lossy UTF-8).
    pub stderr: String,
}

/// Runs `inv` to completion or timeout. Errors only when the process cannot be started.
pub async fn run(inv: &Invocation) -> std::io::Result<Finished> {
    let mut cmd = tokio::process::Command::new(&inv.program);
    cmd.args(&inv.args)
        .env_clear()
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(d) = &inv.cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id();
    // If this future is dropped (shutdown, cancelled reconcile), the group dies with it.
    let _guard = GroupGuard(pgid);
    let out = child
        .stdout
        .take()
        .map(|r| tokio::spawn(read_capped(r, inv.log_cap)));
    let err = child
        .stderr
        .take()
        .map(|r| tokio::spawn(read_capped(r, inv.log_cap)));
    let (status, timed_out) = match tokio::time::timeout(inv.timeout, child.wait()).await {
        Ok(s) => (s?, false),
        Err(_) => {
            kill_group(pgid);
            (child.wait().await?, true)
        }
    };
    // Leftover background processes of the group die with the container.
    kill_group(pgid);
    let stdout = collect(out).await;
    let stderr = collect(err).await;
    use std::os::unix::process::ExitStatusExt;
    Ok(Finished {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout,
        stderr,
    })
}

/// Kills the process group when dropped.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// Sends SIGKILL to the process group `pgid` (the child's pid, as it leads its own group).
/// A group that is already gone is fine.
fn kill_group(pgid: Option<u32>) {
    let Some(pid) = pgid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

/// What a [`read_capped`] task read, as lossy UTF-8; empty when there is no task or it is
/// not done within 2 s (processes that left the group may still hold the pipe).
pub(super) async fn collect(h: Option<tokio::task::JoinHandle<Vec<u8>>>) -> String {
    let Some(h) = h else {
        return String::new();
    };
    match tokio::time::timeout(Duration::from_secs(2), h).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    }
}

pub(super) async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> Vec<u8> {
    let mut keep: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                keep.extend_from_slice(&buf[..n]);
                // Trim only when twice over the cap, so huge outputs cost O(n) overall.
                if keep.len() > cap.saturating_mul(2).max(8192) {
                    let drop = keep.len() - cap;
                    keep.drain(..drop);
                }
            }
        }
    }
    if keep.len() > cap {
        let drop = keep.len() - cap;
        keep.drain(..drop);
    }
    keep
}

/// The last `n` lines of `s` (for error messages).
pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration, cap: usize) -> Invocation {
        Invocation {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: None,
            timeout,
            log_cap: cap,
        }
    }

    #[tokio::test]
    async fn captures_and_caps() {
        let f = run(&sh(
            "echo out; echo err >&2; exit 3",
            Duration::from_secs(10),
            100,
        ))
        .await
        .unwrap();
        assert_eq!(f.exit_code, Some(3));
        assert_eq!(f.stdout, "out\n");
        assert_eq!(f.stderr, "err\n");
        let f = run(&sh("seq 1 1000", Duration::from_secs(10), 10))
            .await
            .unwrap();
        assert_eq!(f.stdout, "\n999\n1000\n");
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
    }

    #[tokio::test]
    async fn timeout_kills() {
        let t = std::time::Instant::now();
        let f = run(&sh("sleep 30", Duration::from_millis(300), 100))
            .await
            .unwrap();
        assert!(f.timed_out);
        assert_eq!(f.signal, Some(9));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
