//! `promised run` end to end: a `git daemon` config remote and state-store remote on
//! 127.0.0.1, the real binary, real pipelines in bubblewrap.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{GitDaemon, bwrap_works, copy_dir, git, repo_root};

/// A running `promised run`, killed on drop.
struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn child_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `promised run ARGS --listen 127.0.0.1:PORT` on a free port, with debug logs to
/// `<dir>/daemon-<port>.log`: the command (to add to), the port and the log path.
fn run_cmd(args: &[&str], dir: &Path) -> (Command, u16, PathBuf) {
    let port = free_port();
    let log = dir.join(format!("daemon-{port}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promised"));
    cmd.arg("run")
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("PROMISED_LOG", "promised=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    (cmd, port, log)
}

/// `--config CONFIG --state-dir STATE`.
fn dirs<'a>(config: &'a Path, state: &'a Path) -> [&'a str; 4] {
    [
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]
}

fn start(args: &[&str], dir: &Path) -> Daemon {
    let (mut cmd, port, log) = run_cmd(args, dir);
    let child = cmd
        // Long enough that a burst of pushes on a loaded machine stays one burst.
        .env("PROMISED_DEBOUNCE", "1s")
        .spawn()
        .expect("promised run starts");
    ready(child, port, log)
}

/// Waits until a started daemon answers `/readyz` with 200.
fn ready(child: Child, port: u16, log: PathBuf) -> Daemon {
    let d = Daemon { child, port, log };
    wait_for(
        Duration::from_secs(30),
        || {
            get(d.port, "/readyz")
                .map(|(c, _)| c == 200)
                .unwrap_or(false)
        },
        &d,
        "ready",
    );
    d
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut r = agent()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    Some((r.status().as_u16(), r.body_mut().read_to_string().ok()?))
}

/// `POST /hooks/git`: (status, response body).
fn hook(port: u16, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut req = agent().post(format!("http://127.0.0.1:{port}/hooks/git"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send(body)
        .map(|mut r| {
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (r.status().as_u16(), text)
        })
        .unwrap_or_default()
}

fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool, d: &Daemon, what: &str) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting for {what}; daemon log:\n{}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
}

fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = get(port, "/metrics").expect("metrics");
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A `git daemon` serving `<tmp>/srv`, a config repo there (quickstart Promises) and a state
/// store repo. Returns (the daemon, config URL, working clone, state store bare repo path).
fn world(tmp: &Path) -> (GitDaemon, String, PathBuf, PathBuf) {
    let srv = tmp.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let daemon = GitDaemon::start(&srv);
    let config_url = daemon.bare_repo("config.git");
    let store_url = daemon.bare_repo("state.git");
    let work = tmp.join("work");
    copy_dir(&repo_root().join("testdata/quickstart"), &work);
    let platform = std::fs::read_to_string(work.join("platform/state-store.yaml")).unwrap();
    std::fs::write(
        work.join("platform/state-store.yaml"),
        platform.replace("url: quickstart-state.git", &format!("url: {store_url}")),
    )
    .unwrap();
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "initial config"]);
    git(&work, &["push", "-q", &config_url, "HEAD:main"]);
    let store = daemon.base.join("state.git");
    (daemon, config_url, work, store)
}

/// The quickstart config repo in `<tmp>/config`, with `prelude` (shell lines) run first by the
/// namespace Promise's pipeline.
fn quickstart(tmp: &Path, prelude: &str) -> PathBuf {
    let config = tmp.join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let script = config.join("promises/namespace/pipeline/configure");
    let text = std::fs::read_to_string(&script).unwrap().replacen(
        "set -eu\n",
        &format!("set -eu\n{prelude}"),
        1,
    );
    std::fs::write(&script, text).unwrap();
    config
}

fn push(work: &Path, url: &str, msg: &str) {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-qm", msg]);
    git(work, &["push", "-q", url, "HEAD:main"]);
}

fn store_has(store: &Path, needle: &str) -> bool {
    let out = Command::new("git")
        .args(["ls-tree", "-r", "--name-only", "main"])
        .current_dir(store)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains(needle))
}

fn head(store: &Path) -> String {
    git(store, &["rev-parse", "main"]).trim().to_string()
}

fn add_namespace_request(work: &Path, name: &str) {
    std::fs::write(
        work.join(format!("requests/{name}.yaml")),
        format!("apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  namespaceName: {name}\n"),
    )
    .unwrap();
}

