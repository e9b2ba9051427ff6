//! The core-path benchmark (results and how to read them: `docs/benchmarks.md`).
//!
//! Run: `cargo bench --bench core` (release build of the `promised` binary and this harness).
//! Environment, all optional:
//!
//! | variable | default | what |
//! |---|---|---|
//! | `BENCH_SIZES` | `100,1000,10000` | request counts |
//! | `BENCH_RUNS` | `3` | cold and no-op runs per size (and store pushes per size) |
//! | `BENCH_CHANGES` | `20` | one-request changes sent through the daemon per size |
//! | `BENCH_CONTAINERS` | `100` | samples per side of the per-container cost |
//! | `BENCH_OUT` | `target/bench-core.md` | where the results table is written |
//! | `BENCH_GENERATE` | unset | only write the config repo of the first size to this directory |
//!
//! For each size N it generates a config repo of N resource requests over 3 Promises
//! (`alpha`, `beta`, `gamma`, one resource `configure` Pipeline each: a `sh` script kept beside
//! `promise.yaml` that writes one ConfigMap) and 3 Destinations on one `GitStateStore`, served
//! with the config repo by `git daemon` on 127.0.0.1, and measures:
//!
//! 1. **cold**: `promised reconcile` with an empty state directory and an empty state store,
//!    process start to exit (the commit is pushed before it exits);
//! 2. **no-op**: `promised reconcile` again (nothing changed): the whole process, and the
//!    daemon's no-op pass (webhook without a new config commit, until the pass is counted in
//!    `/metrics`); processes spawned by a no-op `promised reconcile` are counted with
//!    `strace -f` when strace is installed;
//! 3. **one change**: through `promised run`: one request edited, committed and pushed to the
//!    config remote, then a signed `POST /hooks/git`; timed from the webhook call to the new
//!    state store commit appearing on the remote (p50, p99);
//! 4. **store**: `StateStore::apply` of an N-file tree to a fresh remote against `git
//!    fast-import` + `git push` of the same tree, interleaved;
//! 5. **container**: one sandboxed container through the process runtime (`run_workflow`:
//!    directories, `object.yaml`, bwrap, output and metadata collection) against `bwrap` alone
//!    with the same mounts (`sh -c true`), and against a bare `sh -c true` spawn;
//! 6. **RSS**: the daemon's peak resident set (`VmHWM`) after its cold pass and the changes.

#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{GitDaemon, git};
use hmac::{KeyInit, Mac};
use promised::model::Pipeline;
use promised::pipeline::sandbox::{HostLayout, SandboxSpec, bwrap_args};
use promised::pipeline::{Action, ObjectIdentity, WorkflowInput, WorkflowType, run_workflow};
use statestores::git::{GitOptions, GitStateStoreSpec};
use statestores::{
    ChangeSet, CommitMeta, FileWrite, GitStateStore, Owner, PlacementWrite, StateStore,
};

const PROMISES: [&str; 3] = ["alpha", "beta", "gamma"];
const SECRET: &str = "bench-webhook-secret";

