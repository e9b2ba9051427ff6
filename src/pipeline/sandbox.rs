//! The bubblewrap sandbox: a pure function that builds the `bwrap` command line, host
//! layout detection, and a probe that tells whether bwrap works on this machine.
//!
//! The sandbox root is built from pieces (a `--ro-bind / /` root cannot take new mount
//! points such as `/kratix`, see test-infrastructure.md §4):
//! host `/usr` and `/etc` read-only; `/bin`, `/sbin`, `/lib*` as the host has them (symlinks
//! into `/usr` on merged-usr systems, read-only binds otherwise); a private `/tmp`, `/proc`
//! and `/dev`; `/kratix/input` read-only, `/kratix/output` and `/kratix/metadata` writable
//! (kratix-contract.md §2.2); the Promise folder read-only at [`PROMISE_MOUNT`]; image-override
//! mounts; then the root itself is remounted read-only, so `/x`, `/etc/x` and `$HOME/x`
//! cannot be written. Every namespace is unshared (`--unshare-all`); the network is shared
//! only when allowed. The environment is cleared and rebuilt from the contract's variables.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{Error, Mount};

/// Where the Promise's folder (the directory holding its `promise.yaml` in the config repo)
/// is mounted read-only inside the sandbox, so `command: ["/promise/pipeline/configure"]`
/// runs a script kept beside `promise.yaml`.
pub const PROMISE_MOUNT: &str = "/promise";

/// `PATH` inside the sandbox (Debian's default; images usually set the same).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a top-level host path such as `/bin` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    /// A symlink with this target (e.g. `usr/bin`), recreated inside the sandbox.
    Symlink(String),
    /// A real directory, bound read-only.
    Dir,
}

/// The host's `/bin`, `/sbin`, `/lib`, `/lib32`, `/lib64` and `/libx32`, as found on disk;
/// absent entries are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLayout {
    /// `(absolute path, kind)` pairs.
    pub entries: Vec<(String, HostEntry)>,
}

impl HostLayout {
    /// Reads the layout of this machine.
    pub fn detect() -> Self {
        let mut entries = Vec::new();
        for p in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(t) = std::fs::read_link(p) {
                        entries.push((
                            p.to_string(),
                            HostEntry::Symlink(t.to_string_lossy().into()),
                        ));
                    }
                }
                Ok(m) if m.is_dir() => entries.push((p.to_string(), HostEntry::Dir)),
                _ => {}
            }
        }
        HostLayout { entries }
    }
}

/// Everything that varies between two sandboxed container runs.
#[derive(Debug, Clone)]
pub struct SandboxSpec<'a> {
    /// Host directory mounted read-only at `/kratix/input`.
    pub input: &'a Path,
    /// Host directory mounted writable at `/kratix/output`.
    pub output: &'a Path,
    /// Host directory mounted writable at `/kratix/metadata`.
    pub metadata: &'a Path,
    /// Host directory mounted read-only at [`PROMISE_MOUNT`].
    pub promise_dir: Option<&'a Path>,
    /// Extra mounts (image overrides), applied after `/tmp` so they may live under it.
    pub mounts: &'a [Mount],
    /// Share the host network namespace.
    pub network: bool,
    /// `--chdir`; `/` when `None` (the marketplace images' `WORKDIR`).
    pub working_dir: Option<&'a str>,
    /// Environment, in order (later duplicates win).
    pub env: &'a [(String, String)],
    /// The command and its arguments.
    pub argv: &'a [String],
}

fn s(x: &str) -> OsString {
    OsString::from(x)
}

/// Builds the arguments to pass to `bwrap` (not including `bwrap` itself). Pure.
pub fn bwrap_args(layout: &HostLayout, spec: &SandboxSpec<'_>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |xs: &[&dyn AsRefOs]| {
        for x in xs {
            a.push(x.as_os());
        }
    };
    push(&[&"--ro-bind", &"/usr", &"/usr"]);
    for (path, entry) in &layout.entries {
        match entry {
            HostEntry::Symlink(t) => push(&[&"--symlink", t, path]),
            HostEntry::Dir => push(&[&"--ro-bind", path, path]),
        }
    }
    push(&[&"--ro-bind", &"/etc", &"/etc"]);
    push(&[&"--tmpfs", &"/tmp", &"--proc", &"/proc", &"--dev", &"/dev"]);
    push(&[&"--ro-bind", &spec.input, &"/kratix/input"]);
    push(&[&"--bind", &spec.output, &"/kratix/output"]);
    push(&[&"--bind", &spec.metadata, &"/kratix/metadata"]);
    if let Some(p) = spec.promise_dir {
        push(&[&"--ro-bind", &p, &PROMISE_MOUNT]);
    }
    for m in spec.mounts {
        let flag = if m.writable { "--bind" } else { "--ro-bind" };
        push(&[&flag, &m.host.as_path(), &m.target.as_str()]);
    }
    push(&[&"--remount-ro", &"/"]);
    push(&[&"--unshare-all"]);
    if spec.network {
        push(&[&"--share-net"]);
    }
    push(&[&"--die-with-parent", &"--new-session", &"--clearenv"]);
    push(&[&"--setenv", &"PATH", &DEFAULT_PATH]);
    for (k, v) in spec.env {
        push(&[&"--setenv", k, v]);
    }
    push(&[&"--chdir", &spec.working_dir.unwrap_or("/")]);
    push(&[&"--"]);
    for x in spec.argv {
        push(&[x]);
    }
    a
}

