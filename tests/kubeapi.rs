//! The pipeline API (README "Pipeline API"): a Kubernetes-style API each Pipeline run reaches
//! through its kubeconfig, with no other network. `kubectl patch --subresource=status` and
//! `kubectl get` from a pipeline (the host's kubectl), and the HTTP calls of the Kratix SDKs'
//! `PublishStatus` (testdata/kubeapi/promises/app/pipeline/sdk.py): status shows in
//! `promised status` while the pipeline still runs, `status.yaml` still replaces top-level
//! keys at the end, another request cannot be patched (403), and a run's token stops working
//! when the run ends (401); the daemon's `/api/v1/status` shows published status during a
//! pass; one engine's later pass serves the status an earlier pass recorded (the catalog's
//! kept status texts). Real `promised reconcile` / `promised run`, bubblewrap and local Git
//! state stores.
//! Skips without bubblewrap (fails with `PROMISED_REQUIRE_SANDBOX`), without
//! `/usr/bin/kubectl` (fails with `PROMISED_REQUIRE_KUBECTL=1`) and without `/usr/bin/python3`
//! with PyYAML (fails with `PROMISED_REQUIRE_PYTHON=1`).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bwrap_works, copy_dir, promised, repo_root, status_row};
use serde_json::{Value, json};

macro_rules! need_bwrap {
    () => {
        if !bwrap_works() {
            assert!(
                std::env::var_os("PROMISED_REQUIRE_SANDBOX").is_none(),
                "PROMISED_REQUIRE_SANDBOX is set but bubblewrap cannot run"
            );
            eprintln!("skipped: no bubblewrap");
            return;
        }
    };
}

/// `/usr/bin/kubectl` when present; skips the test (returns `None`) otherwise, unless
/// `PROMISED_REQUIRE_KUBECTL=1` (CI), which fails it.
fn kubectl() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/kubectl");
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("PROMISED_REQUIRE_KUBECTL").as_deref() == Ok("1") {
        panic!("PROMISED_REQUIRE_KUBECTL=1 but /usr/bin/kubectl is missing");
    }
    eprintln!("skipped: no /usr/bin/kubectl (set PROMISED_REQUIRE_KUBECTL=1 to fail instead)");
    None
}

/// testdata/kubeapi in a temporary directory: (guard, config, state).
fn world() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/kubeapi"), &config);
    let state = tmp.path().join("state");
    (tmp, config, state)
}

fn fields(state: &Path, key: &str) -> Value {
    status_row(state, key)["status"]["fields"].clone()
}

#[test]
fn kubectl_patches_status_and_reads_requests() {
    need_bwrap!();
    if kubectl().is_none() {
        return;
    }
    kubectl_case(false);
}

/// With the network on, the pipeline reaches the API on a host loopback port instead of the
/// forwarder: the same calls work.
#[test]
fn kubectl_works_with_the_network_on() {
    need_bwrap!();
    if kubectl().is_none() {
        return;
    }
    kubectl_case(true);
}