#[test]
fn webhook_triggers_and_signatures_are_checked() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_gd, url, work, store) = world(tmp.path());
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "hook-s3cret\n").unwrap();
    let state = tmp.path().join("state");
    let d = start(
        &[
            "--config",
            &url,
            "--ref",
            "main",
            "--state-dir",
            state.to_str().unwrap(),
            "--poll-interval",
            "1h",
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(store_has(&store, "redis/example"), "first pass committed");

    // /metrics parses as Prometheus text; /api/v1/status has every object.
    let (code, body) = get(d.port, "/metrics").unwrap();
    assert_eq!(code, 200);
    let lines: Vec<std::io::Result<String>> = body.lines().map(|l| Ok(l.to_string())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("Prometheus text");
    for name in [
        "promised_reconcile_duration_seconds_count",
        "promised_pipeline_runs_total",
        "promised_commits_total",
        "promised_queue_depth",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "{name} missing in\n{body}"
        );
    }
    let (_, status) = get(d.port, "/api/v1/status").unwrap();
    let rows: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"] == "redis/default/example")
    );
    // `promised status` asks the running daemon.
    let (code, table, _) = common::promised(&[
        "status",
        "--listen",
        &format!("127.0.0.1:{}", d.port),
        "--state-dir",
        "/nonexistent-state",
    ]);
    assert_eq!(code, 0);
    assert!(table.contains("redis/default/example"), "{table}");

    add_namespace_request(&work, "team-hook");
    push(&work, &url, "add team-hook");
    let body = r#"{"ref":"refs/heads/main"}"#;
    let sign = |key: &[u8], body: &str| promised::daemon::webhook::sign(key, body.as_bytes());
    assert_eq!(hook(d.port, &[], body).0, 401, "unsigned");
    assert_eq!(
        hook(d.port, &[("X-Hub-Signature-256", "sha256=00")], body).0,
        401,
        "bad signature"
    );
    assert_eq!(
        hook(d.port, &[("X-Gitlab-Token", "wrong")], body).0,
        401,
        "bad token"
    );
    let bad_gitea = sign(b"not-the-secret", body);
    assert_eq!(
        hook(d.port, &[("X-Gitea-Signature", &bad_gitea)], body).0,
        401,
        "bad Gitea signature"
    );
    // A signed push to a branch the daemon does not follow: accepted, ignored.
    let other = r#"{"ref":"refs/heads/feature"}"#;
    let (code, text) = hook(
        d.port,
        &[("X-Gitea-Signature", &sign(b"hook-s3cret", other))],
        other,
    );
    assert_eq!(code, 202, "{text}");
    assert_eq!(
        text.trim(),
        "ignored: push to refs/heads/feature, following main"
    );
    // Longer than `debounce`: the next trigger comes after a quiet period.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !store_has(&store, "team-hook"),
        "refused and ignored calls do not trigger"
    );
    let sig = format!("sha256={}", sign(b"hook-s3cret", body));
    assert_eq!(hook(d.port, &[("X-Hub-Signature-256", &sig)], body).0, 202);
    wait_for(
        Duration::from_secs(20),
        || store_has(&store, "team-hook"),
        &d,
        "webhook-triggered commit",
    );
    // The daemon was idle: the pass started at once instead of waiting for `debounce`.
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("trigger after a quiet period: pass starts at once"),
        "{log}"
    );
    let msg = git(&store, &["log", "-1", "--format=%B", "main"]);
    let config_head = git(&work, &["rev-parse", "HEAD"]);
    assert!(
        msg.contains(&format!("Promised-Config-Commit: {}", config_head.trim())),
        "{msg}"
    );
    assert!(
        msg.contains("Promised-Resource: namespace/default/team-hook"),
        "{msg}"
    );
    // Gitea / Forgejo: X-Gitea-Signature, the bare hex HMAC.
    add_namespace_request(&work, "team-gitea");
    push(&work, &url, "add team-gitea");
    let gitea = sign(b"hook-s3cret", body);
    assert_eq!(
        hook(d.port, &[("X-Gitea-Signature", &gitea)], body),
        (202, "reconcile queued\n".to_string())
    );
    wait_for(
        Duration::from_secs(20),
        || store_has(&store, "team-gitea"),
        &d,
        "Gitea-webhook-triggered commit",
    );

    // A burst of 50 config commits, each with a webhook call. What holds however fast the
    // machine is: the newest spec wins, the burst is debounced (fewer runs than pushes), and
    // each state store commit of the burst names a newer config commit than the one before.
    let runs_before = metric(d.port, "promised_pipeline_runs_total");
    let store_before = head(&store);
    for i in 0..50 {
        std::fs::write(
            work.join("requests/team-hook.yaml"),
            format!("apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: team-hook\n  namespace: default\nspec:\n  namespaceName: team-hook-{i}\n"),
        )
        .unwrap();
        push(&work, &url, &format!("burst {i}"));
        assert_eq!(
            hook(d.port, &[("X-Gitlab-Token", "hook-s3cret")], body).0,
            202
        );
    }
    let ns_file = "clusters/dev/resources/default/namespace/team-hook/instance-configure/5058f/namespace.yaml";
    wait_for(
        Duration::from_secs(60),
        || {
            Command::new("git")
                .args(["show", &format!("main:{ns_file}")])
                .current_dir(&store)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("name: team-hook-49"))
                .unwrap_or(false)
        },
        &d,
        "the newest spec",
    );
    // The pass that pushed the newest spec counts its runs when it ends, after the push.
    wait_for(
        Duration::from_secs(60),
        || metric(d.port, "promised_pipeline_runs_total") > runs_before,
        &d,
        "the burst's runs counted",
    );
    let runs = metric(d.port, "promised_pipeline_runs_total") - runs_before;
    assert!(
        (1.0..50.0).contains(&runs),
        "the burst of 50 pushes ran the request {runs} times"
    );
    let config_history: Vec<String> = git(&work, &["rev-list", "--reverse", "HEAD"])
        .lines()
        .map(str::to_string)
        .collect();
    let log = git(
        &store,
        &[
            "log",
            "--reverse",
            "--format=%B",
            &format!("{store_before}..main"),
        ],
    );
    let positions: Vec<usize> = log
        .lines()
        .filter_map(|l| l.strip_prefix("Promised-Config-Commit: "))
        .map(|c| {
            config_history
                .iter()
                .position(|h| h == c.trim())
                .unwrap_or_else(|| panic!("{c} is a config commit"))
        })
        .collect();
    assert!(!positions.is_empty(), "{log}");
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "each run saw a newer config commit than the last: {positions:?}"
    );
}