struct Params {
    sizes: Vec<usize>,
    runs: usize,
    changes: usize,
    containers: usize,
    out: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

impl Params {
    fn from_env() -> Params {
        let sizes = std::env::var("BENCH_SIZES")
            .unwrap_or_else(|_| "100,1000,10000".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        Params {
            sizes,
            runs: env_or("BENCH_RUNS", 3usize).max(1),
            changes: env_or("BENCH_CHANGES", 20usize).max(1),
            containers: env_or("BENCH_CONTAINERS", 100usize).max(5),
            out: std::env::var_os("BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| common::repo_root().join("target/bench-core.md")),
        }
    }
}

/// Seconds of a sample set: median, min, max, and nearest-rank percentiles.
#[derive(Clone, Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64());
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn pct(&self, p: f64) -> f64 {
        let v = self.sorted();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }
    fn median(&self) -> f64 {
        self.pct(50.0)
    }
    fn min(&self) -> f64 {
        self.sorted()[0]
    }
    fn max(&self) -> f64 {
        *self.sorted().last().expect("samples")
    }
    /// `median (min–max)` in the given unit.
    fn show(&self, unit: Unit) -> String {
        format!(
            "{} ({}–{})",
            unit.fmt(self.median()),
            unit.fmt(self.min()),
            unit.fmt(self.max())
        )
    }
}

#[derive(Clone, Copy)]
enum Unit {
    S,
    Ms,
}

impl Unit {
    fn fmt(self, secs: f64) -> String {
        match self {
            Unit::S => format!("{secs:.2} s"),
            Unit::Ms => format!("{:.1} ms", secs * 1000.0),
        }
    }
}

/// One row of the results table.
struct Row {
    measure: String,
    size: String,
    result: String,
    target: String,
    verdict: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, measure: &str, size: &str, result: String, target: &str, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "reported",
        };
        println!("{measure} [{size}]: {result} (target {target}: {verdict})");
        self.rows.push(Row {
            measure: measure.into(),
            size: size.into(),
            result,
            target: target.into(),
            verdict: verdict.into(),
        });
    }
    fn note(&mut self, s: String) {
        println!("note: {s}");
        self.notes.push(s);
    }
}

fn main() {
    let p = Params::from_env();
    // `BENCH_GENERATE=DIR`: only write the config repo for the first size (state store
    // `file://DIR-state.git`), for profiling by hand.
    if let Some(dir) = std::env::var_os("BENCH_GENERATE").map(PathBuf::from) {
        let n = p.sizes.first().copied().unwrap_or(1000);
        let state = format!("file://{}-state.git", dir.display());
        write_config(&dir, n, &state);
        println!(
            "wrote {n} requests to {}; state store {state}",
            dir.display()
        );
        return;
    }
    let mut report = Report::default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(common::repo_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(common::repo_root())
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    println!(
        "promised core benchmark: {cores} cores, commit {commit}{}",
        if dirty {
            " (+ uncommitted changes)"
        } else {
            ""
        }
    );

    container_cost(&p, &mut report);
    for &n in &p.sizes {
        store_push(n, &p, &mut report);
        core_path(n, &p, &mut report);
    }

    let mut md = String::new();
    md.push_str(&format!(
        "Machine: {cores} cores; commit `{commit}`{}; {} runs per cold/no-op/store measure, {} changes, {} container samples per side.\n\n",
        if dirty { " with uncommitted changes" } else { "" },
        p.runs,
        p.changes,
        p.containers
    ));
    md.push_str(
        "| measure | N | result: median (min–max) | target | verdict |\n|---|---|---|---|---|\n",
    );
    for r in &report.rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.measure, r.size, r.result, r.target, r.verdict
        ));
    }
    if !report.notes.is_empty() {
        md.push('\n');
        for n in &report.notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    if let Some(dir) = p.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&p.out, &md).expect("write results");
    println!("\n{md}\nwritten to {}", p.out.display());
}

// ---------------------------------------------------------------------------------------------
// The synthetic config repo.

fn promise_yaml(name: &str) -> String {
    format!(
        r#"apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata:
  name: {name}
spec:
  api:
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: {name}s.bench.promised.dev
    spec:
      group: bench.promised.dev
      names:
        kind: {name}
        plural: {name}s
        singular: {name}
      scope: Namespaced
      versions:
        - name: v1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties:
                    size:
                      type: string
                      enum: [small, large]
                      default: small
                    replicas:
                      type: integer
                      default: 1
  workflows:
    resource:
      configure:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata:
            name: instance-configure
          spec:
            containers:
              - name: render
                image: promised.dev/local
                command: ["/promise/configure"]
"#
    )
}

