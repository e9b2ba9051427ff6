//! Pushing with the `git` CLI, because gix cannot push (GitoxideLabs/gitoxide#306;
//! `rust-crates.md` §1c), for what the in-process push ([`super::send_pack`]) leaves to it
//! (the first push of a branch, large changes, ssh and `file://`):
//!
//! ```text
//! git -C <clone> push --porcelain --force-with-lease=refs/heads/<b>:<expected> <url> <new>:refs/heads/<b>
//! ```
//!
//! An empty `<expected>` means "the branch must not exist yet". Credentials travel in the
//! environment only (see [`super::credentials`]). We parse `--porcelain` output, never the
//! human-readable text: `(stale info)`, `(fetch first)` and `(non-fast-forward)` mean someone
//! else pushed ([`PushOutcome::Stale`]); any other rejection is the server's decision and is
//! returned with the `remote:` lines the server printed.

use std::path::Path;

use gix::ObjectId;

use super::credentials::Secrets;

/// What `git push` reported.
#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The branch now points at our commit (or already did).
    Pushed,
    /// The lease was stale or the push was not a fast-forward: rebuild and retry.
    Stale,
    /// The server refused (hook, protection, ...): the server's own text.
    Rejected(String),
    /// Credentials were refused.
    Auth(String),
    /// Anything else (connection failure, crash).
    Failed(String),
}

/// Run one push (the write-permission check is a receive-pack handshake in process, see
/// `super::access`). `git` runs in a
/// process group of its own, killed whole (with its ssh or `git-remote-http` child) when
/// `timeouts.operation` has passed: [`PushOutcome::Failed`] then says so.
#[allow(clippy::too_many_arguments)]
pub async fn push(
    clone: &Path,
    url: &str,
    branch: &str,
    expected: Option<ObjectId>,
    new: ObjectId,
    env: &[(String, String)],
    secrets: &Secrets,
    timeouts: &crate::NetworkTimeouts,
) -> std::io::Result<PushOutcome> {
    let dst = format!("refs/heads/{branch}");
    let lease = format!(
        "--force-with-lease={dst}:{}",
        expected.map(|o| o.to_string()).unwrap_or_default()
    );
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C")
        .arg(clone)
        .args(["push", "--porcelain", "--no-verify"]);
    cmd.arg(lease).arg(url).arg(format!("{new}:{dst}"));
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn()?;
    // Kills the whole group when the push is abandoned: at the deadline, or when the caller
    // drops this future (daemon shutdown). Dropping the wait kills `git` itself; its children
    // (ssh, git-remote-http) share its process group.
    let mut group = GroupKill(
        child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32)),
    );
    let out = match tokio::time::timeout(timeouts.operation, child.wait_with_output()).await {
        Ok(out) => {
            group.0 = None;
            out?
        }
        Err(_) => {
            return Ok(PushOutcome::Failed(format!(
                "no result within {} (network.operationTimeout); git push was stopped",
                crate::net::human(timeouts.operation)
            )));
        }
    };
    let stdout = secrets.redact(&String::from_utf8_lossy(&out.stdout));
    let stderr = secrets.redact(&String::from_utf8_lossy(&out.stderr));
    Ok(classify(out.status.success(), &stdout, &stderr, &dst))
}

/// `SIGKILL` to a process group on drop, unless emptied (a push's `git`, a signing program).
pub(super) struct GroupKill(pub(super) Option<rustix::process::Pid>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(g) = self.0.take() {
            let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
        }
    }
}

/// Interpret porcelain output (pure; unit-tested).
pub fn classify(success: bool, stdout: &str, stderr: &str, dst: &str) -> PushOutcome {
    let line = stdout.lines().find(|l| {
        let mut parts = l.split('\t');
        let _flag = parts.next();
        parts
            .next()
            .is_some_and(|refs| refs.ends_with(&format!(":{dst}")))
    });
    let remote_lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote:"))
        .map(|l| l.trim_end())
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if let Some(line) = line {
        let flag = line.chars().next().unwrap_or(' ');
        let summary = line.split('\t').nth(2).unwrap_or("").trim();
        if flag != '!' {
            return PushOutcome::Pushed;
        }
        if summary.starts_with("[rejected]")
            && (summary.contains("stale info")
                || summary.contains("fetch first")
                || summary.contains("non-fast-forward"))
        {
            return PushOutcome::Stale;
        }
        let mut msg = remote_lines.join("\n");
        if !msg.is_empty() {
            msg.push('\n');
        }
        msg.push_str(summary);
        return PushOutcome::Rejected(msg);
    }
    if success {
        return PushOutcome::Pushed;
    }
    let text = one_line(stderr);
    let lower = text.to_ascii_lowercase();
    if [
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "permission denied",
        "http 401",
        "http 403",
        "returned error: 401",
        "returned error: 403",
    ]
    .iter()
    .any(|k| lower.contains(k))
    {
        return PushOutcome::Auth(text);
    }
    PushOutcome::Failed(text)
}

/// git's error text on one line (status tables show a message's first line): lines trimmed,
/// empty ones dropped, joined with a space; git prints the address of a refused connection
/// on a line of its own (`unable to connect to 127.0.0.1:` / `127.0.0.1[0: …]: errno=…`).
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST: &str = "refs/heads/main";

    #[test]
    fn porcelain() {
        assert_eq!(
            classify(true, "To x\n \tabc:refs/heads/main\t1..2\nDone\n", "", DST),
            PushOutcome::Pushed
        );
        assert_eq!(
            classify(
                false,
                "To x\n!\tabc:refs/heads/main\t[rejected] (stale info)\nDone\n",
                "",
                DST
            ),
            PushOutcome::Stale
        );
        assert_eq!(
            classify(
                false,
                "To x\n!\tabc:refs/heads/main\t[remote rejected] (pre-receive hook declined)\nDone\n",
                "remote: no pushes on fridays        \nerror: failed to push some refs\n",
                DST
            ),
            PushOutcome::Rejected(
                "no pushes on fridays\n[remote rejected] (pre-receive hook declined)".into()
            )
        );
        assert!(matches!(
            classify(
                false,
                "",
                "fatal: Authentication failed for 'http://h/r'",
                DST
            ),
            PushOutcome::Auth(_)
        ));
        assert_eq!(
            classify(
                false,
                "",
                "fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused\n\n",
                DST
            ),
            PushOutcome::Failed(
                "fatal: unable to connect to 127.0.0.1: 127.0.0.1[0: 127.0.0.1]: errno=Connection refused".into()
            )
        );
    }
}
