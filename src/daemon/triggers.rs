//! What triggers a pass from the config source: a Git source is polled with a cheap ref
//! check, a local directory is watched. Both end in [`Shared::trigger`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;
use crate::config::{self, Source};
use crate::settings::Settings;

/// A watcher of a config directory; dropping it stops the watch.
pub(super) type DirWatcher = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Starts the triggers of `source`: a poller of a Git source every `pollInterval` (until
/// `stop`), or a watcher of a directory (returned: the watch lasts while it is kept). Errors
/// when the state directory cannot be made absolute or the directory cannot be watched.
pub(super) fn start(
    shared: Arc<Shared>,
    source: &Source,
    settings: &Settings,
    stop: watch::Receiver<bool>,
) -> Result<Option<DirWatcher>, String> {
    let state_root = std::path::absolute(&settings.state_dir).map_err(|e| e.to_string())?;
    let cache = state_root.join("config-cache");
    Ok(match source {
        Source::Git { url, reference } => {
            spawn_poller(
                shared,
                url.clone(),
                reference.clone(),
                cache,
                settings.poll_interval,
                settings.network.timeouts(),
                state_root.clone(),
                stop,
            );
            None
        }
        Source::Dir(dir) => Some(watch_dir(shared, dir, &state_root)?),
    })
}

/// Polls the Git config source every `every` (at least 100 ms) with a ref check and triggers a
/// pass when the ref moved; failures are counted (`poll` errors), logged and recorded in
/// `state_dir` ([`crate::config::unreachable`]), until a poll succeeds again.
#[allow(clippy::too_many_arguments)]
fn spawn_poller(
    shared: Arc<Shared>,
    url: String,
    reference: String,
    cache: PathBuf,
    every: Duration,
    network: statestores::NetworkTimeouts,
    state_dir: PathBuf,
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
                    shared.config_reached(&state_dir, None);
                }
                Ok(Err(e)) => {
                    shared.metrics.error("poll");
                    shared.config_unreachable(&state_dir, &e.to_string());
                }
                Err(e) => tracing::warn!(error = %e, "poller task failed"),
            }
        }
    });
}

/// Watches a config directory (recursively, debounced). Changes under the state directory
/// (which may sit inside it: `--config .` with the default `.promised`) and under `.git/` do
/// not trigger a pass ([`config_change`]).
fn watch_dir(shared: Arc<Shared>, dir: &Path, state_dir: &Path) -> Result<DirWatcher, String> {
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
pub(super) fn config_change(path: &Path, dir: &Path, state_dir: &Path) -> bool {
    !path.starts_with(state_dir)
        && !path
            .strip_prefix(dir)
            .unwrap_or(path)
            .components()
            .any(|c| c.as_os_str() == ".git")
}
