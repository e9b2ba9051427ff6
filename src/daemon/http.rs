//! The daemon's HTTP endpoints: `/healthz`, `/readyz`, `/metrics` (OpenMetrics),
//! `/api/v1/status` (what `promised status --output json` prints), `/api/v1/destinations`
//! (Destination and state store status, [`crate::infra::InfraStatus`]), `/api/v1/rollouts`
//! (UpgradePlans' rollouts, `rollout_api.rs`) and `POST /hooks/git`
//! (the webhook trigger).
//!
//! Limits against slow or abusive clients: [`MAX_BODY_BYTES`], [`HEADER_READ_TIMEOUT`],
//! [`REQUEST_TIMEOUT`], [`MAX_CONNECTIONS`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use super::{Shared, webhook};

/// Largest request body accepted, in bytes (1 MiB); a larger one is answered
/// `413 Payload Too Large` before it is read in full. Forge push payloads are far smaller
/// (the daemon reads only their `ref`); a refused delivery is picked up by the next poll.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a client may take to send a request's headers, counted from when the connection
/// waits for a request: a client that sends nothing or never ends its headers, and a kept-alive
/// connection idle that long, is closed (hyper's `header_read_timeout`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take in all, body included: a client that trickles its body is
/// answered `408 Request Timeout` and the connection closed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; more wait in the listen backlog until one closes.
pub const MAX_CONNECTIONS: usize = 256;

/// Serves the endpoints (and `console`'s routes, when given) on `listener` until `stop` is
/// set: HTTP/1.1 with the caps above ([`MAX_BODY_BYTES`], [`HEADER_READ_TIMEOUT`],
/// [`REQUEST_TIMEOUT`], [`MAX_CONNECTIONS`]).
/// On `stop`, idle connections close and open requests are answered; the task ends when every
/// connection has closed.
pub(super) fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    console: Option<Router>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut app = router(shared);
    if let Some(console) = console {
        app = app.merge(console);
    }
    let app = app.layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                (StatusCode::REQUEST_TIMEOUT, "request took too long\n")
            }))
            .layer(tower::timeout::TimeoutLayer::new(REQUEST_TIMEOUT)),
    );
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = stopped(&mut stop) => break,
            };
            let stream = tokio::select! {
                a = listener.accept() => match a {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stopped(&mut stop) => break,
            };
            let service = TowerToHyperService::new(
                app.clone()
                    .map_request(|r: axum::http::Request<Incoming>| r.map(axum::body::Body::new)),
            );
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stopped(&mut stop) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        drop(listener);
        // Every connection has ended when all slots are back.
        let _ = slots.acquire_many(MAX_CONNECTIONS as u32).await;
    })
}

/// Resolves once `stop` is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .route("/api/v1/status", get(status_handler))
        .route("/api/v1/destinations", get(destinations_handler))
        .route("/api/v1/rollouts", get(super::rollout_api::handler))
        .route("/api/v1/leadership", get(leadership_handler))
        .route("/hooks/git", post(hook))
        .with_state(shared)
}

/// Ready: the config loaded, the state stores are writable and the last pass did not fail as a
/// whole (its error is a line of the body: `last pass failed: …`); an unreachable config remote
/// is a line of the body, not a failure (its last good config is served). With leader election a standby
/// is ready too (so rolling updates proceed; it can take over), and the body says its role.
async fn readyz(AxState(s): AxState<Arc<Shared>>) -> Response {
    if let Some(l) = s.leadership()
        && l.role == "standby"
    {
        return (StatusCode::OK, format!("role: standby ({})\n", l.identity)).into_response();
    }
    let loaded = s.config_loaded.load(Ordering::SeqCst);
    let stores = s.stores_ok.load(Ordering::SeqCst);
    let mut body = format!("config loaded: {loaded}\nstate stores writable: {stores}\n");
    let failed = s.pass_error.lock().expect("pass error").clone();
    if let Some(e) = &failed {
        // The whole pass failed (a full or read-only state directory): nothing reconciles.
        body.push_str(&format!("last pass failed: {e}\n"));
    }
    if let Some(outage) = s.config_outage() {
        // Still ready: the last good config is reconciled (`crate::config::unreachable`).
        body.push_str(&outage);
        body.push('\n');
    }
    if loaded && stores && failed.is_none() {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics_handler(AxState(s): AxState<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// Leader election: this replica's role, shards held and members seen
/// ([`crate::cluster::Leadership`] as JSON); 404 without `leaderElection:`.
async fn leadership_handler(AxState(s): AxState<Arc<Shared>>) -> Response {
    match s.leadership() {
        Some(l) => axum::Json(l).into_response(),
        None => (StatusCode::NOT_FOUND, "no leaderElection configured\n").into_response(),
    }
}

/// The status of the last pass; 503 until the first pass has ended (`promised status` then
/// reads the state directory). With leader election, a standby answers 503 (its rows, if
/// any, are from when it led): the leader has the status. With shards, the rows are the
/// objects of the shards this replica held at its last pass (docs/sharding.md).
async fn status_handler(AxState(s): AxState<Arc<Shared>>) -> Response {
    if let Some(l) = s.leadership()
        && l.role == "standby"
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "standby: {} does not reconcile; the leader serves the status (/api/v1/leadership)\n",
                l.identity
            ),
        )
            .into_response();
    }
    let rows = s.status_rows.read().await.clone();
    match rows {
        Some(mut rows) => {
            // Status pipelines are publishing right now (README "Pipeline API").
            for p in s
                .published_in
                .as_deref()
                .map(crate::pipeline::kubeapi::published::load)
                .unwrap_or_default()
            {
                let key = p.key.clone();
                let mut one: Vec<crate::status::StatusRow> = rows
                    .requests
                    .get(&key)
                    .map(|status| crate::status::StatusRow {
                        key: key.clone(),
                        status: (**status).clone(),
                    })
                    .into_iter()
                    .collect();
                crate::pipeline::kubeapi::published::apply(p, &mut one);
                if let Some(row) = one.pop() {
                    rows.requests.insert(key, Arc::new(row.status));
                }
            }
            // Promises first, then requests, each by key: what `promised status` prints.
            let all: Vec<(String, Arc<crate::status::ObjectStatus>)> =
                rows.promises.into_iter().chain(rows.requests).collect();
            let body = axum::body::Body::from_stream(status_chunks(all));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no reconcile pass has finished yet; the state directory has the last status\n",
        )
            .into_response(),
    }
}

