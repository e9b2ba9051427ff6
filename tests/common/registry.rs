//! A real OCI registry (Distribution's `docker-registry`) on 127.0.0.1 with an OS-chosen
//! port, and test images built with `umoci` + `busybox-static` and pushed with `skopeo`
//! (oci-images.md §1, §2).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

/// Everything logged by the test process (all its tests), at TRACE: installs a subscriber
/// writing to a shared buffer on first use.
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What [`logs`] captured so far, as text.
pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// The tools the image tests need.
pub const TOOLS: &[&str] = &["docker-registry", "umoci", "skopeo", "busybox", "htpasswd"];

/// Whether the image tests can run: all [`TOOLS`] are installed. When one is missing and
/// `PROMISED_REQUIRE_IMAGES` is set, panics (CI); else prints why the test is skipped.
pub fn tools_available(test: &str) -> bool {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t} >/dev/null")])
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("PROMISED_REQUIRE_IMAGES").is_some() {
        panic!(
            "{test}: PROMISED_REQUIRE_IMAGES is set but {missing:?} are missing; install the \
             Debian packages docker-registry apache2-utils umoci skopeo busybox-static"
        );
    }
    eprintln!(
        "SKIPPED {test}: {missing:?} not installed (Debian: docker-registry apache2-utils umoci \
         skopeo busybox-static); set PROMISED_REQUIRE_IMAGES=1 to make this a failure"
    );
    false
}

/// A running registry; killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// Its storage directory (`docker/registry/v2/...`).
    pub data: PathBuf,
    /// Basic-auth user and password when started with [`Registry::start_with_htpasswd`].
    pub creds: Option<(String, String)>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts an anonymous registry storing under `dir`.
    pub fn start(dir: &Path) -> Registry {
        Registry::start_inner(dir, None)
    }

    /// Starts a registry that wants HTTP basic auth (htpasswd, bcrypt) for `user`/`password`.
    pub fn start_with_htpasswd(dir: &Path, user: &str, password: &str) -> Registry {
        Registry::start_inner(dir, Some((user.to_string(), password.to_string())))
    }

    fn start_inner(dir: &Path, creds: Option<(String, String)>) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let data = dir.join("data");
        let mut auth = String::new();
        if let Some((user, password)) = &creds {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            auth = format!(
                "auth: {{htpasswd: {{realm: promised-test, path: {}}}}}\n",
                file.display()
            );
        }
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  \
                 delete: {{enabled: true}}\nhttp: {{addr: 127.0.0.1:0, secret: promised-test}}\n{auth}",
                data.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
                // Keep draining so the registry never blocks on a full pipe.
            }
        });
        let port = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("docker-registry did not report its port");
        Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            data,
            creds,
        }
    }

    /// `127.0.0.1:<port>/<repo_tag>`.
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host)
    }

    /// Pushes `oci:<layout>:<tag>` to `<repo_tag>` here, with `extra` skopeo flags
    /// (`--all`, `--format v2s2`, …).
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.args(extra)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}", self.image(repo_tag)));
        run(&mut cmd);
    }

    /// The raw manifest at `repo_tag` (as the registry serves it).
    pub fn raw_manifest(&self, repo_tag: &str) -> Vec<u8> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--creds={u}:{p}"));
        }
        cmd.arg(format!("docker://{}", self.image(repo_tag)));
        run(&mut cmd).into_bytes()
    }

    /// The stored file of blob `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// Runs `cmd`, panics with its output on failure, returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the base test images into the OCI layout `<dir>/img` and returns the layout:
