//! The Promise page: its API (the `openAPIV3Schema` of each served version as a table),
//! version and rollouts (UpgradePlans), pipelines, where its dependencies are placed, and its
//! requests with state and health.

use maud::{Markup, html};
use serde::Serialize;
use serde_json::Value;

use super::Console;
use super::data::Snapshot;
use super::layout::{self, Nav, badge, commit, none};
use super::overview::{Filter, RequestList, render_requests, request_list};
use crate::state::ObjectRecord;

/// One field of the API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    /// Dotted path under the object, e.g. `spec.size`; `[]` marks array items.
    pub path: String,
    /// `type` (with `format`), e.g. `string`, `integer/int32`, `object`.
    pub type_: String,
    /// Listed in its parent's `required`.
    pub required: bool,
    /// `default`, as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// `enum`, `pattern`, `minimum`… as `key: value` text.
    pub constraints: Vec<String>,
    /// `description`.
    pub description: String,
}

/// One served version of the API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiVersion {
    /// `<group>/<version>`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Fields, depth first.
    pub fields: Vec<Field>,
}

/// One pipeline of the Promise's workflows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRow {
    /// `promise` or `resource`.
    pub level: String,
    /// `configure` or `delete`.
    pub action: String,
    /// Pipeline name.
    pub name: String,
    /// `<container>: <image>` per container.
    pub containers: Vec<String>,
}

/// One placement of the Promise's dependencies.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementRow {
    /// Destination.
    pub destination: String,
    /// `<Kind>/<name>` of the state store.
    pub store: String,
    /// Directory in the store.
    pub path: String,
    /// Files placed.
    pub files: usize,
    /// The Destination no longer matches.
    pub misplaced: bool,
    /// The store's commit holding them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Link to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_url: Option<String>,
}

/// The Promise page (JSON twin `/api/v1/console/promises/{name}`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PromiseView {
    /// Snapshot fingerprint.
    pub version: String,
    /// Name.
    pub name: String,
    /// `Available` / `Unavailable`.
    pub status: String,
    /// `status.message`.
    pub message: String,
    /// `kratix.io/promise-version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promise_version: Option<String>,
    /// Conditions.
    pub conditions: Vec<crate::status::Condition>,
    /// The API.
    pub api: Vec<ApiVersion>,
    /// Pipelines.
    pub pipelines: Vec<PipelineRow>,
    /// Phases of its own (promise-level) pipelines.
    pub pipeline_status: Vec<crate::status::PipelineStatus>,
    /// Its rollouts.
    pub rollouts: Vec<crate::rollout::RolloutRecord>,
    /// Where its dependencies landed.
    pub placements: Vec<PlacementRow>,
    /// Its requests.
    pub requests: RequestList,
}

/// `kratix.io/promise-version` of a Promise record's document.
pub fn version_of(p: &ObjectRecord) -> Option<String> {
    p.promise
        .as_ref()
        .unwrap_or(&p.object)
        .pointer("/metadata/labels")
        .and_then(|l| l.get(crate::model::PROMISE_VERSION_LABEL))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Flattens an `openAPIV3Schema` node at `path` into `out`.
pub fn fields(schema: &Value, path: &str, required: bool, out: &mut Vec<Field>) {
    let s = |k: &str| schema.get(k).and_then(Value::as_str).unwrap_or("");
    if !path.is_empty() {
        let mut type_ = s("type").to_string();
        if !s("format").is_empty() {
            type_ = format!("{type_}/{}", s("format"));
        }
        let constraints = [
            "enum",
            "pattern",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
        ]
        .iter()
        .filter_map(|k| schema.get(*k).map(|v| format!("{k}: {v}")))
        .collect();
        out.push(Field {
            path: path.to_string(),
            type_,
            required,
            default: schema.get("default").map(Value::to_string),
            constraints,
            description: s("description").to_string(),
        });
    }
    if out.len() > 500 {
        return;
    }
    let req: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            fields(v, &p, req.contains(&k.as_str()), out);
        }
    }
    if let Some(items) = schema.get("items") {
        fields(items, &format!("{path}[]"), false, out);
    }
}

