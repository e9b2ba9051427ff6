//! One pass of the daemon: load the config (fetching a Git source, re-reading only changed
//! files), validate it (reusing admissions of unchanged requests), reconcile, and refresh the
//! status rows `/api/v1/status` serves; and how a pass is logged and when the next one is due.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::Shared;
use crate::config::{self, Source};
use crate::reconcile::{Engine, PassReport};
use crate::settings::Settings;
use crate::status::ObjectStatus;
use crate::validate;

/// What the daemon keeps between passes so a pass costs what changed, not the repo's size.
pub(super) struct PassCache {
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

/// Status rows by object key, Promises apart from requests (the order of `promised
/// status`). Each status is the record's own ([`crate::status::SharedStatus`]), serialised
/// when asked for.
#[derive(Debug, Clone, Default)]
pub(super) struct StatusRows {
    pub(super) promises: BTreeMap<String, Arc<ObjectStatus>>,
    pub(super) requests: BTreeMap<String, Arc<ObjectStatus>>,
}

impl PassCache {
    /// A cache for `source`; with `verify:` in `settings`, its loader applies only verified
    /// commits, `last_applied` (the state directory's config commit) staying in force
    /// while newer ones are refused. Errors: a bad glob, `verify:` with a directory source,
    /// or key files that do not load.
    pub(super) fn new(
        source: &Source,
        settings: &Settings,
        state_dir: &std::path::Path,
        last_applied: Option<String>,
    ) -> Result<Self, String> {
        let mut loader = config::Loader::new(
            source.clone(),
            &settings.file_filter(),
            Some(state_dir.join("config-cache")),
            Some(state_dir.join("config-checkouts")),
        )
        .map_err(|e| e.to_string())?
        .with_network(settings.network.timeouts());
        if let Some(v) = &settings.verify {
            loader = loader.with_verifier(
                config::verify::Verifier::for_source(source, v, state_dir)?,
                last_applied,
            );
        }
        Ok(PassCache {
            loader: Some(loader),
            admissions: validate::Admissions::default(),
            last: None,
            rows: StatusRows::default(),
            logged: Default::default(),
        })
    }
}

/// Loads the config (fetching a Git source) and validates it; a pass at the commit of the
/// last one reuses its validated config. `restore` puts back into freshly loaded objects the
/// last good versions of those in files that did not load ([`Engine::restore_unloadable`]).
pub(super) async fn load(
    cache: &mut PassCache,
    shared: &Shared,
    settings: &Settings,
    restore: impl FnOnce(&mut config::Objects),
) -> Result<(Arc<validate::ValidConfig>, PathBuf), String> {
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
    let refused = loader.refused().cloned();
    cache.loader = Some(loader);
    note_refusal(shared, settings, refused.as_ref());
    let is_git = shared.followed_ref.is_some();
    let loaded = match loaded {
        Ok(x) => x,
        Err(e) if is_git => {
            // The config remote is unreachable (or its commit cannot be read): the last good
            // config stays in force (`crate::config::unreachable`).
            shared.metrics.error("config");
            let e = e.to_string();
            shared.config_unreachable(&settings.state_dir, &e);
            return match &cache.last {
                Some((_, cfg, root)) => Ok((cfg.clone(), root.clone())),
                None => Err(e),
            };
        }
        Err(e) => {
            shared.metrics.error("config");
            return Err(e.to_string());
        }
    };
    if is_git {
        let commit = match &loaded {
            Some((commit, _)) => commit.clone(),
            None => cache.last.as_ref().map(|(c, _, _)| c.clone()),
        };
        shared.config_reached(&settings.state_dir, commit.as_deref());
    }
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
            restore(&mut loaded.objects);
            let mut cfg = validate::validate_with_options(
                loaded.objects,
                &mut cache.admissions,
                &settings.validate_options(),
            );
            // Needs the daemon config; a SIGHUP resets `cache.last`, so this runs again.
            crate::pipeline::env::check_pipeline_env(&mut cfg, &settings.env_sources());
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
    tracing::debug!(
        load_s,
        validate_s = t_validate.elapsed().as_secs_f64(),
        "config loaded"
    );
    Ok((cfg, config_root))
}

/// Loads the config (fetching a Git source), validates it and reconciles.
pub(super) async fn one_pass(
    engine: &mut Engine,
    cache: &mut PassCache,
    shared: &Shared,
) -> Result<PassReport, String> {
    let (cfg, config_root) = load(cache, shared, engine.settings(), |objects| {
        engine.restore_unloadable(objects);
    })
    .await?;
    let (report, rows_changed) = reconcile(engine, &cfg, &config_root, &mut cache.rows).await?;
    shared.stores_ok.store(
        report.stores.iter().all(|s| s.error.is_none()),
        Ordering::SeqCst,
    );
    // A pass that changed no status leaves the rows as they are (a copy is 10,000 keys).
    if rows_changed || shared.status_rows.read().await.is_none() {
        *shared.status_rows.write().await = Some(cache.rows.clone());
    }
    shared.metrics.observe_infra(engine.infra());
    let infra = serde_json::to_vec(engine.infra()).expect("Destination status serialises");
    *shared.infra.write().await = Some(infra.into());
    super::rollout_api::publish(shared, [&*engine]).await;
    Ok(report)
}

/// One engine's pass over a loaded config; refreshes `rows` from its state. Returns the
/// report and whether any row changed.
pub(super) async fn reconcile(
    engine: &mut Engine,
    cfg: &validate::ValidConfig,
    config_root: &std::path::Path,
    rows: &mut StatusRows,
) -> Result<(PassReport, bool), String> {
    let report = engine
        .reconcile(cfg, config_root)
        .await
        .map_err(|e| e.to_string())?;
    let t_status = std::time::Instant::now();
    let rows_changed = refresh_rows(rows, engine.state());
    tracing::debug!(
        shard = engine.shard().map(|s| s.index),
        reconcile_s = report.duration.as_secs_f64(),
        status_s = t_status.elapsed().as_secs_f64(),
        "pass phases"
    );
    Ok((report, rows_changed))
}

/// Points `rows` at the records' statuses: a row whose status is not its record's (the
/// record's changed this pass) is replaced, and the rows are rebuilt when objects came or
/// went. Returns true when any row changed. A pointer comparison per object: no status is
/// copied or compared.
fn refresh_rows(rows: &mut StatusRows, state: &crate::state::State) -> bool {
    let mut changed = false;
    for (map, out) in [
        (&state.promises, &mut rows.promises),
        (&state.requests, &mut rows.requests),
    ] {
        let same_keys = out.len() == map.len() && out.keys().zip(map.keys()).all(|(a, b)| a == b);
        if !same_keys {
            *out = map
                .iter()
                .map(|(k, r)| (k.clone(), r.status.share()))
                .collect();
            changed = true;
            continue;
        }
        for (row, r) in out.values_mut().zip(map.values()) {
            if !r.status.is(row) {
                *row = r.status.share();
                changed = true;
            }
        }
    }
    changed
}

/// Logs a pass: its warnings (with the object they are about), each state store's commit or
/// failure, and a summary.
pub(super) fn log_pass(r: &PassReport) {
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
        reused = r.reused,
        "reconcile pass done"
    );
}

