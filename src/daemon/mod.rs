//! `promised run`: the reconcile engine as a long-running service.
//!
//! Triggers (all end in the same coalescing queue):
//! - a Git config remote is polled with a cheap ref check every `pollInterval` (30 s);
//! - `POST /hooks/git` (GitHub, GitLab, Gitea signatures verified) fetches at once;
//! - a local config directory is watched (debounced `notify`);
//! - retries (`retryAfter`, failure backoff) and periodic resync wake the loop by themselves.
//!
//! Work queue guarantees: passes never overlap, so no request runs twice at once, and a change
//! that arrives while a pipeline runs never kills it: the pass finishes, then the next pass
//! runs with the newest config. Triggers are debounced (`debounce`, at most `maxDebounce`), so
//! a burst of commits becomes one pass; each pass writes one commit per state store (a wave).
//!
//! Lifecycle: SIGTERM/SIGINT drain (no new pipeline starts; running ones finish within
//! `shutdownGrace`; the wave is committed or not at all), SIGHUP reloads the daemon config,
//! systemd gets `READY=1` after the first pass and `WATCHDOG=1` while the loop is alive.

pub mod metrics;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, RwLock, watch};

use crate::config::{self, Source};
use crate::reconcile::{Engine, PassReport};
use crate::settings::Settings;
use crate::validate;
use metrics::Metrics;

/// What `promised run` needs to start.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The config repo.
    pub source: Source,
    /// The daemon config file, re-read on SIGHUP.
    pub daemon_config: Option<PathBuf>,
    /// Flag values layered over file and environment (also re-applied on SIGHUP).
    pub flags: serde_json::Map<String, serde_json::Value>,
}

/// State shared between the loop, the HTTP server and the triggers.
pub struct Shared {
    /// Metrics registry.
    pub metrics: Metrics,
    /// Pending triggers (the queue depth).
    pending: AtomicU64,
    wake: Notify,
    /// `promised status --output json` of the last pass.
    status_json: RwLock<Vec<u8>>,
    config_loaded: AtomicBool,
    stores_ok: AtomicBool,
    webhook_secret: RwLock<Option<Vec<u8>>>,
    /// Unix seconds of the loop's last sign of life (watchdog).
    heartbeat: AtomicU64,
}

impl Shared {
    fn trigger(&self, why: &str) {
        tracing::debug!(trigger = why, "reconcile requested");
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.metrics
            .queue_depth
            .set(self.pending.load(Ordering::SeqCst) as i64);
        self.wake.notify_one();
    }

    fn beat(&self) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.heartbeat.store(now, Ordering::SeqCst);
    }
}

