//! Running `promised`: one-shot commands (timed, peak RSS sampled), the daemon (`promised
//! run`: webhook, metrics, memory), and counting the processes either starts (`strace`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

const SECRET: &str = "bench-webhook-secret";

/// One finished `promised` command.
pub struct Run {
    pub took: Duration,
    pub stdout: String,
    /// Highest `VmHWM` seen while it ran (KiB), sampled every 10 ms.
    pub hwm_kib: u64,
}

/// `VmHWM` and `VmRSS` (KiB) of process `pid`; zeros once it has exited.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (get("VmHWM:"), get("VmRSS:"))
}

/// `promised <args>`; panics with its output on a non-zero exit.
pub fn promised(args: &[&str]) -> Run {
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promised runs");
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut hwm = 0;
            while !stop.load(Ordering::Relaxed) {
                hwm = hwm.max(memory_kib(pid).0);
                std::thread::sleep(Duration::from_millis(10));
            }
            hwm
        })
    };
    let out = child.wait_with_output().expect("promised runs");
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let hwm_kib = sampler.join().expect("sampler");
    assert!(
        out.status.success(),
        "promised {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        took,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        hwm_kib,
    }
}

/// The count on `promised reconcile`'s "N pipelines run" line.
pub fn pipelines_run(stdout: &str) -> usize {
    stdout
        .lines()
        .find_map(|l| {
            l.split_once(" pipelines run")
                .map(|(n, _)| n.trim().parse().ok())
        })
        .flatten()
        .unwrap_or_else(|| panic!("no 'pipelines run' line in:\n{stdout}"))
}

/// Counts the processes a command starts (`strace -f`), excluding itself.
pub fn count_spawns(args: &[&str]) -> String {
    let Some(strace) = which("strace") else {
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
            "{} {} spawned ({})",
            execs.len(),
            if execs.len() == 1 {
                "process"
            } else {
                "processes"
            },
            by.iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Polls `f` every millisecond until it holds; panics after `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out after {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A running `promised run`, stopped on drop.
pub struct Daemon {
    child: Child,
    port: u16,
    agent: ureq::Agent,
}

impl Daemon {
    /// Starts `promised run` on `config_url` (branch `main`), state in `state`, its files
    /// (daemon config with `extra` appended, secret, log) in `dir`.
    pub fn start(dir: &Path, config_url: &str, state: &Path, extra: &str) -> Daemon {
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
                "listen: 127.0.0.1:{port}\npollInterval: 1h\nwebhookSecretFile: {}\n{extra}\n",
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

    pub fn wait_ready(&self) {
        wait_until(Duration::from_secs(3600), || {
            self.agent
                .get(self.url("/readyz"))
                .call()
                .is_ok_and(|r| r.status() == 200)
        });
    }

    /// A signed `POST /hooks/git` for `main`; panics unless it is accepted.
    pub fn webhook(&self) {
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
    pub fn metric(&self, name: &str) -> f64 {
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

    /// One pass after a webhook (the daemon idle before it): webhook to the pass counted in
    /// `/metrics`.
    pub fn pass(&self) -> Duration {
        std::thread::sleep(Duration::from_millis(400));
        let passes = self.metric("promised_reconcile_duration_seconds_count");
        let t = Instant::now();
        self.webhook();
        wait_until(Duration::from_secs(600), || {
            self.metric("promised_reconcile_duration_seconds_count") > passes
        });
        t.elapsed()
    }

    /// Processes the daemon starts while `f` runs (strace attached; "not counted" without
    /// strace).
    pub fn spawns_during(&self, f: impl FnOnce()) -> String {
        let Some(strace) = which("strace") else {
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
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.child.id())
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
