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
//!
//! Files: this one has the loop (queue, debounce, drain); `triggers.rs` the config source's
//! triggers (Git poll, directory watch); `http.rs` the HTTP endpoints (health, readiness,
//! metrics, status, webhook); `lifecycle.rs` signals, SIGHUP reload and the systemd watchdog;
//! `pass.rs` one pass (load, validate, reconcile) and the status rows it refreshes;
//! `metrics.rs` and `webhook.rs` the metrics registry and webhook signatures.

mod engines;
pub mod http;
mod lifecycle;
pub mod metrics;
mod pass;
mod rollout_api;
mod triggers;
pub mod webhook;

#[cfg(test)]
mod fake_lease_api;
#[cfg(test)]
mod gate_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod shard_tests;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, RwLock, watch};

use crate::config::Source;
use crate::settings::Settings;
use metrics::Metrics;
use pass::{PassCache, StatusRows};

pub use lifecycle::{beat_period, watchdog_alive};

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
    /// `GET /api/v1/destinations` of the last pass (JSON of [`crate::infra::InfraStatus`]);
    /// `None` until the first pass ends.
    infra: RwLock<Option<Arc<[u8]>>>,
    /// `GET /api/v1/rollouts` of the last pass (JSON of [`crate::rollout::Rollouts`]).
    rollouts: RwLock<Option<Arc<[u8]>>>,
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
    /// Leader election (`leaderElection:`): this replica's role; `None` without it.
    leadership: Option<watch::Receiver<crate::cluster::Leadership>>,
    /// The state directory, whose status published by running pipelines `/api/v1/status`
    /// lays over its rows (README "Pipeline API"); `None`: none.
    published_in: Option<std::path::PathBuf>,
    /// Whether the Git config remote answers, and the config commit in force
    /// ([`crate::config::unreachable`]).
    config_source: std::sync::Mutex<ConfigSourceState>,
    /// Why the last pass failed as a whole (the state directory cannot be written, the config
    /// cannot be loaded); `None` after a pass that ran. `/readyz` says it.
    pass_error: std::sync::Mutex<Option<String>>,
}

/// [`Shared::config_source`].
#[derive(Debug, Default)]
struct ConfigSourceState {
    /// The current outage, if any.
    outage: Option<crate::config::unreachable::Unreachable>,
    /// The config commit of the last load.
    serving: Option<String>,
}

/// `Shared::heartbeat` before the loop's first beat.
const NEVER: u64 = u64::MAX;

impl Shared {
    /// This replica's role now; `None` without leader election.
    fn leadership(&self) -> Option<crate::cluster::Leadership> {
        self.leadership.as_ref().map(|l| l.borrow().clone())
    }

    fn trigger(&self, why: &str) {
        tracing::debug!(trigger = why, "reconcile requested");
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.metrics
            .queue_depth
            .set(self.pending.load(Ordering::SeqCst) as i64);
        self.wake.notify_one();
    }

    /// A fetch or poll of the config remote succeeded (`commit`: the one loaded, if any):
    /// an outage ends (logged, and its file in `state_dir` removed).
    fn config_reached(&self, state_dir: &std::path::Path, commit: Option<&str>) {
        let mut s = self.config_source.lock().expect("config source state");
        if let Some(c) = commit {
            s.serving = Some(c.to_string());
        }
        if let Some(o) = s.outage.take() {
            tracing::info!(since = %o.since, "config remote reachable again");
        }
        if let Err(e) = crate::config::unreachable::save(state_dir, None) {
            tracing::warn!(error = %e, "cannot update the config remote's status in the state directory");
        }
    }

    /// A fetch or poll of the config remote failed with `error`: recorded for `/readyz` and
    /// `promised status` (`<stateDir>/config-unreachable.json`); logged as a warning when the
    /// outage starts, at debug level on later failures.
    fn config_unreachable(&self, state_dir: &std::path::Path, error: &str) {
        let mut s = self.config_source.lock().expect("config source state");
        let since = s
            .outage
            .as_ref()
            .map(|o| o.since.clone())
            .unwrap_or_else(crate::status::now_rfc3339);
        let next = crate::config::unreachable::Unreachable {
            error: error.to_string(),
            since,
            serving: s.serving.clone(),
        };
        if s.outage.is_none() {
            tracing::warn!(
                error,
                serving = next.serving.as_deref(),
                "config remote unreachable: the last good config stays in force"
            );
        } else {
            tracing::debug!(error, "config remote still unreachable");
        }
        if let Err(e) = crate::config::unreachable::save(state_dir, Some(&next)) {
            tracing::warn!(error = %e, "cannot record the config remote's status in the state directory");
        }
        s.outage = Some(next);
    }