/// Runs the daemon until SIGTERM/SIGINT. Errors only when it cannot start (bad config, port
/// in use, unreadable state directory).
pub async fn run(opts: DaemonOptions) -> Result<(), String> {
    let settings = Settings::load(opts.daemon_config.as_deref(), opts.flags.clone())
        .map_err(|e| e.to_string())?;
    let secret = read_secret(&settings)?;
    let shared = Arc::new(Shared {
        metrics: Metrics::new(),
        pending: AtomicU64::new(0),
        wake: Notify::new(),
        status_json: RwLock::new(b"[]".to_vec()),
        config_loaded: AtomicBool::new(false),
        stores_ok: AtomicBool::new(false),
        webhook_secret: RwLock::new(secret),
        heartbeat: AtomicU64::new(0),
    });
    if shared.webhook_secret.read().await.is_none() {
        tracing::warn!("no webhookSecretFile configured: POST /hooks/git accepts unsigned calls");
    }
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", settings.listen))?;
    tracing::info!(listen = %settings.listen, "HTTP endpoints up");
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = router(shared.clone());
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await;
    });

    // Signals.
    let reload = Arc::new(AtomicBool::new(false));
    {
        let stop_tx = stop_tx.clone();
        let shared = shared.clone();
        let reload = reload.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: draining"); let _ = stop_tx.send(true); shared.wake.notify_one(); }
                    _ = int.recv() => { tracing::info!("SIGINT: draining"); let _ = stop_tx.send(true); shared.wake.notify_one(); }
                    _ = hup.recv() => { tracing::info!("SIGHUP: reloading the daemon config"); reload.store(true, Ordering::SeqCst); shared.trigger("sighup"); }
                }
            }
        });
    }

    // Triggers from the config source.
    let state_root = std::path::absolute(&settings.state_dir).map_err(|e| e.to_string())?;
    let cache = state_root.join("config-cache");
    let _watcher = match &opts.source {
        Source::Git { url, reference } => {
            spawn_poller(
                shared.clone(),
                url.clone(),
                reference.clone(),
                cache.clone(),
                settings.poll_interval,
                stop_rx.clone(),
            );
            None
        }
        Source::Dir(dir) => Some(watch_dir(shared.clone(), dir.clone())?),
    };

    // Watchdog.
    if let Some(every) = sd_notify::watchdog_enabled() {
        let shared = shared.clone();
        tokio::spawn(async move {
            let half = every / 2;
            let mut beat = tokio::time::interval(half);
            loop {
                beat.tick().await;
                shared.beat();
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }

    let mut engine = Engine::new(settings.clone(), settings.runner())
        .map_err(|e| e.to_string())?
        .with_backoff(true);
    let cancel = engine.cancel_handle();
    let mut settings = settings;
    let mut ready_sent = false;
    let mut first = true;
    let mut stop = stop_rx.clone();
    loop {
        if !first {
            let wake_in = next_wake(&engine);
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(wake_in) => { shared.trigger("timer"); }
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        if *stop.borrow() {
            break;
        }
        // Debounce: wait for the burst to end (bounded).
        if !first {
            let started = tokio::time::Instant::now();
            loop {
                let remaining = settings.max_debounce.saturating_sub(started.elapsed());
                if remaining.is_zero() {
                    break;
                }
                tokio::select! {
                    _ = shared.wake.notified() => continue,
                    _ = tokio::time::sleep(settings.debounce.min(remaining)) => break,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            if *stop.borrow() {
                break;
            }
        }
        first = false;
        shared.pending.store(0, Ordering::SeqCst);
        shared.metrics.queue_depth.set(0);
        shared.beat();
        if reload.swap(false, Ordering::SeqCst) {
            match Settings::load(opts.daemon_config.as_deref(), opts.flags.clone()) {
                Ok(s) => {
                    match read_secret(&s) {
                        Ok(sec) => *shared.webhook_secret.write().await = sec,
                        Err(e) => {
                            tracing::error!(error = %e, "keeping the previous webhook secret")
                        }
                    }
                    engine.set_settings(s.clone());
                    settings = s;
                    tracing::info!("daemon config reloaded");
                }
                Err(e) => {
                    shared.metrics.error("config");
                    tracing::error!(error = %e, "daemon config reload failed; keeping the previous config");
                }
            }
        }
        let pass = one_pass(&mut engine, &opts.source, &settings, &shared);
        tokio::pin!(pass);
        let outcome = tokio::select! {
            r = &mut pass => Some(r),
            _ = stop.wait_for(|s| *s) => None,
        };
        let outcome = match outcome {
            Some(r) => r,
            None => {
                // Draining: no new pipeline starts; running ones get the grace period.
                cancel.store(true, Ordering::SeqCst);
                match tokio::time::timeout(settings.shutdown_grace, &mut pass).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(grace = ?settings.shutdown_grace, "pipelines still running after the grace period; stopping them");
                        break;
                    }
                }
            }
        };
        match outcome {
            Ok(report) => {
                shared.metrics.observe(&report);
                log_pass(&report);
                if !ready_sent {
                    let _ = sd_notify::notify(&[
                        sd_notify::NotifyState::Ready,
                        sd_notify::NotifyState::Status("first reconcile pass done"),
                    ]);
                    ready_sent = true;
                }
            }
            Err(e) => {
                shared.metrics.error("pass");
                tracing::error!(error = %e, "reconcile pass failed");
            }
        }
        if *stop.borrow() {
            break;
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let _ = http.await;
    tracing::info!("stopped");
    Ok(())
}

/// Loads the config (fetching a Git source), validates it and reconciles.
async fn one_pass(
    engine: &mut Engine,
    source: &Source,
    settings: &Settings,
    shared: &Shared,
) -> Result<PassReport, String> {
    let filter = settings.file_filter();
    let root = engine.state_dir().to_path_buf();
    let src = source.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        config::load_with_root(
            &src,
            &filter,
            Some(&root.join("config-cache")),
            &root.join("config-checkouts"),
        )
    })
    .await
    .map_err(|e| format!("config loader: {e}"))?;
    let (objects, config_root) = match loaded {
        Ok(x) => x,
        Err(e) => {
            shared.metrics.error("config");
            return Err(e.to_string());
        }
    };
    shared.config_loaded.store(true, Ordering::SeqCst);
    let cfg = validate::validate(objects);
    for d in cfg.diagnostics.iter().filter(|d| d.is_error()) {
        tracing::warn!(diagnostic = %d, "invalid config object");
    }
    if cfg.has_errors() {
        shared.metrics.error("invalid_object");
    }
    let report = engine
        .reconcile(&cfg, &config_root)
        .await
        .map_err(|e| e.to_string())?;
    shared.stores_ok.store(
        report.stores.iter().all(|s| s.error.is_none()),
        Ordering::SeqCst,
    );
    let mut buf = Vec::new();
    crate::cli_reconcile::write_status(engine.state(), crate::cli::StatusFormat::Json, &mut buf)
        .map_err(|e| e.to_string())?;
    *shared.status_json.write().await = buf;
    Ok(report)
}

fn log_pass(r: &PassReport) {
    for w in &r.warnings {
        tracing::warn!(warning = %w, "reconcile pass");
    }
    for s in &r.stores {
        match (&s.commit, &s.error) {
            (_, Some(e)) => {
                tracing::error!(store = %s.store, error = %e, "state store write failed")
            }
            (Some(c), None) => {
                tracing::info!(store = %s.store, commit = %c, written = s.written, deleted = s.deleted, drift = s.drift.len(), "committed")
            }
            (None, None) => {}
        }
    }
    tracing::info!(
        pipelines = r.pipelines_run,
        seconds = r.duration.as_secs_f64(),
        "reconcile pass done"
    );
}

/// Sleep until the next retry, or at most a minute (cheap no-op passes keep drift repair and
/// resync going even without triggers).
fn next_wake(engine: &Engine) -> Duration {
    let retry = crate::reconcile::next_retry(engine.state()).unwrap_or(Duration::from_secs(60));
    retry.clamp(Duration::from_millis(200), Duration::from_secs(60))
}

/// The webhook secret: `webhookSecretFile`, else the systemd credential `webhook-secret`
/// (`$CREDENTIALS_DIRECTORY/webhook-secret`) when present.
fn read_secret(settings: &Settings) -> Result<Option<Vec<u8>>, String> {
    let from_credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join("webhook-secret"))
        .filter(|p| p.is_file());
    match settings
        .webhook_secret_file
        .clone()
        .or(from_credentials)
        .as_ref()
    {
        None => Ok(None),
        Some(p) => std::fs::read(p)
            .map(|b| Some(String::from_utf8_lossy(&b).trim_end().as_bytes().to_vec()))
            .map_err(|e| format!("webhookSecretFile {}: {e}", p.display())),
    }
}

fn spawn_poller(
    shared: Arc<Shared>,
    url: String,
    reference: String,
    cache: PathBuf,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut last: Option<String> = None;
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let (u, r, c) = (url.clone(), reference.clone(), cache.clone());
            match tokio::task::spawn_blocking(move || config::source::peek_ref(&u, &r, &c)).await {
                Ok(Ok(id)) => {
                    if last.as_ref().is_some_and(|l| *l != id) {
                        shared.trigger("poll");
                    }
                    last = Some(id);
                }
                Ok(Err(e)) => {
                    shared.metrics.error("poll");
                    tracing::warn!(error = %e, "polling the config repository failed");
                }
                Err(e) => tracing::warn!(error = %e, "poller task failed"),
            }
        }
    });
}

