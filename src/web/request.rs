//! The request page: status and conditions, pipelines, health records and checks, where each
//! workload landed (Destination, path, state store commit), the log tail of the last run,
//! events in order, and the parent and children of compound Promises.

use maud::{Markup, html};
use serde::Serialize;

use super::Console;
use super::data::Snapshot;
use super::layout::{self, Nav, badge, none, object_link};
use super::promise::{PlacementRow, placements_of, render_conditions, render_placements};
use super::records::LogTail;
use crate::status::{Condition, Event, HealthCheckStatus, HealthStatus, PipelineStatus};

/// The request page (JSON twin `/api/v1/console/requests/{promise}/{namespace}/{name}`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestView {
    /// Snapshot fingerprint.
    pub version: String,
    /// `<promise>/<namespace>/<name>`.
    pub key: String,
    /// Its Promise.
    pub promise: String,
    /// `Reconciled`, `Failing`, …
    pub state: String,
    /// `status.message`.
    pub message: String,
    /// Config file and document it was read from.
    pub source: String,
    /// `status.promiseVersion`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promise_version: Option<String>,
    /// Conditions.
    pub conditions: Vec<Condition>,
    /// Pipeline phases.
    pub pipelines: Vec<PipelineStatus>,
    /// `status.healthStatus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// Health checks.
    pub health_checks: Vec<HealthCheckStatus>,
    /// Where its output landed.
    pub placements: Vec<PlacementRow>,
    /// The log tail of its last workflow run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogTail>,
    /// Events, oldest first.
    pub events: Vec<Event>,
    /// The request whose compound Promise requested it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Requests it asked for (compound Promises).
    pub children: Vec<String>,
    /// Fields its pipelines wrote to `status.yaml`.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Builds the page of request `key`; `None` when there is no such request.
pub fn build(console: &Console, snap: &Snapshot, key: &str) -> Option<RequestView> {
    let r = snap.state.requests.get(key)?;
    let s = &r.status;
    Some(RequestView {
        version: snap.version.clone(),
        key: key.to_string(),
        promise: s.promise.to_string(),
        state: s.summary().to_string(),
        message: s.message.clone(),
        source: s.source.clone(),
        promise_version: s.promise_version.as_deref().map(str::to_string),
        conditions: s.conditions.to_vec(),
        pipelines: s.pipelines.to_vec(),
        health: s.health_status.as_deref().cloned(),
        health_checks: s.health_checks.clone(),
        placements: placements_of(console, r),
        logs: super::records::load_logs(&console.state_dir, key),
        events: s.events.to_vec(),
        parent: s.parent.clone(),
        children: snap.children.get(key).cloned().unwrap_or_default(),
        fields: crate::status::fields_map(&s.fields),
    })
}

fn render_health(v: &RequestView) -> Markup {
    html! {
        @match &v.health {
            None => p.muted { "No HealthRecord or health check concerns this request." },
            Some(h) => {
                p { "Health " (badge(h.state.as_str())) " since " (h.last_transition_time) }
                table #health-records {
                    thead { tr { th { "Record" } th { "State" } th { "From" } th { "Details" } } }
                    tbody {
                        @for r in &h.health_records {
                            tr {
                                td { (r.source.namespace) "/" (r.source.name) }
                                td { (badge(r.state.as_str())) }
                                td.muted { (r.from) }
                                td { @if let Some(d) = &r.details { code { (d.to_string()) } } }
                            }
                        }
                    }
                }
            }
        }
        @if !v.health_checks.is_empty() {
            table #health-checks {
                thead { tr { th { "Health check" } th { "Schedule" } th { "Last state" } th { "Next run" } th { "Message" } } }
                tbody {
                    @for c in &v.health_checks {
                        tr {
                            td { (c.namespace) "/" (c.name) }
                            td { code { (c.schedule) } }
                            td { @match c.state { Some(s) => (badge(s.as_str())), None => (none()) } }
                            td.muted { (c.next_run_at.as_deref().unwrap_or("")) }
                            td.muted { (c.message) }
                        }
                    }
                }
            }
        }
    }
}

/// Renders the request page.
pub fn render(v: &RequestView) -> Markup {
    let body = html! {
        p.muted {
            a href="/ui/" { "Overview" } " / "
            a href=(layout::promise_href(&v.promise)) { "Promise " (v.promise) } " / request"
        }
        h1 { (v.key) " " (badge(&v.state)) }
        dl.kv #summary {
            dt { "Message" } dd { (v.message) }
            dt { "Source" } dd { code { (v.source) } }
            dt { "Promise version" } dd { (v.promise_version.as_deref().unwrap_or("unlabelled")) }
            dt { "Parent" } dd { @match &v.parent { Some(p) => (object_link(p)), None => (none()) } }
            dt { "Children" } dd {
                @if v.children.is_empty() { (none()) }
                @for (i, c) in v.children.iter().enumerate() { @if i > 0 { ", " } (object_link(c)) }
            }
            dt { "Audit" } dd { a href={ "/ui/audit?resource=" (layout::seg(&v.key)) } { "output commits for this request" } }
        }
        h2 { "Where it landed" }
        (render_placements(&v.placements))
        h2 { "Conditions" }
        (render_conditions(&v.conditions))
        h2 { "Pipelines" }
        table #pipelines {
            thead { tr { th { "Pipeline" } th { "Phase" } th { "Since" } th { "Message" } } }
            tbody {
                @for p in &v.pipelines {
                    tr {
                        td { (p.name) }
                        td { (badge(&format!("{:?}", p.phase))) }
                        td.muted { (p.last_transition_time) }
                        td { @if !p.message.is_empty() { (layout::pre(&p.message)) } }
                    }
                }
            }
        }
        h2 { "Log tail of the last run" }
        section.card #logs {
            @match &v.logs {
                None => p.muted { "No log kept for this request (it has not run since the console was added)." },
                Some(t) => {
                    p.muted { "Run ended " (t.time) }
                    @for c in &t.containers {
                        p {
                            strong { (c.pipeline) " / " (c.container) }
                            " exit " @match c.exit_code { Some(0) => span.state.ok { "0" }, Some(n) => span.state.bad { (n) }, None => span.state.bad { "killed" } }
                        }
                        @if !c.stdout.is_empty() { p.muted { "stdout" } (layout::pre(&c.stdout)) }
                        @if !c.stderr.is_empty() { p.muted { "stderr" } (layout::pre(&c.stderr)) }
                    }
                }
            }
        }
        h2 { "Health" }
        (render_health(v))
        @if !v.fields.is_empty() {
            h2 { "Status fields" }
            dl.kv { @for (k, val) in &v.fields { dt { (k) } dd { code { (val.to_string()) } } } }
        }
        h2 { "Events" }
        table #events {
            thead { tr { th { "Time" } th { "Type" } th { "Reason" } th { "Message" } } }
            tbody {
                @for e in &v.events {
                    tr {
                        td.muted { (e.time) }
                        td { (badge(if e.type_ == crate::status::EventType::Warning { "Warning" } else { "Normal" })) }
                        td { (e.reason) }
                        td { (e.message) }
                    }
                }
            }
        }
    };
    layout::page(&v.key, &v.version, Nav::Overview, body)
}
