//! The core path at one size N: cold passes (host process runtime, image runtime), no-op
//! passes (whole process, daemon), one-request changes through the daemon, peak RSS.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{GitDaemon, git};
use crate::config::{
    HOST_IMAGE, commit_and_push, push_image_branch, request_path, request_yaml, write_config,
};
use crate::daemon::{Daemon, count_spawns, pipelines_run, promised, wait_until};
use crate::images::ImageEnv;
use crate::stats::Samples;

/// Everything measured at one size.
pub struct SizeResult {
    pub n: usize,
    /// Cold passes of `promised reconcile`, host process runtime.
    pub cold_host: Samples,
    /// Their peak RSS (KiB, sampled).
    pub cold_host_hwm: Vec<u64>,
    /// Cold passes with the image runtime on a warm cache; `None` when not measured.
    pub cold_image: Option<Samples>,
    pub cold_image_hwm: Vec<u64>,
    /// Whole-process no-op `promised reconcile`.
    pub noop_process: Samples,
    pub noop_spawns: String,
    /// The daemon's start to its first commit on the remote.
    pub daemon_cold: Duration,
    /// The daemon's `VmHWM` (KiB) right after its cold pass.
    pub hwm_after_cold: u64,
    /// Webhook to pushed commit, one changed request each.
    pub change: Samples,
    /// Daemon no-op passes: same config commit (answered from the last quiet pass), and a
    /// new commit changing no request.
    pub noop_same: Samples,
    pub noop_new: Samples,
    /// Daemon no-op passes at the same config commit right after a pass that wrote: full
    /// passes (the last pass was not quiet), one after each change.
    pub noop_full: Samples,
    pub noop_daemon_spawns: [String; 2],
    /// The daemon's `VmHWM` and `VmRSS` (KiB) at the end.
    pub hwm: u64,
    pub rss: u64,
    /// Wall time of this size, all measures.
    pub took: Duration,
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

/// Asserts that the state store at `bare` holds one ConfigMap per request, and that the
/// pipeline ran on the `root` expected (`host` or `image`).
fn assert_landed(bare: &Path, n: usize, root: &str) {
    let head = remote_head(bare).expect("the cold pass pushed a commit");
    let files = git(bare, &["ls-tree", "-r", "--name-only", &head]);
    let configmaps = files
        .lines()
        .filter(|l| l.ends_with("/configmap.yaml"))
        .count();
    assert_eq!(configmaps, n, "every request landed");
    let roots = git(bare, &["grep", "-h", "root:", &head, "--", "*/r-00000/*"]);
    assert!(
        roots.contains(&format!("root: {root}")),
        "the pipeline ran on the {root} root: {roots}"
    );
}

/// What the measures at one size need besides N.
pub struct SizeParams<'a> {
    pub runs: usize,
    pub changes: usize,
    pub promises: &'a [String],
    pub images: Option<&'a ImageEnv>,
    /// `BENCH_SETTINGS`: YAML added to the daemon config of every `promised` run.
    pub settings: &'a str,
}