/// The object a pass warning is about, as log fields (promise, namespace, object name):
/// engine warnings about one object start with its state key, `promise/<name>: ` or
/// `<promise>/<namespace>/<name>: `.
pub(super) fn warning_object(w: &str) -> (Option<&str>, Option<&str>, Option<&str>) {
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
pub(super) fn next_wake(engine: &Engine, pass_started: SystemTime) -> Duration {
    // Retries, health checks and the health state store's poll (crate::health), rollout steps
    // (crate::rollout), the write-permission checks of ready state stores.
    engine
        .next_due(pass_started)
        .unwrap_or(Duration::from_secs(60))
        .clamp(Duration::from_millis(200), Duration::from_secs(60))
}

/// Publishes whether the newest config commit was refused by verification: the
/// `promised_config_commit_refused` gauge, and `<stateDir>/config-refused.json` for `promised
/// status` (written only when it changes).
fn note_refusal(shared: &Shared, settings: &Settings, refused: Option<&config::verify::Refused>) {
    shared
        .metrics
        .config_refused
        .set(i64::from(refused.is_some()));
    if settings.verify.is_none() {
        return;
    }
    if config::verify::load_refusal(&settings.state_dir).as_ref() != refused
        && let Err(e) = config::verify::save_refusal(&settings.state_dir, refused)
    {
        tracing::warn!(error = %e, "cannot record the refused config commit in the state directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectRef;
    use crate::state::{ObjectRecord, State};

    fn record(name: &str) -> Box<ObjectRecord> {
        let id = ObjectRef {
            kind: "redis".into(),
            namespace: Some("default".into()),
            name: name.into(),
        };
        Box::new(ObjectRecord::new(ObjectStatus::new(id, "redis")))
    }

    #[test]
    fn status_rows_follow_the_records_without_copying_their_statuses() {
        let mut state = State::default();
        for n in ["a", "b"] {
            state
                .requests
                .insert(format!("redis/default/{n}"), record(n));
        }
        let mut rows = StatusRows::default();
        assert!(refresh_rows(&mut rows, &state), "first rows");
        assert!(
            state.requests["redis/default/a"]
                .status
                .is(&rows.requests["redis/default/a"])
        );
        assert!(!refresh_rows(&mut rows, &state), "nothing changed");

        // A status written by the engine (whether or not the pass called it dirty) is served.
        let served_before = rows.requests["redis/default/a"].clone();
        state
            .requests
            .get_mut("redis/default/a")
            .unwrap()
            .status
            .message = "Reconciled".into();
        assert_eq!(
            served_before.message, "Pending",
            "a served row never changes under a reader"
        );
        assert!(refresh_rows(&mut rows, &state));
        assert_eq!(rows.requests["redis/default/a"].message, "Reconciled");
        assert!(
            state.requests["redis/default/a"]
                .status
                .is(&rows.requests["redis/default/a"])
        );

        // Objects that come and go come and go in the rows.
        state.requests.remove("redis/default/b");
        state.requests.insert("redis/default/c".into(), record("c"));
        assert!(refresh_rows(&mut rows, &state));
        let keys: Vec<&String> = rows.requests.keys().collect();
        assert_eq!(keys, ["redis/default/a", "redis/default/c"]);
    }
}
