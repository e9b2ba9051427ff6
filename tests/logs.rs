//! Logs name the object they are about, as separate fields, and JSON logs are valid JSON with
//! no duplicate keys (README "Logs"); `promised status` never creates a state directory.
//!
//! The pipelines here run with `sandbox: none` (a shell script from the Promise's folder), so
//! these tests need no bubblewrap.

mod common;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::app::{PLATFORM, PROMISE};
use common::promised;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Deserialises any JSON and fails on an object with a key twice, at any depth
/// (`serde_json::Value` silently keeps the last one).
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(self)
    }
}

#[test]
fn the_duplicate_key_check_finds_nested_duplicates() {
    let ok = r#"{"a":1,"b":{"a":[{"a":1,"b":2}]},"span":{"name":"x","object_name":"y"}}"#;
    assert!(serde_json::from_str::<NoDuplicateKeys>(ok).is_ok());
    let dup = r#"{"a":1,"span":{"name":"fail","promise":"p","name":"workflow"}}"#;
    let err = serde_json::from_str::<NoDuplicateKeys>(dup)
        .err()
        .expect("an error");
    assert!(err.to_string().contains("duplicate key \"name\""), "{err}");
    let deep = r#"{"spans":[{"k":1},{"k":1,"k":2}]}"#;
    assert!(serde_json::from_str::<NoDuplicateKeys>(deep).is_err());
}

/// Parses every line of `stderr` as one JSON object with no duplicate keys.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| {
            if let Err(e) = serde_json::from_str::<NoDuplicateKeys>(l) {
                panic!("not JSON without duplicate keys ({e}): {l}\n{stderr}");
            }
            serde_json::from_str::<Value>(l).unwrap()
        })
        .collect()
}

/// A config repo with a Promise `app` whose `configure` pipeline's `render` container exits 3
/// for the request `team-a/fail` and succeeds for `team-a/ok`, a local Git state store and a
/// Destination; plus a daemon config with `sandbox: none`.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    state: PathBuf,
    daemon_config: PathBuf,
}

const RENDER: &str = r#"#!/bin/sh
set -eu
if grep -q '^  size: huge$' "$KRATIX_INPUT_DIR/object.yaml"; then
  echo 'render: size "huge" is not allowed' >&2
  exit 3
fi
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n' > "$KRATIX_OUTPUT_DIR/app.yaml"
"#;

const REQUESTS: &str = r#"apiVersion: example.com/v1
kind: App
metadata:
  name: fail
  namespace: team-a
spec:
  size: huge
---
apiVersion: example.com/v1
kind: App
metadata:
  name: ok
  namespace: team-a
spec:
  size: small