#[test]
fn polling_alone_picks_up_commits_and_state_loss_converges_without_a_commit() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_gd, url, work, store) = world(tmp.path());
    let state = tmp.path().join("state");
    let args = [
        "--config",
        url.as_str(),
        "--ref",
        "main",
        "--state-dir",
        state.to_str().unwrap(),
        "--poll-interval",
        "500ms",
    ];
    let d = start(&args, tmp.path());
    add_namespace_request(&work, "team-poll");
    push(&work, &url, "add team-poll");
    wait_for(
        Duration::from_secs(20),
        || store_has(&store, "team-poll"),
        &d,
        "poll-triggered commit",
    );
    let before = head(&store);
    drop(d);

    // The state directory is lost; restarting converges with no new commit.
    std::fs::remove_dir_all(&state).unwrap();
    let d = start(&args, tmp.path());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        head(&store),
        before,
        "no new commit after rebuilding from the indexes\n{}",
        std::fs::read_to_string(&d.log).unwrap()
    );
    // The corrupt-state case too.
    drop(d);
    std::fs::write(state.join("state.json"), b"{corrupt").unwrap();
    let d = start(&args, tmp.path());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        head(&store),
        before,
        "{}",
        std::fs::read_to_string(&d.log).unwrap()
    );
}

#[test]
fn file_watch_on_a_directory() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let state = tmp.path().join("state");
    let d = start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let store = state.join("quickstart-state.git");
    assert!(store_has(&store, "redis/example"));
    add_namespace_request(&config, "team-watch");
    wait_for(
        Duration::from_secs(20),
        || store_has(&store, "team-watch"),
        &d,
        "watch-triggered commit",
    );
}

/// `--config .` with the default state directory `.promised` inside it: the daemon's own
/// writes there, and Git's under `.git/`, do not trigger passes; config edits still do.
#[test]
fn file_watch_ignores_the_state_dir_and_git_inside_the_config_dir() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path(), "");
    let (mut cmd, port, log) = run_cmd(&["--config", "."], tmp.path());
    let d = ready(cmd.current_dir(&config).spawn().unwrap(), port, log);
    let store = config.join(".promised/quickstart-state.git");
    assert!(store_has(&store, "redis/example"));
    let passes = || metric(port, "promised_reconcile_duration_seconds_count");
    let after_first = passes();
    git(&config, &["init", "-q"]);
    git(&config, &["add", "-A", ":!.promised"]);
    git(&config, &["commit", "-qm", "config"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        passes(),
        after_first,
        "writes under .promised/ or .git/ triggered passes\n{}",
        std::fs::read_to_string(&d.log).unwrap()
    );
    add_namespace_request(&config, "team-watch");
    wait_for(
        Duration::from_secs(20),
        || store_has(&store, "team-watch"),
        &d,
        "watch-triggered commit",
    );
}