fn api_of(doc: &Value) -> Vec<ApiVersion> {
    let crd = doc.pointer("/spec/api").unwrap_or(&Value::Null);
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = crd
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| {
            let mut out = Vec::new();
            if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
                fields(s, "", false, &mut out);
            }
            ApiVersion {
                api_version: format!(
                    "{group}/{}",
                    v.get("name").and_then(Value::as_str).unwrap_or("")
                ),
                kind: kind.to_string(),
                fields: out,
            }
        })
        .collect()
}

fn pipelines_of(doc: &Value) -> Vec<PipelineRow> {
    let mut out = Vec::new();
    for level in ["promise", "resource"] {
        for action in ["configure", "delete"] {
            let list = doc
                .pointer(&format!("/spec/workflows/{level}/{action}"))
                .and_then(Value::as_array);
            for p in list.into_iter().flatten() {
                out.push(PipelineRow {
                    level: level.into(),
                    action: action.into(),
                    name: p
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    containers: p
                        .pointer("/spec/containers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            format!(
                                "{}: {}",
                                c.get("name").and_then(Value::as_str).unwrap_or(""),
                                c.get("image").and_then(Value::as_str).unwrap_or("")
                            )
                        })
                        .collect(),
                });
            }
        }
    }
    out
}

/// Placement rows of a record, with the store commit of each.
pub fn placements_of(console: &Console, r: &ObjectRecord) -> Vec<PlacementRow> {
    r.placements
        .iter()
        .map(|p| {
            let store = store_key(&p.store);
            let commit = r
                .status
                .commits
                .get(p.store.as_str())
                .or_else(|| r.status.commits.get(store.as_str()))
                .map(|c| c.to_string());
            PlacementRow {
                destination: p.destination.to_string(),
                commit_url: commit
                    .as_deref()
                    .and_then(|c| console.settings.store_commit_url(&store, c)),
                commit,
                store,
                path: p.dir.clone(),
                files: p.files.len(),
                misplaced: p.misplaced,
            }
        })
        .collect()
}

/// `<Kind>/<name>` of an engine store key (`gitstatestore/x` or `GitStateStore/x`).
pub fn store_key(store: &str) -> String {
    match store.split_once('/') {
        Some((k, n)) if k.eq_ignore_ascii_case("GitStateStore") => format!("GitStateStore/{n}"),
        Some((k, n)) if k.eq_ignore_ascii_case("BucketStateStore") => {
            format!("BucketStateStore/{n}")
        }
        _ => store.to_string(),
    }
}

/// Builds the page of Promise `name`; `None` when there is no such Promise.
pub fn build(
    console: &Console,
    snap: &Snapshot,
    name: &str,
    filter: &Filter,
) -> Option<PromiseView> {
    let r = snap.promise(name)?;
    let doc = r.promise.as_ref().unwrap_or(&r.object);
    let keys = snap.by_promise.get(name).map(Vec::as_slice).unwrap_or(&[]);
    Some(PromiseView {
        version: snap.version.clone(),
        name: name.to_string(),
        status: r
            .status
            .status
            .as_deref()
            .map_or_else(|| r.status.summary().to_string(), str::to_string),
        message: r.status.message.clone(),
        promise_version: version_of(r),
        conditions: r.status.conditions.to_vec(),
        api: api_of(doc),
        pipelines: pipelines_of(doc),
        pipeline_status: r.status.pipelines.to_vec(),
        rollouts: snap
            .rollouts
            .plans
            .values()
            .filter(|p| p.promise == name)
            .map(|p| crate::rollout::RolloutRecord {
                members: Default::default(),
                ..p.clone()
            })
            .collect(),
        placements: placements_of(console, r),
        requests: request_list(snap, keys.iter(), filter),
    })
}

/// The conditions table (shared with the request page).
pub fn render_conditions(conditions: &[crate::status::Condition]) -> Markup {
    html! {
        table #conditions {
            thead { tr { th { "Condition" } th { "Status" } th { "Reason" } th { "Message" } th { "Since" } } }
            tbody {
                @for c in conditions {
                    tr {
                        td { (c.type_) }
                        td { (badge(&format!("{:?}", c.status))) }
                        td { (c.reason) }
                        td { (c.message) }
                        td.muted { (c.last_transition_time) }
                    }
                }
            }
        }
    }
}

