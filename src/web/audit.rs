//! The audit page: config commits and the output commits they produced in each Git state
//! store, linked both ways, with the output commits' trailers (`Promised-Config-Commit:`,
//! `Promised-Resource:`, `Promised-Requested-By:`…, statestores `message.rs`).
//!
//! It reads the store's history with Git itself (`git log`, as the config history does):
//! a local store's repository, or the persistent clone of a remote store under
//! `<stateDir>/stores/git/` (its remote branch as last fetched or pushed). Bucket state
//! stores keep no history and are listed as such.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::Console;
use super::data::Snapshot;
use super::layout::{self, Nav, commit, object_link};

/// Output commits read per state store by default.
pub const DEFAULT_LIMIT: usize = 100;
/// Most output commits read per state store.
pub const MAX_LIMIT: usize = 1000;

/// Query parameters: `?config=<sha prefix>&resource=<key>&promise=<name>&limit=100`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// Only this config commit (a prefix of it).
    pub config: String,
    /// Only output commits with `Promised-Resource: <key>`.
    pub resource: String,
    /// Only output commits with `Promised-Promise: <name>`.
    pub promise: String,
    /// Output commits read per store (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
    pub limit: usize,
}

/// One commit in a state store.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputCommit {
    /// `<Kind>/<name>` of the store.
    pub store: String,
    /// Commit id.
    pub commit: String,
    /// Link to it (`web.commitUrls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Committer time, RFC 3339.
    pub time: String,
    /// Subject line.
    pub subject: String,
    /// Its `Promised-Config-Commit:`; unset when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_commit: Option<String>,
    /// Every trailer, in order, as `(key, value)`.
    pub trailers: Vec<(String, String)>,
}

/// A config commit and what it produced.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigCommit {
    /// Commit id; empty for output commits naming none (a config directory).
    pub commit: String,
    /// Link to it (`web.configCommitUrl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its output commits, newest first.
    pub outputs: Vec<OutputCommit>,
}

/// Where one store's history was read from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreHistory {
    /// `<Kind>/<name>`.
    pub store: String,
    /// Commits read.
    pub commits: usize,
    /// Why none could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The audit page (JSON twin `/api/v1/console/audit`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    /// Snapshot fingerprint.
    pub version: String,
    /// The filter applied.
    pub filter: Filter,
    /// Config commits, the one with the newest output first.
    pub config_commits: Vec<ConfigCommit>,
    /// The stores read.
    pub stores: Vec<StoreHistory>,
}

/// The Git directory and ref holding the history of a Git state store with `url` (as shown,
/// without user-info) and `branch`, named `name`; `None` when there is none here.
pub fn store_repo(
    state_dir: &Path,
    name: &str,
    url: &str,
    branch: &str,
) -> Option<(PathBuf, String)> {
    let local = url.strip_prefix("file://").map(str::to_string).or_else(|| {
        let scp = !url.contains("://") && url.split('/').next().is_some_and(|h| h.contains(':'));
        (!url.contains("://") && !scp).then(|| url.to_string())
    });
    if let Some(p) = local {
        let p = PathBuf::from(p);
        let p = if p.is_relative() {
            state_dir.join(p)
        } else {
            p
        };
        return p.is_dir().then(|| (p, format!("refs/heads/{branch}")));
    }
    // The persistent clone: `<stateDir>/stores/git/<sanitised name>-<12 hex>.git`
    // (statestores `git/mod.rs`, `store_id`); the newest when the URL changed.
    let prefix = statestores::git::config::sanitize(name);
    let dir = state_dir.join("stores").join("git");
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let file = e.file_name().to_string_lossy().to_string();
        let Some(rest) = file.strip_prefix(&format!("{prefix}-")) else {
            continue;
        };
        let Some(hash) = rest.strip_suffix(".git") else {
            continue;
        };
        if hash.len() != 12 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let t = e
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
            best = Some((t, e.path()));
        }
    }
    best.map(|(_, p)| (p, format!("refs/remotes/origin/{branch}")))
}

/// One commit of a store's history: id, committer time (RFC 3339), subject, trailers.
pub type LogEntry = (String, String, String, Vec<(String, String)>);

/// The last `limit` commits of `git_dir` at `reference`, newest first. Errors as text.
pub fn read_log(git_dir: &Path, reference: &str, limit: usize) -> Result<Vec<LogEntry>, String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args([
            "log",
            "-n",
            &limit.to_string(),
            "--format=%H%x1f%cI%x1f%s%x1f%(trailers:only,unfold)%x1e",
            reference,
            "--",
        ])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .map_err(|e| format!("git log: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git log {reference}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split('\x1e')
        .filter_map(|rec| {
            let mut f = rec.trim_start_matches('\n').splitn(4, '\x1f');
            let (sha, time, subject, trailers) = (f.next()?, f.next()?, f.next()?, f.next()?);
            if sha.is_empty() {
                return None;
            }
            let trailers = trailers
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some((
                sha.to_string(),
                time.to_string(),
                subject.to_string(),
                trailers,
            ))
        })
        .collect())
}

