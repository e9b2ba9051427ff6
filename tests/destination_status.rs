//! Destination and state store status (issue 21 part 3): a Git state store served by
//! `git daemon` on 127.0.0.1 whose server starts refusing pushes (a `pre-receive` hook)
//! turns its store and Destination not ready with the server's text in the same pass, and
//! ready again once the server takes pushes; the events show in order, `promised status`
//! lists Destinations and state stores, and the daemon's `promised_destination_ready` gauge
//! and `/api/v1/destinations` follow.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{GitDaemon, add_files_promise, bwrap_works, files_request, git, promised, reconcile};

/// What the hook says when it refuses a push.
const REFUSAL: &str = "push refused: repository quota exceeded";

/// A config repo at `<tmp>/config`: Destination `dev` on the GitStateStore `git` (a bare repo
/// served by `daemon`), and a Promise `deps` with one static dependency. Returns the config
/// directory and the bare repository.
fn world(tmp: &Path, daemon: &GitDaemon) -> (PathBuf, PathBuf) {
    let url = daemon.bare_repo("state.git");
    let config = tmp.join("config");
    std::fs::create_dir_all(config.join("platform")).unwrap();
    std::fs::create_dir_all(config.join("promises/deps")).unwrap();
    std::fs::create_dir_all(config.join("requests")).unwrap();
    std::fs::write(
        config.join("platform/infra.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1
kind: GitStateStore
metadata:
  name: git
spec:
  url: {url}
  branch: main
---
apiVersion: platform.kratix.io/v1alpha1
kind: Destination
metadata:
  name: dev
  labels:
    environment: dev
spec:
  path: clusters/dev
  stateStoreRef:
    kind: GitStateStore
    name: git
"
        ),
    )
    .unwrap();
    dependency(&config, "1");
    (config, daemon.base.join("state.git"))
}

/// (Re)writes the Promise `deps` whose one dependency carries `value`: a new value is real
/// work to write.
fn dependency(config: &Path, value: &str) {
    std::fs::write(
        config.join("promises/deps/promise.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata:
  name: deps
spec:
  destinationSelectors:
    - matchLabels:
        environment: dev
  dependencies:
    - apiVersion: v1
      kind: ConfigMap
      metadata:
        name: note
        namespace: default
      data:
        value: \"{value}\"
"
        ),
    )
    .unwrap();
}

