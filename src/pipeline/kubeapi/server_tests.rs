//! The pipeline API's HTTP answers, on a plain loopback listener (TLS and the sandbox are
//! covered by tests/kubeapi.rs): discovery limited to the run's Promise and those it
//! requires, reads, the status patch and its refusals, each as a Kubernetes `Status`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use super::{ApiEntry, Catalog, KubeApi, Listed, RunCtx, StatusText};

fn entry(promise: &str, kind: &str, plural: &str, required: &[&str]) -> ApiEntry {
    ApiEntry {
        promise: promise.into(),
        group: "test.promised.dev".into(),
        version: "v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
        required: required.iter().map(|s| s.to_string()).collect(),
    }
}

fn listed(promise: &str, kind: &str, name: &str) -> Listed {
    Listed {
        key: format!("{promise}/default/{name}"),
        namespace: "default".into(),
        name: name.into(),
        object: crate::state::CompactValue::new(json!({
            "apiVersion": "test.promised.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": "default"}, "spec": {"n": name},
        })),
        status: StatusText::new(
            json!({"message": "Resource requested"})
                .as_object()
                .unwrap(),
        ),
    }
}

/// A hub serving a run of app `a` (which requires `db`) with the token `tok`; `cache` is not
/// required. Returns the hub, the run and the published-status directory's guard.
fn hub() -> (Arc<KubeApi>, Arc<RunCtx>, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let hub = Arc::new(KubeApi::new(d.path()));
    let mut c = Catalog::default();
    let app = entry("app", "App", "apps", &["db"]);
    c.promises.insert("app".into(), app.clone());
    c.promises
        .insert("db".into(), entry("db", "Database", "databases", &[]));
    c.promises
        .insert("cache".into(), entry("cache", "Cache", "caches", &[]));
    c.requests.insert(
        "app".into(),
        vec![listed("app", "App", "a"), listed("app", "App", "b")],
    );
    c.requests
        .insert("db".into(), vec![listed("db", "Database", "main")]);
    c.requests
        .insert("cache".into(), vec![listed("cache", "Cache", "c")]);
    hub.set_catalog(c);
    let own = listed("app", "App", "a");
    let ctx = Arc::new(RunCtx {
        key: own.key.clone(),
        namespace: "default".into(),
        name: "a".into(),
        api: app,
        allowed: BTreeSet::from(["app".to_string(), "db".to_string()]),
        object: own.object.value(),
        live: Mutex::new(json!({"old": 1}).as_object().unwrap().clone()),
        recorded: own.status.clone(),
        user: "promised:pipeline:app/default/a".into(),
        published: super::published::file(&hub.published_dir, &own.key),
    });
    hub.runs.lock().unwrap().insert("tok".into(), ctx.clone());
    (hub, ctx, d)
}

async fn serve(hub: Arc<KubeApi>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, super::server::router(hub)).await;
    });
    format!("http://{addr}")
}

/// `(status code, body as JSON)` of a request with `token`.
async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Value)>,
) -> (u16, Value) {
    let (base, method, path) = (base.to_string(), method.to_string(), path.to_string());
    let token = token.map(str::to_string);
    let body = body.map(|(c, v)| (c.to_string(), v));
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .build()
            .into();
        let url = format!("{base}{path}");
        let req = http::Request::builder().method(method.as_str()).uri(url);
        let req = match &token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        };
        let mut resp = match body {
            Some((ctype, v)) => agent
                .run(
                    req.header("Content-Type", ctype.as_str())
                        .body(serde_json::to_vec(&v).unwrap())
                        .unwrap(),
                )
                .unwrap(),
            None => agent.run(req.body(()).unwrap()).unwrap(),
        };
        let code = resp.status().as_u16();
        let v = serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
        (code, v)
    })
    .await
    .unwrap()
}

const OWN: &str = "/apis/test.promised.dev/v1alpha1/namespaces/default/apps/a/status";
const MERGE: &str = "application/merge-patch+json";