    /// The current outage of the config remote, one line (for `/readyz`).
    fn config_outage(&self) -> Option<String> {
        let s = self.config_source.lock().expect("config source state");
        s.outage.as_ref().map(|o| o.to_string())
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

/// Starts leader election on the cluster's API (`leaderElection:`; with `shards` > 1 each
/// held shard gets its own engine, docs/sharding.md). Errors: bad settings, no API to talk to.
async fn start_election(
    le: &crate::cluster::LeaderElectionSettings,
) -> Result<crate::cluster::Election, String> {
    crate::cluster::lease::Timing::from_settings(le)?;
    let client = crate::cluster::client(le.namespace.as_deref()).await?;
    let election = crate::cluster::Election::start(client, le)?;
    tracing::info!(lease = %le.lease_name, shards = le.shards.max(1), identity = %election.status().borrow().identity, "leader election started: standing by until a Lease is held");
    Ok(election)
}

/// Waits until one of the write gates (one per shard) changes and says whether it opened;
/// never returns without leader election.
async fn gate_opened(gates: &mut [watch::Receiver<bool>]) -> bool {
    if gates.is_empty() {
        return std::future::pending().await;
    }
    let (changed, i, _) =
        futures_util::future::select_all(gates.iter_mut().map(|g| Box::pin(g.changed()))).await;
    match changed {
        Ok(()) => *gates[i].borrow_and_update(),
        Err(_) => std::future::pending().await,
    }
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
    let secret = lifecycle::read_secret(&settings)?;
    let election = match &settings.leader_election {
        Some(le) => Some(start_election(le).await?),
        None => None,
    };
    let shared = Arc::new(Shared {
        metrics: Metrics::new(),
        pending: AtomicU64::new(0),
        wake: Notify::new(),
        status_rows: RwLock::new(None),
        infra: RwLock::new(None),
        rollouts: RwLock::new(None),
        config_loaded: AtomicBool::new(false),
        stores_ok: AtomicBool::new(false),
        webhook_secret: RwLock::new(secret),
        followed_ref: match &opts.source {
            Source::Git { reference, .. } => Some(reference.clone()),
            Source::Dir(_) => None,
        },
        born: Instant::now(),
        heartbeat: AtomicU64::new(NEVER),
        leadership: election.as_ref().map(|e| e.status()),
        published_in: Some(settings.state_dir.clone()),
        config_source: Default::default(),
        pass_error: Default::default(),
    });
    match &election {
        None => {
            shared.metrics.leader.set(1);
            shared.metrics.shards_held.set(1);
        }
        Some(e) => {
            // The gauges follow the role as it changes.
            let (mut status, shared) = (e.status(), shared.clone());
            tokio::spawn(async move {
                loop {
                    let held = status.borrow_and_update().held.len() as i64;
                    shared.metrics.leader.set(i64::from(held > 0));
                    shared.metrics.shards_held.set(held);
                    if status.changed().await.is_err() {
                        break;
                    }
                }
            });
        }
    }
    if shared.webhook_secret.read().await.is_none() {
        tracing::warn!("no webhookSecretFile configured: POST /hooks/git accepts unsigned calls");
    }
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", settings.listen))?;
    tracing::info!(listen = %settings.listen, "HTTP endpoints up");
    let (stop_tx, stop_rx) = watch::channel(false);
    // The web console (README "Web console"): off on a public address without a token.
    let console = if settings.web.serves(&settings.listen) {
        let c = crate::web::Console::new(settings.state_dir.clone(), settings.web.clone())?;
        Some(Arc::new(c))
    } else {
        tracing::info!(listen = %settings.listen, "web console off: a non-loopback address needs web.tokenFile (or web.enabled: true)");
        None
    };
    let http = http::serve(
        listener,
        shared.clone(),
        console.clone().map(crate::web::router),
        stop_rx.clone(),
    );

    // Signals.
    let reload = Arc::new(AtomicBool::new(false));
    lifecycle::spawn_signals(stop_tx.clone(), shared.clone(), reload.clone());

    // Triggers from the config source.
    let _watcher = triggers::start(shared.clone(), &opts.source, &settings, stop_rx.clone())?;

    // Watchdog: WATCHDOG=1 only while the loop below beats.
    let watchdog = sd_notify::watchdog_enabled();
    if let Some(timeout) = watchdog {
        lifecycle::spawn_watchdog(shared.clone(), timeout);
    }
    let mut beat = tokio::time::interval(beat_period(watchdog));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // One engine, or one per held shard; each writes only while its Lease is held.
    let mut engines = engines::Engines::start(&settings, election.as_ref())?;
    let mut gates: Vec<watch::Receiver<bool>> = match &election {
        Some(e) => (0..e.status().borrow().shards).map(|i| e.gate(i)).collect(),
        None => Vec::new(),
    };
    let mut cache = PassCache::new(
        &opts.source,
        &settings,
        engines.state_root(),
        engines.config_commit(),
    )?;
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
            let mut wait = engines.next_wake(pass_started);
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
                    opened = gate_opened(&mut gates) => if opened {
                        shared.trigger("leadership acquired");
                        break;
                    },
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
        if !engines.may_write() {
            // Standby: the leader reconciles; wait for the Lease (or a stop).
            tracing::debug!("standby: no pass");
            shared.pending.store(0, Ordering::SeqCst);
            continue;
        }
        shared.pending.store(0, Ordering::SeqCst);
        shared.metrics.queue_depth.set(0);
        shared.beat();
        if reload.swap(false, Ordering::SeqCst) {
            lifecycle::reload(&opts, &shared, &mut engines, &mut cache, &mut settings).await;
        }
        engines.prepare(&shared);
        let cancels = engines.cancel_handles();
        pass_started = SystemTime::now();
        let pass = engines.pass(&mut cache, &shared);
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
                for cancel in &cancels {
                    cancel.store(true, Ordering::SeqCst);
                }
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
        let all_ok = !outcome.is_empty()
            && outcome.iter().all(|r| {
                r.as_ref()
                    .is_ok_and(|r| r.stores.iter().all(|s| s.error.is_none()))
            });
        failed_passes = if all_ok {
            0
        } else {
            failed_passes.saturating_add(1)
        };
        *shared.pass_error.lock().expect("pass error") =
            outcome.iter().find_map(|r| r.as_ref().err().cloned());
        for result in outcome {
            match result {
                Ok(report) => {
                    shared.metrics.observe(&report);
                    pass::log_pass(&report);
                    let record = pass_record(&report);
                    if let Err(e) = crate::web::records::save_pass(&settings.state_dir, &record) {
                        tracing::warn!(error = %e, "cannot record the last pass for the web console");
                    }
                    // The console's snapshot is re-read now (while someone is looking) or let
                    // go (README "Web console").
                    if let Some(c) = console.clone() {
                        tokio::task::spawn_blocking(move || c.after_pass());
                    }
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
        }
        if *stop.borrow() {
            break;
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(e) = election {
        // Release the Lease so a standby takes over at once.
        e.stop().await;
        shared.metrics.leader.set(0);
        shared.metrics.shards_held.set(0);
    }
    let _ = stop_tx.send(true);
    let _ = http.await;
    tracing::info!("stopped");
    Ok(())
}

/// What the web console shows of a pass (`<stateDir>/last-pass.json`,
/// [`crate::web::records`]), ended now.
fn pass_record(report: &crate::reconcile::PassReport) -> crate::web::records::PassRecord {
    use crate::reconcile::ObjectAction;
    use crate::web::records::{MAX_LISTED, PassObject, PassRecord, PassStore};
    let mut ran = Vec::new();
    let mut not_listed = 0;
    for o in &report.objects {
        let action = match o.action {
            ObjectAction::Ran => "ran",
            ObjectAction::Failed => "failed",
            ObjectAction::Deleted => "deleted",
            ObjectAction::Unchanged | ObjectAction::Waiting => continue,
        };
        if ran.len() < MAX_LISTED {
            ran.push(PassObject {
                key: o.key.clone(),
                action: action.into(),
                state: o.state.clone(),
            });
        } else {
            not_listed += 1;
        }
    }
    PassRecord {
        finished_at: crate::status::now_rfc3339(),
        config_commit: report.config_commit.clone(),
        duration_seconds: report.duration.as_secs_f64(),
        pipelines_run: report.pipelines_run,
        ran,
        ran_not_listed: not_listed,
        stores: report
            .stores
            .iter()
            .map(|s| PassStore {
                store: s.store.clone(),
                commit: s.commit.clone(),
                written: s.written,
                deleted: s.deleted,
                error: s.error.as_deref().map(crate::infra::redact),
            })
            .collect(),
    }
}
