//! The crash loop (issue 23 part 1; docs/reliability.md "Crash loop"): `promised reconcile`
//! and `promised run` are killed with SIGKILL again and again while they reconcile many
//! namespace requests (a sandboxed pipeline) into a Git state store (`git daemon` on
//! 127.0.0.1) and a BucketStateStore (s3s-fs in-process on 127.0.0.1), then restarted; after
//! every restart the stores must be exactly what a clean run makes.
//!
//! Each iteration switches the config repo to one of two variants (`A`: requests `ns-0` to
//! `ns-<n-1>`, `dev` on Git and `prod` on S3 alternately; `B`: every fifth request renamed,
//! every seventh removed, n/10 added), so every iteration has work: runs, rewrites and prunes
//! on both stores. It then kills 1 to 3 runs in a row, each at a random delay or at a named
//! crash point (`PROMISED_CRASH_AT=<point>:<nth>`, `statestores::crash`), restarts once
//! without a kill, and checks ([`World::check`]):
//!
//! - the Git store's tree is byte-identical (same tree id) to a clean run's of that variant,
//!   and the bucket holds the same keys with the same bytes and the same ownership entries;
//! - the ownership index matches the tree and the bucket: no file orphaned or missing;
//! - `git fsck --strict` is clean on the remote and on promised's persistent clone;
//! - `promised status` agrees: every request Reconciled with its files where it says, each
//!   store's last write is its current head/generation;
//! - nothing in the state directory blocks the next run: one more `promised reconcile` exits
//!   0, runs nothing and writes nothing; no run directory or lock file is left.
//!
//! The restart must converge in one run (a daemon: in its first pass). A difference fails the
//! test at once with the seed, the iteration and its kills, so it can be replayed. Skipped
//! without bubblewrap (fails instead with `PROMISED_REQUIRE_SANDBOX`).
//!
//! Parameters (environment): `CRASH_LOOP_ITERATIONS` (default 20), `CRASH_LOOP_REQUESTS`
//! (default 40; the long form uses 1000), `CRASH_LOOP_SEED` (default: from the clock; printed),
//! `CRASH_LOOP_PROMISED` (the promised binary to run; default: cargo's).
//! The long form: `CRASH_LOOP_ITERATIONS=200 CRASH_LOOP_REQUESTS=1000 cargo test --release
//! --test crash_loop -- --nocapture`.

#[path = "crash_loop/checks.rs"]
mod checks;
mod common;
#[path = "../statestores/tests/s3_server/mod.rs"]
mod s3_server;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{GitDaemon, bwrap_works, copy_dir, git, repo_root};
use s3_server::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};
use sha2::{Digest, Sha256};

/// The crash points of `statestores::crash` (armed with an `nth` from [`nth_for`]).
const POINTS: &[&str] = &[
    "pipeline",
    "state-journal",
    "git-tree-write",
    "git-pushed",
    "s3-upload",
    "s3-committed",
    "state-save",
];

/// Iterations between two starts from empty stores and state directory.
const RESET_EVERY: u64 = 50;

/// The key prefix of the BucketStateStore, and its ownership index.
const S3_PREFIX: &str = "state/";
const S3_INDEX: &str = "state/.promised/index.json";
/// The key prefix of the S3 write-permission check's probe objects.
const S3_PROBE: &str = "state/.promised/write-permission-check-";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// The requests of variant `b` (false: A, true: B) for `n` base requests: name to
/// (namespaceName, environment).
/// B differs from A in about 3n/r requests, r = max(5, n/20): every r-th renamed, every
/// (r+2)-th removed, n/2r added (n = 40: 19 of 40; n = 1000: 49 of 1000).
fn requests(n: usize, b: bool) -> BTreeMap<String, (String, &'static str)> {
    let r = (n / 20).max(5);
    let mut out = BTreeMap::new();
    let env = |i: usize| if i.is_multiple_of(2) { "dev" } else { "prod" };
    for i in 0..n {
        if b && i % (r + 2) == 3 {
            continue; // removed in B
        }
        let ns = if b && i % r == 0 {
            format!("ns-{i}-renamed")
        } else {
            format!("ns-{i}")
        };
        out.insert(format!("ns-{i}"), (ns, env(i)));
    }
    if b {
        for i in n..n + n.div_ceil(2 * r) {
            out.insert(format!("ns-{i}"), (format!("ns-{i}"), env(i)));
        }
    }
    out
}