#[tokio::test]
async fn discovery_and_reads_see_only_the_promise_and_its_required_promises() {
    let (hub, _ctx, _d) = hub();
    let base = serve(hub).await;
    let (code, v) = call(
        &base,
        "GET",
        "/apis/test.promised.dev/v1alpha1",
        Some("tok"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["kind"], "APIResourceList");
    let names: Vec<&str> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["apps", "apps/status", "databases", "databases/status"]
    );
    let (code, v) = call(
        &base,
        "GET",
        "/apis/test.promised.dev/v1alpha1/namespaces/default/apps",
        Some("tok"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["kind"], "AppList");
    // The run's own request shows its live status (with the recorded message).
    assert_eq!(v["items"][0]["metadata"]["name"], "a");
    assert_eq!(v["items"][0]["status"]["old"], 1);
    assert_eq!(v["items"][0]["status"]["message"], "Resource requested");
    assert_eq!(v["items"][1]["metadata"]["name"], "b");
    let (code, v) = call(
        &base,
        "GET",
        "/apis/test.promised.dev/v1alpha1/namespaces/default/databases/main",
        Some("tok"),
        None,
    )
    .await;
    assert_eq!((code, &v["spec"]["n"]), (200, &json!("main")), "{v}");
    // A Promise the run does not require is not served.
    let (code, v) = call(
        &base,
        "GET",
        "/apis/test.promised.dev/v1alpha1/namespaces/default/caches",
        Some("tok"),
        None,
    )
    .await;
    assert_eq!(
        (code, &v["kind"], &v["reason"]),
        (404, &json!("Status"), &json!("NotFound"))
    );
    let (code, v) = call(
        &base,
        "GET",
        "/apis/test.promised.dev/v1alpha1/namespaces/default/apps/zz",
        Some("tok"),
        None,
    )
    .await;
    assert_eq!((code, &v["reason"]), (404, &json!("NotFound")), "{v}");
}

#[tokio::test]
async fn status_patches_merge_and_refusals_are_kubernetes_statuses() {
    let (hub, ctx, _d) = hub();
    let published = ctx.published.clone();
    let base = serve(hub.clone()).await;
    let patch = json!({"status": {"phase": "x", "deep": {"k": 1}, "old": null}});
    let (code, v) = call(&base, "PATCH", OWN, Some("tok"), Some((MERGE, patch))).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"]["phase"], "x");
    let live: Map<String, Value> = ctx.live.lock().unwrap().clone();
    assert_eq!(Value::Object(live), json!({"phase": "x", "deep": {"k": 1}}));
    // Visible at once to `promised status`.
    let p: super::published::Published =
        serde_json::from_slice(&std::fs::read(&published).unwrap()).unwrap();
    assert!(p.live);
    assert_eq!(p.fields["phase"], "x");

    let status = json!({"status": {"phase": "y"}});
    let other = "/apis/test.promised.dev/v1alpha1/namespaces/default/apps/b/status";
    let (code, v) = call(
        &base,
        "PATCH",
        other,
        Some("tok"),
        Some((MERGE, status.clone())),
    )
    .await;
    assert_eq!((code, &v["reason"]), (403, &json!("Forbidden")), "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("cannot patch"),
        "{v}"
    );
    let spec = "/apis/test.promised.dev/v1alpha1/namespaces/default/apps/a";
    let (code, _) = call(
        &base,
        "PATCH",
        spec,
        Some("tok"),
        Some((MERGE, status.clone())),
    )
    .await;
    assert_eq!(code, 403);
    let (code, v) = call(
        &base,
        "PATCH",
        OWN,
        Some("tok"),
        Some(("application/json-patch+json", json!([]))),
    )
    .await;
    assert_eq!(
        (code, &v["reason"]),
        (415, &json!("UnsupportedMediaType")),
        "{v}"
    );
    let kratix = json!({"status": {"kratix": {"workflows": {}}}});
    let (code, v) = call(&base, "PATCH", OWN, Some("tok"), Some((MERGE, kratix))).await;
    assert_eq!((code, &v["reason"]), (422, &json!("Invalid")), "{v}");
    assert!(ctx.live.lock().unwrap().get("kratix").is_none());

    // No token, a wrong one, or the token of a run that ended: 401.
    let (code, v) = call(&base, "GET", "/api", None, None).await;
    assert_eq!((code, &v["reason"]), (401, &json!("Unauthorized")), "{v}");
    let (code, _) = call(&base, "GET", "/api", Some("nope"), None).await;
    assert_eq!(code, 401);
    hub.runs.lock().unwrap().clear();
    let (code, _) = call(&base, "PATCH", OWN, Some("tok"), Some((MERGE, status))).await;
    assert_eq!(code, 401);
}