/// The server refuses every push (a `pre-receive` hook printing [`REFUSAL`]), or takes them
/// again.
fn refuse_pushes(bare: &Path, refuse: bool) {
    let hook = bare.join("hooks/pre-receive");
    if refuse {
        std::fs::write(&hook, format!("#!/bin/sh\necho '{REFUSAL}' >&2\nexit 1\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    } else {
        std::fs::remove_file(&hook).unwrap();
    }
}

/// `promised status [NAME] --output json` from the state directory (no daemon asked).
fn status_json(state: &Path, name: &str) -> serde_json::Value {
    let (code, out, err) = promised(&[
        "status",
        name,
        "--state-dir",
        state.to_str().unwrap(),
        "--output",
        "json",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `promised status [NAME]` as a table from the state directory.
fn status_table(state: &Path, name: Option<&str>) -> String {
    let mut args = vec!["status"];
    args.extend(name);
    args.extend([
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    let (code, out, err) = promised(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    out
}

/// The `Ready` condition of a Destination or state store's JSON.
fn ready(v: &serde_json::Value) -> &serde_json::Value {
    v["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap_or_else(|| panic!("no Ready in {v}"))
}

/// The reasons of the events of a Destination or state store's JSON, oldest first.
fn event_reasons(v: &serde_json::Value) -> Vec<String> {
    v["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| e["reason"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_store_refusing_pushes_turns_its_destination_not_ready_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let daemon = GitDaemon::start(&srv);
    let (config, bare) = world(tmp.path(), &daemon);
    let with_request = bwrap_works();
    if with_request {
        add_files_promise(&config, "dev");
        files_request(&config, "a", &["a.yaml"]);
    } else {
        eprintln!("no bubblewrap: the request count is not checked");
    }
    let state = tmp.path().join("state");

    // 1. Ready: the test documents and the dependency are written.
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let dev = status_json(&state, "dev");
    assert_eq!(ready(&dev)["status"], "True", "{dev}");
    assert_eq!(ready(&dev)["reason"], "TestDocumentsWritten", "{dev}");
    assert_eq!(
        ready(&dev)["message"],
        "Test documents written to State Store"
    );
    assert_eq!(dev["stateStoreRef"]["kind"], "GitStateStore");
    assert_eq!(dev["promises"], 1, "{dev}");
    if with_request {
        assert_eq!(dev["requests"], 1, "{dev}");
    }
    let store = status_json(&state, "GitStateStore/git");
    assert_eq!(store["status"], "Ready", "{store}");
    assert_eq!(ready(&store)["reason"], "StateStoreReady");
    let head = git(&bare, &["rev-parse", "main"]).trim().to_string();
    assert_eq!(store["lastSuccessfulWrite"]["version"], head, "{store}");
    assert!(store["lastCheckTime"].is_string(), "{store}");
    assert_eq!(store["destinations"], serde_json::json!(["dev"]));

    // 2. The server refuses pushes; real work to write: not ready in this very pass, with
    // the server's text.
    refuse_pushes(&bare, true);
    dependency(&config, "2");
    let (code, out, err) = reconcile(&config, &state);
    assert_ne!(code, 0, "a failed write fails the pass\n{out}\n{err}");
    let dev = status_json(&state, "dev");
    let r = ready(&dev);
    assert_eq!(r["status"], "False", "{dev}");
    assert_eq!(r["reason"], "StateStoreWriteFailed", "{dev}");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Failed to write to State Store: ") && msg.contains(REFUSAL),
        "{msg}"
    );
    let store = status_json(&state, "git");
    assert_eq!(store["status"], "NotReady", "{store}");
    assert_eq!(ready(&store)["reason"], "StateStoreWriteFailed");
    assert!(
        ready(&store)["message"].as_str().unwrap().contains(REFUSAL),
        "{store}"
    );
    assert_eq!(store["lastSuccessfulWrite"]["version"], head, "{store}");
    // The table: Destinations (kubectl get destinations' columns) and state stores.
    let table = status_table(&state, None);
    let line = table
        .lines()
        .find(|l| l.starts_with("dev "))
        .unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &cols[..6],
        &[
            "dev",
            "GitStateStore",
            "git",
            "False",
            if with_request { "1" } else { "0" },
            "StateStoreWriteFailed"
        ],
        "{table}"
    );
    assert!(table.contains("DESTINATION "), "{table}");
    assert!(table.contains("STATESTORE "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("GitStateStore/git ") && l.contains("False")),
        "{table}"
    );

    // 3. The server takes pushes again: the next pass writes and both are ready.
    refuse_pushes(&bare, false);
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let dev = status_json(&state, "dev");
    assert_eq!(ready(&dev)["status"], "True", "{dev}");
    assert_eq!(
        event_reasons(&dev),
        [
            "DestinationReady",
            "DestinationNotReady",
            "DestinationReady"
        ],
        "{dev}"
    );
    assert_eq!(dev["events"][1]["type"], "Warning");
    assert!(
        dev["events"][1]["message"]
            .as_str()
            .unwrap()
            .contains(REFUSAL)
    );
    let store = status_json(&state, "GitStateStore/git");
    assert_eq!(store["status"], "Ready", "{store}");
    assert_eq!(event_reasons(&store), ["Ready", "NotReady", "Ready"]);
    assert_eq!(
        store["events"][0]["message"],
        "GitStateStore \"git\" is ready"
    );
    let head2 = git(&bare, &["rev-parse", "main"]).trim().to_string();
    assert_ne!(head2, head);
    assert_eq!(store["lastSuccessfulWrite"]["version"], head2, "{store}");

    // `promised status dev`: conditions and events, oldest first.
    let one = status_table(&state, Some("dev"));
    assert!(one.contains("State store:   GitStateStore/git"), "{one}");
    let order: Vec<usize> = ["  DestinationReady", "  DestinationNotReady"]
        .iter()
        .map(|r| one.find(r).unwrap_or_else(|| panic!("{r} in {one}")))
        .collect();
    assert!(order[0] < order[1], "{one}");
    // A steady pass changes nothing and adds no event.
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(event_reasons(&status_json(&state, "dev")).len(), 3);

    // The repository disappears from the server: the write-permission check fails, the store
    // says why and the Destination points at it (Kratix's reasons); back when it returns.
    let gone = bare.with_file_name("gone.git");
    std::fs::rename(&bare, &gone).unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_ne!(code, 0, "{out}\n{err}");
    let store = status_json(&state, "git");
    assert_eq!(
        ready(&store)["reason"],
        "ErrorValidatingPermissions",
        "{store}"
    );
    assert!(
        ready(&store)["message"]
            .as_str()
            .unwrap()
            .starts_with("Error validating state store permissions: "),
        "{store}"
    );
    let dev = status_json(&state, "dev");
    assert_eq!(ready(&dev)["reason"], "StateStoreNotReady", "{dev}");
    assert_eq!(ready(&dev)["message"], "GitStateStore/git: not ready");
    std::fs::rename(&gone, &bare).unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        event_reasons(&status_json(&state, "dev")),
        [
            "DestinationReady",
            "DestinationNotReady",
            "DestinationReady",
            "DestinationNotReady",
            "DestinationReady"
        ]
    );

    // An unknown name is exit 1.
    let (code, _, err) = promised(&[
        "status",
        "nope",
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 1, "{err}");
}

/// A running `promised run`, killed on drop.
struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn get(&self, path: &str) -> Option<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .call()
            .ok()?;
        (r.status().as_u16() == 200).then(|| r.body_mut().read_to_string().ok())?
    }

    /// The value of the series `series` (name and labels, as printed) on `/metrics`.
    fn metric(&self, series: &str) -> Option<f64> {
        let body = self.get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Waits (at most `limit`) for `ok`; panics with the daemon's log.
    fn wait_for(&self, limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; daemon log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

#[test]
fn the_daemon_ready_gauge_flips_with_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let daemon = GitDaemon::start(&srv);
    let (config, bare) = world(tmp.path(), &daemon);
    let state = tmp.path().join("state");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tmp.path().join("daemon.log");
    let child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("PROMISED_LOG", "promised=debug")
        .env("PROMISED_RETRY_BACKOFF", "1s")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let d = Daemon { child, port, log };
    let gauge = r#"promised_destination_ready{destination="dev"}"#;
    let store_gauge = r#"promised_state_store_ready{store="GitStateStore/git"}"#;
    let limit = Duration::from_secs(60);
    d.wait_for(limit, "dev ready", || d.metric(gauge) == Some(1.0));
    assert_eq!(d.metric(store_gauge), Some(1.0));
    let api: serde_json::Value =
        serde_json::from_str(&d.get("/api/v1/destinations").unwrap()).unwrap();
    assert_eq!(
        ready(&api["destinations"]["dev"])["reason"],
        "TestDocumentsWritten",
        "{api}"
    );
    assert_eq!(
        api["stateStores"]["GitStateStore/git"]["status"], "Ready",
        "{api}"
    );
    let writes_ok =
        r#"promised_state_store_writes_total{store="GitStateStore/git",result="succeeded"}"#;
    assert!(d.metric(writes_ok).unwrap_or(0.0) >= 1.0);

    // The server refuses pushes and the config changes (the watched directory triggers a
    // pass): the gauge drops, the API says why.
    refuse_pushes(&bare, true);
    dependency(&config, "2");
    d.wait_for(limit, "dev not ready", || d.metric(gauge) == Some(0.0));
    assert_eq!(d.metric(store_gauge), Some(0.0));
    let failed = r#"promised_state_store_writes_total{store="GitStateStore/git",result="failed"}"#;
    assert!(d.metric(failed).unwrap_or(0.0) >= 1.0);
    let api: serde_json::Value =
        serde_json::from_str(&d.get("/api/v1/destinations").unwrap()).unwrap();
    let r = ready(&api["destinations"]["dev"]);
    assert_eq!(r["reason"], "StateStoreWriteFailed", "{api}");
    assert!(r["message"].as_str().unwrap().contains(REFUSAL), "{api}");
    // `promised status` asks the daemon.
    let (code, out, err) = promised(&[
        "status",
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("dev ") && l.contains("StateStoreWriteFailed")),
        "{out}"
    );

    // The server recovers: the failed pass is retried on its own and the gauge is back.
    refuse_pushes(&bare, false);
    d.wait_for(limit, "dev ready again", || d.metric(gauge) == Some(1.0));
    assert_eq!(d.metric(store_gauge), Some(1.0));
}
