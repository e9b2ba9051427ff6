//! The reconcile engine behind a write gate (the daemon's path with `leaderElection:`): with
//! the gate closed a pass stops before its state store write and commits nothing; with it
//! open the same pass commits.

use std::path::Path;

use tokio::sync::watch;

use crate::config::{self, Source};
use crate::reconcile::{Engine, EngineError};
use crate::settings::Settings;

/// A config with one Destination on a local Git state store (relative: under the state
/// directory), so a pass writes the Destination's canary and commits.
fn platform(dir: &Path) {
    let platform = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/quickstart/platform");
    std::fs::create_dir_all(dir.join("platform")).unwrap();
    for f in ["destinations.yaml", "state-store.yaml"] {
        std::fs::copy(platform.join(f), dir.join("platform").join(f)).unwrap();
    }
}

async fn pass(state: &Path, config: &Path, gate: watch::Receiver<bool>) -> Result<bool, String> {
    let settings = Settings::load(
        None,
        serde_json::json!({"stateDir": state})
            .as_object()
            .unwrap()
            .clone(),
    )
    .unwrap();
    let (objects, root) = config::load_with_root(
        &Source::Dir(config.to_path_buf()),
        &settings.file_filter(),
        None,
        &state.join("checkouts"),
        &settings.network.timeouts(),
    )
    .unwrap();
    let cfg = crate::validate::validate(objects);
    assert!(!cfg.has_errors(), "{:?}", cfg.diagnostics);
    let runner = settings.runner();
    let mut engine = Engine::new(settings, runner)
        .unwrap()
        .with_backoff(true)
        .with_write_gate(gate);
    match engine.reconcile(&cfg, &root).await {
        Ok(report) => Ok(report.stores.iter().any(|s| s.commit.is_some())),
        Err(EngineError::LeadershipLost(store)) => Err(store),
        Err(e) => panic!("{e}"),
    }
}

/// A pass with `gate` (closed) writes nothing; the same pass with an open gate commits.
pub(super) async fn engine_does_not_write_with(gate: watch::Receiver<bool>) {
    assert!(!*gate.borrow(), "the gate is closed");
    let root = tempfile::tempdir().unwrap();
    let (state, config) = (root.path().join("state"), root.path().join("config"));
    platform(&config);
    let refused = pass(&state, &config, gate).await;
    assert_eq!(refused, Err("GitStateStore/local".to_string()));
    let (_open_tx, open) = watch::channel(true);
    assert_eq!(
        pass(&state, &config, open).await,
        Ok(true),
        "the first write happens only once the gate is open"
    );
}

#[tokio::test]
async fn a_pass_behind_a_closed_gate_writes_nothing() {
    let (_tx, closed) = watch::channel(false);
    engine_does_not_write_with(closed).await;
}
