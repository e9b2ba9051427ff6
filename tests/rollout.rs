//! Staged rollouts (README "Rolling out a Promise change"): an UpgradePlan with a `canary`
//! group (one request) and a `rest` group (`maxConcurrent: 25%`) over 8 requests. The canary
//! moves first; `rest` waits for the canary's health gate; a request turned unhealthy (a
//! HealthRecord committed to the config repo) pauses the rollout with the other requests
//! still at v1; a commit setting `paused: false` resumes it; `promised rollout pause|resume`
//! work the same way; every pass is a new process on the same state directory (a daemon
//! killed between passes), and no finished request runs again. Real pipelines in bubblewrap
//! (their script writes the Promise version into its output), a real Git state store.

mod common;

use std::path::PathBuf;

use common::{bwrap_works, git, promised, status_row};
use serde_json::Value;

struct World {
    _tmp: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    store: PathBuf,
    root: PathBuf,
    daemon_config: PathBuf,
    /// Every `ran` line of every pass report so far.
    runs: Vec<String>,
}

const N: usize = 8;

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        git(&root, &["init", "-q", "--bare", "-b", "main", "store.git"]);
        let w = World {
            config: root.join("config"),
            state: root.join("state"),
            store: root.join("store.git"),
            daemon_config: root.join("promised.yaml"),
            root,
            runs: Vec::new(),
            _tmp: tmp,
        };
        // The configure pipeline runs the image `promised.dev/render`: a script outside the
        // Promise that writes the Promise version into its output and logs every run.
        let bin = w.root.join("render-bin");
        let runs = w.root.join("runs");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&runs).unwrap();
        let script = bin.join("run");
        std::fs::write(
            &script,
            "#!/bin/sh\nset -eu\nprintf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: %s}\\ndata: {version: %s}\\n' \"$KRATIX_OBJECT_NAME\" \"$APP_VERSION\" > /kratix/output/app.yaml\necho \"$KRATIX_OBJECT_NAME $APP_VERSION\" >> /tmp/runs/log\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            &w.daemon_config,
            format!(
                "imageOverrides:\n  promised.dev/render:\n    command: [/opt/render/run]\n    mounts:\n      - {{host: \"{}\", target: /opt/render}}\n      - {{host: \"{}\", target: /tmp/runs, writable: true}}\n",
                bin.display(),
                runs.display()
            ),
        )
        .unwrap();
        w.write(
            "platform/platform.yaml",
            &format!(
                "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata: {{name: local}}\nspec: {{url: {}, branch: main}}\n---\n\
                 apiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata: {{name: dev, labels: {{environment: dev}}}}\n\
                 spec: {{path: clusters/dev, stateStoreRef: {{kind: GitStateStore, name: local}}}}\n",
                w.store.display()
            ),
        );
        for i in 1..=N {
            let labels = if i == 1 {
                "{tier: canary}"
            } else {
                "{tier: main}"
            };
            w.write(
                &format!("requests/r{i}.yaml"),
                &format!(
                    "apiVersion: test.promised.dev/v1alpha1\nkind: app\nmetadata: {{name: r{i}, namespace: default, labels: {labels}}}\nspec: {{}}\n"
                ),
            );
        }
        w
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.config.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The `app` Promise at `version`: its pipeline writes the version into a ConfigMap.
    fn promise(&self, version: &str) {
        self.write(
            "promises/app/promise.yaml",
            &format!(
                r#"apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata:
  name: app
  labels: {{kratix.io/promise-version: {version}}}
spec:
  destinationSelectors: [{{matchLabels: {{environment: dev}}}}]
  api:
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {{name: apps.test.promised.dev}}
    spec:
      group: test.promised.dev
      names: {{kind: app, plural: apps, singular: app}}
      scope: Namespaced
      versions:
        - name: v1alpha1
          served: true
          storage: true
          schema:
            openAPIV3Schema: {{type: object, properties: {{spec: {{type: object}}}}}}
  workflows:
    resource:
      configure:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata: {{name: render}}
          spec:
            containers:
              - name: render
                image: promised.dev/render
                env: [{{name: APP_VERSION, value: {version}}}]
"#
            ),
        );
    }

    /// How many times request `name` ran at `version` (the pipeline's run log).
    fn ran(&self, name: &str, version: &str) -> usize {
        let log = std::fs::read_to_string(self.root.join("runs/log")).unwrap_or_default();
        log.lines()
            .filter(|l| *l == format!("{name} {version}"))
            .count()
    }

    /// The plan: `canary` (the request labelled `tier: canary`), then `rest` at 25%, behind
    /// a health gate with no soak; `extra` is added to its spec.
    fn plan(&self, extra: &str) {
        self.write(
            "rollouts/app-v2.yaml",
            &format!(
                r#"apiVersion: platform.kratix.io/v1alpha1
kind: UpgradePlan
metadata: {{name: app-v2}}
spec:
  promiseRef: {{name: app}}
  upgradePath: {{from: [v1], to: v2}}
  healthGate: {{state: healthy, soak: 0s, timeout: 1h}}
  rolloutGroups:
    - name: canary
      selectors: {{matchLabels: {{tier: canary}}}}
      maxConcurrent: 1
    - name: rest
      selectors: {{matchAll: true}}
      maxConcurrent: "25%"
{extra}"#
            ),
        );
    }

    fn health(&self, request: &str, state: &str) {
        self.write(
            &format!("health/{request}.yaml"),
            &format!(
                "apiVersion: platform.kratix.io/v1alpha1\nkind: HealthRecord\nmetadata: {{name: {request}-health, namespace: default}}\n\
                 data: {{promiseRef: {{name: app}}, resourceRef: {{name: {request}, namespace: default}}, state: {state}, details: {{probe: http}}}}\n"
            ),
        );
    }

    /// One `promised reconcile` (a new process on the same state directory); returns the
    /// requests that ran.
    fn pass(&mut self) -> Vec<String> {
        let (code, out, err) = promised(&[
            "reconcile",
            "--config",
            self.config.to_str().unwrap(),
            "--state-dir",
            self.state.to_str().unwrap(),
            "--daemon-config",
            self.daemon_config.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}\n{err}");
        let ran: Vec<String> = out
            .lines()
            .filter(|l| l.contains(" ran "))
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("app/default/")))
            .map(|k| k.trim_start_matches("app/default/").to_string())
            .collect();
        self.runs.extend(ran.iter().cloned());
        ran
    }

    /// The version in request `name`'s output.
    fn version(&self, name: &str) -> String {
        let files = git(&self.store, &["ls-tree", "-r", "--name-only", "main"]);
        let path = files
            .lines()
            .find(|p| p.contains(&format!("/app/{name}/")) && p.ends_with("app.yaml"))
            .unwrap_or_else(|| panic!("no output of {name} in {files}"));
        let text = git(&self.store, &["show", &format!("main:{path}")]);
        text.lines()
            .find_map(|l| l.trim().strip_prefix("data: {version: "))
            .unwrap()
            .trim_end_matches('}')
            .to_string()
    }

    fn versions(&self) -> Vec<String> {
        (1..=N).map(|i| self.version(&format!("r{i}"))).collect()
    }

    /// The rollout as `promised status app-v2 --output json` shows it.
    fn rollout(&self) -> Value {
        let (code, out, err) = promised(&[
            "status",
            "app-v2",
            "--state-dir",
            self.state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:1",
            "--output",
            "json",
        ]);
        assert_eq!(code, 0, "{out}\n{err}");
        serde_json::from_str(&out).unwrap()
    }

    fn operator(&self, action: &str) {
        let (code, out, err) = promised(&[
            "rollout",
            action,
            "app-v2",
            "--state-dir",
            self.state.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}\n{err}");
    }
}

