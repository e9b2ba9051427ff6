//! What the console shows that the state records do not keep: the last pass
//! (`<stateDir>/last-pass.json`, written by `promised run` after every pass) and the log tail
//! of each object's last workflow run (`<stateDir>/logs/<hash>.json`, written when a workflow
//! ran). Both are rewritten atomically; a missing or unreadable file reads as none.
//!
//! Log tails pass through [`crate::infra::redact`] (URL user-info removed) before they are
//! written, like every other text promised keeps.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File of [`PassRecord`] in the state directory.
pub const LAST_PASS_FILE: &str = "last-pass.json";
/// Directory of [`LogTail`] files in the state directory.
pub const LOGS_DIR: &str = "logs";
/// Lines kept per stream (stdout, stderr) of each container.
pub const TAIL_LINES: usize = 40;
/// Objects listed in [`PassRecord::ran`] (the daemon cuts the list); the rest are counted
/// in [`PassRecord::ran_not_listed`].
pub const MAX_LISTED: usize = 100;

/// The last pass of `promised run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassRecord {
    /// RFC 3339 time it ended.
    pub finished_at: String,
    /// Its config commit (Git sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_commit: Option<String>,
    /// How long it took, in seconds.
    pub duration_seconds: f64,
    /// Pipelines it ran.
    pub pipelines_run: usize,
    /// Objects whose workflow ran, failed or that were deleted (at most [`MAX_LISTED`]).
    pub ran: Vec<PassObject>,
    /// Objects that ran but are not listed.
    #[serde(default)]
    pub ran_not_listed: usize,
    /// Per state store: the commit it made, or why its write failed.
    pub stores: Vec<PassStore>,
}

/// An object a pass acted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassObject {
    /// State key.
    pub key: String,
    /// `ran`, `failed` or `deleted`.
    pub action: String,
    /// `Reconciled`, `Failing`, … after the pass.
    pub state: String,
}

/// One state store's result in a pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassStore {
    /// `<Kind>/<name>` (as `<kind>/<name>` in the engine's report).
    pub store: String,
    /// The commit (Git) or generation (S3) it made; unset when nothing changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Files written.
    pub written: usize,
    /// Files deleted.
    pub deleted: usize,
    /// Why the write failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Writes `record` as the last pass. Errors: I/O on the state directory.
pub fn save_pass(state_dir: &Path, record: &PassRecord) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    crate::state::write_atomic(&state_dir.join(LAST_PASS_FILE), &json)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// The last pass; `None` before the first (or when the file does not parse).
pub fn load_pass(state_dir: &Path) -> Option<PassRecord> {
    let bytes = std::fs::read(state_dir.join(LAST_PASS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The output of an object's last workflow run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogTail {
    /// State key of the object.
    pub key: String,
    /// RFC 3339 time the run ended.
    pub time: String,
    /// One entry per container that ran, in order.
    pub containers: Vec<ContainerTail>,
}

/// The last lines of one container's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTail {
    /// Pipeline name.
    pub pipeline: String,
    /// Container name.
    pub container: String,
    /// Exit code; unset when killed or never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The last [`TAIL_LINES`] lines of stdout.
    pub stdout: String,
    /// The last [`TAIL_LINES`] lines of stderr.
    pub stderr: String,
}

fn log_file(state_dir: &Path, key: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(key.as_bytes()));
    state_dir.join(LOGS_DIR).join(format!("{}.json", &h[..32]))
}

/// The last `n` lines of `text`, redacted.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    crate::infra::redact(&lines[from..].join("\n"))
}

/// Keeps the output of the workflow run of `key` that just ended (`pipelines`: each
/// pipeline's name and container logs). A failure is logged, not fatal: the console then
/// shows an older tail or none.
pub fn save_logs(state_dir: &Path, key: &str, pipelines: &[crate::pipeline::PipelineResult]) {
    let containers = pipelines
        .iter()
        .flat_map(|p| {
            p.logs.iter().map(|l| ContainerTail {
                pipeline: p.name.clone(),
                container: l.name.clone(),
                exit_code: l.exit_code,
                stdout: tail(&l.stdout, TAIL_LINES),
                stderr: tail(&l.stderr, TAIL_LINES),
            })
        })
        .collect();
    let t = LogTail {
        key: key.to_string(),
        time: crate::status::now_rfc3339(),
        containers,
    };
    let path = log_file(state_dir, key);
    let res = std::fs::create_dir_all(state_dir.join(LOGS_DIR))
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_vec(&t).map_err(|e| e.to_string()))
        .and_then(|json| crate::state::write_replace(&path, &json).map_err(|e| e.to_string()));
    if let Err(e) = res {
        tracing::warn!(error = %e, path = %path.display(), "cannot keep the pipeline log tail for the web console");
    }
}

/// The log tail of `key`'s last workflow run; `None` when none was kept.
pub fn load_logs(state_dir: &Path, key: &str) -> Option<LogTail> {
    let bytes = std::fs::read(log_file(state_dir, key)).ok()?;
    serde_json::from_slice::<LogTail>(&bytes)
        .ok()
        .filter(|t| t.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_last_lines_and_drop_user_info() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&text, 3);
        assert_eq!(t, "line 97\nline 98\nline 99");
        let t = tail("cloning https://bob:hunter2@git.example/x\n", 5);
        assert!(!t.contains("hunter2"), "{t}");
    }

    #[test]
    fn log_tails_round_trip_per_key() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(load_logs(tmp.path(), "p/default/a").is_none());
        let pr = crate::pipeline::PipelineResult {
            name: "configure".into(),
            outcome: crate::pipeline::Outcome::Succeeded,
            outputs: vec![],
            selectors: vec![],
            status: None,
            logs: vec![crate::pipeline::ContainerLog {
                name: "render".into(),
                stdout: "out\n".into(),
                stderr: "err 1\nerr 2\n".into(),
                exit_code: Some(3),
            }],
            images: vec![],
        };
        save_logs(tmp.path(), "p/default/a", &[pr]);
        let t = load_logs(tmp.path(), "p/default/a").unwrap();
        assert_eq!(t.containers[0].stderr, "err 1\nerr 2");
        assert_eq!(t.containers[0].exit_code, Some(3));
        assert!(load_logs(tmp.path(), "p/default/b").is_none());
    }
}
