//! Helpers of `tests/outages.rs`: a `promised run` killed on drop, a `git daemon` that can be
//! stopped and started again on its port, the gated `app` pipeline, store checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::git;

/// How long each server stays down (issue 23: "stopped for 30 s").
pub const OUTAGE: Duration = Duration::from_secs(30);
/// Bound on every wait: only a hang reaches it.
pub const LIMIT: Duration = Duration::from_secs(120);

/// A running `promised run`, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    /// `--state-dir`.
    pub state: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// `promised run ARGS` on a free port with `sandbox: none` and short retry backoffs
    /// (`retryBackoff: 1s`, `maxRetryBackoff: 4s`: a failed pass is retried within seconds),
    /// debug logs to `<dir>/daemon-<port>.log`; waits until `/healthz` answers.
    pub fn start(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_wrapped(&[], args, dir, env)
    }

    /// [`Daemon::start`], run as `WRAP… promised run …` (`WRAP` ends with a command that
    /// `exec`s its arguments, so the child is the daemon).
    pub fn start_wrapped(wrap: &[&str], args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let log = dir.join(format!("daemon-{port}.log"));
        let daemon_config = dir.join(format!("promised-{port}.yaml"));
        std::fs::write(
            &daemon_config,
            "sandbox: none\nretryBackoff: 1s\nmaxRetryBackoff: 4s\nnetwork:\n  connectTimeout: 5s\n  readTimeout: 10s\n  operationTimeout: 30s\n",
        )
        .unwrap();
        let mut cmd = match wrap.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_promised"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_promised")),
        };
        let child = cmd
            .arg("run")
            .args(args)
            .arg("--daemon-config")
            .arg(&daemon_config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("PROMISED_LOG", "promised=debug,statestores=debug")
            .env("PROMISED_DEBOUNCE", "300ms")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("promised run starts");
        let state = args
            .iter()
            .position(|a| *a == "--state-dir")
            .map(|i| PathBuf::from(args[i + 1]))
            .expect("--state-dir");
        let mut d = Daemon {
            child,
            port,
            log,
            state,
        };
        d.wait_for("/healthz", |d| {
            d.get("/healthz").is_some_and(|(c, _)| c == 200)
        });
        d
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ok`; panics with the daemon's log at [`LIMIT`] or when the daemon exited.
    pub fn wait_for(&mut self, what: &str, mut ok: impl FnMut(&mut Daemon) -> bool) {
        let t = Instant::now();
        while t.elapsed() < LIMIT {
            if ok(self) {
                return;
            }
            assert!(self.alive(), "the daemon exited; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}; daemon log:\n{}", self.log());
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .call()
            .ok()?;
        Some((r.status().as_u16(), r.body_mut().read_to_string().ok()?))
    }

    /// `GET /api/v1/status` as JSON rows by key.
    pub fn rows(&self) -> BTreeMap<String, serde_json::Value> {
        let Some((200, body)) = self.get("/api/v1/status") else {
            return BTreeMap::new();
        };
        let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        rows.into_iter()
            .map(|r| (r["key"].as_str().unwrap().to_string(), r))
            .collect()
    }

    /// The state store `key` (`<Kind>/<name>`) of `GET /api/v1/destinations`.
    pub fn store(&self, key: &str) -> Option<serde_json::Value> {
        let (200, body) = self.get("/api/v1/destinations")? else {
            return None;
        };
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["stateStores"].get(key).cloned()
    }

    /// `promised status ARGS --listen <this daemon> --state-dir <its state directory>`:
    /// (exit code, stdout and stderr).
    pub fn status_cli(&self, args: &[&str]) -> (i32, String) {
        let listen = format!("127.0.0.1:{}", self.port);
        let state = self.state.to_str().unwrap();
        let mut all = vec!["status", "--listen", listen.as_str(), "--state-dir", state];
        all.extend_from_slice(args);
        let (code, out, err) = common::promised(&all);
        (code, format!("{out}{err}"))
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `git daemon` in the foreground on a fixed port of 127.0.0.1 serving the bare repositories
/// under `base`: [`GitServer::stop`] kills it (the port then refuses connections) and
/// [`GitServer::start`] serves again on the same port.
pub struct GitServer {
    pub port: u16,
    pub base: PathBuf,
    pub child: Option<Child>,
}

impl GitServer {
    pub fn new(base: &Path) -> GitServer {
        std::fs::create_dir_all(base).unwrap();
        let mut s = GitServer {
            port: free_port(),
            base: base.to_path_buf(),
            child: None,
        };
        s.start();
        s
    }

    /// Serves (again) on the same port; returns once `ls-remote` of the port answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none());
        // `git-daemon` itself, not the `git` wrapper (killing the wrapper leaves it serving).
        let exec_path = git(&self.base, &["--exec-path"]);
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--listen=127.0.0.1",
                "--export-all",
                "--enable=receive-pack",
                "--informative-errors",
            ])
            .arg(format!("--port={}", self.port))
            .arg(format!("--base-path={}", self.base.display()))
            .arg(&self.base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t.elapsed() < LIMIT, "git daemon never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops serving: the daemon is killed and the port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(t.elapsed() < LIMIT, "git daemon still listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates an empty bare repository `name` (branch `main`); returns its git:// URL.
    pub fn bare_repo(&self, name: &str) -> String {
        git(&self.base, &["init", "-q", "--bare", "-b", "main", name]);
        self.url(name)
    }

    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The test's marks and gates: the `render` pipeline appends its request's name to
/// `<dir>/started`, and when `<dir>/hold-<name>` exists it waits for `<dir>/go-<name>`.
pub struct Gates {
    pub dir: PathBuf,
}

impl Gates {
    pub fn started(&self, name: &str) -> bool {
        std::fs::read_to_string(self.dir.join("started"))
            .unwrap_or_default()
            .lines()
            .any(|l| l == name)
    }
    pub fn hold(&self, name: &str) {
        std::fs::write(self.dir.join(format!("hold-{name}")), "").unwrap();
    }
    pub fn open(&self, name: &str) {
        std::fs::write(self.dir.join(format!("go-{name}")), "").unwrap();
    }
}

/// A config directory: the Promise `app` (kind `App`) whose `render` pipeline writes
/// `app.yaml` naming the request (after the gate of [`Gates`]), `platform` (the state store
/// YAML given, and a Destination `dev` on the store `store_kind/store`) and `requests/`.
pub fn config_dir(tmp: &Path, store_yaml: &str, store_kind: &str) -> (PathBuf, Gates) {
    let config = tmp.join("config");
    let gates = Gates {
        dir: tmp.join("gates"),
    };
    std::fs::create_dir_all(&gates.dir).unwrap();
    common::app::write_config(&config);
    let g = gates.dir.display();
    std::fs::write(
        config.join("promises/app/render"),
        format!(
            "#!/bin/sh\nset -eu\necho \"$KRATIX_OBJECT_NAME\" >> {g}/started\n\
             if [ -e {g}/hold-$KRATIX_OBJECT_NAME ]; then\n  \
             while [ ! -e {g}/go-$KRATIX_OBJECT_NAME ]; do sleep 0.1; done\nfi\n\
             printf 'kind: ConfigMap\\nmetadata:\\n  name: %s\\n' \"$KRATIX_OBJECT_NAME\" > \"$KRATIX_OUTPUT_DIR/app.yaml\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        config.join("platform/platform.yaml"),
        format!(
            "{store_yaml}---\napiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: dev\nspec:\n  path: dev\n  stateStoreRef: {{kind: {store_kind}, name: store}}\n"
        ),
    )
    .unwrap();
    (config, gates)
}

pub fn add_request(config: &Path, name: &str) {
    std::fs::write(
        config.join(format!("requests/{name}.yaml")),
        common::app::request(name, "default"),
    )
    .unwrap();
}

/// The store path of request `name`'s `app.yaml` on the Destination `dev`.
pub fn app_file(name: &str) -> String {
    format!("dev/resources/default/app/{name}/configure/5058f/app.yaml")
}

/// `path → blob id` of branch `main` of the bare repository `repo`.
pub fn tree(repo: &Path) -> BTreeMap<String, String> {
    if !repo.is_dir() {
        return BTreeMap::new();
    }
    let out = Command::new("git")
        .args(["ls-tree", "-r", "main"])
        .current_dir(repo)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (meta, path) = l.split_once('\t')?;
            Some((path.to_string(), meta.split(' ').nth(2)?.to_string()))
        })
        .collect()
}

/// Checks the ownership index of a Git store against its tree: every indexed file is in the
/// tree with the indexed blob, and every file of the tree outside `.promised/` is indexed or
/// one of `foreign` (a person's). Returns the indexed paths.
pub fn check_index(repo: &Path, foreign: &[&str]) -> Vec<String> {
    let files = tree(repo);
    let mut owned = Vec::new();
    for (path, oid) in files
        .iter()
        .filter(|(p, _)| p.starts_with(".promised/index/"))
    {
        let text = git(repo, &["cat-file", "-p", oid]);
        let index: serde_json::Value = serde_json::from_str(&text).unwrap();
        for e in index["entries"].as_array().unwrap() {
            let p = e["path"].as_str().unwrap();
            assert_eq!(
                files.get(p).map(String::as_str),
                e["oid"].as_str(),
                "{p} of {path} is in the tree with the indexed blob: {files:#?}"
            );
            owned.push(p.to_string());
        }
    }
    for path in files.keys().filter(|p| !p.starts_with(".promised/")) {
        assert!(
            owned.contains(path) || foreign.contains(&path.as_str()),
            "{path} is neither indexed nor a person's file (orphaned): {files:#?}"
        );
    }
    let fsck = Command::new("git")
        .args(["fsck", "--strict"])
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "git fsck: {}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    owned
}

/// The `Reconciled` condition of a status row: (status, reason, message).
pub fn reconciled(row: Option<&serde_json::Value>) -> Option<(String, String, String)> {
    let row = row?;
    let c = row["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Reconciled")?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    ))
}

pub fn is_reconciled(d: &Daemon, key: &str) -> bool {
    reconciled(d.rows().get(key)).is_some_and(|(s, _, _)| s == "True")
}

/// The `Ready` condition of a state store of `/api/v1/destinations`: (status, message).
pub fn store_ready(d: &Daemon, key: &str) -> Option<(String, String)> {
    let s = d.store(key)?;
    let c = s["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    Some((
        c["status"].as_str()?.to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Runs `f` on a blocking-friendly thread of a multi-threaded runtime (the S3 server's tasks
/// keep running on the other worker).
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A person's clone of the bare repository `repo` in `dir`.
pub fn person_clone(repo: &Path, dir: &Path) {
    git(
        repo.parent().unwrap(),
        &["clone", "-q", repo.to_str().unwrap(), dir.to_str().unwrap()],
    );
}

/// `POST /hooks/git` (no webhook secret configured): the status code.
pub fn hook(d: &Daemon) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .post(format!("http://127.0.0.1:{}/hooks/git", d.port))
        .header("X-GitHub-Event", "push")
        .header("Content-Type", "application/json")
        .send("{\"ref\": \"refs/heads/main\"}")
        .map(|r| r.status().as_u16())
        .unwrap_or_default()
}

/// `promised_reconcile_duration_seconds_count`: passes that ended.
pub fn passes(d: &Daemon) -> f64 {
    let (_, body) = d.get("/metrics").expect("metrics");
    body.lines()
        .filter(|l| l.starts_with("promised_reconcile_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether this process can make a user and mount namespace and mount a tmpfs in it.
pub fn can_mount_tmpfs() -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg("d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs \"$d\" && umount \"$d\" && rmdir \"$d\"")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Panics when a file of the state directory `dir` (outside the Git clones) is a temporary
/// file left by an interrupted write (`.tmp*`).
pub fn no_temporary_files(dir: &Path) {
    for e in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != "stores")
    {
        let e = e.unwrap();
        assert!(
            !e.file_name().to_string_lossy().starts_with(".tmp"),
            "left behind: {}",
            e.path().display()
        );
    }
}
