//! The daemon's lifecycle: SIGTERM and SIGINT drain, SIGHUP reloads the daemon config (and
//! the webhook secret), and systemd's watchdog gets `WATCHDOG=1` only while the loop beats.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::engines::Engines;
use super::pass::PassCache;
use super::{DaemonOptions, Shared};
use crate::settings::Settings;

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

/// Handles signals until the process ends: SIGTERM and SIGINT set `stop` (the loop drains),
/// SIGHUP sets `reload` and triggers a pass (which reloads first, [`reload`]).
pub(super) fn spawn_signals(
    stop_tx: watch::Sender<bool>,
    shared: Arc<Shared>,
    reload: Arc<AtomicBool>,
) {
    // Installed before this returns (not in the task): a SIGTERM that arrives before the
    // task first runs must drain, not kill the process with the default action.
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); let _ = stop_tx.send(true); shared.wake.notify_one(); }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); let _ = stop_tx.send(true); shared.wake.notify_one(); }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading the daemon config"); reload.store(true, Ordering::SeqCst); shared.trigger("sighup"); }
            }
        }
    });
}

/// Sends systemd `WATCHDOG=1` every half `timeout` while the loop beats ([`watchdog_alive`]);
/// a silent loop is logged and not vouched for.
pub(super) fn spawn_watchdog(shared: Arc<Shared>, timeout: Duration) {
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

/// SIGHUP: re-reads the daemon config (file, environment, then the flags) and applies it to the
/// engine, the webhook secret and the file filter. What does not load is logged and the
/// previous value kept.
pub(super) async fn reload(
    opts: &DaemonOptions,
    shared: &Shared,
    engines: &mut Engines,
    cache: &mut PassCache,
    settings: &mut Settings,
) {
    match Settings::load(opts.daemon_config.as_deref(), opts.flags.clone()) {
        Ok(s) => {
            match read_secret(&s) {
                Ok(sec) => *shared.webhook_secret.write().await = sec,
                Err(e) => {
                    tracing::error!(error = %e, "keeping the previous webhook secret")
                }
            }
            engines.set_settings(&s);
            match PassCache::new(
                &opts.source,
                &s,
                engines.state_root(),
                engines.config_commit(),
            ) {
                Ok(c) => *cache = c,
                Err(e) => tracing::error!(error = %e, "keeping the previous file filter"),
            }
            *settings = s;
            tracing::info!("daemon config reloaded");
        }
        Err(e) => {
            shared.metrics.error("config");
            tracing::error!(error = %e, "daemon config reload failed; keeping the previous config");
        }
    }
}

/// The webhook secret: `webhookSecretFile`, else the systemd credential `webhook-secret`
/// (`$CREDENTIALS_DIRECTORY/webhook-secret`) when present. An empty secret (after trailing
/// whitespace is trimmed) is an error: anyone could sign with it.
pub(super) fn read_secret(settings: &Settings) -> Result<Option<Vec<u8>>, String> {
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
        Some(p) => {
            let b =
                std::fs::read(p).map_err(|e| format!("webhookSecretFile {}: {e}", p.display()))?;
            let secret = String::from_utf8_lossy(&b).trim_end().as_bytes().to_vec();
            if secret.is_empty() {
                // Anyone could sign with an empty HMAC key (daemon/webhook.rs).
                return Err(format!(
                    "webhookSecretFile {}: the file is empty; put the webhook secret in it, or leave webhookSecretFile unset to accept unsigned deliveries",
                    p.display()
                ));
            }
            Ok(Some(secret))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty (or whitespace-only) secret file would let anyone sign a delivery: refused.
    #[test]
    fn an_empty_webhook_secret_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("secret");
        let settings = Settings {
            webhook_secret_file: Some(file.clone()),
            ..Settings::default()
        };
        std::fs::write(&file, " \n").unwrap();
        let e = read_secret(&settings).unwrap_err();
        assert!(e.contains("the file is empty"), "{e}");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(read_secret(&settings).unwrap(), Some(b"s3cret".to_vec()));
    }
}
