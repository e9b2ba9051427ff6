//! The HTTP side of the pipeline API, in Kubernetes' wire format: discovery documents
//! (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList`), request objects and
//! `<Kind>List`s, and `Status` objects for errors (`code`, `reason`, `message`, as the
//! Kubernetes API server writes them).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{ApiEntry, KubeApi, Listed, RunCtx, merge_patch, published};

/// The router of every run's listener: the token picks the run.
pub(super) fn router(hub: Arc<KubeApi>) -> Router {
    Router::new().fallback(handle).with_state(hub)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

/// A Kubernetes `Status` failure.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

fn not_found() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn forbidden(ctx: &RunCtx, verb: &str, resource: &str, group: &str, ns: &str) -> Response {
    let scope = if ns.is_empty() {
        " at the cluster scope".to_string()
    } else {
        format!(" in the namespace \"{ns}\"")
    };
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "{resource}.{group} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\"{scope}",
            ctx.user
        ),
    )
}

async fn handle(
    State(hub): State<Arc<KubeApi>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(ctx) = token.and_then(|t| hub.run_of(t)) else {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    };
    let catalog = hub.catalog();
    // The APIs this run may see: its Promise's and those it requires.
    let mut apis: Vec<ApiEntry> = ctx
        .allowed
        .iter()
        .filter_map(|p| catalog.promises.get(p).cloned())
        .collect();
    if !apis.iter().any(|a| a.promise == ctx.api.promise) {
        apis.push(ctx.api.clone());
    }
    let path = uri.path().trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    if method == Method::PATCH {
        return patch(&hub, &ctx, &apis, &parts, &headers, &body);
    }
    if method != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource: {method}"),
        );
    }
    match parts.as_slice() {
        ["version"] => json_response(
            StatusCode::OK,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-promised",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                "goVersion": "", "compiler": "promised", "platform": "linux/amd64",
            }),
        ),
        ["api"] => json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ),
        ["api", "v1"] => json_response(
            StatusCode::OK,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": []}),
        ),
        ["apis"] => {
            let mut groups: Vec<Value> = Vec::new();
            let mut names: Vec<&str> = apis.iter().map(|a| a.group.as_str()).collect();
            names.sort();
            names.dedup();
            for g in names {
                groups.push(api_group(&apis, g));
            }
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["apis", g] if apis.iter().any(|a| a.group == *g) => {
            json_response(StatusCode::OK, &api_group(&apis, g))
        }
        ["apis", g, v] if apis.iter().any(|a| a.group == *g && a.version == *v) => {
            let mut resources = Vec::new();
            for a in apis.iter().filter(|a| a.group == *g && a.version == *v) {
                resources.push(json!({
                    "name": a.plural, "singularName": a.kind.to_lowercase(), "namespaced": true,
                    "kind": a.kind, "verbs": ["get", "list"], "categories": ["kratix"],
                }));
                resources.push(json!({
                    "name": format!("{}/status", a.plural), "singularName": "", "namespaced": true,
                    "kind": a.kind, "verbs": ["get", "patch"],
                }));
            }
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{g}/{v}"), "resources": resources}),
            )
        }
        ["apis", g, v, plural] => list(&hub, &ctx, &apis, g, v, "", plural),
        ["apis", g, v, "namespaces", ns, plural] => list(&hub, &ctx, &apis, g, v, ns, plural),
        ["apis", g, v, "namespaces", ns, plural, name]
        | ["apis", g, v, "namespaces", ns, plural, name, "status"] => {
            let Some(a) = apis
                .iter()
                .find(|a| a.group == *g && a.version == *v && a.plural == *plural)
            else {
                return not_found();
            };
            match object(&hub, &ctx, a, ns, name) {
                Some(o) => json_response(StatusCode::OK, &o),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{plural}.{g} \"{name}\" not found"),
                ),
            }
        }
        _ => not_found(),
    }
}

