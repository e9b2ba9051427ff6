//! Tests only: a fake Kubernetes API for `coordination.k8s.io/v1` Leases behind kube's
//! `tower-test` mock service, keeping Lease objects with the semantics `kube-lease-manager`
//! relies on: `resourceVersion`s, `409 AlreadyExists` on a second create, server-side apply
//! (`application/apply-patch+yaml`) that answers `409 Conflict` when it would change
//! `holderIdentity` owned by another field manager, strategic merge patches (no field-manager
//! conflicts, as on the API server: they apply whoever owns a field; `null` removes a field,
//! clearing its owner), a `metadata.resourceVersion` in a patch as a precondition (`409
//! Conflict` when the Lease has been written since), label-selected lists. Every call is logged
//! (method, path, query) for the access checks; a replica can be cut off (answered 503),
//! renewals can be refused with a 409 after someone else took the Lease, and a Lease can be
//! taken behind the replicas' backs ([`FakeApi::take`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// One logged call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub replica: String,
    pub method: Method,
    pub path: String,
    pub query: String,
}

#[derive(Default)]
struct Stored {
    spec: serde_json::Map<String, Value>,
    labels: BTreeMap<String, String>,
    rv: u64,
    holder_manager: Option<String>,
}

#[derive(Default)]
pub struct State {
    leases: BTreeMap<String, Stored>,
    rv: u64,
    pub calls: Vec<Call>,
    /// Replicas whose calls are answered 503 (cut off from the API).
    pub cut_off: BTreeSet<String>,
    /// `(identity, thief)`: the next renewal by `identity` is refused with 409 after `thief`
    /// took the Lease (see [`FakeApi::take`]).
    pub steal_on_renew: Option<(String, String)>,
    /// Thieves: live holders outside the replicas under test, which renew their hold (for an
    /// hour) right before every call is answered.
    thieves: BTreeSet<String>,
}

impl State {
    /// `thief` takes Lease `name` from whoever holds it (as a forced takeover would) and keeps
    /// renewing it, so however slow the test, the Lease stays the thief's: a replica's renewal
    /// sent on a stale belief that it still holds the Lease (a strategic merge patch, which the
    /// API server applies to anyone's Lease) changes the hold only until the next call.
    fn take(&mut self, name: &str, thief: &str) {
        self.thieves.insert(thief.to_string());
        let l = self.leases.get_mut(name).expect("a Lease to take");
        l.spec.insert("holderIdentity".into(), json!(thief));
        l.holder_manager = Some(format!("thief-{thief}"));
        self.renew_thieves();
    }

    /// Each thief renews the Leases it holds.
    fn renew_thieves(&mut self) {
        for l in self.leases.values_mut() {
            let holder = l.spec.get("holderIdentity").and_then(Value::as_str);
            if holder.is_some_and(|h| self.thieves.contains(h)) {
                l.spec.insert("renewTime".into(), now_micro());
                l.spec.insert("leaseDurationSeconds".into(), json!(3600));
                self.rv += 1;
                l.rv = self.rv;
            }
        }
    }
}

/// The shared fake API; [`FakeApi::client`] gives each replica its own connection.
#[derive(Clone, Default)]
pub struct FakeApi(pub Arc<Mutex<State>>);

pub const PREFIX: &str = "/apis/coordination.k8s.io/v1/namespaces/";

