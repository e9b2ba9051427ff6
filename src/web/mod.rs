//! The read-only web console (README "Web console"): server-rendered pages over the state
//! directory, served by `promised run` on its HTTP port and by `promised status --serve`.
//!
//! | page | path | JSON twin |
//! |---|---|---|
//! | overview | `/ui/` | `/api/v1/console/overview` |
//! | Promise | `/ui/promises/{name}` | `/api/v1/console/promises/{name}` |
//! | request | `/ui/requests/{promise}/{namespace}/{name}` | `/api/v1/console/requests/{promise}/{namespace}/{name}` |
//! | audit | `/ui/audit` | `/api/v1/console/audit` |
//!
//! Each page is built as a serialisable view (its JSON twin) and rendered with `maud`
//! ([`layout`]); the stylesheet and the one small script are compiled into the binary.
//! Live updates: the script polls `/api/v1/console/version` (a fingerprint of the state
//! directory's files) every two seconds and, when it changes, fetches the page again and
//! swaps its `<main>` without a reload.
//!
//! Files: [`settings`] (`web:`), [`records`] (last pass, log tails), [`data`] (the cached
//! snapshot of the state directory), one file per page ([`overview`], [`promise`],
//! [`request`], [`audit`]), [`layout`] (page shell and helpers).
//!
//! Access: only `GET`; with `web.tokenFile` every path here needs the bearer token; the
//! console is off on a non-loopback address without one ([`WebSettings::serves`]). Nothing
//! secret is kept in the state directory (state store errors and log tails are redacted), so
//! nothing secret can be shown.

pub mod audit;
pub mod data;
pub mod layout;
pub mod overview;
pub mod promise;
pub mod records;
pub mod request;
pub mod settings;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as AxPath, Query, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;

pub use settings::WebSettings;

/// The console's state: where it reads from, its settings and the cached snapshot.
pub struct Console {
    /// The state directory it shows.
    pub state_dir: PathBuf,
    /// `web:` settings.
    pub settings: WebSettings,
    token: Option<String>,
    cache: data::Cache,
    /// When a page or its JSON last read the snapshot.
    viewed: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long after the last page view the daemon keeps re-reading the snapshot after each pass
/// ([`Console::after_pass`]); after that it lets the snapshot go.
pub const KEEP_WARM: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl Console {
    /// A console over `state_dir`. Errors: the token file cannot be read.
    pub fn new(state_dir: PathBuf, settings: WebSettings) -> Result<Self, String> {
        let token = settings.token()?;
        Ok(Console {
            state_dir,
            settings,
            token,
            cache: data::Cache::default(),
            viewed: std::sync::Mutex::new(None),
        })
    }

    /// The snapshot of the state directory, reloaded when its files changed. Errors: the
    /// state directory cannot be read.
    pub fn snapshot(&self) -> Result<Arc<data::Snapshot>, String> {
        *self.viewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        self.cache.get(&self.state_dir)
    }

    /// What the daemon does after each pass (blocking: call it off the async runtime). While
    /// someone viewed the console within [`KEEP_WARM`], the snapshot is re-read now, so the
    /// next page does not wait for it; otherwise the cached snapshot is dropped, so a
    /// console nobody looks at holds no copy of the state (at 10,000 requests about 28 MB:
    /// docs/benchmarks.md, "Memory (issue 25)"). The next page view then reads it.
    pub fn after_pass(&self) {
        let viewed = *self.viewed.lock().unwrap_or_else(|e| e.into_inner());
        if viewed.is_some_and(|t| t.elapsed() < KEEP_WARM) {
            let _ = self.cache.get(&self.state_dir);
        } else {
            self.cache.clear();
        }
    }

    /// Whether a snapshot is held now (tests).
    pub fn holds_snapshot(&self) -> bool {
        self.cache.holds()
    }
}

/// The console's routes (pages, their JSON twins, stylesheet and script), each behind the
/// token check.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview_page))
        .route("/ui/promises/{name}", get(promise_page))
        .route(
            "/ui/requests/{promise}/{namespace}/{name}",
            get(request_page),
        )
        .route("/ui/audit", get(audit_page))
        .route("/ui/static/console.css", get(css))
        .route("/ui/static/console.js", get(js))
        .route("/api/v1/console/version", get(version_json))
        .route("/api/v1/console/overview", get(overview_json))
        .route("/api/v1/console/promises/{name}", get(promise_json))
        .route(
            "/api/v1/console/requests/{promise}/{namespace}/{name}",
            get(request_json),
        )
        .route("/api/v1/console/audit", get(audit_json))
        .layer(axum::middleware::from_fn_with_state(console.clone(), auth))
        .with_state(console)
}