fn api_group(apis: &[ApiEntry], g: &str) -> Value {
    let mut versions: Vec<&str> = apis
        .iter()
        .filter(|a| a.group == g)
        .map(|a| a.version.as_str())
        .collect();
    versions.sort();
    versions.dedup();
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": g,
        "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// The request as pipelines read it: the admitted object with its status (the live status
/// of a run in progress, else the recorded one).
fn render(hub: &KubeApi, ctx: &RunCtx, a: &ApiEntry, l: &Listed) -> Value {
    let mut o = Arc::unwrap_or_clone(l.object.value());
    let live = if l.key == ctx.key {
        Some(ctx.clone_live())
    } else {
        hub.live_run(&l.key).map(|r| r.clone_live())
    };
    let mut st = l.status.to_map();
    if let Some(live) = live {
        for (k, v) in live {
            st.insert(k, v);
        }
    }
    if let Some(m) = o.as_object_mut() {
        m.insert(
            "apiVersion".into(),
            json!(format!("{}/{}", a.group, a.version)),
        );
        m.insert("kind".into(), json!(a.kind));
        if !st.is_empty() {
            m.insert("status".into(), Value::Object(st));
        }
    }
    o
}

impl RunCtx {
    fn clone_live(&self) -> Map<String, Value> {
        self.live
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn own(&self) -> Listed {
        Listed {
            key: self.key.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            object: crate::state::CompactValue::Value(self.object.clone()),
            status: self.recorded.clone(),
        }
    }
}

/// The requests of Promise `a` this run sees: the catalog's, with the run's own request
/// as the run has it.
fn requests_of(hub: &KubeApi, ctx: &RunCtx, a: &ApiEntry) -> Vec<Listed> {
    let catalog = hub.catalog();
    let mut out: Vec<Listed> = catalog
        .requests
        .get(&a.promise)
        .map(|v| v.iter().filter(|l| l.key != ctx.key).cloned().collect())
        .unwrap_or_default();
    if a.promise == ctx.api.promise {
        out.push(ctx.own());
    }
    out.sort_by(|x, y| (&x.namespace, &x.name).cmp(&(&y.namespace, &y.name)));
    out
}

fn object(hub: &KubeApi, ctx: &RunCtx, a: &ApiEntry, ns: &str, name: &str) -> Option<Value> {
    requests_of(hub, ctx, a)
        .iter()
        .find(|l| l.namespace == ns && l.name == name)
        .map(|l| render(hub, ctx, a, l))
}

fn list(
    hub: &KubeApi,
    ctx: &RunCtx,
    apis: &[ApiEntry],
    g: &str,
    v: &str,
    ns: &str,
    plural: &str,
) -> Response {
    let Some(a) = apis
        .iter()
        .find(|a| a.group == g && a.version == v && a.plural == plural)
    else {
        return not_found();
    };
    let items: Vec<Value> = requests_of(hub, ctx, a)
        .iter()
        .filter(|l| ns.is_empty() || l.namespace == ns)
        .map(|l| render(hub, ctx, a, l))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": format!("{g}/{v}"),
            "kind": format!("{}List", a.kind),
            "metadata": {"resourceVersion": ""},
            "items": items,
        }),
    )
}

fn patch(
    hub: &KubeApi,
    ctx: &RunCtx,
    apis: &[ApiEntry],
    parts: &[&str],
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let ["apis", g, v, "namespaces", ns, plural, name, rest @ ..] = parts else {
        return not_found();
    };
    let Some(a) = apis
        .iter()
        .find(|a| a.group == *g && a.version == *v && a.plural == *plural)
    else {
        return not_found();
    };
    let own = a.promise == ctx.api.promise && *ns == ctx.namespace && *name == ctx.name;
    if rest != ["status"] || !own {
        let resource = match rest {
            ["status"] => format!("{plural}/status"),
            _ => plural.to_string(),
        };
        return forbidden(ctx, "patch", &resource, g, ns);
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ctype.split(';').next().map(str::trim) != Some("application/merge-patch+json") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json (got {ctype:?})"
            ),
        );
    }
    let invalid = |msg: &str| {
        status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!("{plural}.{g} \"{name}\" is invalid: {msg}"),
        )
    };
    let doc: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the merge patch is not JSON: {e}"),
            );
        }
    };
    let Some(doc) = doc.as_object() else {
        return invalid("the merge patch must be a JSON object");
    };
    match doc.get("status") {
        None => {}
        Some(Value::Object(s)) => {
            // Kratix's status.yaml rule: `kratix` is written by the platform only.
            if s.contains_key("kratix") {
                return invalid(
                    "status.kratix: Forbidden: the kratix key is written by promised only (as Kratix refuses it in status.yaml)",
                );
            }
            let fields = {
                let mut live = match ctx.live.lock() {
                    Ok(l) => l,
                    Err(e) => e.into_inner(),
                };
                merge_patch(&mut live, s);
                live.clone()
            };
            published::write(&ctx.published, &ctx.key, &ctx.api.kind, true, &fields);
            tracing::info!(
                resourceRequest = ctx.key.as_str(),
                "pipeline published status"
            );
        }
        Some(_) => return invalid("status: Invalid value: must be an object"),
    }
    match object(hub, ctx, a, ns, name) {
        Some(o) => json_response(StatusCode::OK, &o),
        None => not_found(),
    }
}