/// Something that converts to an `OsString` argument.
trait AsRefOs {
    fn as_os(&self) -> OsString;
}
impl AsRefOs for &str {
    fn as_os(&self) -> OsString {
        s(self)
    }
}
impl AsRefOs for String {
    fn as_os(&self) -> OsString {
        s(self)
    }
}
impl AsRefOs for &Path {
    fn as_os(&self) -> OsString {
        self.as_os_str().to_owned()
    }
}

/// Checks that `bwrap` exists and can create the namespaces promised needs (unprivileged
/// user namespaces may be disabled, e.g. by Ubuntu 24.04's AppArmor or inside containers).
///
/// Errors: [`Error::SandboxUnavailable`] with the reason and how to fix it.
/// Successful probes are remembered per `bwrap` path for the life of the process; failures
/// are not, so installing bubblewrap takes effect without a restart.
pub async fn probe(bwrap: &Path) -> Result<(), Error> {
    static OK: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    if OK
        .lock()
        .map(|v| v.iter().any(|p| p == bwrap))
        .unwrap_or(false)
    {
        return Ok(());
    }
    probe_uncached(bwrap).await?;
    if let Ok(mut v) = OK.lock() {
        v.push(bwrap.to_path_buf());
    }
    Ok(())
}

async fn probe_uncached(bwrap: &Path) -> Result<(), Error> {
    let layout = HostLayout::detect();
    let mut cmd = tokio::process::Command::new(bwrap);
    cmd.arg("--ro-bind").arg("/usr").arg("/usr");
    for (path, entry) in &layout.entries {
        match entry {
            HostEntry::Symlink(t) => cmd.arg("--symlink").arg(t).arg(path),
            HostEntry::Dir => cmd.arg("--ro-bind").arg(path).arg(path),
        };
    }
    cmd.args(["--unshare-all", "--die-with-parent", "--", "true"])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let hint = |why: String| Error::SandboxUnavailable {
        hint: format!(
            "{why}; install bubblewrap (`apt-get install bubblewrap`) and allow unprivileged user namespaces, or set `sandbox: none`"
        ),
    };
    match cmd.output().await {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(hint(format!(
            "{} cannot create a sandbox: {}",
            bwrap.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(hint(format!("cannot run {}: {e}", bwrap.display()))),
    }
}

/// The default `bwrap` location: `PROMISED_BWRAP` if set, else the first `bwrap` on `PATH`,
/// else `/usr/bin/bwrap`.
pub fn default_bwrap() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMISED_BWRAP") {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join("bwrap");
            if c.is_file() {
                return c;
            }
        }
    }
    PathBuf::from("/usr/bin/bwrap")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|x| x.to_string_lossy().into_owned()).collect()
    }

    fn pos(v: &[String], w: &[&str]) -> Option<usize> {
        v.windows(w.len())
            .position(|x| x.iter().zip(w).all(|(a, b)| a == b))
    }

    #[test]
    fn argv_shape() {
        let layout = HostLayout {
            entries: vec![
                ("/bin".into(), HostEntry::Symlink("usr/bin".into())),
                ("/lib64".into(), HostEntry::Dir),
            ],
        };
        let mounts = vec![Mount {
            host: PathBuf::from("/h/res"),
            target: "/tmp/transfer".into(),
            writable: false,
        }];
        let env = vec![("KRATIX_WORKFLOW_TYPE".to_string(), "resource".to_string())];
        let argv = vec!["sh".to_string(), "-c".to_string(), "echo hi".to_string()];
        let spec = SandboxSpec {
            input: Path::new("/r/in"),
            output: Path::new("/r/out"),
            metadata: Path::new("/r/meta"),
            promise_dir: Some(Path::new("/repo/promises/x")),
            mounts: &mounts,
            network: false,
            working_dir: None,
            env: &env,
            argv: &argv,
        };
        let a = strs(&bwrap_args(&layout, &spec));
        assert!(pos(&a, &["--symlink", "usr/bin", "/bin"]).is_some());
        assert!(pos(&a, &["--ro-bind", "/lib64", "/lib64"]).is_some());
        assert!(pos(&a, &["--ro-bind", "/r/in", "/kratix/input"]).is_some());
        assert!(pos(&a, &["--bind", "/r/out", "/kratix/output"]).is_some());
        assert!(pos(&a, &["--bind", "/r/meta", "/kratix/metadata"]).is_some());
        assert!(pos(&a, &["--ro-bind", "/repo/promises/x", "/promise"]).is_some());
        let tmp = pos(&a, &["--tmpfs", "/tmp"]).unwrap();
        let transfer = pos(&a, &["--ro-bind", "/h/res", "/tmp/transfer"]).unwrap();
        assert!(tmp < transfer, "mounts under /tmp come after the tmpfs");
        assert!(!a.contains(&"--share-net".to_string()));
        assert!(a.contains(&"--unshare-all".to_string()));
        assert!(pos(&a, &["--setenv", "KRATIX_WORKFLOW_TYPE", "resource"]).is_some());
        assert!(pos(&a, &["--chdir", "/", "--", "sh", "-c", "echo hi"]).is_some());
        assert_eq!(a.last().map(String::as_str), Some("echo hi"));

        let spec = SandboxSpec {
            network: true,
            working_dir: Some("/work"),
            promise_dir: None,
            mounts: &[],
            ..spec
        };
        let a = strs(&bwrap_args(&layout, &spec));
        assert!(a.contains(&"--share-net".to_string()));
        assert!(pos(&a, &["--chdir", "/work"]).is_some());
        assert!(!a.contains(&"/promise".to_string()));
    }
}