fn at(n: usize, v: &str) -> Vec<String> {
    vec![v.to_string(); n]
}

#[test]
fn canary_then_rest_pauses_on_bad_health_resumes_and_never_reruns() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let mut w = World::new();
    w.promise("v1");
    assert_eq!(w.pass().len(), N);
    assert_eq!(w.versions(), at(N, "v1"));

    // v2 with its plan: only the canary moves.
    w.promise("v2");
    w.plan("");
    assert_eq!(w.pass(), ["r1"]);
    assert_eq!(w.versions()[0], "v2");
    assert_eq!(w.versions()[1..], at(N - 1, "v1"));
    let r = w.rollout();
    assert_eq!(r["state"], "InProgress", "{r}");
    assert_eq!(r["totalResources"], N);
    assert_eq!(r["groups"][0]["name"], "canary");
    assert_eq!(r["groups"][0]["inProgress"], 1, "{r}");
    assert_eq!(r["groups"][1]["pending"], N - 1, "{r}");
    // The step is in the state store's commit.
    let msg = git(&w.store, &["log", "-1", "--format=%B", "main"]);
    assert!(
        msg.contains("Promised-Rollout: app-v2 promise=app to=v2 group=canary request=app/default/r1 completed=0/8"),
        "{msg}"
    );
    let events = status_row(&w.state, "app/default/r1")["status"]["events"].to_string();
    assert!(
        events.contains("RolloutAdmitted")
            && events.contains("UpgradePlan app-v2, group canary: moving to version v2"),
        "{events}"
    );
    // A pinned-like request did not even run, so its status still says v1.
    assert_eq!(
        status_row(&w.state, "app/default/r2")["status"]["promiseVersion"],
        "v1"
    );

    // The canary is at v2 and healthy (no HealthRecords: ready): its group completes and
    // `rest` admits one request at a time (25% of 7, at least one), in key order.
    assert_eq!(w.pass(), ["r2"]);
    let msg = git(&w.store, &["log", "-1", "--format=%B", "main"]);
    assert!(
        msg.contains(
            "Promised-Rollout: app-v2 GroupCompleted: group \"canary\": 1 resources at v2"
        ) && msg.contains("group=rest request=app/default/r2 completed=1/8"),
        "{msg}"
    );
    let r = w.rollout();
    assert_eq!(r["groups"][0]["state"], "Completed", "{r}");
    let events = r["events"].to_string();
    assert!(
        events.contains(r#"Group \"canary\": 1/1 resources upgraded to v2"#),
        "{events}"
    );
    assert_eq!(r["completedResources"], 1, "{r}");

    // r2 turns unhealthy (a HealthRecord in the config repo, folded at the end of the pass):
    // the pass after that pauses the rollout, naming r2, with the rest still at v1.
    w.health("r2", "unhealthy");
    let moved = w.pass();
    assert!(moved.len() <= 1, "{moved:?}");
    assert!(w.pass().is_empty());
    let r = w.rollout();
    assert_eq!(r["state"], "Paused", "{r}");
    assert_eq!(r["paused"]["request"], "app/default/r2", "{r}");
    assert_eq!(r["paused"]["by"], "Health", "{r}");
    let reason = r["paused"]["reason"].as_str().unwrap();
    assert!(reason.contains("app/default/r2 is unhealthy"), "{reason}");
    let at_v1 = w.versions().iter().filter(|v| *v == "v1").count();
    assert_eq!(at_v1, N - 2 - moved.len(), "{:?}", w.versions());
    // Paused: more passes move nothing.
    assert!(w.pass().is_empty());

    // A commit setting `paused: false` resumes (r2 is acknowledged): the next one moves.
    w.plan("  paused: false\n");
    let next = w.pass();
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(w.rollout()["state"], "InProgress");

    // An operator pause holds it; resume continues.
    w.operator("pause");
    assert!(w.pass().is_empty());
    let r = w.rollout();
    assert_eq!(r["state"], "Paused", "{r}");
    assert_eq!(r["paused"]["by"], "Operator", "{r}");
    w.operator("resume");
    assert_eq!(w.pass().len(), 1);

    // Every later pass is a new process on the same state directory: the rollout goes on
    // where it was and completes.
    for _ in 0..N {
        if w.rollout()["state"] == "Completed" {
            break;
        }
        w.pass();
    }
    let r = w.rollout();
    assert_eq!(r["state"], "Completed", "{r}");
    assert_eq!(r["completedResources"], N, "{r}");
    assert_eq!(w.versions(), at(N, "v2"));
    // Each request ran exactly twice: once at v1, once at v2 (nothing finished ran again).
    for i in 1..=N {
        let name = format!("r{i}");
        let n = w.runs.iter().filter(|r| **r == name).count();
        assert_eq!(n, 2, "{name} ran {n} times: {:?}", w.runs);
        assert_eq!((w.ran(&name, "v1"), w.ran(&name, "v2")), (1, 1), "{name}");
    }
    assert!(w.pass().is_empty());
    // Nothing left to resume.
    let (code, _, err) = promised(&[
        "rollout",
        "resume",
        "app-v2",
        "--state-dir",
        w.state.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rollout app-v2 is Completed"), "{err}");

    // `promised status` lists the rollout.
    let (_, table, _) = promised(&[
        "status",
        "--state-dir",
        w.state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    let line = table
        .lines()
        .find(|l| l.starts_with("app-v2 "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("Completed") && line.contains("8/8"),
        "{table}"
    );
}

/// A running `promised run` (killed with SIGKILL on drop).
struct Daemon {
    child: std::process::Child,
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
    fn start(w: &World, n: usize) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = w.root.join(format!("daemon-{n}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
            .args(["run", "--config", w.config.to_str().unwrap()])
            .args(["--state-dir", w.state.to_str().unwrap()])
            .args(["--daemon-config", w.daemon_config.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, port, log }
    }

    fn get(&self, path: &str) -> Option<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(5)))
            .build()
            .into();
        let mut r = agent
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .call()
            .ok()?;
        r.body_mut().read_to_string().ok()
    }

    /// The rollout `app-v2` from `/api/v1/rollouts`.
    fn rollout(&self) -> Option<Value> {
        let all: Value = serde_json::from_str(&self.get("/api/v1/rollouts")?).ok()?;
        Some(all["plans"]["app-v2"].clone()).filter(|v| !v.is_null())
    }

    /// Waits (up to two minutes) until the rollout satisfies `ok`.
    fn wait(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_secs(120) {
            if let Some(r) = self.rollout()
                && ok(&r)
            {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; rollout {:?}; daemon log:\n{}",
            self.rollout(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

#[test]
fn a_daemon_killed_mid_rollout_continues_where_it_was() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let mut w = World::new();
    w.promise("v1");
    assert_eq!(w.pass().len(), N);
    // r2 and r3 form a second group; `rest` may not start (a deny window that is always
    // open), so the rollout stops in the middle, deterministically.
    for i in [2, 3] {
        w.write(
            &format!("requests/r{i}.yaml"),
            &format!(
                "apiVersion: test.promised.dev/v1alpha1\nkind: app\nmetadata: {{name: r{i}, namespace: default, labels: {{tier: early}}}}\nspec: {{}}\n"
            ),
        );
    }
    assert!(w.pass().is_empty());
    let plan = |rest_window: &str| {
        w.write(
            "rollouts/app-v2.yaml",
            &format!(
                "apiVersion: platform.syntasso.io/v1alpha1\nkind: UpgradePlan\nmetadata: {{name: app-v2}}\n\
                 spec:\n  promiseRef: {{name: app}}\n  upgradePath: {{from: v1, to: v2}}\n  healthGate: {{soak: 0s}}\n\
                 \x20 rolloutGroups:\n\
                 \x20   - {{name: canary, selectors: {{matchLabels: {{tier: canary}}}}}}\n\
                 \x20   - {{name: early, selectors: {{matchExpressions: [{{key: tier, operator: In, values: [early]}}]}}, maxConcurrent: 1}}\n\
                 \x20   - name: rest\n      selectors: {{matchAll: true}}\n      maxConcurrent: 2\n{rest_window}"
            ),
        );
    };
    plan("      resourceUpgradeWindows: [{kind: deny, schedule: \"* * * * *\", duration: 1h}]\n");
    w.promise("v2");
    let d = Daemon::start(&w, 1);
    let r = d.wait("the rest group's window", |r| {
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("waits for its upgrade window"))
    });
    assert_eq!(r["state"], "InProgress", "{r}");
    assert_eq!(r["completedResources"], 3, "{r}");
    let metrics = d.get("/metrics").unwrap();
    assert!(
        metrics.contains(
            r#"promised_rollout_resources{plan="app-v2",promise="app",status="completed"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"promised_rollout_state{plan="app-v2",promise="app",state="InProgress"} 1"#
        ),
        "{metrics}"
    );
    // Killed (SIGKILL) mid-rollout.
    drop(d);
    assert_eq!(
        w.versions(),
        ["v2", "v2", "v2", "v1", "v1", "v1", "v1", "v1"]
    );

    // The window opens (a commit), a new daemon continues where the last one was.
    plan("");
    let d = Daemon::start(&w, 2);
    let r = d.wait("the rollout to complete", |r| r["state"] == "Completed");
    assert_eq!(r["completedResources"], N, "{r}");
    let rest = &r["groups"][2];
    assert_eq!(
        (rest["name"].as_str(), rest["succeeded"].as_u64()),
        (Some("rest"), Some(5))
    );
    drop(d);
    assert_eq!(w.versions(), at(N, "v2"));
    for i in 1..=N {
        let name = format!("r{i}");
        assert_eq!((w.ran(&name, "v1"), w.ran(&name, "v2")), (1, 1), "{name}");
    }
}

#[test]
fn a_plan_with_a_bad_field_holds_every_request_and_says_which_field() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let mut w = World::new();
    w.promise("v1");
    assert_eq!(w.pass().len(), N);
    w.promise("v2");
    w.write(
        "rollouts/app-v2.yaml",
        "apiVersion: platform.kratix.io/v1alpha1\nkind: UpgradePlan\nmetadata: {name: app-v2}\n\
         spec:\n  promiseRef: {name: app}\n  upgradePath: {from: v1, to: v2}\n\
         \x20 upgradeExecutionPolicy: {repeatSchedule: \"0 23 * * 6\"}\n\
         \x20 rolloutGroups: [{name: all, selectors: {matchAll: true}, maxConcurrent: \"0%\"}]\n",
    );
    let (code, out, err) = promised(&["validate", w.config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("rollouts/app-v2.yaml")
            && text.contains("spec.rolloutGroups[0].maxConcurrent"),
        "{text}"
    );
    // SKE's schedule is not supported: a warning says so.
    assert!(text.contains("spec.upgradeExecutionPolicy"), "{text}");
    let (code, out, err) = promised(&[
        "reconcile",
        "--config",
        w.config.to_str().unwrap(),
        "--state-dir",
        w.state.to_str().unwrap(),
        "--daemon-config",
        w.daemon_config.to_str().unwrap(),
    ]);
    assert!(
        !out.lines()
            .any(|l| l.contains("app/default/") && l.contains(" ran ")),
        "{out}\n{err}"
    );
    assert_ne!(code, 0, "{out}\n{err}");
    assert_eq!(w.versions(), at(N, "v1"));
    let r = w.rollout();
    assert_eq!(r["state"], "Invalid", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("maxConcurrent"),
        "{r}"
    );

    // Fixed: the rollout starts (all at once: no maxConcurrent).
    w.write(
        "rollouts/app-v2.yaml",
        "apiVersion: platform.kratix.io/v1alpha1\nkind: UpgradePlan\nmetadata: {name: app-v2}\n\
         spec:\n  promiseRef: {name: app}\n  upgradePath: {from: v1, to: v2}\n\
         \x20 rolloutGroups: [{name: all, selectors: {matchAll: true}}]\n",
    );
    assert_eq!(w.pass().len(), N);
    assert_eq!(w.versions(), at(N, "v2"));
}
