//! Never hang on a server: a config remote or state store on 127.0.0.1 that accepts
//! connections and never answers fails its operation within the network timeouts, with an
//! error naming the server and the operation; the rest of the pass goes on; and `promised run`
//! stops on SIGTERM within `shutdownGrace` plus a few seconds even while a fetch hangs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::HungServer;
use promised::config::{self, GitRepo};
use statestores::NetworkTimeouts;

/// The timeouts of these tests: short, so a hang shows as a failure quickly.
const SHORT: NetworkTimeouts = NetworkTimeouts {
    connect: Duration::from_secs(2),
    read: Duration::from_secs(2),
    operation: Duration::from_secs(3),
};

/// What a loaded machine may add to a timeout (process start-up, scheduling).
const SLACK: Duration = Duration::from_secs(5);

/// `PROMISED_NETWORK__*` for [`SHORT`].
fn short_env(cmd: &mut Command) -> &mut Command {
    cmd.env("PROMISED_NETWORK__CONNECT_TIMEOUT", "2s")
        .env("PROMISED_NETWORK__READ_TIMEOUT", "2s")
        .env("PROMISED_NETWORK__OPERATION_TIMEOUT", "3s")
}

/// Waits up to `limit` for `child` to exit; kills it and returns `None` when it does not.
fn exits_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_silent_config_remote_fails_the_fetch_and_the_poll_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let hung = HungServer::start();
    let server = format!("127.0.0.1:{}", hung.port);
    for url in [
        format!("git://{server}/config.git"),
        format!("http://{server}/config.git"),
    ] {
        let t = Instant::now();
        let err = match GitRepo::open(&url, Some(&tmp.path().join("cache")), &SHORT) {
            Ok(_) => panic!("fetched from a silent server"),
            Err(e) => e.to_string(),
        };
        assert!(
            t.elapsed() < SHORT.operation + SLACK,
            "{:?}: {err}",
            t.elapsed()
        );
        assert!(err.contains(&server) && err.contains("fetch:"), "{err}");
        eprintln!("{err}");

        // The daemon's poller asks for the refs only.
        let t = Instant::now();
        let err = config::source::peek_ref(&url, "main", &tmp.path().join("cache"), &SHORT)
            .expect_err("listed refs of a silent server")
            .to_string();
        assert!(
            t.elapsed() < SHORT.operation + SLACK,
            "{:?}: {err}",
            t.elapsed()
        );
        assert!(err.contains(&server) && err.contains("list refs:"), "{err}");
    }
}

#[test]
fn promised_reconcile_with_a_silent_config_remote_exits_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let hung = HungServer::start();
    let server = format!("127.0.0.1:{}", hung.port);
    let t = Instant::now();
    let out = short_env(Command::new(env!("CARGO_BIN_EXE_promised")).args([
        "reconcile",
        "--config",
        &format!("git://{server}/config.git"),
        "--state-dir",
        tmp.path().join("state").to_str().unwrap(),
    ]))
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        t.elapsed() < SHORT.operation + SLACK,
        "{:?}: {err}",
        t.elapsed()
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&server) && err.contains("fetch:"), "{err}");
    assert!(err.contains("network.readTimeout"), "{err}");
}

