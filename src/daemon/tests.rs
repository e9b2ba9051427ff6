//! Unit tests of the daemon: pass warnings as log fields, the watchdog and heartbeat, what
//! counts as a config change, and when failure backoff wakes the loop.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::lifecycle::{beat_period, watchdog_alive};
use super::pass::warning_object;
use super::triggers::config_change;

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
fn failed(name: &str, retry_at: SystemTime) -> (String, Box<crate::state::ObjectRecord>) {
    let id = crate::model::ObjectRef {
        kind: "redis".into(),
        namespace: Some("default".into()),
        name: name.into(),
    };
    let record = crate::state::ObjectRecord {
        input_hash: Default::default(),
        completed: false,
        object: serde_json::Value::Null.into(),
        promise: None,
        promise_dir: None,
        outputs: Vec::new(),
        placements: Vec::new(),
        spec_hash: Default::default(),
        failures: 1,
        retry_at: Some(humantime::format_rfc3339_seconds(retry_at).to_string()),
        deleting: false,
        steady: Default::default(),
        failed_upgrade: String::new(),
        status: crate::status::ObjectStatus::new(id, "redis").into(),
    };
    (format!("redis/default/{name}"), Box::new(record))
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