/// Until its first pass ends the daemon has no status of its own: `/api/v1/status` answers
/// 503 and `promised status` shows the state directory's.
#[test]
fn status_before_the_first_pass_comes_from_the_state_directory() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(
        tmp.path(),
        "[ \"$KRATIX_OBJECT_NAME\" != team-slow ] || sleep 3\n",
    );
    let state = tmp.path().join("state");
    let (code, _, err) = common::reconcile(&config, &state);
    assert_eq!(code, 0, "{err}");
    add_namespace_request(&config, "team-slow");
    let (mut cmd, port, log) = run_cmd(&dirs(&config, &state), tmp.path());
    let d = Daemon {
        child: cmd.spawn().unwrap(),
        port,
        log,
    };
    wait_for(
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&d.log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("workflow started") && l.contains("team-slow"))
        },
        &d,
        "the slow pipeline",
    );
    let (code, body) = get(port, "/api/v1/status").unwrap();
    assert_eq!(code, 503, "{body}");
    let listen = format!("127.0.0.1:{port}");
    let status = ["status", "--listen", &listen, "--state-dir"];
    let (code, table, err) = common::promised(&[&status[..], &[state.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("redis/default/example"), "{table}");
    // After the first pass: the daemon's own status.
    wait_for(
        Duration::from_secs(30),
        || get(port, "/readyz").is_some_and(|(c, _)| c == 200),
        &d,
        "ready",
    );
    let (code, table, err) = common::promised(&[&status[..], &["/nonexistent-state"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("namespace/default/team-slow"), "{table}");
}

#[test]
fn sigterm_during_a_pipeline_commits_the_whole_wave_or_nothing() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The namespace pipeline takes 3 s.
    let config = quickstart(tmp.path(), "sleep 3\n");
    let state = tmp.path().join("state");
    let port = free_port();
    let log = tmp.path().join("term.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("PROMISED_LOG", "promised=debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Wait until the first pass is inside the slow pipelines.
    let t = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("workflow started") && l.contains("team-a"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "pipelines never started: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "did not drain");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("SIGTERM: draining"), "{log}");
    let store = state.join("quickstart-state.git");
    // The two running pipelines (both slots of the default concurrency) finished and their
    // wave is in one commit, complete; the request that had not started yet did not start.
    let files = git(&store, &["ls-tree", "-r", "--name-only", "main"]);
    for want in [
        "team-a/instance-configure",
        "team-b-prod/instance-configure",
        "dependencies/redis/promise-configure",
    ] {
        assert!(
            files.contains(want),
            "{want} missing: the wave is incomplete\n{files}\n{log}"
        );
    }
    assert_eq!(git(&store, &["rev-list", "--count", "main"]).trim(), "1");
    // The next start runs what was skipped, and only that.
    let out = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args([
            "reconcile",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let skipped = usize::from(!files.contains("redis/example/instance-configure"));
    assert!(text.contains(&format!("{skipped} pipelines run")), "{text}");
    assert!(
        git(&store, &["ls-tree", "-r", "--name-only", "main"])
            .contains("redis/example/instance-configure")
    );
}

#[test]
fn sighup_reloads_the_daemon_config_and_logs_are_json() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let state = tmp.path().join("state");
    let dc = tmp.path().join("promised.yaml");
    std::fs::write(
        &dc,
        "git:\n  commitSubject: \"first template: {updated}\"\n",
    )
    .unwrap();
    let port = free_port();
    let log = tmp.path().join("hup.log");
    let child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args([
            "--log-format",
            "json",
            "run",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .args([
            "--daemon-config",
            dc.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        port,
        log: log.clone(),
    };
    wait_for(
        Duration::from_secs(30),
        || get(port, "/readyz").map(|(c, _)| c == 200).unwrap_or(false),
        &d,
        "ready",
    );
    let store = state.join("quickstart-state.git");
    assert!(git(&store, &["log", "-1", "--format=%s", "main"]).starts_with("first template:"));

    std::fs::write(
        &dc,
        "git:\n  commitSubject: \"second template: {updated}\"\n",
    )
    .unwrap();
    let pid = rustix::process::Pid::from_raw(d.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    wait_for(
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("daemon config reloaded")
        },
        &d,
        "reload",
    );
    add_namespace_request(&config, "team-hup");
    wait_for(
        Duration::from_secs(20),
        || store_has(&store, "team-hup"),
        &d,
        "commit after reload",
    );
    let subject = git(&store, &["log", "-1", "--format=%s", "main"]);
    assert!(subject.starts_with("second template:"), "{subject}");

    // Every log line is one JSON object.
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}

/// The shipped unit starts: its `Environment=`, its `EnvironmentFile=` (the example the README
/// installs, commented examples included) and its `ExecStart=` command line with the `${VAR}`s
/// expanded, as systemd would, with only the config repo pointed at a local one.
#[test]
fn the_systemd_unit_environment_and_command_line_start_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo_root().join("systemd/promised.service")).unwrap();
    let mut env = BTreeMap::new();
    let mut exec = None;
    let mut assign = |kv: &str| {
        let (k, v) = kv.split_once('=').expect("KEY=VALUE");
        env.insert(k.trim().to_string(), v.trim().to_string());
    };
    for line in unit.lines() {
        if let Some(kv) = line.strip_prefix("Environment=") {
            assign(kv);
        } else if let Some(file) = line.strip_prefix("EnvironmentFile=") {
            assert_eq!(
                file.trim_start_matches('-'),
                "/etc/promised/promised.env",
                "the README installs systemd/promised.env.example there"
            );
            let example =
                std::fs::read_to_string(repo_root().join("systemd/promised.env.example")).unwrap();
            for l in example.lines() {
                let l = l.trim_start_matches('#').trim();
                if l.starts_with("PROMISED_") {
                    assign(l);
                }
            }
        } else if let Some(cmd) = line.strip_prefix("ExecStart=") {
            exec = Some(cmd.to_string());
        }
    }
    assert!(env.contains_key("PROMISED_CONFIG_REF"), "{env:?}");
    // The config repo: a local Git repository instead of the example's URL.
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("README.md"), "no objects yet\n").unwrap();
    git(&config, &["init", "-q", "-b", "main"]);
    git(&config, &["add", "-A"]);
    git(&config, &["commit", "-qm", "empty config"]);
    assert!(
        env.insert(
            "PROMISED_CONFIG_REPO".into(),
            config.to_str().unwrap().into()
        )
        .is_some(),
        "promised.env.example sets PROMISED_CONFIG_REPO"
    );
    let daemon_config = repo_root().join("systemd/promised.yaml.example");
    let exec = exec.expect("ExecStart=");
    let mut words = exec.split_whitespace().map(|w| {
        let mut w = w.to_string();
        for (k, v) in &env {
            w = w.replace(&format!("${{{k}}}"), v);
        }
        assert!(!w.contains('$'), "unexpanded variable in {exec:?}: {w}");
        if w == "/etc/promised/promised.yaml" {
            daemon_config.to_str().unwrap().to_string()
        } else {
            w
        }
    });
    assert_eq!(words.next().as_deref(), Some("/usr/local/bin/promised"));
    let port = free_port();
    let log = tmp.path().join("unit.log");
    let state = tmp.path().join("state");
    let child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(words)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("STATE_DIRECTORY", &state)
        .envs(&env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let d = ready(child, port, log);
    assert!(
        state.join("state.json").is_file(),
        "the state lives in $STATE_DIRECTORY\n{}",
        std::fs::read_to_string(&d.log).unwrap()
    );
}

/// `logFormat` in the daemon config sets the log format; `--log-format` still wins.
#[test]
fn log_format_from_the_daemon_config() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let dc = tmp.path().join("promised.yaml");
    std::fs::write(&dc, "logFormat: json\n").unwrap();
    let state = tmp.path().join("state");
    let run = |extra: &[&str]| {
        let mut args = dirs(&config, &state).to_vec();
        args.extend_from_slice(&["--daemon-config", dc.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let (mut cmd, port, log) = run_cmd(&args, tmp.path());
        drop(ready(cmd.spawn().unwrap(), port, log.clone()));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("HTTP endpoints up"), "{text}");
        text
    };
    let json = run(&[]);
    for line in json.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    let text = run(&["--log-format", "text"]);
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "{text}"
    );
}

/// systemd's watchdog keeps getting `WATCHDOG=1` while the first pass runs a slow pipeline
/// (the loop beats while it drives a pass, not only between passes), before `READY=1`.
#[test]
fn watchdog_beats_during_a_long_pipeline() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path(), "sleep 3\n");
    let sock_path = tmp.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let state = tmp.path().join("state");
    let (mut cmd, port, log) = run_cmd(&dirs(&config, &state), tmp.path());
    let child = cmd
        .env("NOTIFY_SOCKET", &sock_path)
        // WatchdogSec=1s: WATCHDOG=1 every 0.5 s while the loop beat within 0.5 s.
        .env("WATCHDOG_USEC", "1000000")
        .spawn()
        .unwrap();
    let mut d = Daemon {
        child,
        port,
        log: log.clone(),
    };
    let mut pings = 0;
    let mut buf = [0u8; 512];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == "READY=1") {
                    break;
                }
                pings += msg.lines().filter(|l| *l == "WATCHDOG=1").count();
            }
            Err(_) => assert!(
                d.child_alive(),
                "daemon exited: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }
    // The 3 s pipelines alone span six 0.5 s ticks; a loop that beat only at the start of the
    // pass would be vouched for at most twice.
    assert!(
        pings >= 3,
        "{pings} WATCHDOG=1 before READY=1\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Lines of the daemon log that start a workflow of the request `name`.
fn starts(d: &Daemon, name: &str) -> usize {
    std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("workflow started") && l.contains(name))
        .count()
}

/// A failing workflow retries by itself with exponential backoff (`retryBackoff` doubling up
/// to `maxRetryBackoff`), and `retryAfter` in workflow-control.yaml re-runs a request after
/// that delay; nothing else triggers those passes.
#[test]
fn failed_workflows_back_off_and_retry_after_reruns() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(
        tmp.path(),
        "[ \"$KRATIX_OBJECT_NAME\" != team-fail ] || { echo failing on purpose >&2; exit 1; }\n\
         [ \"$KRATIX_OBJECT_NAME\" != team-retry ] || echo 'retryAfter: 1s' > /kratix/metadata/workflow-control.yaml\n",
    );
    add_namespace_request(&config, "team-fail");
    let state = tmp.path().join("state");
    let (mut cmd, port, log) = run_cmd(&dirs(&config, &state), tmp.path());
    let child = cmd
        .env("PROMISED_RETRY_BACKOFF", "1s")
        .env("PROMISED_MAX_RETRY_BACKOFF", "2s")
        .spawn()
        .unwrap();
    let d = ready(child, port, log);
    // Retries at +1 s, +2 s, +2 s: the loop wakes for them (its idle wake is a minute).
    wait_for(
        Duration::from_secs(30),
        || starts(&d, "team-fail") >= 4,
        &d,
        "three retries of the failing workflow",
    );
    // The state as the daemon would read it back (snapshot plus journal).
    let state_json = serde_json::to_value(
        promised::state::StateDir::open(&state)
            .unwrap()
            .load()
            .unwrap(),
    )
    .unwrap();
    let record = &state_json["requests"]["namespace/default/team-fail"];
    let failures = record["failures"].as_u64().unwrap();
    assert!(failures >= 3, "{record:#}");
    let at = |t: &serde_json::Value| humantime::parse_rfc3339(t.as_str().unwrap()).unwrap();
    let failed_at = at(&record["status"]["pipelines"][0]["lastTransitionTime"]);
    let delay = at(&record["retryAt"])
        .duration_since(failed_at)
        .unwrap_or_default()
        .as_secs();
    // Capped at maxRetryBackoff (2 s) where 1 s doubling would be 4 s or more; times are
    // kept to the second.
    assert!((1..=3).contains(&delay), "delay {delay} s: {record:#}");

    // retryAfter: the request runs again after the delay, by itself.
    std::fs::remove_file(config.join("requests/team-fail.yaml")).unwrap();
    add_namespace_request(&config, "team-retry");
    wait_for(
        Duration::from_secs(30),
        || starts(&d, "team-retry") >= 3,
        &d,
        "two re-runs after retryAfter",
    );
    let (_, status) = get(port, "/api/v1/status").unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&status).unwrap();
    let retry = rows
        .iter()
        .find(|r| r["key"] == "namespace/default/team-retry")
        .expect("team-retry status");
    assert_eq!(
        retry["status"]["pipelines"][0]["phase"], "Suspended",
        "{retry:#}"
    );
    assert!(
        retry["status"]["pipelines"][0]["nextRetryAt"].is_string(),
        "{retry:#}"
    );
}

/// The `Reconciled` condition (status, reason) of `key` in the daemon's `/api/v1/status`.
fn reconciled(port: u16, key: &str) -> Option<(String, String, String)> {
    let (_, body) = get(port, "/api/v1/status")?;
    let rows: serde_json::Value = serde_json::from_str(&body).ok()?;
    let row = rows.as_array()?.iter().find(|r| r["key"] == key)?;
    let c = row["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Reconciled")?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        row["status"]["message"].as_str()?.to_string(),
    ))
}