/// Requests whose output differs between the variants (runs + prunes of one switch).
fn changed(n: usize) -> usize {
    let (a, b) = (requests(n, false), requests(n, true));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).count()
}

/// One set of state stores (a bare repo on the Git daemon, an S3 server) and the config repo
/// written for them.
struct Stores {
    bare: PathBuf,
    git_url: String,
    s3: S3Server,
}

/// Writes the config repo at `dir` for `stores`: the quickstart's Promises (namespace, redis),
/// `dev` on the Git store and `prod` on the bucket, and the requests of the variant.
fn write_config(dir: &Path, stores: &Stores, n: usize, b: bool) {
    if !dir.exists() {
        copy_dir(&repo_root().join("testdata/quickstart"), dir);
        std::fs::write(
            dir.join("platform/state-store.yaml"),
            format!(
                "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: git\nspec:\n  url: {}\n  branch: main\n---\napiVersion: platform.kratix.io/v1alpha1\nkind: BucketStateStore\nmetadata:\n  name: s3\nspec:\n  bucketName: {BUCKET}\n  endpoint: {}\n  insecure: true\n  path: {S3_PREFIX}\n  authMethod: accessKey\n  secretRef:\n    name: minio-creds\n    namespace: default\n",
                stores.git_url,
                stores.s3.endpoint()
            ),
        )
        .unwrap();
        let dests = std::fs::read_to_string(dir.join("platform/destinations.yaml")).unwrap();
        let (dev, prod) = dests.split_once("---").unwrap();
        let dev = dev.replace("name: local", "name: git");
        let prod = prod
            .replace("kind: GitStateStore", "kind: BucketStateStore")
            .replace("name: local", "name: s3");
        std::fs::write(
            dir.join("platform/destinations.yaml"),
            format!("{dev}---{prod}"),
        )
        .unwrap();
        std::fs::remove_file(dir.join("requests/namespaces.yaml")).unwrap();
    }
    // Rewrite the request folder as a whole: files of the other variant go.
    let reqs = dir.join("requests");
    for e in std::fs::read_dir(&reqs).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("ns-") {
            std::fs::remove_file(p).unwrap();
        }
    }
    for (name, (ns, env)) in requests(n, b) {
        std::fs::write(
            reqs.join(format!("{name}.yaml")),
            format!("apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  namespaceName: {ns}\n  environment: {env}\n"),
        )
        .unwrap();
    }
}

/// The promised binary: `CRASH_LOOP_PROMISED` (a copy, so that a long run is not affected by
/// a rebuild), else the one cargo built.
fn promised_bin() -> PathBuf {
    std::env::var_os("CRASH_LOOP_PROMISED").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_promised")),
        PathBuf::from,
    )
}

/// promised with what every run is told: the bucket's credentials, the run directory,
/// 4 pipelines at once, no fan-out limit, a short debounce.
fn promised_cmd(run_dir: &Path) -> Command {
    let mut cmd = Command::new(promised_bin());
    cmd.env("PROMISED_SECRET_MINIO_CREDS_ACCESSKEYID", ACCESS_KEY)
        .env("PROMISED_SECRET_MINIO_CREDS_SECRETACCESSKEY", SECRET_KEY)
        .env("PROMISED_RUN_DIR", run_dir)
        .env("PROMISED_CONCURRENCY", "4")
        .env("PROMISED_MAX_FANOUT_PER_SECOND", "0")
        .env("PROMISED_DEBOUNCE", "50ms")
        .env_remove("PROMISED_CRASH_AT");
    cmd
}