/// Answers `401` without the configured bearer token (header or `promised-token` cookie).
async fn auth(
    AxState(c): AxState<Arc<Console>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &c.token
        && !presented(&headers)
            .is_some_and(|t| subtle::ConstantTimeEq::ct_eq(t.as_bytes(), token.as_bytes()).into())
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "the web console needs its bearer token (web.tokenFile)\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// The token a client sent: `Authorization: Bearer <t>` or the `promised-token` cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "promised-token")
        .map(|(_, v)| v.to_string())
}

/// Builds a view from the snapshot off the runtime's workers; `404` when `build` finds
/// nothing, `503` when the state directory cannot be read.
async fn view<T: Send + 'static>(
    c: Arc<Console>,
    build: impl FnOnce(&Console, &data::Snapshot) -> Option<T> + Send + 'static,
) -> Result<T, Response> {
    let res = tokio::task::spawn_blocking(move || {
        let snap = c.snapshot()?;
        Ok::<_, String>(build(&c, &snap))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match res {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err((StatusCode::NOT_FOUND, "not found\n").into_response()),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()),
    }
}

fn json<T: Serialize>(v: &T) -> Response {
    axum::Json(v).into_response()
}

fn html(m: maud::Markup) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(m.into_string())).into_response()
}

async fn overview_page(
    AxState(c): AxState<Arc<Console>>,
    Query(q): Query<overview::Filter>,
) -> Response {
    match view(c, move |c, s| Some(overview::build(c, s, &q))).await {
        Ok(v) => html(overview::render(&v)),
        Err(r) => r,
    }
}

async fn overview_json(
    AxState(c): AxState<Arc<Console>>,
    Query(q): Query<overview::Filter>,
) -> Response {
    match view(c, move |c, s| Some(overview::build(c, s, &q))).await {
        Ok(v) => json(&v),
        Err(r) => r,
    }
}

async fn promise_page(
    AxState(c): AxState<Arc<Console>>,
    AxPath(name): AxPath<String>,
    Query(q): Query<overview::Filter>,
) -> Response {
    match view(c, move |c, s| promise::build(c, s, &name, &q)).await {
        Ok(v) => html(promise::render(&v)),
        Err(r) => r,
    }
}

async fn promise_json(
    AxState(c): AxState<Arc<Console>>,
    AxPath(name): AxPath<String>,
    Query(q): Query<overview::Filter>,
) -> Response {
    match view(c, move |c, s| promise::build(c, s, &name, &q)).await {
        Ok(v) => json(&v),
        Err(r) => r,
    }
}

async fn request_page(
    AxState(c): AxState<Arc<Console>>,
    AxPath((p, ns, n)): AxPath<(String, String, String)>,
) -> Response {
    let key = crate::model::request_key(&p, &ns, &n);
    match view(c, move |c, s| request::build(c, s, &key)).await {
        Ok(v) => html(request::render(&v)),
        Err(r) => r,
    }
}

async fn request_json(
    AxState(c): AxState<Arc<Console>>,
    AxPath((p, ns, n)): AxPath<(String, String, String)>,
) -> Response {
    let key = crate::model::request_key(&p, &ns, &n);
    match view(c, move |c, s| request::build(c, s, &key)).await {
        Ok(v) => json(&v),
        Err(r) => r,
    }
}

async fn audit_page(AxState(c): AxState<Arc<Console>>, Query(q): Query<audit::Filter>) -> Response {
    match view(c, move |c, s| Some(audit::build(c, s, &q))).await {
        Ok(v) => html(audit::render(&v)),
        Err(r) => r,
    }
}

async fn audit_json(AxState(c): AxState<Arc<Console>>, Query(q): Query<audit::Filter>) -> Response {
    match view(c, move |c, s| Some(audit::build(c, s, &q))).await {
        Ok(v) => json(&v),
        Err(r) => r,
    }
}

/// `{"version": "<fingerprint>"}`: changes whenever a pass changed the state directory.
async fn version_json(AxState(c): AxState<Arc<Console>>) -> Response {
    let dir = c.state_dir.clone();
    let v = tokio::task::spawn_blocking(move || data::fingerprint(&dir))
        .await
        .unwrap_or_default();
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "version": v })),
    )
        .into_response()
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        layout::CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        layout::JS,
    )
        .into_response()
}

/// `promised status --serve ADDR`: serves the console over `state_dir` on `listen` until
/// SIGINT/SIGTERM. Errors: the address cannot be bound, the token file cannot be read.
pub async fn serve_state_dir(
    listen: &str,
    state_dir: PathBuf,
    settings: WebSettings,
) -> Result<(), String> {
    if !settings.serves(listen) {
        return Err(format!(
            "the web console is off on the non-loopback address {listen}: set web.tokenFile (or web.enabled: true)"
        ));
    }
    let console = Arc::new(Console::new(state_dir, settings)?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listening on {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen.to_string());
    tracing::info!(listen = %addr, "web console up");
    eprintln!("web console: http://{addr}/ui/");
    axum::serve(listener, router(console))
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        })
        .await
        .map_err(|e| e.to_string())
}