#[test]
fn the_daemon_on_a_git_remote_never_prunes_for_a_file_that_does_not_load() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_gd, url, work, store) = world(tmp.path());
    let state = tmp.path().join("state");
    let d = start(
        &[
            "--config",
            &url,
            "--ref",
            "main",
            "--state-dir",
            state.to_str().unwrap(),
            "--poll-interval",
            "300ms",
        ],
        tmp.path(),
    );
    wait_for(
        Duration::from_secs(30),
        || store_has(&store, "team-a/") && store_has(&store, "redis/example"),
        &d,
        "first pass committed",
    );
    let good = head(&store);
    let tree = |s: &Path| git(s, &["ls-tree", "-r", "main"]);
    let good_tree = tree(&store);
    let is_held = |key: &str, file: &str| {
        reconciled(d.port, key)
            .is_some_and(|(s, r, m)| s == "False" && r == "ConfigFileInvalid" && m.contains(file))
    };
    let is_reconciled = |key: &str| reconciled(d.port, key).is_some_and(|(s, _, _)| s == "True");

    // A tab in a request file, then a tab in a promise.yaml: each held, nothing pruned.
    for (file, key) in [
        ("requests/namespaces.yaml", "namespace/default/team-a"),
        ("promises/redis/promise.yaml", "promise/redis"),
    ] {
        let path = work.join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, original.replacen("\n  name:", "\n\tname:", 1)).unwrap();
        push(&work, &url, &format!("break {file}"));
        wait_for(
            Duration::from_secs(30),
            || is_held(key, file),
            &d,
            &format!("{key} held for {file}"),
        );
        assert_eq!(head(&store), good, "no commit while {file} does not load");
        assert_eq!(tree(&store), good_tree);
        std::fs::write(&path, original).unwrap();
        push(&work, &url, &format!("fix {file}"));
        wait_for(
            Duration::from_secs(30),
            || is_reconciled(key),
            &d,
            &format!("{key} reconciled again"),
        );
        assert_eq!(head(&store), good, "fixing {file} changes nothing");
    }

    // Deleting the file deletes.
    std::fs::remove_file(work.join("requests/namespaces.yaml")).unwrap();
    push(&work, &url, "remove the namespace requests");
    wait_for(
        Duration::from_secs(30),
        || !store_has(&store, "team-a/") && !store_has(&store, "team-b-prod/"),
        &d,
        "requests deleted",
    );
    assert!(store_has(&store, "redis/example"), "the others stay");
}

