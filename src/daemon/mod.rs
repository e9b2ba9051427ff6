//! `promised run`: the reconcile engine as a long-running service.
//!
//! Triggers (all end in the same coalescing queue):
//! - a Git config remote is polled with a cheap ref check every `pollInterval` (30 s);
//! - `POST /hooks/git` (GitHub, GitLab, Gitea signatures verified) fetches at once, unless
//!   its JSON payload names another `ref` than the one followed (answered 202 "ignored");
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
//! systemd gets `READY=1` after the first pass and `WATCHDOG=1` only while the loop's heartbeat
//! is recent: the loop beats while it waits for a trigger, while it debounces and while it
//! drives a pass (so long pipelines do not starve it), and a loop that stops being polled stops
//! the `WATCHDOG=1` messages ([`watchdog_alive`]).

pub mod metrics;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

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
    /// `promised status --output json` of the last pass; `None` until the first pass ends.
    status_rows: RwLock<Option<StatusRows>>,
    config_loaded: AtomicBool,
    stores_ok: AtomicBool,
    webhook_secret: RwLock<Option<Vec<u8>>>,
    /// The ref a Git config source follows (`--ref`); pushes to other refs are ignored.
    followed_ref: Option<String>,
    /// When the daemon started (the heartbeat's clock: monotonic).
    born: Instant,
    /// Milliseconds after `born` of the loop's last sign of life (watchdog); [`NEVER`] before
    /// the first.
    heartbeat: AtomicU64,
}

