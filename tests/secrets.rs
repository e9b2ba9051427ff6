//! Secrets never leave their files (issue 23 part 6): known values in every credential slot a
//! state store and the daemon have (Git basicAuth token, SSH private key and known hosts, S3
//! access keys, the webhook secret, a registry password in `images.authFile`), `promised run`
//! and `promised reconcile` at trace level, and none of the values in the logs, `/metrics`,
//! `/api/v1/status`, `/api/v1/destinations`, `promised status --output json`, the state
//! store's commit messages or any file of the state directory. The Git-over-HTTP, SSH, S3 and
//! registry servers are closed ports on 127.0.0.1: promised reads each credential and fails to
//! connect, so the error texts are searched too. The SSH key's private directory under
//! `$RUNTIME_DIRECTORY` is gone once promised exits.
//! (The sandbox side is tests/pipeline.rs `no_host_secret_is_visible_in_the_sandbox`.)

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every secret value, with the slot it is in.
const SECRETS: &[(&str, &str)] = &[
    ("git-https/username", "user-7b1e0c"),
    ("git-https/password", "ghp_Tok3nValue0f9a8b7c6d5e4f3a2b1c0"),
    (
        "git-ssh/sshPrivateKey",
        "SshKeyBody4d2f1a9e8c7b6a5f4e3d2c1b0",
    ),
    ("s3-creds/accessKeyID", "AKIAQ7EXAMPLE3F9K2LM"),
    (
        "s3-creds/secretAccessKey",
        "s3Secr3tK3y/wJalrXUtnFEMIK7MDENGbPxRfiCY",
    ),
    ("webhook", "whsec-5e6f7a8b9c0d1e2f3a4b5c6d"),
    ("registry/password", "regPassw0rd-8c1d2e3f4a5b6c7d"),
];