/// `promised run` warns at start about each configured secret file that group or others may
/// read, naming the path (never the content); files with mode 0600 get no warning.
#[test]
fn loose_secret_file_modes_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir_all(secrets.join("git-credentials")).unwrap();
    let password = secrets.join("git-credentials/password");
    let key = secrets.join("s3_secretAccessKey");
    let webhook = tmp.path().join("webhook-secret");
    for f in [&password, &key, &webhook] {
        std::fs::write(f, "s3cret-content-never-logged").unwrap();
    }
    let mode = |f: &Path, m: u32| std::fs::set_permissions(f, std::fs::Permissions::from_mode(m));
    mode(&password, 0o644).unwrap();
    mode(&key, 0o600).unwrap();
    mode(&webhook, 0o640).unwrap();
    let dc = tmp.path().join("promised.yaml");
    std::fs::write(
        &dc,
        format!(
            "secretsDir: {}\nwebhookSecretFile: {}\n",
            secrets.display(),
            webhook.display()
        ),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let run = || {
        let mut args = dirs(&config, &state).to_vec();
        args.extend_from_slice(&["--daemon-config", dc.to_str().unwrap()]);
        let (mut cmd, port, log) = run_cmd(&args, tmp.path());
        drop(ready(cmd.spawn().unwrap(), port, log.clone()));
        std::fs::read_to_string(&log).unwrap()
    };
    let warned = |log: &str, f: &Path| {
        log.lines().any(|l| {
            l.contains("WARN")
                && l.contains("secret file is readable by group or others")
                && l.contains(&f.display().to_string())
        })
    };
    let log = run();
    assert!(warned(&log, &password), "{log}");
    assert!(warned(&log, &webhook), "{log}");
    assert!(log.contains("0644") && log.contains("0640"), "{log}");
    assert!(!warned(&log, &key), "0600 is fine: {log}");
    assert!(!log.contains("s3cret-content"), "{log}");

    mode(&password, 0o600).unwrap();
    mode(&webhook, 0o400).unwrap();
    let log = run();
    assert!(
        !log.contains("secret file is readable by group or others"),
        "{log}"
    );
}