/// Shell builtins only: one `sh` process per container.
const PIPELINE_SCRIPT: &str = r#"#!/bin/sh
size=small
while IFS= read -r line; do
  case "$line" in "  size: "*) size=${line#  size: } ;; esac
done < /kratix/input/object.yaml
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  promise: %s\n  size: %s\n' \
  "$KRATIX_OBJECT_NAME" "$KRATIX_OBJECT_NAMESPACE" "$KRATIX_PROMISE_NAME" "$size" > /kratix/output/configmap.yaml
printf 'message: %s is %s\n' "$KRATIX_OBJECT_NAME" "$size" > /kratix/metadata/status.yaml
"#;

fn request_path(i: usize) -> String {
    let p = PROMISES[i % 3];
    format!("requests/{p}/r-{i:05}.yaml")
}

fn request_yaml(i: usize, size: &str) -> String {
    let p = PROMISES[i % 3];
    format!(
        "apiVersion: bench.promised.dev/v1\nkind: {p}\nmetadata:\n  name: r-{i:05}\n  namespace: default\nspec:\n  size: {size}\n"
    )
}

fn write_config(dir: &Path, n: usize, state_url: &str) {
    let w = |rel: &str, text: &str| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    };
    w(
        "platform/state-store.yaml",
        &format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: bench\nspec:\n  url: {state_url}\n  branch: main\n"
        ),
    );
    let mut dests = String::new();
    for d in 1..=3 {
        dests.push_str(&format!(
            "---\napiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: worker-{d}\n  labels:\n    zone: z{d}\nspec:\n  path: worker-{d}\n  stateStoreRef:\n    kind: GitStateStore\n    name: bench\n"
        ));
    }
    w("platform/destinations.yaml", &dests);
    for p in PROMISES {
        w(&format!("promises/{p}/promise.yaml"), &promise_yaml(p));
        let script = dir.join(format!("promises/{p}/configure"));
        std::fs::write(&script, PIPELINE_SCRIPT).expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for i in 0..n {
        w(&request_path(i), &request_yaml(i, "small"));
    }
}

fn commit_and_push(work: &Path, url: &str, msg: &str) {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", msg]);
    git(work, &["push", "-q", url, "HEAD:main"]);
}

/// The state store branch head read straight from the served bare repository (no process).
fn remote_head(bare: &Path) -> Option<String> {
    if let Ok(s) = std::fs::read_to_string(bare.join("refs/heads/main")) {
        return Some(s.trim().to_string());
    }
    let packed = std::fs::read_to_string(bare.join("packed-refs")).ok()?;
    packed
        .lines()
        .find(|l| l.ends_with(" refs/heads/main"))
        .map(|l| l[..40].to_string())
}

fn reset_bare(d: &GitDaemon, name: &str) -> PathBuf {
    let path = d.base.join(name);
    let _ = std::fs::remove_dir_all(&path);
    d.bare_repo(name);
    path
}

/// `promised <args>`; panics with its output on a non-zero exit. Returns (wall time, stdout).
fn promised(args: &[&str]) -> (Duration, String) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(args)
        .output()
        .expect("promised runs");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "promised {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (took, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pipelines_run(stdout: &str) -> usize {
    stdout
        .lines()
        .find_map(|l| {
            l.split_once(" pipelines run")
                .map(|(n, _)| n.trim().parse().ok())
        })
        .flatten()
        .unwrap_or_else(|| panic!("no 'pipelines run' line in:\n{stdout}"))
}

// ---------------------------------------------------------------------------------------------
// Measures 1, 2, 3 and 6.