/// `promised reconcile` of testdata/kubeapi (the `kube` request runs kubectl), then what its
/// pipelines recorded.
fn kubectl_case(network: bool) {
    let (tmp, config, state) = world();
    // Without network: a server on the host's loopback that the pipeline must not reach (its
    // own network namespace has only the API's forwarder).
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let mut args = vec![
        "reconcile".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    if network {
        let dc = tmp.path().join("promised.yaml");
        std::fs::write(&dc, "allowNetwork: true\n").unwrap();
        args.extend(["--daemon-config".into(), dc.display().to_string()]);
    } else {
        let requests = config.join("requests/apps.yaml");
        let text = std::fs::read_to_string(&requests)
            .unwrap()
            .replace("mode: kubectl", &format!("mode: kubectl\n  probe: {port}"));
        std::fs::write(&requests, text).unwrap();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = promised(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let f = fields(&state, "app/default/kube");
    // Patched by kubectl (deep merge; null deleted `nested.drop`), kept at the end.
    assert_eq!(f["phase"], "x", "{f}");
    assert_eq!(f["nested"], json!({"keep": 1}), "{f}");
    // status.yaml at the end of the Pipeline replaces the top-level keys it sets.
    assert_eq!(f["fromPatch"], "replaced", "{f}");
    assert_eq!(f["viaFile"], true, "{f}");
    // The patch was visible at once inside the run, and to the next Pipeline (object.yaml
    // and the API).
    assert_eq!(f["seenPhase"], "x", "{f}");
    assert_eq!(f["secondSaw"], "x/x", "{f}");
    // kubectl get lists the Promise's requests and reads a required Promise's request.
    assert_eq!(f["listed"], "kube other", "{f}");
    assert_eq!(f["dbSize"], "small", "{f}");
    // Another request's status and the `kratix` key are refused.
    assert_eq!(f["patchOther"], "Forbidden", "{f}");
    assert_eq!(f["patchKratix"], "refused", "{f}");
    assert!(f.get("kratix").is_none(), "{f}");
    // The host's loopback stayed out of reach (curl: 7, could not connect).
    if !network {
        assert_eq!(f["hostProbe"], "7", "{f}");
    }
    drop(host);
    // The other request was not touched.
    let other = fields(&state, "app/default/other");
    assert!(other.get("phase").is_none(), "{other}");
    // The token is never logged.
    assert!(!err.contains("token"), "{err}");
}

/// `promised status --output json` rows, or `None` when it cannot be read yet.
fn try_fields(state: &Path, key: &str) -> Option<Value> {
    let (_, out, _) = promised(&[
        "status",
        "--state-dir",
        state.to_str().unwrap(),
        "--output",
        "json",
        "--listen",
        "127.0.0.1:1",
    ]);
    let rows: Value = serde_json::from_str(&out).ok()?;
    rows.as_array()?
        .iter()
        .find(|r| r["key"] == key)
        .map(|r| r["status"]["fields"].clone())
}

fn spawn_reconcile(config: &Path, state: &Path, daemon_config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_promised"))
        .args([
            "reconcile",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--daemon-config",
            daemon_config.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promised runs")
}

/// Opens the FIFO for writing without blocking: `None` until the pipeline opened it.
fn open_fifo(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .ok()
}

/// True when `/usr/bin/python3` has the modules sdk.py needs; else says the test is skipped.
fn have_python() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import yaml, ssl"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("PROMISED_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "PROMISED_REQUIRE_PYTHON=1 but /usr/bin/python3 with yaml and ssl is missing"
        );
        eprintln!(
            "skipped: no /usr/bin/python3 with yaml and ssl (set PROMISED_REQUIRE_PYTHON=1 to fail instead)"
        );
    }
    ok
}

/// The SDK request `sdk` (added to `requests/apps.yaml`; the other apps do nothing).
const SDK_REQUEST: &str = "---\napiVersion: test.promised.dev/v1alpha1\nkind: App\nmetadata:\n  name: sdk\n  namespace: default\nspec:\n  mode: sdk\n";

/// [`world`] where only the SDK request will use the API (no kubectl needed), with a
/// directory shared with its pipeline (its token, for the 401 check, and the FIFO `go` it
/// waits on) and a daemon config mounting it: (guard, config, state, daemon config, FIFO).
fn sdk_world() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf, PathBuf) {
    let (tmp, config, state) = world();
    let requests = config.join("requests/apps.yaml");
    let text = std::fs::read_to_string(&requests)
        .unwrap()
        .replace("mode: kubectl", "mode: none");
    std::fs::write(&requests, text).unwrap();
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let fifo = shared.join("go");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let dc = tmp.path().join("promised.yaml");
    std::fs::write(
        &dc,
        format!(
            "imageOverrides:\n  promised.dev/app:\n    mounts:\n      - {{host: {}, target: /shared, writable: true}}\n",
            shared.display()
        ),
    )
    .unwrap();
    (tmp, config, state, dc, fifo)
}

/// Appends the SDK request to the config repo.
fn add_sdk_request(config: &Path) {
    let requests = config.join("requests/apps.yaml");
    let text = std::fs::read_to_string(&requests).unwrap();
    std::fs::write(&requests, format!("{text}{SDK_REQUEST}")).unwrap();
}

/// Lets the waiting pipeline go on (`alive` says whether what runs it is still running).
fn release(fifo: &Path, mut alive: impl FnMut() -> bool) {
    let mut w = loop {
        if let Some(w) = open_fifo(fifo) {
            break w;
        }
        assert!(
            alive(),
            "promised ended before the pipeline opened the FIFO"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    w.write_all(b"go\n").unwrap();
}

/// The final status of the SDK request, after both Pipelines.
fn assert_sdk_final(f: &Value) {
    // Published keys stay; status.yaml replaced `stage`.
    assert_eq!(f["publishedDirectly"], true, "{f}");
    assert_eq!(f["stage"], "finished", "{f}");
    assert_eq!(f["viaFile"], true, "{f}");
    assert_eq!(f["ownPatch"], 200, "{f}");
    // Another request: 403; the first Pipeline's token in the second Pipeline: 401; the
    // second Pipeline's own token works.
    assert_eq!(f["otherPatch"], 403, "{f}");
    assert_eq!(f["staleToken"], 401, "{f}");
    assert_eq!(f["secondPatch"], 200, "{f}");
    assert_eq!(f["second"], true, "{f}");
    assert!(f.get("stale").is_none(), "{f}");
}

#[test]
fn sdk_publish_status_shows_before_the_pipeline_ends() {
    need_bwrap!();
    if !have_python() {
        return;
    }
    let (_tmp, config, state, dc, fifo) = sdk_world();
    add_sdk_request(&config);
    let mut child = spawn_reconcile(&config, &state, &dc);
    // The first Pipeline published `stage: started` and now waits on the FIFO: the status
    // shows it while the pipeline runs.
    let deadline = Instant::now() + Duration::from_secs(300);
    let live = loop {
        if let Some(f) = try_fields(&state, "app/default/sdk")
            && f["stage"] == "started"
        {
            break f;
        }
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "reconcile ended ({st}) before the status was published:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no published status in promised status"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(live["publishedDirectly"], true, "{live}");
    assert!(live.get("viaFile").is_none(), "{live}");
    // Let the pipeline finish.
    release(&fifo, || child.try_wait().unwrap().is_none());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_sdk_final(&fields(&state, "app/default/sdk"));
    let other = fields(&state, "app/default/other");
    assert!(other.get("stage").is_none(), "{other}");
}

fn daemon_fields(port: u16, key: &str) -> Option<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut r = agent
        .get(format!("http://127.0.0.1:{port}/api/v1/status"))
        .call()
        .ok()?;
    let rows: Value = serde_json::from_slice(&r.body_mut().read_to_vec().ok()?).ok()?;
    rows.as_array()?
        .iter()
        .find(|r| r["key"] == key)
        .map(|r| r["status"]["fields"].clone())
}

/// The daemon's `/api/v1/status` (rows of its last pass) shows status a pipeline of the
/// running pass publishes.
#[test]
fn the_daemon_serves_published_status_during_a_pass() {
    need_bwrap!();
    if !have_python() {
        return;
    }
    let (tmp, config, state, dc, fifo) = sdk_world();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_promised"))
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "--daemon-config",
                dc.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("daemon.log")).unwrap())
            .spawn()
            .expect("promised run starts"),
    );
    let child = &mut daemon.0;
    let log = || std::fs::read_to_string(tmp.path().join("daemon.log")).unwrap_or_default();
    let wait = |what: &str, ok: &mut dyn FnMut() -> bool, child: &mut Child| {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !ok() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the daemon exited:\n{}",
                log()
            );
            assert!(Instant::now() < deadline, "no {what}:\n{}", log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The first pass ends (its rows are served); then the SDK request arrives and its
    // pipeline publishes while the second pass runs.
    wait(
        "first pass",
        &mut || daemon_fields(port, "app/default/other").is_some(),
        child,
    );
    add_sdk_request(&config);
    wait(
        "published status in /api/v1/status",
        &mut || daemon_fields(port, "app/default/sdk").is_some_and(|f| f["stage"] == "started"),
        child,
    );
    let live = daemon_fields(port, "app/default/sdk").unwrap();
    assert_eq!(live["publishedDirectly"], true, "{live}");
    release(&fifo, || true);
    // `staleToken` comes only with the second Pipeline's status.yaml, at the end of the
    // workflow (`stage: finished` already shows while the second Pipeline runs).
    wait(
        "the end of the workflow",
        &mut || {
            daemon_fields(port, "app/default/sdk").is_some_and(|f| f.get("staleToken").is_some())
        },
        child,
    );
    assert_sdk_final(&daemon_fields(port, "app/default/sdk").unwrap());
}

/// Kills the daemon when the test ends, also on a failed assertion.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One engine, several passes (as in the daemon): the engine keeps the status texts of the
/// pipeline API's catalog between passes and rebuilds only those of requests a pass changed.
/// A reader that runs in a later pass sees the status the writer's own last run recorded, not
/// the text an earlier catalog held (made before that run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_pass_serves_the_status_an_earlier_pass_recorded() {
    use promised::config::{self, Source};
    use promised::reconcile::Engine;
    use promised::settings::Settings;

    need_bwrap!();
    if kubectl().is_none() {
        return;
    }
    let (tmp, config, state) = world();
    let requests = |value: &str, rev: u32| {
        let doc = |name: &str, spec: &str| {
            format!(
                "---\napiVersion: test.promised.dev/v1alpha1\nkind: App\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{spec}"
            )
        };
        let text = doc("writer", &format!("  mode: writer\n  value: {value}\n"))
            + &doc("reader", &format!("  mode: reader\n  rev: {rev}\n"));
        std::fs::write(config.join("requests/cache.yaml"), text).unwrap();
    };
    let settings = Settings::load(
        None,
        // With the network on, the pipeline reaches the API on a host loopback port: the
        // forwarder inside the sandbox is the `promised` binary, and this process is a test.
        json!({"stateDir": state, "allowNetwork": true})
            .as_object()
            .unwrap()
            .clone(),
    )
    .unwrap();
    let runner = settings.runner();
    let mut engine = Engine::new(settings, runner).unwrap();
    let mut pass = async |what: &str| {
        let (objects, root) = config::load_with_root(
            &Source::Dir(config.clone()),
            &Default::default(),
            None,
            &tmp.path().join("checkouts"),
            &Default::default(),
        )
        .unwrap();
        let cfg = promised::validate::validate(objects);
        let report = engine.reconcile(&cfg, &root).await.unwrap();
        assert!(report.pipelines_run > 0, "{what}: {report:#?}");
    };
    requests("one", 1);
    pass("both run").await;
    requests("two", 1);
    pass("the writer runs, the reader is steady").await;
    requests("two", 2);
    pass("the reader runs, the writer is steady").await;
    drop(engine);
    assert_eq!(fields(&state, "app/default/writer")["value"], "two");
    assert_eq!(fields(&state, "app/default/reader")["seen"], "two");
}