"#;

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let config = root.join("config");
        let write = |rel: &str, text: &str| {
            let p = config.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        };
        write("promises/app/promise.yaml", PROMISE);
        write("promises/app/render", RENDER);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            config.join("promises/app/render"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        write("platform/platform.yaml", PLATFORM);
        write("requests/apps.yaml", REQUESTS);
        let daemon_config = root.join("promised.yaml");
        std::fs::write(&daemon_config, "sandbox: none\n").unwrap();
        World {
            state: root.join("state"),
            _tmp: tmp,
            root,
            config,
            daemon_config,
        }
    }

    /// `promised reconcile` with extra arguments; (exit code, stdout, stderr).
    fn reconcile(&self, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec![
            "reconcile",
            "--config",
            self.config.to_str().unwrap(),
            "--state-dir",
            self.state.to_str().unwrap(),
            "--daemon-config",
            self.daemon_config.to_str().unwrap(),
        ];
        args.extend(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_promised"))
            .args(&args)
            .env_remove("PROMISED_LOG")
            .env_remove("PROMISED_LOG_FORMAT")
            .env_remove("NO_COLOR")
            .output()
            .expect("promised runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Asserts that a `workflow failed` event names `team-a/fail`, its pipeline and container, in
/// its own fields.
fn assert_names_the_failed_request(e: &Value) {
    let f = &e["fields"];
    assert_eq!(e["level"], "WARN", "{e}");
    assert_eq!(f["promise"], "app", "{e}");
    assert_eq!(f["namespace"], "team-a", "{e}");
    assert_eq!(f["object_name"], "fail", "{e}");
    assert_eq!(f["workflow"], "resource.configure", "{e}");
    assert_eq!(f["pipeline"], "configure", "{e}");
    assert_eq!(f["container"], "render", "{e}");
    let error = f["error"].as_str().unwrap();
    assert!(
        error.contains("exit code 3") && !error.contains('\n'),
        "{e}"
    );
    let tail = f["stderr_tail"].as_str().unwrap();
    assert!(tail.contains("size \"huge\" is not allowed"), "{e}");
}

/// At every level, `--log-format json` writes one JSON object per line with no duplicate
/// keys (the span's own `name` no longer collides with a field), and the warning about the
/// failed workflow names its request, pipeline and container in the event's own fields.
#[test]
fn json_logs_of_a_failed_workflow_name_the_request_without_duplicate_keys() {
    let w = World::new();
    for level in [
        None,
        Some("info"),
        Some("debug"),
        Some("promised=trace,statestores=trace"),
    ] {
        let _ = std::fs::remove_dir_all(&w.state);
        let mut args = vec!["--log-format", "json", "--output", "json"];
        if let Some(l) = level {
            args.extend(["--log", l]);
        }
        let (code, out, err) = w.reconcile(&args);
        assert!(matches!(code, 0 | 1), "{level:?}\n{out}\n{err}");
        // The report on stdout is one JSON document, without duplicate keys either.
        serde_json::from_str::<NoDuplicateKeys>(&out).expect("stdout report");
        let events = json_lines(&err);
        let failed: Vec<&Value> = events
            .iter()
            .filter(|e| e["fields"]["message"] == "workflow failed")
            .collect();
        assert_eq!(failed.len(), 1, "{level:?}: one failed workflow:\n{err}");
        assert_names_the_failed_request(failed[0]);
        if level.is_none() {
            // Default level: the info span is off, the event alone names the request.
            assert!(failed[0].get("span").is_none(), "{err}");
            assert_eq!(
                events.len(),
                1,
                "only the failure at the default level:\n{err}"
            );
        } else {
            // With the span on: its own name and the object's name are separate keys.
            let span = &failed[0]["span"];
            assert_eq!(span["name"], "workflow", "{err}");
            assert_eq!(span["object_name"], "fail", "{err}");
            assert_eq!(span["namespace"], "team-a", "{err}");
            assert_eq!(span["promise"], "app", "{err}");
        }
        if level == Some("debug") {
            // Every line inside a workflow span carries its object.
            let started: Vec<&Value> = events
                .iter()
                .filter(|e| e["fields"]["message"] == "workflow started")
                .collect();
            let names: BTreeSet<&str> = started
                .iter()
                .map(|e| e["span"]["object_name"].as_str().unwrap())
                .collect();
            assert_eq!(names, BTreeSet::from(["fail", "ok"]), "{err}");
        }
    }
}

/// With JSON logs, what `promised reconcile` itself reports on stderr (an invalid object, a
/// command that cannot run) is a JSON line too, shaped like the log events, with the same
/// object fields as the daemon's `invalid config object`.
#[test]
fn reconcile_reports_on_stderr_are_json_lines_with_json_logs() {
    let w = World::new();
    std::fs::write(
        w.config.join("requests/bad.yaml"),
        "apiVersion: example.com/v1\nkind: App\nmetadata:\n  name: bad\n  namespace: team-b\nspec:\n  size: 5\n",
    )
    .unwrap();
    let (code, out, err) = w.reconcile(&["--log-format", "json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let events = json_lines(&err);
    let invalid = events
        .iter()
        .find(|e| e["fields"]["message"] == "invalid config object")
        .unwrap_or_else(|| panic!("no invalid object reported:\n{err}"));
    assert_eq!(invalid["level"], "ERROR", "{invalid}");
    let f = &invalid["fields"];
    assert_eq!(f["kind"], "App", "{invalid}");
    assert_eq!(f["namespace"], "team-b", "{invalid}");
    assert_eq!(f["object_name"], "bad", "{invalid}");
    assert_eq!(f["field"], "spec.size", "{invalid}");
    assert_eq!(f["file"], "requests/bad.yaml", "{invalid}");
    assert!(f["error"].as_str().unwrap().contains("string"), "{invalid}");
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["fields"]["message"] == "workflow failed")
        .collect();
    assert_eq!(failed.len(), 1, "{err}");
    assert_names_the_failed_request(failed[0]);
    // Text logs keep the plain `error: <file>[<doc>] <object>: <field>: <message>` line.
    let (_, _, text) = w.reconcile(&[]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("error: requests/bad.yaml[0] App team-b/bad: spec.size: ")),
        "{text}"
    );

    // A command that cannot run says why in one JSON line.
    let missing = w.root.join("no-such-config");
    let (code, _, err) = promised(&[
        "reconcile",
        "--config",
        missing.to_str().unwrap(),
        "--state-dir",
        w.state.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    assert_eq!(code, 2, "{err}");
    let events = json_lines(&err);
    assert!(
        events.iter().any(|e| e["level"] == "ERROR"
            && e["fields"]["message"]
                .as_str()
                .unwrap()
                .contains("no-such-config")),
        "{err}"
    );
}

/// The default text format (default level, no terminal: no colour codes) names the failed
/// request, its pipeline and container on the warning's first line.
#[test]
fn text_log_of_a_failed_workflow_names_the_request() {
    let w = World::new();
    let (code, out, err) = w.reconcile(&[]);
    assert!(matches!(code, 0 | 1), "{out}\n{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI escapes off a terminal: {err:?}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("workflow failed"))
        .unwrap_or_else(|| panic!("no failure logged:\n{err}"));
    for want in [
        " WARN ",
        "promise=\"app\"",
        "namespace=\"team-a\"",
        "object_name=\"fail\"",
        "workflow=\"resource.configure\"",
        "pipeline=\"configure\"",
        "container=\"render\"",
        "exit code 3",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    assert!(!err.contains("object_name=\"ok\""), "{err}");
}

/// `promised run` with JSON logs: every line (HTTP up, invalid config object, failed workflow,
/// commits, pass done) is JSON without duplicate keys; the invalid request and the failed one
/// are both named in their lines' own fields.
#[test]
fn daemon_json_logs_name_invalid_and_failed_requests() {
    let w = World::new();
    std::fs::write(
        w.config.join("requests/bad.yaml"),
        "apiVersion: example.com/v1\nkind: App\nmetadata:\n  name: bad\n  namespace: team-b\nspec:\n  size: 5\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = w.root.join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(["run", "--config", w.config.to_str().unwrap()])
        .args(["--state-dir", w.state.to_str().unwrap()])
        .args(["--daemon-config", w.daemon_config.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "json"])
        .env_remove("PROMISED_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("promised run starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("reconcile pass done") {
            break text;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("no pass finished:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    // Only whole lines: the daemon may have been killed mid-line.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let events = json_lines(whole);
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["fields"]["message"] == "workflow failed")
        .collect();
    assert!(!failed.is_empty(), "{whole}");
    for e in failed {
        assert_names_the_failed_request(e);
    }
    let invalid = events
        .iter()
        .find(|e| e["fields"]["message"] == "invalid config object")
        .unwrap_or_else(|| panic!("no invalid object logged:\n{whole}"));
    let f = &invalid["fields"];
    assert_eq!(f["kind"], "App", "{invalid}");
    assert_eq!(f["namespace"], "team-b", "{invalid}");
    assert_eq!(f["object_name"], "bad", "{invalid}");
    assert_eq!(f["field"], "spec.size", "{invalid}");
    assert_eq!(f["file"], "requests/bad.yaml", "{invalid}");
    assert_eq!(f["document"], 0, "{invalid}");
}

/// `promised status` on a state directory that does not exist fails, names the path, and does
/// not create it (nor its parent).
#[test]
fn status_of_a_missing_state_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("nonexistent");
    let missing = parent.join("state");
    let path = missing.to_str().unwrap();
    for format in ["table", "json", "yaml"] {
        let (code, out, err) = promised(&[
            "status",
            "--state-dir",
            path,
            "--listen",
            "127.0.0.1:1",
            "--output",
            format,
        ]);
        assert_eq!(code, 2, "{out}\n{err}");
        assert!(out.is_empty(), "no table for a missing directory: {out}");
        assert!(
            err.contains(&format!("state directory {path} does not exist")),
            "{err}"
        );
        assert!(!parent.exists(), "status created {}", parent.display());
    }
    // A file is not a state directory either.
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let (code, _, err) = promised(&[
        "status",
        "--state-dir",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(file.to_str().unwrap()), "{err}");
}

/// `promised status` on an existing directory without state prints the empty table, says on
/// stderr that nothing was reconciled there, and writes nothing into it.
#[test]
fn status_of_an_empty_state_directory_warns_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: &Path = tmp.path();
    let (code, out, err) = promised(&[
        "status",
        "--state-dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("OBJECT"), "{out}");
    assert!(err.contains("no state in"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        0,
        "status wrote into it"
    );
}

/// Kratix's lifecycle reasons among an object's events, oldest first.
fn lifecycle(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .filter(|r| {
            [
                "ReconcileStarted",
                "ConfigureWorkflowFailed",
                "ReconcileSucceeded",
            ]
            .contains(r)
        })
        .map(String::from)
        .collect()
}

/// A request that fails and is then fixed by a commit: its events (state directory, `promised
/// status NAME`) are `ReconcileStarted`, `ConfigureWorkflowFailed`, `ReconcileStarted`,
/// `ReconcileSucceeded` in that order, and an unchanged pass adds none; its log lines carry
/// Kratix's keys (`controller`, `promise`, `resourceRequest`, `namespace`, `object_name`,
/// `generation`, which counts the spec change), so one request's history greps out of the
/// log in the same order.
#[test]
fn events_and_log_keys_of_a_failed_then_fixed_request() {
    let w = World::new();
    let json = ["--log", "info", "--log-format", "json"];
    let (code, out, err1) = w.reconcile(&json);
    assert_eq!(code, 1, "the failed request fails the pass:\n{out}\n{err1}");
    std::fs::write(
        w.config.join("requests/apps.yaml"),
        REQUESTS.replace("size: huge", "size: small"),
    )
    .unwrap();
    let (code, out, err2) = w.reconcile(&json);
    assert_eq!(code, 0, "fixed:\n{out}\n{err2}");
    let key = "app/team-a/fail";
    let row = common::status_row(&w.state, key);
    let events = row["status"]["events"].as_array().expect("events").clone();
    assert_eq!(
        lifecycle(&events),
        [
            "ReconcileStarted",
            "ConfigureWorkflowFailed",
            "ReconcileStarted",
            "ReconcileSucceeded"
        ],
        "{row}"
    );
    let failed = events
        .iter()
        .find(|e| e["reason"] == "ConfigureWorkflowFailed")
        .unwrap();
    assert_eq!(failed["type"], "Warning");
    assert_eq!(
        failed["message"],
        "A Configure Pipeline has failed: configure"
    );
    assert_eq!(row["status"]["observedGeneration"], 2, "{row}");
    // Times never go backwards.
    let times: Vec<&str> = events.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|t| t[0] <= t[1]), "{times:?}");

    // `promised status NAME` shows them.
    let (code, text, _) = promised(&[
        "status",
        "--state-dir",
        w.state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
        key,
    ]);
    assert_eq!(code, 0, "{text}");
    for reason in [
        "ReconcileStarted",
        "ConfigureWorkflowFailed",
        "ReconcileSucceeded",
    ] {
        assert!(text.contains(reason), "{reason} missing:\n{text}");
    }

    // An unchanged pass records nothing new.
    let (code, out, _) = w.reconcile(&[]);
    assert_eq!(code, 0, "{out}");
    let again = common::status_row(&w.state, key);
    assert_eq!(
        again["status"]["events"].as_array().unwrap().len(),
        events.len()
    );

    // The log: the same history, keyed by resourceRequest, generation 1 then 2.
    let mine: Vec<Value> = json_lines(&format!("{err1}{err2}"))
        .into_iter()
        .filter(|e| e["fields"]["resourceRequest"] == key && e["fields"].get("reason").is_some())
        .collect();
    let reasons: Vec<Value> = mine.iter().map(|e| e["fields"].clone()).collect();
    assert_eq!(lifecycle(&reasons), lifecycle(&events), "{err1}\n{err2}");
    for e in &mine {
        let f = &e["fields"];
        assert_eq!(f["controller"], "dynamicResourceRequest", "{e}");
        assert_eq!(f["promise"], "app", "{e}");
        assert_eq!(f["namespace"], "team-a", "{e}");
        assert_eq!(f["object_name"], "fail", "{e}");
        assert_eq!(e["level"], "INFO", "events are status changes: {e}");
        let want = if f["reason"] == "ConfigureWorkflowFailed" {
            "Warning"
        } else {
            "Normal"
        };
        assert_eq!(f["type_"], want, "{e}");
    }
    let generations: Vec<u64> = mine
        .iter()
        .filter(|e| e["fields"]["reason"] == "ReconcileStarted")
        .map(|e| e["fields"]["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(generations, [1, 2], "{err1}\n{err2}");
    // The workflow failure line carries the same keys.
    let wf = json_lines(&err1)
        .into_iter()
        .find(|e| e["fields"]["message"] == "workflow failed")
        .expect("workflow failed line");
    assert_eq!(wf["fields"]["resourceRequest"], key, "{wf}");
    assert_eq!(wf["fields"]["generation"], 1, "{wf}");
    assert_eq!(wf["fields"]["controller"], "dynamicResourceRequest", "{wf}");
}