/// `promised reconcile --output json` on `config` and `state` (not started).
fn reconcile_cmd(config: &Path, state: &Path, run_dir: &Path) -> Command {
    let mut cmd = promised_cmd(run_dir);
    cmd.args(["reconcile", "--output", "json", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state);
    cmd
}

/// `promised run` on `config` and `state`, listening on `port` (not started).
fn daemon_cmd(config: &Path, state: &Path, run_dir: &Path, port: u16) -> Command {
    let mut cmd = promised_cmd(run_dir);
    cmd.args(["run", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Passes the daemon on `port` finished (`promised_reconcile_duration_seconds_count`); `None`
/// when it does not answer.
fn passes(port: u16) -> Option<u64> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()?;
    let body = r.body_mut().read_to_string().ok()?;
    Some(
        body.lines()
            .filter(|l| l.starts_with("promised_reconcile_duration_seconds_count"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// How a run is to be killed.
#[derive(Clone, Debug)]
enum Kill {
    /// SIGKILL from the harness after this long.
    After(Duration),
    /// `PROMISED_CRASH_AT=<point>:<nth>`: the process kills itself.
    At(&'static str, u64),
}

/// How a killed run ended.
#[derive(Debug, PartialEq)]
enum Ended {
    Killed,
    /// It finished before the kill (or never reached its point).
    Finished,
}

fn killed_by_sigkill(s: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    s.signal() == Some(9)
}

/// Runs `cmd` (reconcile, or a daemon on `port`) with `kill`; a daemon that reaches the end of
/// its first pass without being killed is stopped with SIGKILL too (and counts as finished).
fn run_killed(mut cmd: Command, kill: &Kill, daemon: Option<u16>) -> Ended {
    if let Kill::At(point, nth) = kill {
        cmd.env("PROMISED_CRASH_AT", format!("{point}:{nth}"));
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = match kill {
        Kill::After(d) => Some(Instant::now() + *d),
        Kill::At(..) => None,
    };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return if killed_by_sigkill(status) {
                Ended::Killed
            } else {
                Ended::Finished
            };
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            child.kill().unwrap();
            child.wait().unwrap();
            return Ended::Killed;
        }
        if daemon.and_then(passes).is_some_and(|n| n >= 1) {
            child.kill().unwrap();
            child.wait().unwrap();
            return Ended::Finished;
        }
        std::thread::sleep(Duration::from_millis(if daemon.is_some() { 50 } else { 5 }));
    }
}

/// A state directory with its config repo and stores, and the clean snapshot to converge to.
struct World {
    stores: Stores,
    config: PathBuf,
    state: PathBuf,
    run_dir: PathBuf,
}

/// What a check compares with a clean run.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// `git rev-parse main^{tree}` of the Git store.
    git_tree: String,
    /// Bucket key (without the index) to sha256 of its bytes.
    s3_objects: BTreeMap<String, String>,
    /// The bucket index's `entries`.
    s3_entries: serde_json::Value,
}

impl World {
    fn new(root: &Path, daemon: &GitDaemon, name: &str, s3: S3Server) -> World {
        let git_url = daemon.bare_repo(&format!("{name}.git"));
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        World {
            stores: Stores {
                bare: daemon.base.join(format!("{name}.git")),
                git_url,
                s3,
            },
            config: dir.join("config"),
            state: dir.join("state"),
            run_dir: dir.join("run"),
        }
    }

    /// Empties both stores and removes the state directory.
    fn reset(&self) {
        std::fs::remove_dir_all(&self.state).unwrap();
        std::fs::remove_dir_all(&self.stores.bare).unwrap();
        git(
            self.stores.bare.parent().unwrap(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                self.stores.bare.file_name().unwrap().to_str().unwrap(),
            ],
        );
        let bucket = self.stores.s3.root.join(BUCKET);
        std::fs::remove_dir_all(&bucket).unwrap();
        std::fs::create_dir_all(&bucket).unwrap();
    }

    fn reconcile(&self) -> (std::process::Output, Duration) {
        let t = Instant::now();
        let out = reconcile_cmd(&self.config, &self.state, &self.run_dir)
            .output()
            .unwrap();
        (out, t.elapsed())
    }

    /// Every file of the bucket: key to bytes.
    fn bucket(&self) -> BTreeMap<String, Vec<u8>> {
        let base = self.stores.s3.root.join(BUCKET);
        let mut out = BTreeMap::new();
        for e in walkdir::WalkDir::new(&base) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let key = e.path().strip_prefix(&base).unwrap().to_string_lossy();
                out.insert(key.into_owned(), std::fs::read(e.path()).unwrap());
            }
        }
        out
    }

    fn git_head(&self) -> String {
        git(&self.stores.bare, &["rev-parse", "main"])
            .trim()
            .to_owned()
    }

    fn snapshot(&self) -> Snapshot {
        let bucket = self.bucket();
        let index: serde_json::Value = bucket
            .get(S3_INDEX)
            .map(|b| serde_json::from_slice(b).unwrap())
            .unwrap_or_default();
        Snapshot {
            git_tree: git(&self.stores.bare, &["rev-parse", "main^{tree}"])
                .trim()
                .to_owned(),
            s3_objects: bucket
                .iter()
                // A probe of the write-permission check orphaned by a kill between its PUT and
                // DELETE stays until a later check finds it an hour old (`PROBE_STALE_AFTER`,
                // docs/reliability.md "Crash loop"): longer than this loop runs.
                .filter(|(k, _)| k.as_str() != S3_INDEX && !k.starts_with(S3_PROBE))
                .map(|(k, v)| (k.clone(), hex::encode(Sha256::digest(v))))
                .collect(),
            s3_entries: index["entries"].clone(),
        }
    }
}

/// What the loop did, printed at the end (and before a failure).
#[derive(Default, Debug)]
struct Tally {
    iterations: u64,
    daemon_iterations: u64,
    runs: u64,
    killed_at_random: u64,
    /// Named points that killed the process, by point.
    points_hit: BTreeMap<&'static str, u64>,
    /// Runs that ended before their kill (a delay longer than the run, a point not reached).
    finished_before_kill: u64,
    differences: u64,
}

impl Tally {
    fn print(&self, seed: u64, requests: usize) {
        let hit: u64 = self.points_hit.values().sum();
        println!(
            "crash loop tally: seed {seed}, {requests} requests, {} iterations ({} with promised run), {} runs, {} kills ({} at a random delay, {hit} at named points: {}), {} runs ended before their kill, differences from the clean run: {}",
            self.iterations,
            self.daemon_iterations,
            self.runs,
            self.killed_at_random + hit,
            self.killed_at_random,
            self.points_hit
                .iter()
                .map(|(p, n)| format!("{p} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.finished_before_kill,
            self.differences
        );
    }
}

/// The `nth` to arm `point` with when about `work` workflows are left to run.
fn nth_for(rng: &mut fastrand::Rng, point: &str, work: usize) -> u64 {
    let upto = match point {
        "pipeline" => work.max(1),
        "s3-upload" => work.div_ceil(2).max(1),
        "state-journal" => 2,
        _ => 1,
    };
    rng.u64(1..=upto as u64)
}

/// The restart after the kills: a `promised reconcile` that must succeed, or a daemon that
/// must finish its first pass (then stopped with SIGTERM). `Err` with what went wrong.
fn restart(world: &World, daemon: bool) -> Result<(), String> {
    if !daemon {
        let (out, _) = world.reconcile();
        return if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "the restart failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        };
    }
    let port = free_port();
    let log = world.state.with_file_name("daemon.log");
    let mut child = daemon_cmd(&world.config, &world.state, &world.run_dir, port)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // A guard against a hang, not a timing assertion.
    let limit = Instant::now() + Duration::from_secs(1800);
    let result = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Err(format!("the daemon exited ({s})"));
        }
        if passes(port).is_some_and(|n| n >= 1) {
            break Ok(());
        }
        if Instant::now() > limit {
            break Err("the daemon's first pass did not end".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let pid = rustix::process::Pid::from_child(&child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let status = child.wait().unwrap();
    result.and_then(|()| {
        status.success().then_some(()).ok_or_else(|| {
            format!(
                "the daemon stopped with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_again_and_again_the_stores_converge_to_a_clean_run() {
    if !bwrap_works() {
        assert!(
            std::env::var_os("PROMISED_REQUIRE_SANDBOX").is_none(),
            "PROMISED_REQUIRE_SANDBOX is set but bubblewrap cannot run"
        );
        eprintln!("skipped: no bubblewrap (set PROMISED_REQUIRE_SANDBOX=1 to fail instead)");
        return;
    }
    let iterations = env_num("CRASH_LOOP_ITERATIONS", 20);
    let n = env_num("CRASH_LOOP_REQUESTS", 40) as usize;
    let seed = env_num(
        "CRASH_LOOP_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000_007,
    );
    println!(
        "crash loop: seed {seed} (replay: CRASH_LOOP_SEED={seed} CRASH_LOOP_ITERATIONS={iterations} CRASH_LOOP_REQUESTS={n})"
    );
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("git");
    std::fs::create_dir_all(&srv).unwrap();
    let gd = GitDaemon::start(&srv);
    let mut servers = Vec::new();
    for name in ["clean-a", "clean-b", "crash"] {
        servers.push(S3Server::start(&tmp.path().join(format!("s3-{name}"))).await);
    }
    let root = tmp.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut servers = servers.into_iter();
        // The clean runs, once: the snapshots to converge to, and how long a pass takes.
        let mut clean = Vec::new();
        let mut full = Duration::ZERO;
        for (name, b) in [("clean-a", false), ("clean-b", true)] {
            let w = World::new(&root, &gd, name, servers.next().unwrap());
            write_config(&w.config, &w.stores, n, b);
            let (out, took) = w.reconcile();
            assert!(
                out.status.success(),
                "clean run {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The checks hold for a clean run (they can pass), and the bucket is not empty.
            let snap = w.snapshot();
            assert!(!snap.s3_objects.is_empty() && snap.s3_entries.is_array());
            let diffs = w.check(&snap, n, b);
            assert!(diffs.is_empty(), "a clean run fails the checks: {diffs:#?}");
            println!("clean run {name}: {:.1}s", took.as_secs_f64());
            full = full.max(took);
            clean.push(snap);
        }
        let world = World::new(&root, &gd, "crash", servers.next().unwrap());
        let work = changed(n);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut tally = Tally::default();
        for it in 0..iterations {
            // Every RESET_EVERY iterations (the first among them) start from nothing: empty
            // stores and state directory, every request runs.
            let fresh = it % RESET_EVERY == 0;
            if fresh && it > 0 {
                world.reset();
            }
            let b = it % 2 == 1;
            write_config(&world.config, &world.stores, n, b);
            let daemon = it % 4 == 3;
            let (left, span) = if fresh {
                (n + 2, full)
            } else {
                (
                    work,
                    full.mul_f64(work as f64 / n as f64) + Duration::from_millis(300),
                )
            };
            let mut history = Vec::new();
            for k in 0..rng.usize(1..=3) {
                let kill = if rng.bool() {
                    Kill::After(span.mul_f64(rng.f64()))
                } else {
                    let point = POINTS[rng.usize(..POINTS.len())];
                    Kill::At(point, nth_for(&mut rng, point, left / (k + 1)))
                };
                let port = free_port();
                let cmd = if daemon {
                    daemon_cmd(&world.config, &world.state, &world.run_dir, port)
                } else {
                    reconcile_cmd(&world.config, &world.state, &world.run_dir)
                };
                let ended = run_killed(cmd, &kill, daemon.then_some(port));
                tally.runs += 1;
                match (&kill, &ended) {
                    (_, Ended::Finished) => tally.finished_before_kill += 1,
                    (Kill::After(_), Ended::Killed) => tally.killed_at_random += 1,
                    (Kill::At(p, _), Ended::Killed) => *tally.points_hit.entry(p).or_default() += 1,
                }
                history.push(format!("{kill:?}: {ended:?}"));
                if ended == Ended::Finished {
                    break; // converged already: no work left to kill
                }
            }
            let t = Instant::now();
            tally.runs += 1;
            let mut diffs = match restart(&world, daemon) {
                Ok(()) => Vec::new(),
                Err(e) => vec![e],
            };
            let took = t.elapsed();
            diffs.extend(world.check(&clean[usize::from(b)], n, b));
            tally.iterations += 1;
            tally.daemon_iterations += u64::from(daemon);
            println!(
                "iteration {}/{iterations}: variant {}, {}, kills {history:?}, restart {:.1}s, {} differences",
                it + 1,
                if b { "B" } else { "A" },
                if daemon { "promised run" } else { "promised reconcile" },
                took.as_secs_f64(),
                diffs.len()
            );
            if !diffs.is_empty() {
                tally.differences += diffs.len() as u64;
                tally.print(seed, n);
                panic!(
                    "seed {seed}, iteration {}: after {history:?} the stores did not converge to the clean run:\n{}",
                    it + 1,
                    diffs.join("\n")
                );
            }
        }
        tally.print(seed, n);
        assert_eq!(tally.differences, 0);
    })
    .await
    .unwrap();
}
