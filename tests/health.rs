//! Resource health (README "Health"): HealthRecords from the config repo and from a health
//! state store folded into `status.healthStatus` (worst state wins, matched on Promise,
//! namespace and name, older Promise versions ignored), events on a change of health, health
//! checks run on their cron schedule (a paused tokio clock), and health in `promised status`
//! and the daemon's `/api/v1/status`. Real pipelines in bubblewrap, real Git state stores.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bwrap_works, copy_dir, git, promised, repo_root, status_row};
use serde_json::Value;

macro_rules! need_bwrap {
    () => {
        if !bwrap_works() {
            eprintln!("skipped: no bubblewrap");
            return;
        }
    };
}

/// The quickstart (redis Promise at `kratix.io/promise-version: v0.1.0`) with its state store
/// at `<root>/store.git`.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    state: PathBuf,
    store: PathBuf,
    daemon_config: Option<PathBuf>,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let config = root.join("config");
        copy_dir(&repo_root().join("testdata/quickstart"), &config);
        let store = root.join("store.git");
        let ss = config.join("platform/state-store.yaml");
        let text = std::fs::read_to_string(&ss).unwrap().replace(
            "url: quickstart-state.git",
            &format!("url: {}", store.display()),
        );
        std::fs::write(&ss, text).unwrap();
        World {
            _tmp: tmp,
            state: root.join("state"),
            root,
            config,
            store,
            daemon_config: None,
        }
    }

    /// `promised reconcile`, asserting the exit code; returns stdout and stderr.
    fn pass(&self, want: i32) -> (String, String) {
        let mut args = vec![
            "reconcile",
            "--config",
            self.config.to_str().unwrap(),
            "--state-dir",
            self.state.to_str().unwrap(),
        ];
        if let Some(d) = &self.daemon_config {
            args.extend(["--daemon-config", d.to_str().unwrap()]);
        }
        let (code, out, err) = promised(&args);
        assert_eq!(code, want, "{out}\n{err}");
        (out, err)
    }

    fn head(&self) -> String {
        git(&self.store, &["rev-parse", "main"]).trim().to_string()
    }

    fn health(&self, key: &str) -> Value {
        status_row(&self.state, key)["status"]["healthStatus"].clone()
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.config.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A GitStateStore `health` at `<root>/health.git` in the config repo, and a daemon config
    /// naming it (directory `agents`) as the health state store.
    fn with_health_store(&mut self, extra: &str) -> PathBuf {
        let repo = self.root.join("health.git");
        git(
            &self.root,
            &["init", "-q", "--bare", "-b", "main", "health.git"],
        );
        self.write(
            "platform/health-store.yaml",
            &format!(
                "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: health\nspec:\n  url: {}\n  branch: main\n",
                repo.display()
            ),
        );
        let dc = self.root.join("promised.yaml");
        std::fs::write(
            &dc,
            format!(
                "healthStateStore:\n  kind: GitStateStore\n  name: health\n  path: agents\n{extra}"
            ),
        )
        .unwrap();
        self.daemon_config = Some(dc);
        repo
    }
}

/// A HealthRecord document.
fn record(
    name: &str,
    ns: &str,
    promise: &str,
    about: (&str, &str),
    state: &str,
    extra: &str,
) -> String {
    format!(
        "apiVersion: platform.kratix.io/v1alpha1\nkind: HealthRecord\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata:\n  promiseRef: {{name: {promise}}}\n  resourceRef: {{name: {}, namespace: {}}}\n  state: {state}\n{extra}---\n",
        about.0, about.1
    )
}

