//! Shared test infrastructure: real servers on 127.0.0.1 and helpers to drive real git.
#![allow(dead_code)]

pub mod app;

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A `git daemon` serving bare repositories under `base` on 127.0.0.1, one
/// `git daemon --inetd` per connection behind a listener with an OS-chosen port
/// (test-infrastructure.md §1a). The accept thread lives until the test process exits.
pub struct GitDaemon {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Directory holding the bare repositories.
    pub base: PathBuf,
}

impl GitDaemon {
    /// Starts serving `base`.
    pub fn start(base: &Path) -> GitDaemon {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let base_owned = base.to_path_buf();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let Ok(input) = stream.try_clone() else {
                    continue;
                };
                let child = Command::new("git")
                    .args([
                        "daemon",
                        "--inetd",
                        "--export-all",
                        "--enable=receive-pack",
                        "--informative-errors",
                    ])
                    .arg(format!("--base-path={}", base_owned.display()))
                    .arg(&base_owned)
                    .stdin(Stdio::from(OwnedFd::from(input)))
                    .stdout(Stdio::from(OwnedFd::from(stream)))
                    .stderr(Stdio::null())
                    .spawn();
                if let Ok(mut child) = child {
                    std::thread::spawn(move || {
                        let _ = child.wait();
                    });
                }
            }
        });
        GitDaemon {
            port,
            base: base.to_path_buf(),
        }
    }

    /// Creates an empty bare repository `name` (branch `main`) and returns its git:// URL.
    pub fn bare_repo(&self, name: &str) -> String {
        git(&self.base, &["init", "-q", "--bare", "-b", "main", name]);
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

/// Runs git with a fixed identity in `dir`; panics with stderr on failure; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.expect("walk");
        let rel = e.path().strip_prefix(from).expect("prefix");
        let dst = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dst).expect("mkdir");
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/realworld/kratix-marketplace`, when present (CI has it).
pub fn marketplace() -> Option<PathBuf> {
    let p = repo_root().join("../shared/realworld/kratix-marketplace");
    p.is_dir().then(|| p.canonicalize().expect("canonical"))
}

/// True when bubblewrap can create a sandbox here.
pub fn bwrap_works() -> bool {
    Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "--unshare-all", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs the built `promised` binary; returns (exit code, stdout, stderr).
pub fn promised(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(args)
        .output()
        .expect("promised runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `promised reconcile --config <config> --state-dir <state>`.
pub fn reconcile(config: &Path, state: &Path) -> (i32, String, String) {
    promised(&[
        "reconcile",
        "--config",
        config.to_str().expect("utf-8 path"),
        "--state-dir",
        state.to_str().expect("utf-8 path"),
    ])
}

/// One object's row of `promised status --output json` (state directory `state`; no daemon is
/// asked); panics when there is none.
pub fn status_row(state: &Path, key: &str) -> serde_json::Value {
    let (_, out, _) = promised(&[
        "status",
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "--output",
        "json",
        "--listen",
        "127.0.0.1:1",
    ]);
    let rows: serde_json::Value = serde_json::from_str(&out).expect("status is JSON");
    rows.as_array()
        .expect("an array of rows")
        .iter()
        .find(|r| r["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

/// The condition of type `t` in a status row; panics when there is none.
pub fn condition<'a>(s: &'a serde_json::Value, t: &str) -> &'a serde_json::Value {
    s["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == t)
        .unwrap_or_else(|| panic!("no {t} in {s}"))
}

/// Adds a Promise `files` (API `files.test.promised.dev/v1alpha1`, kind `files`) to the config
/// repo at `config`, scheduled to Destinations labelled `environment: <env>`, whose pipeline
/// writes one small YAML file at each path listed for the request (see [`files_request`]) into
/// `/kratix/output`. The paths are read byte for byte from the Promise folder, so a test can ask
/// for any name a pipeline could write.
pub fn add_files_promise(config: &Path, env: &str) {
    let dir = config.join("promises/files");
    std::fs::create_dir_all(dir.join("pipeline")).unwrap();
    std::fs::create_dir_all(dir.join("paths")).unwrap();
    std::fs::write(
        dir.join("promise.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata:
  name: files
spec:
  destinationSelectors:
    - matchLabels:
        environment: {env}
  api:
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: files.test.promised.dev
    spec:
      group: test.promised.dev
      names: {{kind: files, plural: files, singular: files}}
      scope: Namespaced
      versions:
        - name: v1alpha1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties:
                    note: {{type: string}}
  workflows:
    resource:
      configure:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata:
            name: write
          spec:
            containers:
              - name: write
                image: promised.dev/local
                command: [\"/promise/pipeline/configure\"]
"
        ),
    )
    .unwrap();
    let script = dir.join("pipeline/configure");
    std::fs::write(
        &script,
        r#"#!/bin/sh
set -eu
while IFS= read -r p; do
  mkdir -p "/kratix/output/$(dirname "$p")"
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n' "$KRATIX_OBJECT_NAME" > "/kratix/output/$p"
done < "/promise/paths/$KRATIX_OBJECT_NAME.txt"
echo "message: wrote files" > /kratix/metadata/status.yaml
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Writes `requests/files-<name>.yaml`, a `files` request (see [`add_files_promise`]) whose
/// pipeline writes a file at each of `paths` (relative to `/kratix/output`; no newlines).
pub fn files_request(config: &Path, name: &str, paths: &[&str]) {
    let mut list = paths.join("\n");
    list.push('\n');
    std::fs::write(
        config.join(format!("promises/files/paths/{name}.txt")),
        list,
    )
    .unwrap();
    std::fs::write(
        config.join(format!("requests/files-{name}.yaml")),
        format!(
            "apiVersion: test.promised.dev/v1alpha1\nkind: files\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  note: {name}\n"
        ),
    )
    .unwrap();
}

/// The path of a `files` request's file `rel` on a Destination at `dest_path` (nested layout,
/// root group `5058f`).
pub fn files_output_path(dest_path: &str, name: &str, rel: &str) -> String {
    format!("{dest_path}/resources/default/files/{name}/write/5058f/{rel}")
}

/// A server on 127.0.0.1 that accepts every connection and never sends a byte: the sockets
/// are held open until the server is dropped.
pub struct HungServer {
    /// Port on 127.0.0.1.
    pub port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HungServer {
    /// Starts accepting.
    pub fn start() -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, halt) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = s {
                    held.push(s);
                    n.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        HungServer {
            port,
            accepted,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HungServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it ends and closes the held sockets.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Builds `dir` as Flux's kustomize-controller would (`users-and-peers.md` §3.2): with its own
/// kustomization file as it is, else with a generated one listing every `.yaml`/`.yml` file
/// below it, and each sub-directory that has its own kustomization file as one resource
/// (`fluxcd/pkg: kustomize/kustomize_generator.go`). Runs `kubectl kustomize` on a copy;
/// `Ok(rendered YAML)`, `Err(kubectl's stderr)`, or `None` without kubectl (a failure when
/// `PROMISED_REQUIRE_KUBECTL` is set).
pub fn flux_kustomize_build(dir: &Path) -> Option<Result<String, String>> {
    const KFILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];
    if let Err(e) = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
    {
        assert!(
            std::env::var_os("PROMISED_REQUIRE_KUBECTL").is_none(),
            "PROMISED_REQUIRE_KUBECTL is set: kubectl cannot run ({e})"
        );
        eprintln!("SKIPPED: kubectl cannot run ({e}); Debian: kubernetes-client");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("build");
    copy_dir(dir, &root);
    if !KFILES.iter().any(|k| root.join(k).exists()) {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if p.is_dir() {
                    if KFILES.iter().any(|k| p.join(k).exists()) {
                        out.push(rel);
                    } else {
                        walk(root, &p, out);
                    }
                } else if rel.ends_with(".yaml") || rel.ends_with(".yml") {
                    out.push(rel);
                }
            }
        }
        let mut resources = Vec::new();
        walk(&root, &root, &mut resources);
        let mut k = String::from(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
        );
        for r in resources {
            k.push_str(&format!("  - {r}\n"));
        }
        std::fs::write(root.join("kustomization.yaml"), k).unwrap();
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&root)
        .output()
        .expect("kubectl runs");
    Some(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

/// A throwaway GnuPG home for a key owner (short path under /tmp: gpg-agent's socket path has
/// a length limit); its agent is stopped on drop. `None` (skipped) without gpg, a failure when
/// `PROMISED_REQUIRE_GPG` is set.
pub struct GpgHome(tempfile::TempDir);

impl GpgHome {
    pub fn new() -> Option<GpgHome> {
        if Command::new("gpg").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("PROMISED_REQUIRE_GPG").is_none(),
                "gpg is required"
            );
            eprintln!("skipped: no gpg");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("g")
            .tempdir_in("/tmp")
            .unwrap();
        Some(GpgHome(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// `gpg --batch` with no passphrase in this home; panics with stderr on failure; stdout.
    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.path())
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg runs");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// The daemon config of a test: `stateDir: state`, on top of the file `daemon_config` when
/// given.
pub fn settings(state: &Path, daemon_config: Option<&Path>) -> promised::settings::Settings {
    promised::settings::Settings::load(
        daemon_config,
        serde_json::json!({"stateDir": state})
            .as_object()
            .unwrap()
            .clone(),
    )
    .unwrap()
}

/// The config directory `config` loaded (Promise folders exported under `checkouts`) and
/// validated, with its root, for a pass run in process.
pub fn valid_config(
    config: &Path,
    checkouts: &Path,
    settings: &promised::settings::Settings,
) -> (promised::validate::ValidConfig, PathBuf) {
    let (objects, root) = promised::config::load_with_root(
        &promised::config::Source::Dir(config.to_path_buf()),
        &settings.file_filter(),
        None,
        checkouts,
        &settings.network.timeouts(),
    )
    .unwrap();
    (promised::validate::validate(objects), root)
}