/// An unchanged invalid object is logged once, not on every pass; once fixed and broken again
/// it is logged again.
#[test]
fn an_unchanged_invalid_object_is_logged_once() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let bad = config.join("requests/bad.yaml");
    let bad_text = "apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: bad\nspec:\n  namespaceName: NOT_VALID\n";
    std::fs::write(&bad, bad_text).unwrap();
    let state = tmp.path().join("state");
    let d = start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let store = state.join("quickstart-state.git");
    let logged = |d: &Daemon| {
        std::fs::read_to_string(&d.log)
            .unwrap()
            .matches("invalid config object")
            .count()
    };
    // Three more passes (each adds a request and waits for its commit).
    for name in ["team-x", "team-y", "team-z"] {
        add_namespace_request(&config, name);
        wait_for(
            Duration::from_secs(30),
            || store_has(&store, name),
            &d,
            &format!("{name} committed"),
        );
    }
    assert_eq!(
        logged(&d),
        1,
        "{}",
        std::fs::read_to_string(&d.log).unwrap()
    );
    // Fixed, then broken again: logged again.
    std::fs::write(&bad, bad_text.replace("NOT_VALID", "bad")).unwrap();
    wait_for(
        Duration::from_secs(30),
        || store_has(&store, "resources/default/namespace/bad/"),
        &d,
        "the fixed request committed",
    );
    std::fs::write(&bad, bad_text).unwrap();
    wait_for(
        Duration::from_secs(30),
        || logged(&d) == 2,
        &d,
        "logged again",
    );
}

