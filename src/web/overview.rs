//! The overview page: counts by state, the last pass, what needs a person first (failed
//! requests with their log tail, paused rollouts, an unverified config commit, state stores
//! and Destinations not ready), state stores and Destinations, Promises, and the requests
//! (failing first; filtered by state or name, [`PAGE_SIZE`] a page).

use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::Console;
use super::data::Snapshot;
use super::layout::{self, Nav, badge, commit, none, object_link, promise_href};
use super::records::PassRecord;
use crate::model::HealthState;
use crate::state::ObjectRecord;

/// Requests per page.
pub const PAGE_SIZE: usize = 50;
/// Failed requests listed under "Needs attention" (with their log tails); the rest are
/// counted and one filter away.
pub const MAX_ATTENTION: usize = 20;
/// Lines of a failed request's log tail shown on the overview.
pub const OVERVIEW_TAIL_LINES: usize = 8;

/// Query parameters of request lists: `?state=failed&q=redis&page=2`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// `failed`, `pending`, `reconciled`, `unhealthy`, or empty for all.
    pub state: String,
    /// Part of the request key (`<promise>/<namespace>/<name>`).
    pub q: String,
    /// 1-based page.
    pub page: usize,
}

/// Requests counted by state.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// All requests.
    pub requests: usize,
    /// `Reconciled`.
    pub reconciled: usize,
    /// `Failing`.
    pub failed: usize,
    /// Neither (pending, suspended, waiting for their Promise).
    pub pending: usize,
    /// Health `unhealthy` or `degraded`.
    pub unhealthy: usize,
    /// Promises.
    pub promises: usize,
}

/// Something a person should look at.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attention {
    /// `failedRequest`, `pausedRollout`, `unverifiedCommit`, `stateStoreNotReady` or
    /// `destinationNotReady`.
    pub kind: String,
    /// What it is about (a request key, a plan, a commit, a store, a Destination).
    pub subject: String,
    /// Why.
    pub message: String,
    /// The console page about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// Failed requests: the last lines of the failed run's stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// A state store line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreRow {
    /// `<Kind>/<name>`.
    pub store: String,
    /// `Ready` or `NotReady`.
    pub status: String,
    /// Why not ready.
    pub message: String,
    /// URL (without user-info) or endpoint.
    pub url: String,
    /// The last commit it made, and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<String>,
    /// Link to that commit (`web.commitUrls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_commit_url: Option<String>,
    /// RFC 3339 time of that commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_write: Option<String>,
}

/// A Destination line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRow {
    /// Name.
    pub name: String,
    /// `True`, `False` or `Unknown` of its `Ready` condition.
    pub ready: String,
    /// The condition's message.
    pub message: String,
    /// `<Kind>/<name>` of its state store.
    pub store: String,
    /// Requests placed on it.
    pub requests: usize,
}

/// A Promise line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PromiseRow {
    /// Name.
    pub name: String,
    /// `Available` / `Unavailable`, else its summary.
    pub status: String,
    /// `kratix.io/promise-version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its requests.
    pub requests: usize,
    /// Its failing requests.
    pub failed: usize,
}

/// A request line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRow {
    /// `<promise>/<namespace>/<name>`.
    pub key: String,
    /// `Reconciled`, `Failing`, `Pending`, …
    pub state: String,
    /// Health state, when any record or check concerns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Destinations it landed on.
    pub destinations: Vec<String>,
    /// `status.message` (cut at 200 characters).
    pub message: String,
}

/// One page of a filtered request list.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestList {
    /// The filter applied.
    pub filter: Filter,
    /// Requests matching it.
    pub total: usize,
    /// Pages.
    pub pages: usize,
    /// This page's requests, failing first, then by key.
    pub rows: Vec<RequestRow>,
}