/// Builds the audit page.
pub fn build(console: &Console, snap: &Snapshot, filter: &Filter) -> AuditView {
    let limit = match filter.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let mut stores = Vec::new();
    let mut by_config: BTreeMap<String, Vec<OutputCommit>> = BTreeMap::new();
    for (key, s) in &snap.infra.state_stores {
        if s.kind != "GitStateStore" {
            stores.push(StoreHistory {
                store: key.clone(),
                commits: 0,
                note: Some("a bucket keeps no commit history".into()),
            });
            continue;
        }
        let Some((dir, reference)) =
            store_repo(&console.state_dir, &s.name, &s.url, &s.branch_or_bucket)
        else {
            stores.push(StoreHistory {
                store: key.clone(),
                commits: 0,
                note: Some(
                    "no local repository or clone of this store in the state directory".into(),
                ),
            });
            continue;
        };
        match read_log(&dir, &reference, limit) {
            Err(e) => stores.push(StoreHistory {
                store: key.clone(),
                commits: 0,
                note: Some(crate::infra::redact(&e)),
            }),
            Ok(log) => {
                stores.push(StoreHistory {
                    store: key.clone(),
                    commits: log.len(),
                    note: None,
                });
                for (sha, time, subject, trailers) in log {
                    let has = |k: &str, v: &str| trailers.iter().any(|(tk, tv)| tk == k && tv == v);
                    if !filter.resource.is_empty() && !has("Promised-Resource", &filter.resource) {
                        continue;
                    }
                    if !filter.promise.is_empty() && !has("Promised-Promise", &filter.promise) {
                        continue;
                    }
                    let config_commit = trailers
                        .iter()
                        .find(|(k, _)| k == "Promised-Config-Commit")
                        .map(|(_, v)| v.clone());
                    let cc = config_commit.clone().unwrap_or_default();
                    if !filter.config.is_empty() && !cc.starts_with(&filter.config) {
                        continue;
                    }
                    by_config.entry(cc).or_default().push(OutputCommit {
                        store: key.clone(),
                        url: console.settings.store_commit_url(key, &sha),
                        commit: sha,
                        time,
                        subject,
                        config_commit,
                        trailers,
                    });
                }
            }
        }
    }
    let mut config_commits: Vec<ConfigCommit> = by_config
        .into_iter()
        .map(|(c, mut outputs)| {
            outputs.sort_by(|a, b| b.time.cmp(&a.time));
            ConfigCommit {
                url: (!c.is_empty())
                    .then(|| console.settings.config_url(&c))
                    .flatten(),
                commit: c,
                outputs,
            }
        })
        .collect();
    let newest = |c: &ConfigCommit| {
        c.outputs
            .first()
            .map(|o| o.time.clone())
            .unwrap_or_default()
    };
    config_commits.sort_by_key(|c| std::cmp::Reverse(newest(c)));
    AuditView {
        version: snap.version.clone(),
        filter: Filter {
            limit,
            ..filter.clone()
        },
        config_commits,
        stores,
    }
}

/// Renders the audit page.
pub fn render(v: &AuditView) -> Markup {
    let f = &v.filter;
    let body = html! {
        h1 { "Audit" }
        p.muted { "Config commits and the state store commits they produced (their trailers name the config commit, Promises and requests)." }
        form.filter method="get" action="/ui/audit" {
            input type="search" name="config" value=(f.config) placeholder="config commit";
            input type="search" name="promise" value=(f.promise) placeholder="Promise";
            input type="search" name="resource" value=(f.resource) placeholder="promise/namespace/name";
            button type="submit" { "Filter" }
        }
        @for s in &v.stores {
            p.muted { (s.store) ": " (s.commits) " commits read" @if let Some(n) = &s.note { " · " (n) } }
        }
        @if v.config_commits.is_empty() { p.muted { "No output commit matches." } }
        @for c in &v.config_commits {
            section.card.config id={ "config-" (c.commit) } {
                h2 {
                    @if c.commit.is_empty() { "No config commit (a config directory)" }
                    @else { "Config commit " (commit(&c.commit, c.url.as_deref())) }
                }
                table {
                    thead { tr { th { "Output commit" } th { "State store" } th { "Time" } th { "Subject and trailers" } } }
                    tbody {
                        @for o in &c.outputs {
                            tr.output id={ "out-" (o.commit) } {
                                td { (commit(&o.commit, o.url.as_deref())) }
                                td { (o.store) }
                                td.muted { (o.time) }
                                td {
                                    div { (o.subject) }
                                    div.trailers {
                                        @for (k, val) in &o.trailers {
                                            div {
                                                (k) ": "
                                                @if k == "Promised-Config-Commit" { a href={ "#config-" (val) } { (val) } }
                                                @else if k == "Promised-Resource" { (object_link(val)) }
                                                @else if k == "Promised-Promise" { a href=(layout::promise_href(val)) { (val) } }
                                                @else { (val) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout::page("Audit", &v.version, Nav::Audit, body)
}