/// - `v1`: one layer, busybox-static and a few files, with entrypoint `/bin/sh -c`, cmd,
///   env `GREETING=world PATH=/bin`, workingDir `/work`, user `1000:1000`;
/// - `v2`: v1 + a layer deleting `etc/removed-later.txt` (whiteout) and adding
///   `etc/added.txt`;
/// - `v3`: v2 + a layer making `opq/` opaque (its lower `old.txt` and `sub/deep.txt` hidden)
///   holding only `new.txt`, with the new file before the marker in the tar;
/// - `v1-amd64`, `v1-arm64`: v1 configured for two platforms (env `PLATFORM=…`), and
///   `multi`: an OCI index of both (arm64/v8 listed first).
pub fn build_images(dir: &Path) -> PathBuf {
    let script = r#"
set -eu
T=$1
cd "$T"
umoci init --layout img
umoci new --image img:base
umoci unpack --rootless --image img:base b1
R=b1/rootfs
mkdir -p $R/bin $R/etc $R/tmp $R/work $R/opq/sub
chmod 1777 $R/tmp
cp "$(command -v busybox)" $R/bin/busybox
for a in sh ls cat echo id env; do ln -s busybox $R/bin/$a; done
echo 'root:x:0:0:root:/root:/bin/sh' > $R/etc/passwd
echo 'layer one' > $R/etc/removed-later.txt
echo old > $R/opq/old.txt
echo deep > $R/opq/sub/deep.txt
ln -s /bin/busybox $R/bin/abs-link
chmod 0555 $R/opq/sub
umoci repack --image img:base b1
umoci config --image img:base --tag v1 --config.entrypoint /bin/sh --config.entrypoint -c \
  --config.cmd 'echo hello from $GREETING' --config.env GREETING=world --config.env PATH=/bin \
  --config.workingdir /work --config.user 1000:1000
umoci unpack --rootless --image img:v1 b2
rm b2/rootfs/etc/removed-later.txt
echo 'layer two' > b2/rootfs/etc/added.txt
umoci repack --image img:v2 b2
mkdir -p s/opq
echo new > s/opq/new.txt
: > s/opq/.wh..wh..opq
tar -C s --owner=0 --group=0 --no-recursion -cf l3.tar opq opq/new.txt opq/.wh..wh..opq
umoci raw add-layer --image img:v2 --tag v3 l3.tar
umoci config --image img:v1 --config.env PLATFORM=amd64 --tag v1-amd64
umoci config --image img:v1 --architecture arm64 --config.env PLATFORM=arm64 --tag v1-arm64
"#;
    run(Command::new("bash")
        .args(["-c", script, "build-images"])
        .arg(dir));
    let layout = dir.join("img");
    add_index(
        &layout,
        "multi",
        &[
            ("v1-arm64", "arm64", Some("v8")),
            ("v1-amd64", "amd64", None),
        ],
    );
    layout
}

/// The manifest descriptor of `tag` in the layout's `index.json`.
pub fn tag_descriptor(layout: &Path, tag: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()))
        .clone()
}

/// Adds an OCI image index tagged `tag` to the layout, with one entry per
/// `(tag, architecture, variant)`, all `linux`.
pub fn add_index(layout: &Path, tag: &str, entries: &[(&str, &str, Option<&str>)]) {
    use sha2::Digest;
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(t, arch, variant)| {
            let d = tag_descriptor(layout, t);
            let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                platform["variant"] = serde_json::json!(v);
            }
            serde_json::json!({"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"], "platform": platform})
        })
        .collect();
    let ix = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let hex = hex::encode(sha2::Sha256::digest(&ix));
    std::fs::write(layout.join("blobs/sha256").join(&hex), &ix).unwrap();
    let path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": ix.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Adds the uncompressed tar `layer` on top of `from`, tagged `tag` (umoci gzips it).
pub fn add_layer(layout: &Path, from: &str, tag: &str, layer: &[u8]) {
    let file = layout.parent().unwrap().join(format!("{tag}.tar"));
    std::fs::write(&file, layer).unwrap();
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image"])
        .arg(format!("{}:{from}", layout.display()))
        .args(["--tag", tag])
        .arg(&file));
}

/// One entry of a hand-made (possibly hostile) tar.
pub enum Entry<'a> {
    /// A regular file.
    File(&'a str, &'a [u8]),
    /// A directory.
    Dir(&'a str),
    /// A symlink `path -> target`.
    Symlink(&'a str, &'a str),
    /// A hard link `path` to `target`.
    HardLink(&'a str, &'a str),
    /// A character device.
    CharDevice(&'a str),
    /// A FIFO.
    Fifo(&'a str),
}

/// A tar holding `entries` exactly as given: names are written raw into the header, so
/// `..` components and absolute paths go through (the tar crate's builder refuses them).
pub fn raw_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (path, link, kind, data): (&str, &str, tar::EntryType, &[u8]) = match e {
            Entry::File(p, d) => (p, "", tar::EntryType::Regular, d),
            Entry::Dir(p) => (p, "", tar::EntryType::Directory, b""),
            Entry::Symlink(p, t) => (p, t, tar::EntryType::Symlink, b""),
            Entry::HardLink(p, t) => (p, t, tar::EntryType::Link, b""),
            Entry::CharDevice(p) => (p, "", tar::EntryType::Char, b""),
            Entry::Fifo(p) => (p, "", tar::EntryType::Fifo, b""),
        };
        assert!(
            path.len() < 100 && link.len() < 100,
            "names must fit the header"
        );
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}