/// The overview (its JSON twin is `/api/v1/console/overview`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// Snapshot fingerprint.
    pub version: String,
    /// Counts by state.
    pub counts: Counts,
    /// The last pass of `promised run`.
    pub last_pass: Option<PassRecord>,
    /// Link to the last pass's config commit (`web.configCommitUrl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pass_commit_url: Option<String>,
    /// Needs a person, most urgent first.
    pub attention: Vec<Attention>,
    /// Failed requests not listed in `attention`.
    pub attention_not_listed: usize,
    /// State stores.
    pub state_stores: Vec<StoreRow>,
    /// Destinations.
    pub destinations: Vec<DestinationRow>,
    /// Promises.
    pub promises: Vec<PromiseRow>,
    /// Requests.
    pub requests: RequestList,
}

/// The state word of a request record.
pub fn state_of(r: &ObjectRecord) -> &str {
    r.status.summary()
}

/// Health `unhealthy` or `degraded`.
pub fn is_unhealthy(r: &ObjectRecord) -> bool {
    r.status
        .health_status
        .as_ref()
        .is_some_and(|h| matches!(h.state, HealthState::Unhealthy | HealthState::Degraded))
}

fn matches(r: &ObjectRecord, state: &str) -> bool {
    match state {
        "failed" => state_of(r) == "Failing",
        "reconciled" => state_of(r) == "Reconciled",
        "pending" => !matches!(state_of(r), "Failing" | "Reconciled"),
        "unhealthy" => is_unhealthy(r),
        _ => true,
    }
}

/// A request line of `r`.
pub fn request_row(key: &str, r: &ObjectRecord) -> RequestRow {
    let mut destinations: Vec<String> = r
        .status
        .destinations
        .iter()
        .map(|d| d.destination.to_string())
        .collect();
    destinations.dedup();
    RequestRow {
        key: key.to_string(),
        state: state_of(r).to_string(),
        health: r
            .status
            .health_status
            .as_ref()
            .map(|h| h.state.as_str().to_string()),
        destinations,
        message: r.status.message.chars().take(200).collect(),
    }
}

/// The page of `keys` (request keys of `snap`) that `filter` selects, failing first.
pub fn request_list<'a>(
    snap: &'a Snapshot,
    keys: impl Iterator<Item = &'a String>,
    filter: &Filter,
) -> RequestList {
    let mut hits: Vec<(&String, &ObjectRecord)> = keys
        .filter(|k| filter.q.is_empty() || k.contains(filter.q.as_str()))
        .filter_map(|k| snap.state.requests.get(k).map(|r| (k, &**r)))
        .filter(|(_, r)| matches(r, &filter.state))
        .collect();
    hits.sort_by_key(|(k, r)| (state_of(r) != "Failing", *k));
    let total = hits.len();
    let pages = total.div_ceil(PAGE_SIZE);
    let page = filter.page.clamp(1, pages.max(1));
    let rows = hits
        .into_iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .map(|(k, r)| request_row(k, r))
        .collect();
    RequestList {
        filter: Filter {
            page,
            ..filter.clone()
        },
        total,
        pages,
        rows,
    }
}