fn core_path(n: usize, p: &Params, report: &mut Report) {
    let size = format!("{n}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir");
    let d = GitDaemon::start(&srv);
    let config_url = d.bare_repo("config.git");
    let state_url = format!("git://127.0.0.1:{}/state.git", d.port);
    let work = tmp.path().join("config");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(&work, &["init", "-q", "-b", "main"]);
    write_config(&work, n, &state_url);
    commit_and_push(&work, &config_url, "bench config");
    let args = |state: &Path| -> Vec<String> {
        vec![
            "reconcile".into(),
            "--config".into(),
            config_url.clone(),
            "--ref".into(),
            "main".into(),
            "--state-dir".into(),
            state.display().to_string(),
        ]
    };

    // 1. Cold.
    let mut cold = Samples::default();
    let mut last_state = PathBuf::new();
    for r in 0..p.runs {
        let bare = reset_bare(&d, "state.git");
        let state = tmp.path().join(format!("state-cold-{r}"));
        let a = args(&state);
        let (took, out) = promised(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(pipelines_run(&out), n, "{out}");
        let head = remote_head(&bare).expect("cold pass pushed a commit");
        let files = git(&bare, &["ls-tree", "-r", "--name-only", &head]);
        let configmaps = files
            .lines()
            .filter(|l| l.ends_with("/configmap.yaml"))
            .count();
        assert_eq!(configmaps, n, "every request landed");
        cold.push(took);
        last_state = state;
    }
    let target = 30.0 * n as f64 / 10_000.0;
    report.row(
        "cold reconcile to pushed commit",
        &size,
        cold.show(Unit::S),
        &if n == 10_000 {
            "≤ 30 s".to_string()
        } else {
            format!("(≤ {target:.1} s pro rata)")
        },
        (n == 10_000).then(|| cold.median() <= 30.0),
    );

    // 2. No-op, the CLI process.
    let bare = srv.join("state.git");
    let head = remote_head(&bare).expect("head");
    let mut noop = Samples::default();
    let a = args(&last_state);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    for _ in 0..p.runs {
        let (took, out) = promised(&a);
        assert_eq!(pipelines_run(&out), 0, "{out}");
        assert_eq!(
            remote_head(&bare).as_deref(),
            Some(head.as_str()),
            "no commit"
        );
        noop.push(took);
    }
    let spawned = count_spawns(&a);
    report.row(
        "no-op `promised reconcile` (whole process)",
        &size,
        format!("{}; {}", noop.show(Unit::Ms), spawned),
        "≤ 100 ms at 10,000, no process spawned",
        (n == 10_000).then(|| noop.median() <= 0.1 && spawned.starts_with("0 ")),
    );

    // 3, 2 (daemon) and 6: the daemon.
    let bare = reset_bare(&d, "state.git");
    let state = tmp.path().join("state-daemon");
    let daemon = Daemon::start(tmp.path(), &config_url, &state);
    let t = Instant::now();
    wait_until(Duration::from_secs(600), || remote_head(&bare).is_some());
    daemon.wait_ready();
    let daemon_cold = t.elapsed();
    report.note(format!(
        "N={n}: the daemon's own cold start (process start to first commit on the remote) took {:.2} s",
        daemon_cold.as_secs_f64()
    ));

    let mut change = Samples::default();
    let mut large = std::collections::BTreeSet::new();
    for k in 0..p.changes {
        let i = (k * 7919) % n; // spread over the requests and the three Promises
        let size_now = if large.insert(i) {
            "large"
        } else {
            large.remove(&i);
            "small"
        };
        std::fs::write(work.join(request_path(i)), request_yaml(i, size_now)).expect("edit");
        // The change is pushed before the clock starts (the webhook is what a Git host sends
        // after a push); the daemon is idle at this point.
        commit_and_push(&work, &config_url, &format!("change {k}"));
        std::thread::sleep(Duration::from_millis(400));
        let before = remote_head(&bare).expect("head");
        let passes = daemon.metric("promised_reconcile_duration_seconds_count");
        let t = Instant::now();
        daemon.webhook();
        wait_until(Duration::from_secs(120), || {
            remote_head(&bare).is_some_and(|h| h != before)
        });
        change.push(t.elapsed());
        // Let the pass finish (status, metrics) before the next change.
        wait_until(Duration::from_secs(60), || {
            daemon.metric("promised_reconcile_duration_seconds_count") > passes
        });
        let after = remote_head(&bare).expect("head");
        let cm = git(
            &bare,
            &[
                "grep",
                "-h",
                "size:",
                &after,
                "--",
                &format!("*/r-{i:05}/*"),
            ],
        );
        assert!(
            cm.contains(size_now),
            "request {i} has size {size_now}: {cm}"
        );
    }
    let p50 = change.pct(50.0);
    report.row(
        "one changed request: webhook to pushed commit (daemon)",
        &size,
        format!(
            "p50 {}, p99 {} (min {}, {} samples)",
            Unit::Ms.fmt(p50),
            Unit::Ms.fmt(change.pct(99.0)),
            Unit::Ms.fmt(change.min()),
            change.0.len()
        ),
        "p50 ≤ 300 ms at 10,000, p99 reported",
        (n == 10_000).then_some(p50 <= 0.3),
    );

    // No-op passes in the daemon: (a) a webhook with no new config commit (a repeated
    // delivery, a retry timer, a resync); (b) a new config commit that changes no request (a
    // README edit): the whole repo is read again through the caches.
    let runs0 = daemon.metric("promised_pipeline_runs_total");
    let head = remote_head(&bare);
    let pass = |daemon: &Daemon| {
        std::thread::sleep(Duration::from_millis(400));
        let passes = daemon.metric("promised_reconcile_duration_seconds_count");
        let t = Instant::now();
        daemon.webhook();
        wait_until(Duration::from_secs(60), || {
            daemon.metric("promised_reconcile_duration_seconds_count") > passes
        });
        t.elapsed()
    };
    let (mut same, mut unrelated) = (Samples::default(), Samples::default());
    for k in 0..p.runs.max(5) {
        same.push(pass(&daemon));
        std::fs::write(work.join("README.md"), format!("edit {k}\n")).expect("readme");
        commit_and_push(&work, &config_url, &format!("readme {k}"));
        unrelated.push(pass(&daemon));
    }
    // Processes the daemon starts during one pass of each kind, counted with strace attached
    // (outside the timed passes: tracing slows the daemon down).
    let spawns = [
        daemon.spawns_during(|| {
            pass(&daemon);
        }),
        daemon.spawns_during(|| {
            std::fs::write(work.join("README.md"), "traced\n").expect("readme");
            commit_and_push(&work, &config_url, "readme traced");
            pass(&daemon);
        }),
    ];
    assert_eq!(remote_head(&bare), head, "no-op passes make no commit");
    assert_eq!(
        daemon.metric("promised_pipeline_runs_total"),
        runs0,
        "no-op passes run no pipeline"
    );
    report.row(
        "no-op pass in the daemon, same config commit (webhook to pass done)",
        &size,
        format!("{}; {}", same.show(Unit::Ms), spawns[0]),
        "≤ 100 ms at 10,000, no process spawned",
        (n == 10_000).then(|| same.median() <= 0.1 && spawns[0].starts_with("0 ")),
    );
    report.row(
        "no-op pass in the daemon, new config commit changing no request",
        &size,
        format!("{}; {}", unrelated.show(Unit::Ms), spawns[1]),
        "≤ 100 ms at 10,000, no process spawned",
        (n == 10_000).then(|| unrelated.median() <= 0.1 && spawns[1].starts_with("0 ")),
    );

    // 6. Peak RSS.
    let (hwm, rss) = daemon.memory_kib();
    report.row(
        "peak RSS of the daemon (VmHWM)",
        &size,
        format!(
            "{:.1} MB (now {:.1} MB)",
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0
        ),
        "≤ 100 MB at 10,000",
        (n == 10_000).then_some(hwm as f64 / 1024.0 <= 100.0),
    );
    drop(daemon);
}

/// Counts the processes a command starts (`strace -f`), excluding itself.
fn count_spawns(args: &[&str]) -> String {
    let Ok(strace) = which("strace") else {
        return "spawns not counted (strace not installed)".into();
    };
    let log = tempfile::NamedTempFile::new().expect("tmp");
    let out = Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o"])
        .arg(log.path())
        .arg(env!("CARGO_BIN_EXE_promised"))
        .args(args)
        .output()
        .expect("strace runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    summarise_execs(&std::fs::read_to_string(log.path()).expect("strace log"), 1)
}

/// "N processes spawned (name ×k, …)" from an strace log of `execve` calls, skipping the
/// first `skip` (the traced command itself).
fn summarise_execs(text: &str, skip: usize) -> String {
    let execs: Vec<String> = text
        .lines()
        .filter(|l| l.contains("execve(") && !l.contains("= -1"))
        .skip(skip)
        .map(|l| {
            l.split('"')
                .nth(1)
                .unwrap_or("?")
                .rsplit('/')
                .next()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for e in &execs {
        *by.entry(e.clone()).or_default() += 1;
    }
    if execs.is_empty() {
        "0 processes spawned".into()
    } else {
        format!(
            "{} processes spawned ({})",
            execs.len(),
            by.iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out after {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A running `promised run`, stopped on drop.
struct Daemon {
    child: Child,
    port: u16,
    agent: ureq::Agent,
}

impl Daemon {
    fn start(dir: &Path, config_url: &str, state: &Path) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let secret = dir.join("webhook-secret");
        std::fs::write(&secret, SECRET).expect("secret");
        let cfg = dir.join("promised.yaml");
        std::fs::write(
            &cfg,
            format!(
                "listen: 127.0.0.1:{port}\npollInterval: 1h\nwebhookSecretFile: {}\n",
                secret.display()
            ),
        )
        .expect("daemon config");
        let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_promised"))
            .args([
                "run",
                "--config",
                config_url,
                "--ref",
                "main",
                "--state-dir",
            ])
            .arg(state)
            .arg("--daemon-config")
            .arg(&cfg)
            .env("PROMISED_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("promised run starts");
        Daemon {
            child,
            port,
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(30)))
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn wait_ready(&self) {
        wait_until(Duration::from_secs(600), || {
            self.agent
                .get(self.url("/readyz"))
                .call()
                .is_ok_and(|r| r.status() == 200)
        });
    }

    fn webhook(&self) {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(body);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let r = self
            .agent
            .post(self.url("/hooks/git"))
            .header("X-Hub-Signature-256", &sig)
            .header("X-GitHub-Event", "push")
            .header("Content-Type", "application/json")
            .send(&body[..])
            .expect("webhook call");
        assert_eq!(r.status(), 202, "webhook accepted");
    }

    /// The value of an unlabelled metric, or the sum over its label sets.
    fn metric(&self, name: &str) -> f64 {
        let mut r = self
            .agent
            .get(self.url("/metrics"))
            .call()
            .expect("metrics");
        let text = r.body_mut().read_to_string().expect("metrics body");
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Processes the daemon starts while `f` runs (strace attached; "not counted" without
    /// strace).
    fn spawns_during(&self, f: impl FnOnce()) -> String {
        let Ok(strace) = which("strace") else {
            f();
            return "spawns not counted (strace not installed)".into();
        };
        let log = tempfile::NamedTempFile::new().expect("tmp");
        let mut tracer = Command::new(strace)
            .args(["-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o"])
            .arg(log.path())
            .args(["-p", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .spawn()
            .expect("strace attaches");
        std::thread::sleep(Duration::from_millis(500)); // attached to every thread
        f();
        if let Some(pid) = rustix::process::Pid::from_raw(tracer.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        let _ = tracer.wait();
        summarise_execs(&std::fs::read_to_string(log.path()).unwrap_or_default(), 0)
    }

    /// (`VmHWM`, `VmRSS`) in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let get = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (get("VmHWM:"), get("VmRSS:"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Measure 4: the Git state store against git fast-import + push.

/// N files: `N / 100` requests of 100 ConfigMaps (~860 bytes each) over two destinations.
fn change_set(n_files: usize) -> ChangeSet {
    let per = 100.min(n_files);
    let mut writes = Vec::new();
    for p in 0..n_files.div_ceil(per) {
        let dest = if p % 2 == 0 { "worker-1" } else { "worker-2" };
        let rr = format!("req-{p:04}");
        let owner = Owner {
            key: format!("{dest}/resources/default/redis/{rr}/configure/5058f"),
            destination: dest.into(),
            promise: "redis".into(),
            resource: Some(format!("default/{rr}")),
            pipeline: Some("configure".into()),
        };
        let files = (0..per.min(n_files - p * per))
            .map(|i| {
                let mut content = format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {rr}-{i}\n  namespace: default\ndata:\n"
                );
                for k in 0..24 {
                    content.push_str(&format!("  key{k}: value-{p}-{i}-{k}-xxxxxxxx\n"));
                }
                FileWrite {
                    path: format!("destinations/{}/cm-{i:03}.yaml", owner.key),
                    content: content.into_bytes(),
                }
            })
            .collect();
        writes.push(PlacementWrite { owner, files });
    }
    ChangeSet {
        writes,
        removals: vec![],
        meta: CommitMeta {
            config_commit: Some("0123456789abcdef".into()),
            ..Default::default()
        },
    }
}

fn fast_import_and_push(bare: &Path, cs: &ChangeSet, url: &str) -> Duration {
    let start = Instant::now();
    git(
        bare.parent().expect("parent"),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            bare.to_str().expect("utf-8"),
        ],
    );
    let mut child = Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("fast-import");
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
        let files: Vec<&FileWrite> = cs.writes.iter().flat_map(|w| &w.files).collect();
        for (mark, f) in files.iter().enumerate() {
            write!(
                stdin,
                "blob\nmark :{}\ndata {}\n",
                mark + 1,
                f.content.len()
            )
            .expect("w");
            stdin.write_all(&f.content).expect("w");
            stdin.write_all(b"\n").expect("w");
        }
        let msg = "fast-import baseline";
        write!(
            stdin,
            "commit refs/heads/main\ncommitter bench <b@x> 1700000000 +0000\ndata {}\n{msg}\n",
            msg.len()
        )
        .expect("w");
        for (mark, f) in files.iter().enumerate() {
            writeln!(stdin, "M 100644 :{} {}", mark + 1, f.path).expect("w");
        }
        stdin.write_all(b"\n").expect("w");
    }
    assert!(child.wait().expect("wait").success());
    git(
        bare,
        &["push", "-q", url, "refs/heads/main:refs/heads/main"],
    );
    start.elapsed()
}

fn store_push(n: usize, p: &Params, report: &mut Report) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir");
    let d = GitDaemon::start(&srv);
    let cs = change_set(n);
    let (mut ours, mut base, mut ratio) = (Samples::default(), Samples::default(), Vec::new());
    for run in 0..p.runs {
        let url = d.bare_repo(&format!("fi-{run}.git"));
        let b = fast_import_and_push(&tmp.path().join(format!("fi-src-{run}.git")), &cs, &url);
        let url = d.bare_repo(&format!("ours-{run}.git"));
        let store = GitStateStore::open(
            "bench",
            GitStateStoreSpec::new(url),
            GitOptions::new(tmp.path().join(format!("state-{run}"))),
        )
        .expect("open store");
        let t = Instant::now();
        let out = rt.block_on(store.apply(&cs)).expect("apply");
        let o = t.elapsed();
        assert_eq!(out.written, n);
        ours.push(o);
        base.push(b);
        ratio.push(o.as_secs_f64() / b.as_secs_f64());
    }
    ratio.sort_by(f64::total_cmp);
    let median_ratio = ratio[ratio.len() / 2];
    report.row(
        "N-file tree written and pushed, against `git fast-import` + `git push`",
        &format!("{n} files"),
        format!(
            "promised {}, git {}; ratio {median_ratio:.2} ({:.2}–{:.2})",
            ours.show(Unit::Ms),
            base.show(Unit::Ms),
            ratio[0],
            ratio[ratio.len() - 1]
        ),
        if n == 10_000 {
            "≤ 2× (10,000 files)"
        } else {
            "reported"
        },
        (n == 10_000).then_some(median_ratio <= 2.0),
    );
}

// ---------------------------------------------------------------------------------------------
// Measure 5: per-container cost.

fn container_cost(p: &Params, report: &mut Report) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let pipelines: Vec<Pipeline> = vec![
        serde_json::from_value(serde_json::json!({
            "apiVersion": "platform.kratix.io/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": "bench"},
            "spec": {"containers": [{"name": "c", "image": "x", "command": ["sh", "-c", "true"]}]}
        }))
        .expect("pipeline"),
    ];
    // The runner as the daemon configures it (run directories in `runDir`'s default).
    let cfg = promised::settings::Settings {
        state_dir: tmp.path().join("state"),
        ..Default::default()
    }
    .runner();
    report.note(format!(
        "per-container runs use the default runDir: {}",
        cfg.work_dir.display()
    ));
    let input = WorkflowInput {
        workflow_type: WorkflowType::Resource,
        action: Action::Configure,
        promise_name: "alpha".into(),
        crd_plural: "alphas".into(),
        object: ObjectIdentity {
            kind: "alpha".into(),
            group: "bench.promised.dev".into(),
            version: "v1".into(),
            name: "r-00001".into(),
            namespace: "default".into(),
        },
        object_yaml: request_yaml(0, "small"),
        promise_dir: None,
        pipeline_namespace: None,
        pipelines: &pipelines,
        existing_status: Default::default(),
        runtime_annotation: None,
        promise_hash: String::new(),
    };
    // The sandbox alone: the same mounts on directories made once.
    let dirs: Vec<PathBuf> = ["input", "output", "metadata"]
        .iter()
        .map(|d| {
            let p = tmp.path().join("fixed").join(d);
            std::fs::create_dir_all(&p).expect("mkdir");
            p
        })
        .collect();
    std::fs::write(dirs[0].join("object.yaml"), &input.object_yaml).expect("object.yaml");
    let env: Vec<(String, String)> = vec![("KRATIX_WORKFLOW_TYPE".into(), "resource".into())];
    let argv: Vec<String> = vec!["sh".into(), "-c".into(), "true".into()];
    let bwrap = bwrap_args(
        &HostLayout::detect(),
        &SandboxSpec {
            input: &dirs[0],
            output: &dirs[1],
            metadata: &dirs[2],
            promise_dir: None,
            mounts: &[],
            network: false,
            working_dir: None,
            env: &env,
            argv: &argv,
            hidden: &[],
        },
    );
    let run_bwrap = || {
        let s = Command::new(&cfg.bwrap)
            .args(&bwrap)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("bwrap");
        assert!(s.success());
    };
    let run_bare = || {
        let s = Command::new("sh")
            .args(["-c", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("sh");
        assert!(s.success());
    };
    let (mut ours, mut sandbox, mut bare) =
        (Samples::default(), Samples::default(), Samples::default());
    // Warm-up, then interleave the three so machine noise hits all of them alike.
    let r = rt.block_on(run_workflow(&cfg, &input));
    assert!(r.succeeded(), "{:?}", r.error());
    run_bwrap();
    for _ in 0..p.containers {
        let t = Instant::now();
        let r = rt.block_on(run_workflow(&cfg, &input));
        ours.push(t.elapsed());
        assert!(r.succeeded(), "{:?}", r.error());
        let t = Instant::now();
        run_bwrap();
        sandbox.push(t.elapsed());
        let t = Instant::now();
        run_bare();
        bare.push(t.elapsed());
    }
    // The sandbox's throughput at the daemon's default concurrency: the floor of a cold pass.
    let workers = promised::settings::Settings::default().effective_concurrency();
    let total = p.containers * 2;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < total {
                    run_bwrap();
                }
            });
        }
    });
    let per = t.elapsed().as_secs_f64() / total as f64;
    report.row(
        "sandbox throughput: bwrap alone, back to back at the default concurrency",
        &format!("{total} containers, {workers} at once"),
        format!(
            "{} per container: a cold pass of 10,000 requests cannot take less than {:.1} s here",
            Unit::Ms.fmt(per),
            per * 10_000.0
        ),
        "reported (the floor of the cold measure)",
        None,
    );
    let ratio = ours.median() / sandbox.median();
    report.row(
        "per-container cost: process runtime against bwrap alone",
        "–",
        format!(
            "runtime {}, bwrap alone {}: {ratio:.2}×",
            ours.show(Unit::Ms),
            sandbox.show(Unit::Ms)
        ),
        "≤ 1.2×",
        Some(ratio <= 1.2),
    );
    report.row(
        "per-container cost: bwrap alone against a bare `sh -c true` spawn",
        "–",
        format!(
            "bwrap {}, bare spawn {}: {:.2}×",
            sandbox.show(Unit::Ms),
            bare.show(Unit::Ms),
            sandbox.median() / bare.median()
        ),
        "reported (≈ 4×)",
        None,
    );
}