pub fn measure(n: usize, p: &SizeParams) -> SizeResult {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir");
    let d = GitDaemon::start(&srv);
    let config_url = d.bare_repo("config.git");
    let state_url = format!("git://127.0.0.1:{}/state.git", d.port);
    let work = tmp.path().join("config");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(&work, &["init", "-q", "-b", "main"]);
    write_config(&work, n, p.promises, &state_url, HOST_IMAGE);
    commit_and_push(&work, &config_url, "main", "bench config");
    if let Some(img) = p.images {
        push_image_branch(&work, &config_url, p.promises, &img.image);
    }
    println!(
        "N={n}: config repo of {n} requests over {} Promises pushed ({:.1} s)",
        p.promises.len(),
        started.elapsed().as_secs_f64()
    );
    // The host process runtime's runs get a daemon config only when there are settings.
    let host_config = (!p.settings.trim().is_empty()).then(|| {
        let path = tmp.path().join("promised-cli.yaml");
        std::fs::write(&path, format!("{}\n", p.settings)).expect("daemon config");
        path
    });
    let args = |state: &Path, branch: &str, daemon_config: Option<&Path>| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "reconcile".into(),
            "--config".into(),
            config_url.clone(),
            "--ref".into(),
            branch.into(),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        if let Some(dc) = daemon_config {
            a.extend(["--daemon-config".into(), dc.display().to_string()]);
        }
        a
    };

    // 1. Cold passes, the two runtimes interleaved (image, then host, per round) so that
    // machine noise hits both alike. The image runtime's cache is warmed first with `promised
    // images pull`; the cache directory is shared, the state directory new for every run. The
    // last host run's state directory and state store stay for the no-op runs.
    let image_config = p.images.map(|img| {
        let dc = img.daemon_config(tmp.path(), p.settings);
        let pulled = img.pull(&config_url, "image", &dc, &tmp.path().join("state-pull"));
        println!("N={n}: images pull: {}", pulled.trim());
        dc
    });
    let cold = |r: usize, runtime: &str| -> (crate::daemon::Run, PathBuf) {
        let bare = reset_bare(&d, "state.git");
        let state = tmp.path().join(format!("state-{runtime}-{r}"));
        let (branch, dc) = match runtime {
            "image" => ("image", image_config.as_deref()),
            _ => ("main", host_config.as_deref()),
        };
        let a = args(&state, branch, dc);
        let run = promised(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(pipelines_run(&run.stdout), n, "{}", run.stdout);
        assert_landed(&bare, n, runtime);
        println!(
            "N={n}: cold pass, {runtime} runtime: {:.2} s, peak RSS {} KiB",
            run.took.as_secs_f64(),
            run.hwm_kib
        );
        (run, state)
    };
    let (mut cold_host, mut cold_host_hwm) = (Samples::default(), Vec::new());
    let (mut image_samples, mut cold_image_hwm) = (Samples::default(), Vec::new());
    let mut last_state: Option<PathBuf> = None;
    for r in 0..p.runs {
        if image_config.is_some() {
            let (run, state) = cold(r, "image");
            image_samples.push(run.took);
            cold_image_hwm.push(run.hwm_kib);
            let _ = std::fs::remove_dir_all(&state);
        }
        let (run, state) = cold(r, "host");
        cold_host.push(run.took);
        cold_host_hwm.push(run.hwm_kib);
        if let Some(old) = last_state.replace(state) {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    let cold_image = image_config.is_some().then_some(image_samples);
    let last_state = last_state.expect("at least one run");

    // 2. No-op, the whole CLI process.
    let bare = srv.join("state.git");
    let head = remote_head(&bare).expect("head");
    let mut noop_process = Samples::default();
    let a = args(&last_state, "main", host_config.as_deref());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    for _ in 0..p.runs.max(3) {
        let run = promised(&a);
        assert_eq!(pipelines_run(&run.stdout), 0, "{}", run.stdout);
        assert_eq!(
            remote_head(&bare).as_deref(),
            Some(head.as_str()),
            "no commit"
        );
        noop_process.push(run.took);
    }
    let noop_spawns = count_spawns(&a);
    let _ = std::fs::remove_dir_all(&last_state);

    // 3. The daemon: its cold start, then changes and no-op passes, then its memory.
    let bare = reset_bare(&d, "state.git");
    let state = tmp.path().join("state-daemon");
    let daemon = Daemon::start(tmp.path(), &config_url, &state, p.settings);
    let t = Instant::now();
    wait_until(Duration::from_secs(3600), || remote_head(&bare).is_some());
    daemon.wait_ready();
    let daemon_cold = t.elapsed();
    let hwm_after_cold = daemon.memory_kib().0;
    println!(
        "N={n}: daemon cold start {:.2} s, VmHWM {} KiB",
        daemon_cold.as_secs_f64(),
        hwm_after_cold
    );

    let mut change = Samples::default();
    let mut noop_full = Samples::default();
    let mut large = BTreeSet::new();
    for k in 0..p.changes {
        let i = (k * 7919) % n; // spread over the requests and the Promises
        let size_now = if large.insert(i) {
            "large"
        } else {
            large.remove(&i);
            "small"
        };
        std::fs::write(
            work.join(request_path(p.promises, i)),
            request_yaml(p.promises, i, size_now),
        )
        .expect("edit");
        // The change is pushed before the clock starts (the webhook is what a Git host sends
        // after a push); the daemon is idle at this point.
        commit_and_push(&work, &config_url, "main", &format!("change {k}"));
        std::thread::sleep(Duration::from_millis(400));
        let before = remote_head(&bare).expect("head");
        let passes = daemon.metric("promised_reconcile_duration_seconds_count");
        let t = Instant::now();
        daemon.webhook();
        wait_until(Duration::from_secs(600), || {
            remote_head(&bare).is_some_and(|h| h != before)
        });
        change.push(t.elapsed());
        // Let the pass finish (status, metrics) before the next change.
        wait_until(Duration::from_secs(600), || {
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
        // The pass after one that wrote reconciles in full (README "Quiet passes").
        noop_full.push(daemon.pass());
    }

    // No-op passes in the daemon: (a) a webhook with no new config commit (a repeated
    // delivery, a retry timer, a resync); (b) a new config commit that changes no request (a
    // README edit): the whole repo is read again through the caches.
    let runs0 = daemon.metric("promised_pipeline_runs_total");
    let head = remote_head(&bare);
    let (mut noop_same, mut noop_new) = (Samples::default(), Samples::default());
    // The pass after the last full one is the first one answered from it.
    daemon.pass();
    for k in 0..p.runs.max(5) {
        noop_same.push(daemon.pass());
        std::fs::write(work.join("README.md"), format!("edit {k}\n")).expect("readme");
        commit_and_push(&work, &config_url, "main", &format!("readme {k}"));
        noop_new.push(daemon.pass());
    }
    // Processes the daemon starts during one pass of each kind, counted with strace attached
    // (outside the timed passes: tracing slows the daemon down).
    let noop_daemon_spawns = [
        daemon.spawns_during(|| {
            daemon.pass();
        }),
        daemon.spawns_during(|| {
            std::fs::write(work.join("README.md"), "traced\n").expect("readme");
            commit_and_push(&work, &config_url, "main", "readme traced");
            daemon.pass();
        }),
    ];
    assert_eq!(remote_head(&bare), head, "no-op passes make no commit");
    assert_eq!(
        daemon.metric("promised_pipeline_runs_total"),
        runs0,
        "no-op passes run no pipeline"
    );
    let (hwm, rss) = daemon.memory_kib();
    drop(daemon);
    SizeResult {
        n,
        cold_host,
        cold_host_hwm,
        cold_image,
        cold_image_hwm,
        noop_process,
        noop_spawns,
        daemon_cold,
        hwm_after_cold,
        change,
        noop_same,
        noop_new,
        noop_full,
        noop_daemon_spawns,
        hwm,
        rss,
        took: started.elapsed(),
    }
}
