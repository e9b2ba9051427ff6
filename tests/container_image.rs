//! The container image (deploy/Containerfile) built without pulling any image by
//! `deploy/build-image` (buildah), unpacked with umoci and run in bubblewrap as the image's
//! user, the way a container runtime would run it (oci-images.md §4): `promised --version`
//! equals the host binary's, git and the tools promised calls work, the user is not root, the
//! entrypoint and default command are what the Containerfile declares, and the default
//! command starts the daemon (its `/healthz` answers).
//!
//! The base is the debootstrap one when `deploy/build-image --base-only` has cached it (CI
//! does), else a root made of this host's files (`--base host`: no network, seconds). Needs
//! root, buildah, umoci, bwrap and setpriv; skips with a message without them, fails under
//! `PROMISED_REQUIRE_IMAGES=1` (CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::repo_root;
use serde_json::Value;

const TOOLS: &[&str] = &["buildah", "umoci", "bwrap", "setpriv"];

/// Whether the test can run here; panics under `PROMISED_REQUIRE_IMAGES` when it cannot.
fn can_run(test: &str) -> bool {
    let mut missing: Vec<String> = TOOLS
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t} >/dev/null")])
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|t| t.to_string())
        .collect();
    if !rustix::process::geteuid().is_root() {
        missing.push("root (buildah's chroot isolation)".into());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: missing {missing:?} (Debian: buildah umoci bubblewrap util-linux; run as root)"
    );
    if std::env::var_os("PROMISED_REQUIRE_IMAGES").is_some() {
        panic!("PROMISED_REQUIRE_IMAGES is set: {msg}");
    }
    eprintln!("SKIPPED {msg}; set PROMISED_REQUIRE_IMAGES=1 to make this a failure");
    false
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

fn blob(layout: &Path, digest: &str) -> Value {
    read_json(
        &layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
}

/// The image: the OCI layout it was written to, its tag and its unpacked bundle.
struct Image {
    layout: PathBuf,
    tag: String,
    bundle: PathBuf,
}

/// Builds the image with `deploy/build-image` into `dir` and unpacks it.
fn build(dir: &Path) -> Image {
    let cache = repo_root().join("target/image-cache");
    let base = if cache.join("debootstrap-bookworm/.complete").is_file() {
        "debootstrap"
    } else {
        "host"
    };
    let layout = dir.join("promised");
    let t = Instant::now();
    let out = Command::new(repo_root().join("deploy/build-image"))
        .args(["--base", base, "--binary", env!("CARGO_BIN_EXE_promised")])
        .arg("--output")
        .arg(&layout)
        .arg("--cache")
        .arg(&cache)
        .output()
        .unwrap();
    let stdout = ok(out, "deploy/build-image");
    eprintln!(
        "built {} on the {base} base in {:.1?}",
        stdout.trim(),
        t.elapsed()
    );
    let reference = stdout.lines().last().unwrap_or_default();
    let tag = reference.rsplit(':').next().unwrap().to_string();
    assert_eq!(reference, format!("oci:{}:{tag}", layout.display()));
    let bundle = dir.join("bundle");
    ok(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", layout.display()))
            .arg(&bundle)
            .output()
            .unwrap(),
        "umoci unpack",
    );
    // What a runtime creates: mount points; the sandbox user must reach the bundle (0700).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["proc", "dev", "tmp", "etc/promised/config"] {
        std::fs::create_dir_all(bundle.join("rootfs").join(d)).unwrap();
    }
    std::fs::write(bundle.join("rootfs/etc/promised/promised.yaml"), "").unwrap();
    Image {
        layout,
        tag,
        bundle,
    }
}

impl Image {
    /// The image config (`config` of the manifest tagged `tag`).
    fn config(&self) -> Value {
        let index = read_json(&self.layout.join("index.json"));
        let manifest = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == self.tag.as_str())
            .unwrap_or_else(|| panic!("no manifest tagged {} in {index}", self.tag));
        let manifest = blob(&self.layout, manifest["digest"].as_str().unwrap());
        blob(&self.layout, manifest["config"]["digest"].as_str().unwrap())
    }

    /// The runtime spec umoci wrote for the bundle: `process.user`, `args`, `env`, `cwd`.
    fn process(&self) -> Value {
        read_json(&self.bundle.join("config.json"))["process"].clone()
    }

    /// Runs `argv` (None: the image's own entrypoint and command) in the image's root, as its
    /// user, with its environment and working directory, the root read-only as in a pod with
    /// `readOnlyRootFilesystem`, `/var/lib/promised` a writable directory of `scratch` (the
    /// volume) and `binds` (host, target) mounted read-only.
    fn command(&self, argv: Option<&[&str]>, scratch: &Path, binds: &[(&Path, &str)]) -> Command {
        let p = self.process();
        let uid = p["user"]["uid"].as_u64().unwrap();
        let gid = p["user"]["gid"].as_u64().unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .args(["bwrap", "--unshare-all", "--share-net", "--die-with-parent"])
            .arg("--bind")
            .arg(self.bundle.join("rootfs"))
            .arg("/")
            .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
            .arg("--bind")
            .arg(scratch)
            .arg("/var/lib/promised");
        for (host, target) in binds {
            cmd.arg("--ro-bind").arg(host).arg(target);
        }
        cmd.args(["--remount-ro", "/", "--clearenv"]);
        for kv in p["env"].as_array().unwrap() {
            let (k, v) = kv.as_str().unwrap().split_once('=').unwrap();
            cmd.args(["--setenv", k, v]);
        }
        cmd.args(["--chdir", p["cwd"].as_str().unwrap(), "--"]);
        let args: Vec<String> = p["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        match argv {
            None => cmd.args(&args),
            Some(a) => cmd.args(a),
        };
        cmd
    }

    fn run(&self, argv: &[&str], scratch: &Path) -> Output {
        self.command(Some(argv), scratch, &[]).output().unwrap()
    }
}