/// The last lines of the failed run of `key`: the stderr of its failing containers from the
/// kept log tail, else the failure message of its pipelines.
pub fn failure_tail(console: &Console, key: &str, r: &ObjectRecord, lines: usize) -> String {
    if let Some(t) = super::records::load_logs(&console.state_dir, key) {
        let failed: Vec<String> = t
            .containers
            .iter()
            .filter(|c| c.exit_code != Some(0))
            .map(|c| super::records::tail(&c.stderr, lines))
            .filter(|s| !s.is_empty())
            .collect();
        if !failed.is_empty() {
            return failed.join("\n");
        }
    }
    r.status
        .pipelines
        .iter()
        .filter(|p| !p.message.is_empty())
        .map(|p| super::records::tail(&p.message, lines))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds the overview.
pub fn build(console: &Console, snap: &Snapshot, filter: &Filter) -> Overview {
    let mut counts = Counts {
        requests: snap.state.requests.len(),
        promises: snap.state.promises.len(),
        ..Counts::default()
    };
    let mut failed_keys = Vec::new();
    for (k, r) in &snap.state.requests {
        match state_of(r) {
            "Reconciled" => counts.reconciled += 1,
            "Failing" => {
                counts.failed += 1;
                failed_keys.push(k);
            }
            _ => counts.pending += 1,
        }
        if is_unhealthy(r) {
            counts.unhealthy += 1;
        }
    }
    let mut attention = Vec::new();
    for k in failed_keys.iter().take(MAX_ATTENTION) {
        let r = &snap.state.requests[*k];
        attention.push(Attention {
            kind: "failedRequest".into(),
            subject: (*k).clone(),
            message: r.status.message.clone(),
            href: Some(layout::object_href(k)),
            log_tail: Some(failure_tail(console, k, r, OVERVIEW_TAIL_LINES)),
        });
    }
    for (name, p) in &snap.state.promises {
        if p.status.summary() == "Failing" {
            attention.push(Attention {
                kind: "failedPromise".into(),
                subject: name.clone(),
                message: p.status.message.clone(),
                href: Some(layout::object_href(name)),
                log_tail: Some(failure_tail(console, name, p, OVERVIEW_TAIL_LINES)),
            });
        }
    }
    for (plan, r) in &snap.rollouts.plans {
        if r.state == crate::rollout::RolloutState::Paused {
            let why = r
                .paused
                .as_ref()
                .map(|p| format!("paused by {}: {}", p.by, p.reason))
                .unwrap_or_else(|| r.message.clone());
            attention.push(Attention {
                kind: "pausedRollout".into(),
                subject: format!("UpgradePlan/{plan}"),
                message: why,
                href: Some(promise_href(&r.promise)),
                log_tail: None,
            });
        }
    }
    if let Some(refused) = &snap.refused {
        attention.push(Attention {
            kind: "unverifiedCommit".into(),
            subject: refused.commit.clone(),
            message: refused.to_string(),
            href: console.settings.config_url(&refused.commit),
            log_tail: None,
        });
    }
    let ready_msg = |c: Option<&crate::status::Condition>| {
        c.map(|c| (format!("{:?}", c.status), c.message.to_string()))
            .unwrap_or_else(|| ("Unknown".into(), String::new()))
    };
    let state_stores: Vec<StoreRow> = snap
        .infra
        .state_stores
        .iter()
        .map(|(k, s)| StoreRow {
            store: k.clone(),
            status: s.status.clone(),
            message: ready_msg(s.ready()).1,
            url: s.url.clone(),
            last_commit: s.last_successful_write.as_ref().map(|w| w.version.clone()),
            last_commit_url: s
                .last_successful_write
                .as_ref()
                .and_then(|w| console.settings.store_commit_url(k, &w.version)),
            last_write: s.last_successful_write.as_ref().map(|w| w.time.clone()),
        })
        .collect();
    let destinations: Vec<DestinationRow> = snap
        .infra
        .destinations
        .values()
        .map(|d| {
            let (ready, message) = ready_msg(d.ready());
            DestinationRow {
                name: d.name.clone(),
                ready,
                message,
                store: format!("{}/{}", d.state_store_ref.kind, d.state_store_ref.name),
                requests: d.requests,
            }
        })
        .collect();
    for s in state_stores.iter().filter(|s| s.status != "Ready") {
        attention.push(Attention {
            kind: "stateStoreNotReady".into(),
            subject: s.store.clone(),
            message: s.message.clone(),
            href: None,
            log_tail: None,
        });
    }
    for d in destinations.iter().filter(|d| d.ready != "True") {
        attention.push(Attention {
            kind: "destinationNotReady".into(),
            subject: d.name.clone(),
            message: d.message.clone(),
            href: None,
            log_tail: None,
        });
    }
    let promises = snap
        .state
        .promises
        .values()
        .map(|p| {
            let name = p.status.object.name.clone();
            let keys = snap.by_promise.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            PromiseRow {
                status: p
                    .status
                    .status
                    .as_deref()
                    .map_or_else(|| p.status.summary().to_string(), str::to_string),
                version: super::promise::version_of(p),
                requests: keys.len(),
                failed: keys
                    .iter()
                    .filter(|k| {
                        snap.state
                            .requests
                            .get(*k)
                            .is_some_and(|r| state_of(r) == "Failing")
                    })
                    .count(),
                name,
            }
        })
        .collect();
    let last_pass_commit_url = snap
        .last_pass
        .as_ref()
        .and_then(|p| p.config_commit.as_deref())
        .and_then(|c| console.settings.config_url(c));
    Overview {
        version: snap.version.clone(),
        counts,
        last_pass: snap.last_pass.clone(),
        last_pass_commit_url,
        attention_not_listed: failed_keys.len().saturating_sub(MAX_ATTENTION),
        attention,
        state_stores,
        destinations,
        promises,
        requests: request_list(snap, snap.state.requests.keys(), filter),
    }
}

/// The request table with its filter form and pager; `base` is the page's path.
pub fn render_requests(list: &RequestList, base: &str) -> Markup {
    let f = &list.filter;
    let link = |page: usize| {
        format!(
            "{base}?state={}&q={}&page={page}",
            layout::seg(&f.state),
            layout::seg(&f.q)
        )
    };
    html! {
        form.filter method="get" action=(base) {
            select name="state" {
                @for (v, label) in [("", "all"), ("failed", "failed"), ("pending", "pending"), ("reconciled", "reconciled"), ("unhealthy", "unhealthy")] {
                    option value=(v) selected[f.state == v] { (label) }
                }
            }
            input type="search" name="q" value=(f.q) placeholder="promise/namespace/name";
            button type="submit" { "Filter" }
        }
        table #requests {
            thead { tr { th { "Request" } th { "State" } th { "Health" } th { "Destinations" } th { "Message" } } }
            tbody {
                @for r in &list.rows {
                    tr data-key=(r.key) {
                        td { (object_link(&r.key)) }
                        td { (badge(&r.state)) }
                        td { @match &r.health { Some(h) => (badge(h)), None => (none()) } }
                        td { (r.destinations.join(", ")) }
                        td.muted { (r.message) }
                    }
                }
                @if list.rows.is_empty() { tr { td colspan="5" .muted { "No request matches." } } }
            }
        }
        (layout::pager(f.page, list.pages, list.total, link))
    }
}