/// The placements table (shared with the request page).
pub fn render_placements(rows: &[PlacementRow]) -> Markup {
    html! {
        table #placements {
            thead { tr { th { "Destination" } th { "Path" } th { "State store" } th { "Commit" } th { "Files" } } }
            tbody {
                @for p in rows {
                    tr {
                        td { (p.destination) @if p.misplaced { " " span.state.warn { "misplaced" } } }
                        td { code { (p.path) } }
                        td { (p.store) }
                        td {
                            @match &p.commit {
                                Some(c) => { (commit(c, p.commit_url.as_deref())) " " a.muted href={ "/ui/audit#out-" (c) } { "audit" } },
                                None => (none()),
                            }
                        }
                        td { (p.files) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="5" .muted { "Nothing placed." } } }
            }
        }
    }
}

/// Renders the Promise page.
pub fn render(v: &PromiseView) -> Markup {
    let base = layout::promise_href(&v.name);
    let body = html! {
        p.muted { a href="/ui/" { "Overview" } " / Promise" }
        h1 { "Promise " (v.name) " " (badge(&v.status)) }
        dl.kv {
            dt { "Version" } dd { (v.promise_version.as_deref().unwrap_or("unlabelled")) }
            dt { "Message" } dd { (v.message) }
        }
        h2 { "API" }
        @for a in &v.api {
            section.card {
                p { strong { (a.api_version) } " kind " strong { (a.kind) } }
                table.api {
                    thead { tr { th { "Field" } th { "Type" } th { "Required" } th { "Default" } th { "Constraints" } th { "Description" } } }
                    tbody {
                        @for f in &a.fields {
                            tr {
                                td { code { (f.path) } }
                                td { (f.type_) }
                                td { @if f.required { "yes" } }
                                td { @if let Some(d) = &f.default { code { (d) } } }
                                td { (f.constraints.join("; ")) }
                                td.muted { (f.description) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Rollouts" }
        @if v.rollouts.is_empty() { p.muted { "No UpgradePlan for this Promise." } }
        @for r in &v.rollouts {
            section.card {
                p {
                    strong { "UpgradePlan " (r.plan) } " " (badge(r.state.as_str())) " "
                    (r.from.join(", ")) " → " (r.to) " · "
                    (r.completed_resources) " of " (r.total_resources) " moved, " (r.failed_resources) " failed"
                }
                @if !r.message.is_empty() { p.muted { (r.message) } }
                @if let Some(p) = &r.paused { p { span.state.warn { "paused" } " by " (p.by) ": " (p.reason) } }
                table {
                    thead { tr { th { "Group" } th { "State" } th { "Done" } th { "Moving" } th { "Failed" } th { "Pending" } } }
                    tbody {
                        @for g in &r.groups {
                            tr { td { (g.name) } td { (badge(&g.state)) } td { (g.succeeded) " / " (g.total) } td { (g.in_progress) } td { (g.failed) } td { (g.pending) } }
                        }
                    }
                }
            }
        }
        h2 { "Pipelines" }
        table #pipelines {
            thead { tr { th { "Workflow" } th { "Pipeline" } th { "Containers" } } }
            tbody {
                @for p in &v.pipelines {
                    tr { td { (p.level) "." (p.action) } td { (p.name) } td { @for c in &p.containers { div { code { (c) } } } } }
                }
            }
        }
        @if !v.pipeline_status.is_empty() {
            table {
                thead { tr { th { "Promise pipeline" } th { "Phase" } th { "Message" } } }
                tbody { @for p in &v.pipeline_status { tr { td { (p.name) } td { (badge(&format!("{:?}", p.phase))) } td.muted { (p.message) } } } }
            }
        }
        h2 { "Conditions" }
        (render_conditions(&v.conditions))
        h2 { "Dependencies placed" }
        (render_placements(&v.placements))
        h2 { "Requests" }
        (render_requests(&v.requests, &base))
    };
    layout::page(
        &format!("Promise {}", v.name),
        &v.version,
        Nav::Overview,
        body,
    )
}