/// `Shared::heartbeat` before the loop's first beat.
const NEVER: u64 = u64::MAX;

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
        let now = self.born.elapsed().as_millis() as u64;
        self.heartbeat.store(now, Ordering::SeqCst);
    }

    /// Time since the loop's last beat; `None` before the first.
    fn since_beat(&self) -> Option<Duration> {
        match self.heartbeat.load(Ordering::SeqCst) {
            NEVER => None,
            ms => Some(
                self.born
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }
}

/// Whether to send systemd `WATCHDOG=1` now: the loop beat within half the watchdog timeout
/// (`WatchdogSec=`). The loop beats every [`beat_period`] (a quarter of the timeout), so a
/// healthy loop always qualifies, and one that stops being polled is reported dead within
/// 1.5 × the timeout. `since_beat` is `None` before the loop's first beat.
pub fn watchdog_alive(since_beat: Option<Duration>, timeout: Duration) -> bool {
    since_beat.is_some_and(|d| d <= timeout / 2)
}

/// How often the loop beats: a quarter of the watchdog timeout (at least 100 ms), or every
/// 30 s without a watchdog.
pub fn beat_period(watchdog: Option<Duration>) -> Duration {
    watchdog.map_or(Duration::from_secs(30), |t| {
        (t / 4).max(Duration::from_millis(100))
    })
}

/// Runs the daemon until SIGTERM/SIGINT. Errors only when it cannot start (bad config, port
/// in use, unreadable state directory).
pub async fn run(opts: DaemonOptions) -> Result<(), String> {
    let settings = Settings::load(opts.daemon_config.as_deref(), opts.flags.clone())
        .map_err(|e| e.to_string())?;
    for (path, mode) in settings.loose_secret_files() {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:04o}"),
            "secret file is readable by group or others; `chmod 600` it (or use systemd LoadCredential=)"
        );
    }
    let secret = read_secret(&settings)?;
    let shared = Arc::new(Shared {
        metrics: Metrics::new(),
        pending: AtomicU64::new(0),
        wake: Notify::new(),
        status_rows: RwLock::new(None),
        config_loaded: AtomicBool::new(false),
        stores_ok: AtomicBool::new(false),
        webhook_secret: RwLock::new(secret),
        followed_ref: match &opts.source {
            Source::Git { reference, .. } => Some(reference.clone()),
            Source::Dir(_) => None,
        },
        born: Instant::now(),
        heartbeat: AtomicU64::new(NEVER),
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
                settings.network.timeouts(),
                stop_rx.clone(),
            );
            None
        }
        Source::Dir(dir) => Some(watch_dir(shared.clone(), dir, &state_root)?),
    };

    // Watchdog: WATCHDOG=1 only while the loop below beats.
    let watchdog = sd_notify::watchdog_enabled();
    if let Some(timeout) = watchdog {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(timeout / 2);
            loop {
                tick.tick().await;
                let since = shared.since_beat();
                if watchdog_alive(since, timeout) {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                } else if since.is_some() {
                    tracing::warn!(silent = ?since, "the reconcile loop is not beating; withholding WATCHDOG=1");
                }
            }
        });
    }
    let mut beat = tokio::time::interval(beat_period(watchdog));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut engine = Engine::new(settings.clone(), settings.runner())
        .map_err(|e| e.to_string())?
        .with_backoff(true);
    let cancel = engine.cancel_handle();
    let mut cache = PassCache::new(&opts.source, &settings, engine.state_dir())?;
    let mut settings = settings;
    let mut ready_sent = false;
    let mut first = true;
    let mut pass_started = SystemTime::now();
    let mut last_pass_end = tokio::time::Instant::now();
    let mut busy_after_pass = false;
    // Consecutive passes with a failed state store write or a failed pass (config source
    // unreachable): the loop retries them with the failure backoff, without waiting for a
    // trigger.
    let mut failed_passes: u32 = 0;
    let mut stop = stop_rx.clone();
    loop {
        if !first {
            let mut wait = next_wake(&engine, pass_started);
            if failed_passes > 0 {
                wait = wait.min(settings.failure_backoff(failed_passes));
            }
            let wake_at = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = shared.wake.notified() => break,
                    _ = tokio::time::sleep_until(wake_at) => { shared.trigger("timer"); break; }
                    _ = stop.wait_for(|s| *s) => break,
                    _ = beat.tick() => shared.beat(),
                }
            }
        }
        if *stop.borrow() {
            break;
        }
        // Debounce: wait for the burst to end (bounded). A trigger after a quiet period (none
        // while the last pass ran, none within `debounce` of its end) starts at once: the
        // first push of a burst runs immediately and the rest coalesce into one more pass.
        let quiet = !busy_after_pass && last_pass_end.elapsed() >= settings.debounce;
        if !first {
            if quiet {
                tracing::debug!("trigger after a quiet period: pass starts at once");
            } else {
                tracing::debug!(debounce = ?settings.debounce, "triggers follow each other: debouncing");
            }
        }
        if !first && !quiet {
            let started = tokio::time::Instant::now();
            loop {
                shared.beat();
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
                    match PassCache::new(&opts.source, &s, engine.state_dir()) {
                        Ok(c) => cache = c,
                        Err(e) => tracing::error!(error = %e, "keeping the previous file filter"),
                    }
                    settings = s;
                    tracing::info!("daemon config reloaded");
                }
                Err(e) => {
                    shared.metrics.error("config");
                    tracing::error!(error = %e, "daemon config reload failed; keeping the previous config");
                }
            }
        }
        pass_started = SystemTime::now();
        let pass = one_pass(&mut engine, &mut cache, &shared);
        tokio::pin!(pass);
        // Beat while driving the pass: pipelines may run for minutes.
        let outcome = loop {
            tokio::select! {
                r = &mut pass => break Some(r),
                _ = stop.wait_for(|s| *s) => break None,
                _ = beat.tick() => shared.beat(),
            }
        };
        let outcome = match outcome {
            Some(r) => r,
            None => {
                // Draining: no new pipeline starts; running ones get the grace period.
                cancel.store(true, Ordering::SeqCst);
                match tokio::time::timeout(settings.shutdown_grace, &mut pass).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(grace = ?settings.shutdown_grace, "the pass (pipelines or network operations) is still running after the grace period; stopping it");
                        break;
                    }
                }
            }
        };
        last_pass_end = tokio::time::Instant::now();
        busy_after_pass = shared.pending.load(Ordering::SeqCst) > 0;
        failed_passes = match &outcome {
            Ok(report) if report.stores.iter().all(|s| s.error.is_none()) => 0,
            _ => failed_passes.saturating_add(1),
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

/// What the daemon keeps between passes so a pass costs what changed, not the repo's size.
struct PassCache {
    /// Fetches the config and re-reads only changed blobs (taken while a pass loads).
    loader: Option<config::Loader>,
    /// Admission results of unchanged request documents.
    admissions: validate::Admissions,
    /// The validated config of the last pass and its commit: a pass at the same commit
    /// (a repeated webhook, a retry, a resync) reuses it without reading anything.
    last: Option<(String, Arc<validate::ValidConfig>, PathBuf)>,
    /// `/api/v1/status` rows as JSON; refreshed for the objects a pass changed.
    rows: StatusRows,
    /// Config errors already logged: an unchanged invalid object is logged once, not on every
    /// pass (it stays in `/api/v1/status` and the metrics); fixed ones are forgotten.
    logged: std::collections::HashSet<crate::diag::Diagnostic>,
}

/// Status rows as JSON, by object key, Promises apart from requests (the order of
/// `promised status`).
#[derive(Debug, Clone, Default)]
struct StatusRows {
    promises: BTreeMap<String, Arc<[u8]>>,
    requests: BTreeMap<String, Arc<[u8]>>,
}

impl PassCache {
    fn new(
        source: &Source,
        settings: &Settings,
        state_dir: &std::path::Path,
    ) -> Result<Self, String> {
        let loader = config::Loader::new(
            source.clone(),
            &settings.file_filter(),
            Some(state_dir.join("config-cache")),
            Some(state_dir.join("config-checkouts")),
        )
        .map_err(|e| e.to_string())?
        .with_network(settings.network.timeouts());
        Ok(PassCache {
            loader: Some(loader),
            admissions: validate::Admissions::default(),
            last: None,
            rows: StatusRows::default(),
            logged: Default::default(),
        })
    }
}

/// Loads the config (fetching a Git source), validates it and reconciles.
async fn one_pass(
    engine: &mut Engine,
    cache: &mut PassCache,
    shared: &Shared,
) -> Result<PassReport, String> {
    let t_load = std::time::Instant::now();
    // The loader does blocking I/O (fetch, reads): keep it off the runtime's workers.
    let mut loader = cache
        .loader
        .take()
        .expect("the loader is back after every pass");
    let last_commit = cache.last.as_ref().map(|(c, _, _)| c.clone());
    let (loader, loaded) = tokio::task::spawn_blocking(move || {
        let t_fetch = std::time::Instant::now();
        let res = (|| {
            let commit = loader.fetch()?;
            tracing::debug!(fetch_s = t_fetch.elapsed().as_secs_f64(), "config fetched");
            if commit.is_some() && commit == last_commit {
                return Ok(None);
            }
            loader.load().map(|l| Some((commit, l)))
        })();
        (loader, res)
    })
    .await
    .map_err(|e| format!("config loader: {e}"))?;
    cache.loader = Some(loader);
    let loaded = match loaded {
        Ok(x) => x,
        Err(e) => {
            shared.metrics.error("config");
            return Err(e.to_string());
        }
    };
    shared.config_loaded.store(true, Ordering::SeqCst);
    let load_s = t_load.elapsed().as_secs_f64();
    let t_validate = std::time::Instant::now();
    let (cfg, config_root) = match loaded {
        None => {
            let (_, cfg, root) = cache.last.as_ref().expect("same commit as the last pass");
            (cfg.clone(), root.clone())
        }
        Some((commit, mut loaded)) => {
            // A file that does not load keeps its objects' last good versions (never prunes).
            engine.restore_unloadable(&mut loaded.objects);
            let mut cfg = validate::validate_with_options(
                loaded.objects,
                &mut cache.admissions,
                &engine.settings().validate_options(),
            );
            // Needs the daemon config; a SIGHUP resets `cache.last`, so this runs again.
            crate::pipeline::env::check_pipeline_env(&mut cfg, &engine.settings().env_sources());
            let cfg = Arc::new(cfg);
            let errors: std::collections::HashSet<&crate::diag::Diagnostic> =
                cfg.diagnostics.iter().filter(|d| d.is_error()).collect();
            cache.logged.retain(|d| errors.contains(d));
            for d in cfg.diagnostics.iter().filter(|d| d.is_error()) {
                if !cache.logged.insert(d.clone()) {
                    continue; // logged on an earlier pass, unchanged
                }
                let object = d.object.as_ref();
                tracing::warn!(
                    file = %d.file,
                    document = d.document,
                    kind = object.map(|o| o.kind.as_str()),
                    namespace = object.and_then(|o| o.namespace.as_deref()),
                    object_name = object.map(|o| o.name.as_str()),
                    field = d.field.as_deref(),
                    error = %d.message,
                    "invalid config object"
                );
            }
            if cfg.has_errors() {
                shared.metrics.error("invalid_object");
            }
            cache.last = commit.map(|c| (c, cfg.clone(), loaded.root.clone()));
            (cfg, loaded.root)
        }
    };
    let validate_s = t_validate.elapsed().as_secs_f64();
    let report = engine
        .reconcile(&cfg, &config_root)
        .await
        .map_err(|e| e.to_string())?;
    shared.stores_ok.store(
        report.stores.iter().all(|s| s.error.is_none()),
        Ordering::SeqCst,
    );
    let t_status = std::time::Instant::now();
    refresh_rows(&mut cache.rows, engine.state(), &report.dirty);
    *shared.status_rows.write().await = Some(cache.rows.clone());
    tracing::debug!(
        load_s,
        validate_s,
        reconcile_s = report.duration.as_secs_f64(),
        status_s = t_status.elapsed().as_secs_f64(),
        "pass phases"
    );
    Ok(report)
}

/// Re-serialises the status rows of the objects `dirty` names (every row when the cache is
/// empty or `dirty.all`) and drops rows of objects that are gone.
fn refresh_rows(rows: &mut StatusRows, state: &crate::state::State, dirty: &crate::state::Dirty) {
    let row = |key: &str, r: &crate::state::ObjectRecord| -> Arc<[u8]> {
        let row = crate::cli_reconcile::StatusRow {
            key: key.to_string(),
            status: r.status.clone(),
        };
        serde_json::to_vec(&row)
            .expect("status rows serialise")
            .into()
    };
    let fresh = rows.promises.is_empty() && rows.requests.is_empty();
    for (keys, map, out) in [
        (&dirty.promises, &state.promises, &mut rows.promises),
        (&dirty.requests, &state.requests, &mut rows.requests),
    ] {
        if fresh || dirty.all {
            *out = map.iter().map(|(k, r)| (k.clone(), row(k, r))).collect();
            continue;
        }
        for k in keys {
            match map.get(k) {
                Some(r) => {
                    out.insert(k.clone(), row(k, r));
                }
                None => {
                    out.remove(k);
                }
            }
        }
    }
}

fn log_pass(r: &PassReport) {
    for w in &r.warnings {
        let (promise, namespace, object_name) = warning_object(w);
        tracing::warn!(promise, namespace, object_name, warning = %w, "reconcile pass");
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

/// The object a pass warning is about, as log fields (promise, namespace, object name):
/// engine warnings about one object start with its state key, `promise/<name>: ` or
/// `<promise>/<namespace>/<name>: `.
fn warning_object(w: &str) -> (Option<&str>, Option<&str>, Option<&str>) {
    let Some((key, _)) = w.split_once(": ") else {
        return (None, None, None);
    };
    let parts: Vec<&str> = key.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.contains(char::is_whitespace))
    {
        return (None, None, None);
    }
    match parts[..] {
        ["promise", name] => (Some(name), None, Some(name)),
        [promise, namespace, name] => (Some(promise), Some(namespace), Some(name)),
        _ => (None, None, None),
    }
}

/// Sleep until the next retry (`retryAfter` or failure backoff) due since the last pass
/// started, or at most a minute (cheap no-op passes keep drift repair and resync going even
/// without triggers).
fn next_wake(engine: &Engine, pass_started: SystemTime) -> Duration {
    // Retry times are kept to the second: weigh those of the pass's own second too.
    let since = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            pass_started
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        );
    let retry =
        crate::reconcile::next_retry(engine.state(), since).unwrap_or(Duration::from_secs(60));
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
    network: statestores::NetworkTimeouts,
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
            match tokio::task::spawn_blocking(move || {
                config::source::peek_ref(&u, &r, &c, &network)
            })
            .await
            {
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

/// Watches a config directory (recursively, debounced). Changes under the state directory
/// (which may sit inside it: `--config .` with the default `.promised`) and under `.git/` do
/// not trigger a pass ([`config_change`]).
fn watch_dir(
    shared: Arc<Shared>,
    dir: &Path,
    state_dir: &Path,
) -> Result<
    notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    String,
> {
    // Event paths start with the watched path: compare canonical forms.
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("watching {}: {e}", dir.display()))?;
    let state_dir = std::fs::create_dir_all(state_dir)
        .and_then(|()| state_dir.canonicalize())
        .map_err(|e| format!("state directory {}: {e}", state_dir.display()))?;
    let watched = dir.clone();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        Duration::from_millis(200),
        None,
        move |res: notify_debouncer_full::DebounceEventResult| {
            if let Ok(events) = res {
                let relevant = events.iter().any(|e| {
                    !matches!(e.kind, notify::EventKind::Access(_))
                        && e.paths
                            .iter()
                            .any(|p| config_change(p, &watched, &state_dir))
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

/// Whether a changed `path` in the watched config directory `dir` can change the config: it
/// is not under the state directory (every pass writes there) nor under a `.git` directory.
fn config_change(path: &Path, dir: &Path, state_dir: &Path) -> bool {
    !path.starts_with(state_dir)
        && !path
            .strip_prefix(dir)
            .unwrap_or(path)
            .components()
            .any(|c| c.as_os_str() == ".git")
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

/// The status of the last pass; 503 until the first pass has ended (`promised status` then
/// reads the state directory).
async fn status_handler(AxState(s): AxState<Arc<Shared>>) -> Response {
    let rows = s.status_rows.read().await.clone();
    match rows {
        Some(rows) => {
            // Promises first, then requests, each by key: what `promised status` prints.
            let all = rows.promises.values().chain(rows.requests.values());
            let mut json = Vec::with_capacity(all.clone().map(|r| r.len() + 2).sum::<usize>() + 4);
            json.push(b'[');
            for (i, row) in all.enumerate() {
                if i > 0 {
                    json.push(b',');
                }
                json.push(b'\n');
                json.extend_from_slice(row);
            }
            json.extend_from_slice(b"\n]\n");
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no reconcile pass has finished yet; the state directory has the last status\n",
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

    #[test]
    fn pass_warnings_name_their_object() {
        assert_eq!(
            warning_object("redis/default/a: delete pipeline p not run: why"),
            (Some("redis"), Some("default"), Some("a"))
        );
        assert_eq!(
            warning_object("promise/redis: Promise redis is unknown"),
            (Some("redis"), None, Some("redis"))
        );
        let none = (None, None, None);
        assert_eq!(
            warning_object("state file /var/lib/promised/state.json is corrupt: x"),
            none
        );
        assert_eq!(warning_object("no key here"), none);
        assert_eq!(warning_object("a/b/c/d: four parts"), none);
    }

    #[test]
    fn watchdog_needs_a_recent_heartbeat() {
        let timeout = Duration::from_secs(120);
        // Before the loop's first beat: nothing to vouch for.
        assert!(!watchdog_alive(None, timeout));
        assert!(watchdog_alive(Some(Duration::ZERO), timeout));
        // A healthy loop beats every quarter of the timeout.
        assert!(watchdog_alive(Some(beat_period(Some(timeout))), timeout));
        assert!(watchdog_alive(Some(Duration::from_secs(60)), timeout));
        // A loop silent for more than half the timeout is not vouched for.
        assert!(!watchdog_alive(Some(Duration::from_secs(61)), timeout));
        assert!(!watchdog_alive(Some(Duration::from_secs(3600)), timeout));
    }

    #[test]
    fn state_dir_and_git_changes_are_not_config_changes() {
        let (dir, state) = (Path::new("/srv/cfg"), Path::new("/srv/cfg/.promised"));
        assert!(config_change(
            Path::new("/srv/cfg/requests/a.yaml"),
            dir,
            state
        ));
        assert!(!config_change(
            Path::new("/srv/cfg/.promised/state.json"),
            dir,
            state
        ));
        assert!(!config_change(Path::new("/srv/cfg/.git/index"), dir, state));
        assert!(!config_change(
            Path::new("/srv/cfg/sub/.git/HEAD"),
            dir,
            state
        ));
        // Only `.git` inside the watched directory counts.
        let dir = Path::new("/home/u/.git/cfg");
        assert!(config_change(
            Path::new("/home/u/.git/cfg/a.yaml"),
            dir,
            state
        ));
    }

    /// A failed request whose backoff ends at `retry_at`.
    fn failed(name: &str, retry_at: SystemTime) -> (String, crate::state::ObjectRecord) {
        let id = crate::model::ObjectRef {
            kind: "redis".into(),
            namespace: Some("default".into()),
            name: name.into(),
        };
        let record = crate::state::ObjectRecord {
            input_hash: String::new(),
            completed: false,
            object: serde_json::Value::Null.into(),
            promise: None,
            promise_dir: None,
            outputs: Vec::new(),
            placements: Vec::new(),
            spec_hash: String::new(),
            failures: 1,
            retry_at: Some(humantime::format_rfc3339_seconds(retry_at).to_string()),
            deleting: false,
            steady: String::new(),
            status: crate::status::ObjectStatus::new(id, "redis"),
        };
        (format!("redis/default/{name}"), record)
    }

    #[test]
    fn failure_backoff_wakes_the_loop() {
        use crate::reconcile::next_retry;
        let now = SystemTime::now();
        let mut state = crate::state::State::default();
        // Due before the last pass started, and still not run (say its Promise is
        // unavailable): not a reason to wake.
        state
            .requests
            .extend([failed("stale", now - Duration::from_secs(10))]);
        assert_eq!(next_retry(&state, now - Duration::from_secs(5)), None);
        // Due since the last pass started: wake at once.
        assert_eq!(
            next_retry(&state, now - Duration::from_secs(20)),
            Some(Duration::ZERO)
        );
        state
            .requests
            .extend([failed("soon", now + Duration::from_secs(30))]);
        let wait = next_retry(&state, now - Duration::from_secs(5)).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }

    #[test]
    fn beat_period_follows_the_watchdog() {
        assert_eq!(
            beat_period(Some(Duration::from_secs(120))),
            Duration::from_secs(30)
        );
        assert_eq!(
            beat_period(Some(Duration::from_millis(200))),
            Duration::from_millis(100)
        );
        assert_eq!(beat_period(None), Duration::from_secs(30));
    }
}