fn render_pass(v: &Overview) -> Markup {
    html! {
        @match &v.last_pass {
            None => p.muted { "No pass of promised run recorded yet." },
            Some(p) => {
                dl.kv #last-pass {
                    dt { "Finished" } dd { (p.finished_at) }
                    dt { "Config commit" } dd {
                        @match &p.config_commit {
                            Some(c) => (commit(c, v.last_pass_commit_url.as_deref())),
                            None => span.muted { "none (a config directory)" },
                        }
                    }
                    dt { "Duration" } dd { (format!("{:.2} s", p.duration_seconds)) }
                    dt { "Pipelines run" } dd { (p.pipelines_run) }
                    dt { "Ran" } dd {
                        @if p.ran.is_empty() { span.muted { "nothing (no change)" } }
                        @for (i, o) in p.ran.iter().enumerate() {
                            @if i > 0 { ", " }
                            (object_link(&o.key)) " " (badge(&o.state))
                        }
                        @if p.ran_not_listed > 0 { " and " (p.ran_not_listed) " more" }
                    }
                    dt { "Commits" } dd {
                        @for s in &p.stores {
                            div {
                                (s.store) ": "
                                @match (&s.commit, &s.error) {
                                    (_, Some(e)) => { span.state.bad { "write failed" } " " span.muted { (e) } },
                                    (Some(c), None) => { a href={ "/ui/audit#out-" (c) } { code { (layout::short(c)) } } " (" (s.written) " written, " (s.deleted) " deleted)" },
                                    (None, None) => span.muted { "no change" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How an attention kind reads on the page.
fn kind_label(kind: &str) -> &str {
    match kind {
        "failedRequest" => "Failed request",
        "failedPromise" => "Failed Promise",
        "pausedRollout" => "Paused rollout",
        "unverifiedCommit" => "Unverified config commit",
        "stateStoreNotReady" => "State store not ready",
        "destinationNotReady" => "Destination not ready",
        other => other,
    }
}

/// Renders the overview page.
pub fn render(v: &Overview) -> Markup {
    let c = &v.counts;
    let body = html! {
        h1 { "Overview" }
        div.counts #counts {
            a.count href="/ui/?state=reconciled" { b { (c.reconciled) } "reconciled" }
            a.count href="/ui/?state=failed" { b { (c.failed) } "failed" }
            a.count href="/ui/?state=pending" { b { (c.pending) } "pending" }
            a.count href="/ui/?state=unhealthy" { b { (c.unhealthy) } "unhealthy" }
            span.count { b { (c.requests) } "requests" }
            span.count { b { (c.promises) } "Promises" }
        }
        @if !v.attention.is_empty() {
            h2 { "Needs attention" }
            section.card.attention #attention {
                @for a in &v.attention {
                    div.item data-kind=(a.kind) {
                        p {
                            strong { (kind_label(&a.kind)) } " "
                            @match &a.href { Some(h) => a href=(h) { (a.subject) }, None => code { (a.subject) } }
                            " " span.muted { (a.message) }
                        }
                        @if let Some(t) = &a.log_tail { @if !t.is_empty() { (layout::pre(t)) } }
                    }
                }
                @if v.attention_not_listed > 0 {
                    p { a href="/ui/?state=failed" { (v.attention_not_listed) " more failed requests" } }
                }
            }
        }
        h2 { "Last pass" }
        section.card { (render_pass(v)) }
        h2 { "State stores" }
        table #state-stores {
            thead { tr { th { "State store" } th { "Status" } th { "URL" } th { "Last commit" } th { "Message" } } }
            tbody {
                @for s in &v.state_stores {
                    tr {
                        td { (s.store) }
                        td { (badge(&s.status)) }
                        td { code { (s.url) } }
                        td { @match &s.last_commit { Some(cm) => { (commit(cm, s.last_commit_url.as_deref())) " " span.muted { (s.last_write.as_deref().unwrap_or("")) } }, None => (none()) } }
                        td.muted { (s.message) }
                    }
                }
            }
        }
        h2 { "Destinations" }
        table #destinations {
            thead { tr { th { "Destination" } th { "Ready" } th { "State store" } th { "Requests" } th { "Message" } } }
            tbody {
                @for d in &v.destinations {
                    tr {
                        td { (d.name) }
                        td { (badge(&d.ready)) }
                        td { (d.store) }
                        td { (d.requests) }
                        td.muted { (d.message) }
                    }
                }
            }
        }
        h2 { "Promises" }
        table #promises {
            thead { tr { th { "Promise" } th { "Status" } th { "Version" } th { "Requests" } th { "Failing" } } }
            tbody {
                @for p in &v.promises {
                    tr {
                        td { a href=(promise_href(&p.name)) { (p.name) } }
                        td { (badge(&p.status)) }
                        td { (p.version.as_deref().unwrap_or("")) }
                        td { (p.requests) }
                        td { (p.failed) }
                    }
                }
            }
        }
        h2 { "Requests" }
        (render_requests(&v.requests, "/ui/"))
    };
    layout::page("Overview", &v.version, Nav::Overview, body)
}