/// Two GitStateStores, a local one and one on a silent `git://` server, each with a
/// Destination: the pass writes the local one (its canary files) and reports the other.
#[test]
fn a_silent_state_store_does_not_stop_another_from_being_written() {
    let tmp = tempfile::tempdir().unwrap();
    let hung = HungServer::start();
    let server = format!("127.0.0.1:{}", hung.port);
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("platform.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1
kind: GitStateStore
metadata: {{name: local}}
spec: {{url: local-state.git}}
---
apiVersion: platform.kratix.io/v1alpha1
kind: GitStateStore
metadata: {{name: silent}}
spec: {{url: 'git://{server}/state.git'}}
---
apiVersion: platform.kratix.io/v1alpha1
kind: Destination
metadata: {{name: fine, labels: {{env: dev}}}}
spec:
  path: clusters/fine
  stateStoreRef: {{kind: GitStateStore, name: local}}
---
apiVersion: platform.kratix.io/v1alpha1
kind: Destination
metadata: {{name: stuck, labels: {{env: dev}}}}
spec:
  path: clusters/stuck
  stateStoreRef: {{kind: GitStateStore, name: silent}}
"
        ),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let t = Instant::now();
    let out = short_env(Command::new(env!("CARGO_BIN_EXE_promised")).args([
        "reconcile",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]))
    .output()
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // One fetch (the write-permission check) against the silent server.
    assert!(
        t.elapsed() < SHORT.operation + SLACK,
        "{:?}: {text}",
        t.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("state store GitStateStore/silent: FAILED")
            && text.contains(&server)
            && text.contains("fetch:"),
        "{text}"
    );
    assert!(
        text.contains("state store GitStateStore/local: commit"),
        "{text}"
    );
    let files = common::git(
        &state,
        &[
            "--git-dir",
            "local-state.git",
            "ls-tree",
            "-r",
            "--name-only",
            "main",
        ],
    );
    assert!(files.contains("clusters/fine/"), "{files}");
    assert!(!files.contains("clusters/stuck/"), "{files}");
}

/// `promised run` whose config remote never answers says so in its log, naming the server
/// and the operation, within the network timeouts (it used to log nothing), and keeps
/// running (the poller and the failure backoff try again).
#[test]
fn the_daemon_reports_a_silent_config_remote_and_keeps_running() {
    let tmp = tempfile::tempdir().unwrap();
    let hung = HungServer::start();
    let server = format!("127.0.0.1:{}", hung.port);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tmp.path().join("daemon.log");
    let mut child = short_env(
        Command::new(env!("CARGO_BIN_EXE_promised"))
            .args([
                "run",
                "--config",
                &format!("git://{server}/config.git"),
                "--state-dir",
                tmp.path().join("state").to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("PROMISED_SHUTDOWN_GRACE", "1s"),
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    // From the first connection on, the failure is logged within the operation timeout.
    let t = Instant::now();
    while hung.accepted() == 0 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let connected = Instant::now();
    let failed = loop {
        if let Some(line) = read_log()
            .lines()
            .find(|l| l.contains("reconcile pass failed"))
        {
            break line.to_string();
        }
        if connected.elapsed() > SHORT.operation + SLACK || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no failure logged after {:?}:\n{}",
                connected.elapsed(),
                read_log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        failed.contains(&server) && failed.contains("fetch:"),
        "{failed}"
    );
    assert!(child.try_wait().unwrap().is_none(), "{}", read_log());
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = exits_within(&mut child, Duration::from_secs(1) + SLACK);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        read_log()
    );
}

/// `promised run` whose config remote accepts the fetch and never answers (network timeouts
/// of an hour: the fetch really hangs) ends on SIGTERM within `shutdownGrace` + 5 s.
#[test]
fn sigterm_ends_the_daemon_while_a_config_fetch_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let hung = HungServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tmp.path().join("daemon.log");
    let grace = Duration::from_secs(1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args([
            "run",
            "--config",
            &format!("git://127.0.0.1:{}/config.git", hung.port),
            "--state-dir",
            tmp.path().join("state").to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("PROMISED_LOG", "promised=debug")
        .env("PROMISED_SHUTDOWN_GRACE", "1s")
        .env("PROMISED_NETWORK__CONNECT_TIMEOUT", "1h")
        .env("PROMISED_NETWORK__READ_TIMEOUT", "1h")
        .env("PROMISED_NETWORK__OPERATION_TIMEOUT", "1h")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
    // Wait until the first pass's fetch (or the poller) is inside the silent server.
    let t = Instant::now();
    while hung.accepted() == 0 {
        if t.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the daemon never connected:\n{}", read_log(&log));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let t = Instant::now();
    let Some(status) = exits_within(&mut child, grace + Duration::from_secs(5)) else {
        panic!(
            "still running {:?} after SIGTERM:\n{}",
            t.elapsed(),
            read_log(&log)
        );
    };
    let log = read_log(&log);
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("SIGTERM: draining"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}