/// A directory the image's user owns (the state volume).
fn volume(dir: &Path, name: &str, uid: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::os::unix::fs::chown(&p, Some(uid as u32), Some(uid as u32)).unwrap();
    p
}

#[test]
fn the_image_runs_promised_as_a_non_root_user() {
    if !can_run("the_image_runs_promised_as_a_non_root_user") {
        return;
    }
    // Under target/ (not /tmp): the layout and the unpacked root are ~100-300 MB.
    let scratch = repo_root().join("target/container-image-test");
    std::fs::create_dir_all(&scratch).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("image")
        .tempdir_in(&scratch)
        .unwrap();
    let dir = tmp.path();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = build(dir);

    // The image config: what the Containerfile declares.
    let config = image.config();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/promised"])
    );
    assert_eq!(
        c["Cmd"],
        serde_json::json!([
            "run",
            "--config",
            "/etc/promised/config",
            "--daemon-config",
            "/etc/promised/promised.yaml"
        ])
    );
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"STATE_DIRECTORY=/var/lib/promised"),
        "{env:?}"
    );
    assert!(c["ExposedPorts"].get("8473/tcp").is_some(), "{config}");
    assert!(c["Volumes"].get("/var/lib/promised").is_some(), "{config}");
    assert_eq!(config["os"], "linux");
    let p = image.process();
    let uid = p["user"]["uid"].as_u64().unwrap();
    assert_ne!(uid, 0, "the image runs as root: {p}");
    assert_ne!(p["user"]["gid"].as_u64().unwrap(), 0, "{p}");

    // The state directory in the image belongs to that user, private.
    use std::os::unix::fs::MetadataExt;
    let state = std::fs::metadata(image.bundle.join("rootfs/var/lib/promised")).unwrap();
    assert_eq!(
        (state.uid() as u64, state.mode() & 0o777),
        (uid, 0o700),
        "/var/lib/promised"
    );

    let vol = volume(dir, "state", uid);
    // `promised --version` in the image (its entrypoint) equals the host binary's.
    let host = ok(
        Command::new(env!("CARGO_BIN_EXE_promised"))
            .arg("--version")
            .output()
            .unwrap(),
        "promised --version on the host",
    );
    let entrypoint = c["Entrypoint"][0].as_str().unwrap();
    let inside = ok(
        image.run(&[entrypoint, "--version"], &vol),
        "promised --version",
    );
    assert_eq!(inside, host);
    assert_eq!(inside.trim(), format!("promised {}", image.tag));

    // git (state stores, the config remote), ssh and coreutils' timeout (ssh remotes), as the
    // image's user, found on the image's PATH.
    let git = ok(image.run(&["git", "--version"], &vol), "git --version");
    assert!(git.starts_with("git version 2."), "{git}");
    let id = ok(image.run(&["id", "-u"], &vol), "id -u");
    assert_eq!(id.trim(), uid.to_string());
    let ssh = image.run(&["ssh", "-V"], &vol);
    assert!(ssh.status.success(), "ssh -V: {ssh:?}");
    assert!(String::from_utf8_lossy(&ssh.stderr).contains("OpenSSH"));
    ok(image.run(&["timeout", "5", "id"], &vol), "timeout");
    // git can reach an https remote's TLS stack (the helper and its libraries load): a refused
    // connection, not a missing helper.
    let https = image.run(&["git", "ls-remote", "https://127.0.0.1:9/x.git"], &vol);
    let err = String::from_utf8_lossy(&https.stderr);
    assert!(
        err.contains("Failed to connect") || err.contains("Could not connect"),
        "{err}"
    );
    // The CA bundle is there for https remotes and S3.
    assert!(
        image
            .bundle
            .join("rootfs/etc/ssl/certs/ca-certificates.crt")
            .is_file()
    );

    // The default command: `run` with the config repo and the daemon config at the mounted
    // paths, state in $STATE_DIRECTORY (the writable volume).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("promised.yaml"),
        format!("listen: 127.0.0.1:{port}\nsandbox: none\n"),
    )
    .unwrap();
    let config_repo = dir.join("config");
    common::copy_dir(&repo_root().join("testdata/quickstart"), &config_repo);
    let log = dir.join("daemon.log");
    let mut daemon = image
        .command(
            None,
            &vol,
            &[
                (&etc.join("promised.yaml"), "/etc/promised/promised.yaml"),
                (&config_repo, "/etc/promised/config"),
            ],
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let mut healthy = false;
    while t.elapsed() < Duration::from_secs(60) && daemon.try_wait().unwrap().is_none() {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200") {
                healthy = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        healthy,
        "the image's default command did not answer /healthz:\n{log}"
    );
    // It kept its state in the volume ($STATE_DIRECTORY), the only writable place.
    assert!(
        std::fs::read_dir(&vol).unwrap().next().is_some(),
        "nothing written to /var/lib/promised:\n{log}"
    );
}