fn closed_port() -> u16 {
    // Bound and dropped: nothing listens there afterwards.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The app Promise and a request on the local Git state store (common::app), plus a Git
/// state store over HTTP with basicAuth, one over SSH with a key, and an S3 bucket with access
/// keys, each with a Destination, all on closed ports; the secrets directory and the webhook
/// secret file; the daemon config.
fn world(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let config = root.join("config");
    common::app::write_config(&config);
    std::fs::write(
        config.join("requests/a.yaml"),
        common::app::request("a", "team-a"),
    )
    .unwrap();
    let (http, ssh, s3, registry) = (closed_port(), closed_port(), closed_port(), closed_port());
    // A second Promise whose image is pulled from a registry (a closed port) with a password
    // from `images.authFile`.
    std::fs::create_dir_all(config.join("promises/pulled")).unwrap();
    std::fs::write(
        config.join("promises/pulled/promise.yaml"),
        common::app::PROMISE
            .replace("name: app", "name: pulled")
            .replace("apps.example.com", "pulleds.example.com")
            .replace(
                "{kind: App, plural: apps, singular: app}",
                "{kind: Pulled, plural: pulleds, singular: pulled}",
            )
            .replace(
                "image: example.com/render",
                &format!("image: 127.0.0.1:{registry}/team/render:v1"),
            ),
    )
    .unwrap();
    std::fs::write(
        config.join("requests/pulled.yaml"),
        common::app::request("p", "team-a").replace("kind: App", "kind: Pulled"),
    )
    .unwrap();
    std::fs::write(
        config.join("platform/remote.yaml"),
        format!(
            r#"apiVersion: platform.kratix.io/v1alpha1
kind: GitStateStore
metadata:
  name: https
spec:
  url: http://127.0.0.1:{http}/store.git
  authMethod: basicAuth
  secretRef: {{name: git-https}}
---
apiVersion: platform.kratix.io/v1alpha1
kind: GitStateStore
metadata:
  name: ssh
spec:
  url: ssh://git@127.0.0.1:{ssh}/store.git
  authMethod: ssh
  secretRef: {{name: git-ssh}}
---
apiVersion: platform.kratix.io/v1alpha1
kind: BucketStateStore
metadata:
  name: bucket
spec:
  endpoint: 127.0.0.1:{s3}
  insecure: true
  bucketName: kratix
  authMethod: accessKey
  secretRef: {{name: s3-creds}}
---
apiVersion: platform.kratix.io/v1alpha1
kind: Destination
metadata:
  name: https-dest
  labels: {{remote: "yes"}}
spec:
  strictMatchLabels: true
  path: https
  stateStoreRef: {{kind: GitStateStore, name: https}}
---
apiVersion: platform.kratix.io/v1alpha1
kind: Destination
metadata:
  name: ssh-dest
  labels: {{remote: "yes"}}
spec:
  strictMatchLabels: true
  path: ssh
  stateStoreRef: {{kind: GitStateStore, name: ssh}}
---
apiVersion: platform.kratix.io/v1alpha1
kind: Destination
metadata:
  name: bucket-dest
  labels: {{remote: "yes"}}
spec:
  strictMatchLabels: true
  path: bucket
  stateStoreRef: {{kind: BucketStateStore, name: bucket}}
"#
        ),
    )
    .unwrap();
    let secrets = root.join("secrets");
    for (slot, value) in SECRETS {
        if *slot == "webhook" || slot.starts_with("registry/") {
            continue;
        }
        let p = secrets.join(slot);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let value = if slot.ends_with("sshPrivateKey") {
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{value}\n-----END OPENSSH PRIVATE KEY-----\n"
            )
        } else {
            value.to_string()
        };
        std::fs::write(&p, value).unwrap();
    }
    // Public, not a secret, but needed.
    std::fs::write(
        secrets.join("git-ssh/knownHosts"),
        format!("[127.0.0.1]:{ssh} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"),
    )
    .unwrap();
    let webhook = root.join("webhook-secret");
    std::fs::write(&webhook, secret("webhook")).unwrap();
    let registry_auth = secrets.join("registry-auth.json");
    std::fs::write(
        &registry_auth,
        format!(
            r#"{{"auths": {{"127.0.0.1:{registry}": {{"username": "puller", "password": "{}"}}}}}}"#,
            secret("registry/password")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(&secrets)
        .into_iter()
        .chain(walkdir::WalkDir::new(&webhook))
    {
        let e = e.unwrap();
        let mode = if e.file_type().is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let daemon_config = root.join("promised.yaml");
    std::fs::write(
        &daemon_config,
        format!(
            "sandbox: none\nsecretsDir: {}\nwebhookSecretFile: {}\nimageOverrides:\n  example.com/render: {{}}\nimages:\n  authFile: {}\n  insecureRegistries: ['127.0.0.1:{registry}']\n",
            secrets.display(),
            webhook.display(),
            registry_auth.display()
        ),
    )
    .unwrap();
    (config, daemon_config)
}

fn secret(slot: &str) -> &'static str {
    SECRETS.iter().find(|(s, _)| *s == slot).unwrap().1
}

/// Panics naming the place and slot when any secret value is in `text`.
fn assert_clean(place: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for (slot, value) in SECRETS {
        assert!(
            !text.contains(value),
            "the {slot} secret is in {place}:\n{}",
            text.chars().take(20_000).collect::<String>()
        );
    }
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    Some((r.status().as_u16(), r.body_mut().read_to_string().ok()?))
}

#[test]
fn no_secret_value_is_in_logs_status_metrics_commits_or_the_state_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (config, daemon_config) = world(root);
    let state = root.join("state");
    let common_args = [
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--daemon-config",
        daemon_config.to_str().unwrap(),
        "--log",
        "trace",
    ];

    // The daemon: two passes (the first, and one a signed webhook triggers), a refused
    // webhook, then its endpoints.
    let port = closed_port();
    let log = root.join("daemon.log");
    // systemd's RuntimeDirectory=: where the SSH key file goes while a store is open.
    let runtime = root.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .arg("run")
        .args(common_args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("PROMISED_LOG")
        .env("RUNTIME_DIRECTORY", &runtime)
        .stdout(std::fs::File::create(root.join("daemon.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let passes = || {
        get(port, "/metrics")
            .map(|(_, m)| {
                m.lines()
                    .filter(|l| l.starts_with("promised_reconcile_duration_seconds_count"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
            })
            .unwrap_or(0.0)
    };
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !ok() {
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "timed out waiting for {what}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("the first pass", &|| passes() >= 1.0);
    let body = r#"{"ref":"refs/heads/main"}"#;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let hook = |sig: String| {
        agent
            .post(format!("http://127.0.0.1:{port}/hooks/git"))
            .header("X-Hub-Signature-256", &sig)
            .send(body)
            .unwrap()
            .status()
            .as_u16()
    };
    let good = promised::daemon::webhook::sign(secret("webhook").as_bytes(), body.as_bytes());
    assert_eq!(hook(format!("sha256={good}")), 202);
    assert_eq!(hook(format!("sha256={}", "0".repeat(64))), 401);
    let before = passes();
    wait("the webhook's pass", &|| passes() > before);
    for path in [
        "/metrics",
        "/api/v1/status",
        "/api/v1/destinations",
        "/readyz",
    ] {
        let (_, text) = get(port, path).unwrap();
        assert_clean(path, text.as_bytes());
    }
    // SIGTERM: a daemon that stops as systemd stops it removes the SSH key's directory.
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let _ = child.wait();
    let daemon_log = std::fs::read(&log).unwrap();
    assert!(
        String::from_utf8_lossy(&daemon_log).contains("TRACE"),
        "trace logs were written"
    );
    assert_clean("the daemon's log", &daemon_log);
    assert_clean(
        "the daemon's stdout",
        &std::fs::read(root.join("daemon.out")).unwrap(),
    );

    // One-shot `promised reconcile` and `promised status`.
    let out = Command::new(env!("CARGO_BIN_EXE_promised"))
        .arg("reconcile")
        .args(common_args)
        .env_remove("PROMISED_LOG")
        .env("RUNTIME_DIRECTORY", &runtime)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_clean("promised reconcile's stdout", &out.stdout);
    assert_clean("promised reconcile's stderr", &out.stderr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for store in [
        "GitStateStore/https",
        "GitStateStore/ssh",
        "BucketStateStore/bucket",
    ] {
        assert!(
            stderr.contains(&format!("store={store} error=")),
            "the {store} state store was tried (its error is searched):\n{stderr}"
        );
    }
    // `promised images pull` asks the registry with the password of `images.authFile`
    // (the pipelines above run with `sandbox: none`, so the image runtime does not pull).
    let pull = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(["images", "pull", "--log", "trace", "--config"])
        .arg(&config)
        .arg("--daemon-config")
        .arg(&daemon_config)
        .env_remove("PROMISED_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_clean("promised images pull's stdout", &pull.stdout);
    assert_clean("promised images pull's stderr", &pull.stderr);
    let pulled =
        String::from_utf8_lossy(&pull.stdout).into_owned() + &String::from_utf8_lossy(&pull.stderr);
    assert!(
        pulled.contains("team/render:v1") && pulled.contains("unreachable"),
        "the registry was tried:\n{pulled}"
    );
    let status = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(["status", "--output", "json", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert_clean("promised status --output json", &status.stdout);
    assert_clean("promised status's stderr", &status.stderr);

    // Every file of the state directory, and the commit messages of every Git repository in
    // it (the local state store among them).
    let mut audit = false;
    for e in walkdir::WalkDir::new(&state) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            assert_clean(
                &e.path().display().to_string(),
                &std::fs::read(e.path()).unwrap(),
            );
        }
        if e.file_type().is_dir()
            && e.path().join("HEAD").is_file()
            && e.path().join("objects").is_dir()
        {
            let log = Command::new("git")
                .args(["log", "--all", "--format=%H%n%B"])
                .current_dir(e.path())
                .output()
                .unwrap();
            if log.status.success() && !log.stdout.is_empty() {
                audit |= String::from_utf8_lossy(&log.stdout).contains("Promised-Resource:");
                assert_clean(&format!("commits of {}", e.path().display()), &log.stdout);
            }
        }
    }
    assert!(
        audit,
        "the local state store's commits were searched; promised reconcile said:\n{stderr}"
    );
    // The SSH key's private directory went with the store.
    let left: Vec<_> = walkdir::WalkDir::new(&runtime)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(left.is_empty(), "left in the runtime directory: {left:?}");
}