/// Watches a config directory (recursively, debounced; `.git/` ignored).
fn watch_dir(
    shared: Arc<Shared>,
    dir: PathBuf,
) -> Result<
    notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    String,
> {
    let mut debouncer = notify_debouncer_full::new_debouncer(
        Duration::from_millis(200),
        None,
        move |res: notify_debouncer_full::DebounceEventResult| {
            if let Ok(events) = res {
                let relevant = events.iter().any(|e| {
                    !matches!(e.kind, notify::EventKind::Access(_))
                        && e.paths
                            .iter()
                            .any(|p| !p.components().any(|c| c.as_os_str() == ".git"))
                });
                if relevant {
                    shared.trigger("watch");
                }
            }
        },
    )
    .map_err(|e| format!("watching {}: {e}", dir.display()))?;
    debouncer
        .watch(&dir, notify::RecursiveMode::Recursive)
        .map_err(|e| format!("watching {}: {e}", dir.display()))?;
    Ok(debouncer)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .route("/api/v1/status", get(status_handler))
        .route("/hooks/git", post(hook))
        .with_state(shared)
}

async fn readyz(AxState(s): AxState<Arc<Shared>>) -> Response {
    let loaded = s.config_loaded.load(Ordering::SeqCst);
    let stores = s.stores_ok.load(Ordering::SeqCst);
    let body = format!("config loaded: {loaded}\nstate stores writable: {stores}\n");
    if loaded && stores {
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

async fn status_handler(AxState(s): AxState<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.status_json.read().await.clone(),
    )
        .into_response()
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