fn sources(h: &Value) -> Vec<String> {
    h["healthRecords"]
        .as_array()
        .unwrap_or_else(|| panic!("healthRecords in {h}"))
        .iter()
        .map(|r| r["source"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn last_event(w: &World, key: &str) -> Value {
    let row = status_row(&w.state, key);
    row["status"]["events"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .unwrap_or_else(|| panic!("no events in {row}"))
}

/// Two records fold into the worst state; a record from an older Promise version, one about
/// the same name in another namespace and one about a request of another Promise are not
/// applied; a change of health is an event and re-runs nothing; the status table shows it.
#[test]
fn records_fold_into_health_status_with_the_worst_state() {
    need_bwrap!();
    let w = World::new();
    w.pass(0);
    let head = w.head();
    let key = "redis/default/example";
    assert_eq!(
        status_row(&w.state, key)["status"]["promiseVersion"],
        "v0.1.0"
    );
    assert!(w.health(key).is_null(), "no records, no healthStatus");

    let records = [
        record(
            "example-a",
            "default",
            "redis",
            ("example", "default"),
            "healthy",
            "  lastRun: 1738158772\n  details: {probe: tcp}\n",
        ),
        record(
            "example-b",
            "default",
            "redis",
            ("example", "default"),
            "degraded",
            "",
        ),
        // Older than the applied v0.1.0 (kratix#945).
        record(
            "example-old",
            "default",
            "redis",
            ("example", "default"),
            "unhealthy",
            "  promiseVersion: v0.0.9\n",
        ),
        // The same version, and a newer one, count.
        record(
            "example-now",
            "default",
            "redis",
            ("example", "default"),
            "ready",
            "  promiseVersion: v0.1.0\n",
        ),
        // Same name, other namespace: not this request.
        record(
            "elsewhere",
            "other",
            "redis",
            ("example", "other"),
            "unhealthy",
            "",
        ),
        // About team-a/default, but of the redis Promise: not the namespace request team-a.
        record(
            "wrong-promise",
            "default",
            "redis",
            ("team-a", "default"),
            "unhealthy",
            "",
        ),
    ]
    .concat();
    // No resourceRef: about no request (a validation warning).
    let no_ref = "apiVersion: platform.kratix.io/v1alpha1\nkind: HealthRecord\nmetadata: {name: no-ref, namespace: default}\ndata: {promiseRef: {name: redis}, state: unhealthy}\n";
    w.write("health/records.yaml", &records);
    w.write("health/no-ref.yaml", no_ref);
    let (out, err) = w.pass(0);
    assert!(out.contains("0 pipelines run"), "{out}\n{err}");
    assert_eq!(w.head(), head, "a change of health writes nothing");

    let h = w.health(key);
    assert_eq!(h["state"], "degraded", "{h}");
    assert_eq!(
        sources(&h),
        ["example-a", "example-b", "example-now"],
        "{h}"
    );
    assert_eq!(h["healthRecords"][0]["lastRun"], 1738158772);
    assert_eq!(h["healthRecords"][0]["details"]["probe"], "tcp");
    assert_eq!(h["healthRecords"][0]["source"]["namespace"], "default");
    assert_eq!(h["promiseVersion"], "v0.1.0");
    assert_eq!(
        h["ignoredRecords"][0]["source"]["name"], "example-old",
        "{h}"
    );
    assert_eq!(h["ignoredRecords"][0]["promiseVersion"], "v0.0.9");
    let transition = h["lastTransitionTime"].as_str().unwrap().to_string();
    let e = last_event(&w, key);
    assert_eq!(
        (&e["type"], &e["reason"], &e["message"]),
        (
            &"Warning".into(),
            &"HealthRecord".into(),
            &"Health state is degraded".into()
        ),
        "{e}"
    );
    assert!(w.health("namespace/default/team-a").is_null());
    let (code, out, err) = promised(&["validate", w.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("health/no-ref.yaml") && out.contains("data.resourceRef"),
        "{out}{err}"
    );

    // `promised status` shows it.
    let (code, table, _) = promised(&[
        "status",
        "--state-dir",
        w.state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 0);
    assert!(table.lines().next().unwrap().contains("HEALTH"), "{table}");
    let row = table.lines().find(|l| l.starts_with(key)).unwrap();
    assert!(row.contains("degraded"), "{row}");

    // An unchanged pass changes nothing, not even the transition time.
    w.pass(0);
    assert_eq!(w.health(key)["lastTransitionTime"], transition.as_str());

    // Better health: a Normal event; still nothing re-runs.
    w.write(
        "health/records.yaml",
        &records.replace("degraded", "healthy"),
    );
    let (out, _) = w.pass(0);
    assert!(out.contains("0 pipelines run"), "{out}");
    assert_eq!(w.health(key)["state"], "healthy");
    let e = last_event(&w, key);
    assert_eq!(
        (&e["type"], &e["message"]),
        (&"Normal".into(), &"Health state is healthy".into())
    );

    // Every record gone: ready with none (Kratix).
    std::fs::remove_file(w.config.join("health/records.yaml")).unwrap();
    w.pass(0);
    let h = w.health(key);
    assert_eq!(h["state"], "ready", "{h}");
    assert_eq!(h["healthRecords"], serde_json::json!([]));
    assert_eq!(w.head(), head);
}

/// Pushes `files` (path, content) to the bare repository `repo` as one commit on `main`.
fn push_files(root: &Path, repo: &Path, files: &[(&str, &str)]) {
    let work = root.join("agent-work");
    if !work.exists() {
        git(root, &["clone", "-q", repo.to_str().unwrap(), "agent-work"]);
        git(&work, &["checkout", "-q", "-B", "main"]);
    }
    for (p, text) in files {
        let f = work.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, text).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "health agent"]);
    git(&work, &["push", "-q", "origin", "main"]);
}

/// HealthRecords a health agent wrote to the health state store (under its `path`) fold in
/// like the config repo's; files elsewhere in the store are not read, and a bad file is a
/// warning naming the store and the file.
#[test]
fn records_from_the_health_state_store() {
    need_bwrap!();
    let mut w = World::new();
    let repo = w.with_health_store("");
    w.pass(0);
    assert!(w.health("redis/default/example").is_null());
    push_files(
        &w.root,
        &repo,
        &[
            (
                "agents/dev/redis-example.yaml",
                &record(
                    "example-agent",
                    "default",
                    "redis",
                    ("example", "default"),
                    "unhealthy",
                    "  details: {reason: no leader}\n",
                ),
            ),
            (
                "elsewhere/redis-example.yaml",
                &record(
                    "not-read",
                    "default",
                    "redis",
                    ("example", "default"),
                    "degraded",
                    "",
                ),
            ),
            (
                "agents/dev/broken.yaml",
                "apiVersion: platform.kratix.io/v1alpha1\nkind: HealthRecord\nmetadata: {name: broken}\ndata: {state: sideways, promiseRef: {name: redis}}\n",
            ),
        ],
    );
    let (out, err) = w.pass(0);
    assert!(out.contains("0 pipelines run"), "{out}");
    let h = w.health("redis/default/example");
    assert_eq!(h["state"], "unhealthy", "{h}");
    assert_eq!(sources(&h), ["example-agent"]);
    assert_eq!(
        h["healthRecords"][0]["from"],
        "healthStateStore GitStateStore/health agents/dev/redis-example.yaml#0"
    );
    let all = format!("{out}{err}");
    assert!(
        all.contains("healthStateStore GitStateStore/health: agents/dev/broken.yaml#0: HealthRecord broken: data.state"),
        "{all}"
    );
}

/// The redis resource pipeline also outputs a HealthDefinition (schedule every 5 minutes)
/// whose workflow reports `degraded`: the first pass schedules it, nothing runs until the
/// (paused) clock reaches the schedule, then its result is the request's health, with the
/// check as the record's source, and the configure workflow does not run again.
#[tokio::test(start_paused = true)]
async fn a_scheduled_health_check_reports_into_status() {
    use promised::reconcile::Engine;

    need_bwrap!();
    let w = World::new();
    let dir = w.config.join("promises/redis/pipeline");
    let configure = dir.join("configure");
    let text = std::fs::read_to_string(&configure).unwrap();
    std::fs::write(
        &configure,
        text + r#"
cat > /kratix/output/healthcheck.yaml <<YAML
apiVersion: platform.kratix.io/v1alpha1
kind: HealthDefinition
metadata:
  name: ${KRATIX_OBJECT_NAME}-ping
  namespace: ${KRATIX_OBJECT_NAMESPACE}
spec:
  promiseRef: {name: redis}
  resourceRef: {name: ${KRATIX_OBJECT_NAME}, namespace: ${KRATIX_OBJECT_NAMESPACE}}
  schedule: "*/5 * * * *"
  promiseVersion: v0.1.0
  workflow:
    apiVersion: platform.kratix.io/v1alpha1
    kind: Pipeline
    metadata: {name: ping}
    spec:
      containers:
        - name: ping
          image: promised.dev/local
          command: ["/promise/pipeline/health-check"]
YAML
"#,
    )
    .unwrap();
    let check = dir.join("health-check");
    std::fs::write(
        &check,
        "#!/bin/sh\nset -eu\nprintf 'state: degraded\\ndetails:\\n  checked: %s\\n' \"$KRATIX_OBJECT_NAME\" > /kratix/output/health-status.yaml\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();

    let settings = common::settings(&w.state, None);
    let (cfg, root) = common::valid_config(&w.config, &w.root.join("checkouts"), &settings);
    let runner = settings.runner();
    let mut engine = Engine::new(settings, runner).unwrap();
    let key = "redis/default/example";
    let status = |e: &Engine| (*e.state().requests[key].status).clone();

    // Pipelines run on the real clock (their timeouts are tokio timers); schedules are judged
    // on the paused one, moved by hand in between.
    tokio::time::resume();
    let r = engine.reconcile(&cfg, &root).await.unwrap();
    assert!(r.pipelines_run > 0);
    // The output is marked as declaring a check, so a new process reads its files again.
    let outputs = &engine.state().requests[key].outputs;
    assert_eq!(
        outputs.iter().map(|o| o.health).collect::<Vec<_>>(),
        [Some(true)],
        "{outputs:?}"
    );
    for _ in 0..2 {
        let s = status(&engine);
        assert_eq!(s.health_checks.len(), 1, "{:?}", s.health_checks);
        let c = &s.health_checks[0];
        assert_eq!(c.name, "example-ping");
        assert_eq!(c.declared_in, "instance-configure/healthcheck.yaml");
        assert!(c.next_run_at.is_some() && c.last_run.is_none(), "{c:?}");
        assert!(s.health_status.is_none(), "not run yet");
        // A pass before the schedule runs nothing.
        let r = engine.reconcile(&cfg, &root).await.unwrap();
        assert_eq!(r.pipelines_run, 0);
    }
    let due = engine.health_due().expect("a check is scheduled");
    assert!(due <= Duration::from_secs(300), "{due:?}");
    tokio::time::pause();
    tokio::time::advance(due + Duration::from_secs(1)).await;
    tokio::time::resume();
    let head = w.head();
    let r = engine.reconcile(&cfg, &root).await.unwrap();
    assert_eq!(
        r.pipelines_run, 0,
        "the configure workflow did not run again"
    );
    assert_eq!(w.head(), head);
    let s = status(&engine);
    let c = &s.health_checks[0];
    assert_eq!(c.state.map(|s| s.as_str()), Some("degraded"), "{c:?}");
    assert!(c.last_run.is_some() && c.message.is_empty(), "{c:?}");
    let h = s.health_status.expect("healthStatus");
    assert_eq!(h.state.as_str(), "degraded");
    assert_eq!(h.health_records.len(), 1);
    let rec = &h.health_records[0];
    assert_eq!(
        (rec.source.name.as_str(), rec.source.namespace.as_str()),
        ("example-ping", "default")
    );
    assert_eq!(rec.details.as_ref().unwrap()["checked"], "example");
    assert_eq!(rec.promise_version.as_deref(), Some("v0.1.0"));
    assert_eq!(rec.from, "healthCheck instance-configure/healthcheck.yaml");
    // The next run is scheduled after this one; the status on disk has the result.
    let next = engine.health_due().unwrap();
    assert!(
        next > Duration::ZERO && next <= Duration::from_secs(300),
        "{next:?}"
    );
    drop(engine);
    assert_eq!(w.health(key)["state"], "degraded");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `promised run` polls the health state store every `pollInterval` and its
/// `/api/v1/status` shows the request's health.
#[test]
fn the_daemon_polls_the_health_state_store_and_serves_health() {
    need_bwrap!();
    let mut w = World::new();
    let repo = w.with_health_store("  pollInterval: 200ms\n");
    let port = free_port();
    let log = w.root.join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(["run", "--config", w.config.to_str().unwrap()])
        .args(["--state-dir", w.state.to_str().unwrap()])
        .args([
            "--daemon-config",
            w.daemon_config.as_ref().unwrap().to_str().unwrap(),
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("PROMISED_LOG", "promised=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let health = || -> Option<Value> {
        let mut r = agent
            .get(format!("http://127.0.0.1:{port}/api/v1/status"))
            .call()
            .ok()?;
        let rows: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
        rows.as_array()?
            .iter()
            .find(|r| r["key"] == "redis/default/example")
            .map(|r| r["status"]["healthStatus"].clone())
    };
    let wait = |what: &str, ok: &dyn Fn(&Value) -> bool| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if health().is_some_and(|h| ok(&h)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    wait("the first pass", &|h| h.is_null());
    push_files(
        &w.root,
        &repo,
        &[(
            "agents/redis-example.yaml",
            &record(
                "agent",
                "default",
                "redis",
                ("example", "default"),
                "degraded",
                "",
            ),
        )],
    );
    wait("degraded from the health state store", &|h| {
        h["state"] == "degraded"
    });
    push_files(
        &w.root,
        &repo,
        &[(
            "agents/redis-example.yaml",
            &record(
                "agent",
                "default",
                "redis",
                ("example", "default"),
                "healthy",
                "",
            ),
        )],
    );
    wait("healthy from the health state store", &|h| {
        h["state"] == "healthy"
    });
    let _ = child.kill();
    let _ = child.wait();
}