/// Rows serialised per chunk of [`STATUS_CHUNK`] as the response is sent: the JSON of
/// 10,000 requests is 18 MB, which a whole body held at once (and its buffer's doublings)
/// added to the daemon's peak. The bytes are those of one JSON array, a row per line.
fn status_chunks(
    all: Vec<(String, Arc<crate::status::ObjectStatus>)>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        key: &'a str,
        status: &'a crate::status::ObjectStatus,
    }
    futures_util::stream::unfold(Some((all, 0)), |next| async move {
        let (all, start) = next?;
        let end = (start + STATUS_CHUNK).min(all.len());
        let mut buf = Vec::with_capacity(64 * 1024);
        if start == 0 {
            buf.push(b'[');
        }
        for (i, (key, status)) in all[start..end].iter().enumerate() {
            if start + i > 0 {
                buf.push(b',');
            }
            buf.push(b'\n');
            serde_json::to_writer(&mut buf, &Row { key, status }).expect("status rows serialise");
        }
        let next = if end == all.len() {
            buf.extend_from_slice(b"\n]\n");
            None
        } else {
            Some((all, end))
        };
        Some((Ok(Bytes::from(buf)), next))
    })
}

/// Rows per chunk of `GET /api/v1/status` (about 450 KB of JSON).
const STATUS_CHUNK: usize = 256;

/// Destination and state store status of the last pass, as JSON
/// `{"destinations": {<name>: …}, "stateStores": {"<Kind>/<name>": …}}`; 503 until the first
/// pass has ended, and on a standby (as `/api/v1/status`).
async fn destinations_handler(AxState(s): AxState<Arc<Shared>>) -> Response {
    last_pass_json(&s, &s.infra, "status").await
}

/// The JSON a pass left in `slot`; 503 on a standby, and until the first pass has ended
/// (saying the state directory has the last `what`).
pub(super) async fn last_pass_json(
    s: &Shared,
    slot: &tokio::sync::RwLock<Option<Arc<[u8]>>>,
    what: &str,
) -> Response {
    if let Some(l) = s.leadership()
        && l.role == "standby"
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("standby: {} does not reconcile\n", l.identity),
        )
            .into_response();
    }
    match slot.read().await.clone() {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json.to_vec()).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no reconcile pass has finished yet; the state directory has the last {what}\n"
            ),
        )
            .into_response(),
    }
}

async fn hook(AxState(s): AxState<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let secret = s.webhook_secret.read().await.clone();
    let lookup: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    match webhook::verify(secret.as_deref(), &body, |name| {
        lookup.get(name).map(String::as_str)
    }) {
        Ok(()) => {
            if let (Some(followed), Some(pushed)) = (&s.followed_ref, webhook::pushed_ref(&body))
                && !webhook::moves(followed, &pushed)
            {
                tracing::info!(pushed = %pushed, following = %followed, "webhook ignored: a push to another ref");
                return (
                    StatusCode::ACCEPTED,
                    format!("ignored: push to {pushed}, following {followed}\n"),
                )
                    .into_response();
            }
            s.trigger("webhook");
            (StatusCode::ACCEPTED, "reconcile queued\n").into_response()
        }
        Err(e) => {
            s.metrics.error("webhook_auth");
            tracing::warn!(error = %e, "webhook refused");
            (StatusCode::UNAUTHORIZED, format!("{e}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn the_status_body_is_one_json_array_whatever_the_chunking() {
        for n in [0, 1, STATUS_CHUNK, STATUS_CHUNK + 1, 2 * STATUS_CHUNK + 7] {
            let all: Vec<(String, Arc<crate::status::ObjectStatus>)> = (0..n)
                .map(|i| {
                    let id = crate::model::ObjectRef {
                        kind: "redis".into(),
                        namespace: Some("default".into()),
                        name: format!("r-{i}"),
                    };
                    let key = format!("redis/default/r-{i}");
                    (key, Arc::new(crate::status::ObjectStatus::new(id, "redis")))
                })
                .collect();
            let rows: Vec<crate::status::StatusRow> = all
                .iter()
                .map(|(key, s)| crate::status::StatusRow {
                    key: key.clone(),
                    status: (**s).clone(),
                })
                .collect();
            let chunks: Vec<Bytes> = status_chunks(all)
                .map(|c| c.expect("infallible"))
                .collect()
                .await;
            assert_eq!(chunks.len(), n.div_ceil(STATUS_CHUNK).max(1), "{n} rows");
            let body: Vec<u8> = chunks.concat();
            let text = String::from_utf8(body).unwrap();
            assert!(
                text.starts_with('[') && text.ends_with("\n]\n"),
                "{n}: {text:.40}"
            );
            assert_eq!(text.lines().count(), n + 2, "a row per line");
            let back: Vec<crate::status::StatusRow> = serde_json::from_str(&text).unwrap();
            assert_eq!(back, rows, "{n} rows");
        }
    }
}