impl FakeApi {
    /// A client for `replica` (its calls are logged under that name), namespace `ns`.
    pub fn client(&self, replica: &str, ns: &str) -> kube::Client {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (api, replica) = (self.clone(), replica.to_string());
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let resp = api.answer(&replica, req).await;
                send.send_response(resp);
            }
        });
        kube::Client::new(svc, ns.to_string())
    }

    /// The holder of Lease `name` now.
    pub fn holder(&self, name: &str) -> Option<String> {
        let st = self.0.lock().unwrap();
        st.leases
            .get(name)
            .and_then(|l| l.spec.get("holderIdentity"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }

    /// `thief` takes Lease `name` now and keeps it (see `State::take`).
    pub fn take(&self, name: &str, thief: &str) {
        self.0.lock().unwrap().take(name, thief);
    }

    async fn answer(&self, replica: &str, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body.collect_bytes().await.expect("request body");
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let ctype = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut st = self.0.lock().unwrap();
        st.renew_thieves();
        st.calls.push(Call {
            replica: replica.into(),
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
        });
        if st.cut_off.contains(replica) {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "cut off",
            );
        }
        let rest = path.strip_prefix(PREFIX).expect("a Lease path");
        let (ns, rest) = rest.split_once('/').expect("namespace");
        let name = rest.strip_prefix("leases").expect("leases");
        let name = name.strip_prefix('/').filter(|n| !n.is_empty());
        let param = |k: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .map(|v| v.replace("%3D", "=").replace("%2F", "/"))
        };
        match (parts.method.clone(), name) {
            (Method::GET, None) => {
                let selector = param("labelSelector");
                let items: Vec<Value> = st
                    .leases
                    .iter()
                    .filter(|(_, l)| {
                        selector.as_ref().is_none_or(|s| {
                            let (k, v) = s.split_once('=').unwrap();
                            l.labels.get(k).map(String::as_str) == Some(v)
                        })
                    })
                    .map(|(n, l)| lease_json(ns, n, l))
                    .collect();
                let rv = st.rv.to_string();
                ok(
                    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
                    "metadata": {"resourceVersion": rv}, "items": items}),
                )
            }
            (Method::GET, Some(n)) => match st.leases.get(n) {
                Some(l) => ok(lease_json(ns, n, l)),
                None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            },
            (Method::POST, None) => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                let n = v["metadata"]["name"].as_str().unwrap().to_string();
                if st.leases.contains_key(&n) {
                    return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
                }
                st.rv += 1;
                let labels =
                    serde_json::from_value(v["metadata"]["labels"].clone()).unwrap_or_default();
                let spec = v["spec"].as_object().cloned().unwrap_or_default();
                let l = Stored {
                    spec,
                    labels,
                    rv: st.rv,
                    holder_manager: None,
                };
                let out = lease_json(ns, &n, &l);
                st.leases.insert(n, l);
                created(out)
            }
            (Method::PATCH, Some(n)) => {
                let manager = param("fieldManager").unwrap_or_default();
                let patch: Value = serde_json::from_slice(&body).unwrap();
                let pspec = patch["spec"].as_object().cloned().unwrap_or_default();
                let renewal = pspec.contains_key("renewTime")
                    && !pspec.contains_key("holderIdentity")
                    && !pspec["renewTime"].is_null();
                let Some(l) = st.leases.get(n) else {
                    return status(StatusCode::NOT_FOUND, "NotFound", "not found");
                };
                // A resourceVersion in the patch is a precondition, whatever the patch type.
                if let Some(want) = patch["metadata"]["resourceVersion"].as_str()
                    && want != l.rv.to_string()
                {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                if let Some((victim, thief)) = st.steal_on_renew.clone()
                    && renewal
                    && manager.ends_with(&format!("-{victim}"))
                {
                    st.take(n, &thief);
                    st.steal_on_renew = None;
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified",
                    );
                }
                let rv = st.rv + 1;
                let l = st.leases.get_mut(n).expect("checked above");
                let apply = ctype.starts_with("application/apply-patch");
                if apply
                    && let Some(new) = pspec.get("holderIdentity")
                    && let Some(cur) = l.spec.get("holderIdentity")
                    && cur != new
                    && l.holder_manager.as_deref().is_some_and(|m| m != manager)
                {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "Apply failed with 1 conflict: conflict with another manager: .spec.holderIdentity",
                    );
                }
                assert!(
                    apply || ctype.starts_with("application/strategic-merge-patch"),
                    "unexpected patch type {ctype}"
                );
                for (k, v) in pspec {
                    if k == "holderIdentity" {
                        l.holder_manager = (!v.is_null()).then(|| manager.clone());
                    }
                    if v.is_null() {
                        l.spec.remove(&k);
                    } else {
                        l.spec.insert(k, v);
                    }
                }
                l.rv = rv;
                st.rv = rv;
                ok(lease_json(ns, n, &st.leases[n]))
            }
            (m, _) => panic!("the fake API has no {m} {path}"),
        }
    }
}

fn now_micro() -> Value {
    let t = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    serde_json::to_value(t).unwrap()
}

fn lease_json(ns: &str, name: &str, l: &Stored) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": l.rv.to_string(),
            "labels": l.labels},
        "spec": l.spec})
}

fn ok(v: Value) -> Response<Body> {
    respond(StatusCode::OK, v)
}

fn created(v: Value) -> Response<Body> {
    respond(StatusCode::CREATED, v)
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    respond(
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
            "reason": reason, "message": message, "code": code.as_u16()}),
    )
}

fn respond(code: StatusCode, v: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&v).unwrap()))
        .unwrap()
}

/// The RBAC verb of a logged call.
pub fn verb(c: &Call) -> &'static str {
    let named = c
        .path
        .strip_prefix(PREFIX)
        .and_then(|r| r.split_once("/leases/"))
        .is_some();
    match (&c.method, named) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if c.query.contains("watch=true") => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PATCH, _) => "patch",
        (&Method::PUT, _) => "update",
        (&Method::DELETE, _) => "delete",
        _ => "unknown",
    }
}