/// `reconcile pass done` lines of the daemon log so far, each as whether it was reused.
fn passes_reused(d: &Daemon) -> Vec<bool> {
    std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("reconcile pass done"))
        .map(|l| l.contains("reused=true"))
        .collect()
}

/// Sends a webhook and waits for the pass it starts; returns whether that pass was reused.
fn webhook_pass(d: &Daemon) -> bool {
    let before = passes_reused(d).len();
    assert_eq!(hook(d.port, &[], "{}").0, 202, "webhook accepted");
    wait_for(
        Duration::from_secs(30),
        || passes_reused(d).len() > before,
        d,
        "the webhook's pass",
    );
    passes_reused(d)[before]
}

#[test]
fn a_repeated_webhook_at_the_same_commit_is_answered_from_the_quiet_pass() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_gd, url, work, store) = world(tmp.path());
    let state = tmp.path().join("state");
    // The store's head is trusted for longer than the quiet window (a minute at most), so
    // only the rules of the quiet pass decide here.
    let dc = tmp.path().join("promised.yaml");
    std::fs::write(&dc, "git:\n  driftCheckInterval: 10m\n").unwrap();
    let args = [
        "--config",
        url.as_str(),
        "--ref",
        "main",
        "--state-dir",
        state.to_str().unwrap(),
        "--poll-interval",
        "1h",
        "--daemon-config",
        dc.to_str().unwrap(),
    ];
    let d = start(&args, tmp.path());
    wait_for(
        Duration::from_secs(30),
        || !passes_reused(&d).is_empty(),
        &d,
        "the first pass",
    );
    let first = head(&store);
    let runs = metric(d.port, "promised_pipeline_runs_total");
    assert!(runs > 0.0, "the first pass ran the quickstart's workflows");

    // The pass after the writing one changes nothing: it is reconciled in full, and the next
    // trigger at the same commit is answered from it.
    assert!(!webhook_pass(&d), "the first no-op pass is a full one");
    assert!(webhook_pass(&d), "a repeat of a quiet pass is reused");
    assert!(webhook_pass(&d), "and again");
    // An operator's rollout override is acted on by the next pass, which is a full one.
    let (code, _, err) = common::promised(&[
        "rollout",
        "pause",
        "a-later-plan",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!webhook_pass(&d), "a rollout override ends the quiet pass");
    assert!(webhook_pass(&d), "the pass after it is quiet again");
    assert_eq!(head(&store), first, "reused passes make no commit");
    assert_eq!(
        metric(d.port, "promised_pipeline_runs_total"),
        runs,
        "nor run anything"
    );

    // A new config commit is reconciled in full, even when it changes no request; a repeat of
    // it is reused again.
    std::fs::write(work.join("README.md"), "edited\n").unwrap();
    push(&work, &url, "readme");
    assert!(!webhook_pass(&d), "a new commit is reconciled in full");
    assert!(webhook_pass(&d), "its repeat is reused");

    // A new request is reconciled (the webhook after its push is never answered from the
    // quiet pass).
    add_namespace_request(&work, "team-quiet");
    push(&work, &url, "add team-quiet");
    assert!(!webhook_pass(&d), "a change is reconciled in full");
    assert!(store_has(&store, "team-quiet"), "and lands");
}

/// One state directory, one engine: a `promised reconcile` (or a second daemon) on the
/// directory a running daemon holds is refused with exit code 2 and the holder named, without
/// touching the state; once the daemon is gone, the same command runs.
#[test]
fn a_second_process_on_a_held_state_directory_is_refused() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path(), "");
    let state = tmp.path().join("state");
    let mut d = start(&dirs(&config, &state), tmp.path());
    let journal = std::fs::read(state.join("state.journal")).unwrap_or_default();

    let (code, _, err) = common::reconcile(&config, &state);
    assert_eq!(code, 2, "{err}");
    let holder = format!("pid {}: ", d.child.id());
    assert!(
        err.contains(&format!(
            "state directory {} is in use by another promised process ({holder}",
            state.display()
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read(state.join("state.journal")).unwrap_or_default(),
        journal,
        "the refused process wrote nothing"
    );
    // A second daemon on it does not start.
    let (mut cmd, _, log) = run_cmd(&dirs(&config, &state), tmp.path());
    let status = cmd.status().unwrap();
    assert!(!status.success(), "a second daemon exits");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&holder), "{text}");

    assert!(d.child_alive(), "the holder is unaffected");
    drop(d);
    let (code, _, err) = common::reconcile(&config, &state);
    assert_eq!(code, 0, "released when the holder is gone: {err}");
}
