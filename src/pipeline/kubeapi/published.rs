//! Status published by running pipelines, visible at once: one file per request,
//! `<state dir>/published/<hex sha256 of the request key>.json` =
//! `{"key": "<promise>/<ns>/<name>", "live": true|false, "fields": {…}}`.
//!
//! `fields` is the request's status keys as the run has them (what the record's
//! `status.fields` becomes when the run ends). `live` is true while the Pipeline runs; at the
//! end of the workflow the file keeps the final status with `live: false` until the request's
//! next run starts, so `promised status` never goes back to an older status while the engine
//! saves the record. [`overlay`] lays the files over status rows.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::status::StatusRow;

/// One published status file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// Request key.
    pub key: String,
    /// The request's kind (to show a request that has no record yet).
    #[serde(default)]
    pub kind: String,
    /// A Pipeline of the request is running.
    pub live: bool,
    /// The request's status keys.
    pub fields: Map<String, Value>,
}

/// `<state_dir>/published`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("published")
}

/// The file of request `key` in `dir`.
pub fn file(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{}.json", crate::state::sha256_hex(key.as_bytes())))
}

/// Writes the file atomically; a failure is logged (the status still reaches the record at
/// the end of the run).
pub fn write(path: &Path, key: &str, kind: &str, live: bool, fields: &Map<String, Value>) {
    let p = Published {
        key: key.to_string(),
        kind: kind.to_string(),
        live,
        fields: fields.clone(),
    };
    let res = path
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_vec(&p).map_err(|e| e.to_string()))
        .and_then(|b| crate::state::write_atomic(path, &b).map_err(|e| e.to_string()));
    if let Err(e) = res {
        tracing::warn!(request = key, error = %e, "cannot write the status a pipeline published");
    }
}

/// Every published status in `<state_dir>/published` (unreadable files are skipped).
pub fn load(state_dir: &Path) -> Vec<Published> {
    let Ok(rd) = std::fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Lays the published status of `state_dir` over `rows`: a live one replaces the row's
/// `fields` (and its `message` when the pipeline set one); a finished one replaces `fields`
/// of a request that has run (the record then holds the same, or is about to). A live one
/// whose request has no row yet (its first run, in the first pass) adds a row.
pub fn overlay(state_dir: &Path, rows: &mut Vec<StatusRow>) {
    let all = load(state_dir);
    if all.is_empty() {
        return;
    }
    for p in all {
        apply(p, rows);
    }
}

/// Lays one published status over `rows` (see [`overlay`]).
pub fn apply(p: Published, rows: &mut Vec<StatusRow>) {
    if p.live
        && !rows.iter().any(|r| r.key == p.key)
        && let Some(row) = new_row(&p)
    {
        rows.push(row);
    }
    let Some(row) = rows.iter_mut().find(|r| r.key == p.key) else {
        return;
    };
    if !p.live && row.status.pipelines.is_empty() {
        return;
    }
    if p.live
        && let Some(m) = p.fields.get("message").and_then(Value::as_str)
    {
        row.status.message = m.to_string();
    }
    row.status.fields = crate::status::fields_from(p.fields);
}

/// A row for a request seen only in its published status.
fn new_row(p: &Published) -> Option<StatusRow> {
    let mut parts = p.key.splitn(3, '/');
    let (promise, ns, name) = (parts.next()?, parts.next()?, parts.next()?);
    let status = serde_json::from_value(serde_json::json!({
        "object": {"kind": p.kind, "namespace": ns, "name": name},
        "promise": promise,
        "message": "Pending",
        "conditions": [],
        "pipelines": [],
        "destinations": [],
        "workflows": 0,
        "workflowsSucceeded": 0,
        "workflowsFailed": 0,
    }))
    .ok()?;
    Some(StatusRow {
        key: p.key.clone(),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn overlay_shows_live_status_and_adds_a_row_for_a_first_run() {
        let d = tempfile::tempdir().unwrap();
        let dir = dir(d.path());
        write(
            &file(&dir, "app/default/a"),
            "app/default/a",
            "App",
            true,
            &fields(json!({"stage": "started", "message": "working"})),
        );
        write(
            &file(&dir, "app/default/done"),
            "app/default/done",
            "App",
            false,
            &fields(json!({"stage": "finished"})),
        );
        let mut rows = Vec::new();
        overlay(d.path(), &mut rows);
        // The live one gets a row; the finished one has no run to show it for.
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].key, "app/default/a");
        assert_eq!(rows[0].status.promise, "app");
        assert_eq!(rows[0].status.object.name, "a");
        assert_eq!(rows[0].status.message, "working");
        assert_eq!(rows[0].status.fields.get("stage").unwrap(), "started");
    }
}
