//! The bubblewrap sandbox: a pure function that builds the `bwrap` command line, host
//! layout detection, and a probe that tells whether bwrap works on this machine.
//!
//! The sandbox root is built from pieces (a `--ro-bind / /` root cannot take new mount
//! points such as `/kratix`, see test-infrastructure.md §4):
//! host `/usr` read-only; `/bin`, `/sbin`, `/lib*` as the host has them (symlinks into `/usr`
//! on merged-usr systems, read-only binds otherwise); from `/etc` only what programs need
//! ([`ETC_ENTRIES`], never `shadow`, `ssl/private`, `ssh` host keys or promised's own
//! configuration and secrets); a private `/tmp`, `/proc` and `/dev`; `/kratix/input`
//! read-only, `/kratix/output` and `/kratix/metadata` writable (kratix-contract.md §2.2); the
//! Promise folder read-only at [`PROMISE_MOUNT`]; image-override mounts; then the root itself is
//! remounted read-only, so `/x`, `/etc/x` and `$HOME/x` cannot be written. Paths pipelines must
//! never see ([`SandboxSpec::hidden`]: the state directory, the secrets directory, the webhook
//! secret file) are masked wherever a bind would expose them (an empty read-only tmpfs or
//! `/dev/null` on top), and an image-override mount of such a path is refused
//! ([`check_mounts`]). Every namespace is unshared (`--unshare-all`); the network is shared
//! only when allowed. The environment is exactly the contract's variables, handed to bwrap as its
//! own environment ([`bwrap_env`]), never as arguments.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{Error, Mount};

/// Where the Promise's folder (the directory holding its `promise.yaml` in the config repo)
/// is mounted read-only inside the sandbox, so `command: ["/promise/pipeline/configure"]`
/// runs a script kept beside `promise.yaml`.
pub const PROMISE_MOUNT: &str = "/promise";

/// `PATH` inside the sandbox (Debian's default; images usually set the same).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the sandbox gets from the host's `/etc`, each with why: only these, read-only, and
/// only those the host has. Everything else in `/etc` (`shadow`, `gshadow`, `ssl/private`,
/// `ssh/ssh_host_*_key`, `/etc/promised`, package manager credentials such as `pip.conf`,
/// `npmrc` or `maven/settings.xml`, `environment`) stays out of sight. An entry ending in `*`
/// stands for every top-level `/etc` name with that prefix. A symlink whose target is in the
/// sandbox anyway (`/usr`, `/proc`: `localtime`, `mtab`) is recreated as the same symlink;
/// any other symlink (`resolv.conf` → `/run/…`) is bound as the file it points to.
/// Left out on purpose although harmless to most programs: `gitconfig` (system-wide
/// `http.extraHeader` or credential settings can carry tokens; git runs without it).
/// Measured with sh, coreutils, getent, awk, sed, grep, df, git, curl, kubectl, yq, jq,
/// python3 (ssl, socket, mimetypes, platform), perl, node and java
/// (tests/pipeline.rs `common_tools_run_in_the_sandbox`).
pub const ETC_ENTRIES: &[(&str, &str)] = &[
    (
        "passwd",
        "user names: id, whoami, ls -l, ssh and git's default identity",
    ),
    ("group", "group names: id, ls -l"),
    (
        "nsswitch.conf",
        "how glibc looks up users, groups, hosts and services",
    ),
    ("hosts", "name resolution of localhost and static names"),
    ("resolv.conf", "DNS, for pipelines with network"),
    ("host.conf", "resolver options"),
    ("gai.conf", "getaddrinfo address ordering"),
    (
        "protocols",
        "protocol names: getprotobyname (python socket, curl)",
    ),
    (
        "services",
        "port names: getservbyname (python socket, ssh, curl)",
    ),
    (
        "ssl/certs",
        "CA certificates, Debian layout (ca-certificates.crt and hashed links)",
    ),
    (
        "ssl/openssl.cnf",
        "OpenSSL configuration (curl, git over https, python ssl)",
    ),
    (
        "ca-certificates",
        "local CA certificates that ssl/certs links to",
    ),
    ("pki/tls/certs", "CA bundle, Red Hat layout"),
    ("pki/tls/cert.pem", "CA bundle, Red Hat layout"),
    (
        "pki/tls/openssl.cnf",
        "OpenSSL configuration, Red Hat layout",
    ),
    (
        "pki/ca-trust/extracted",
        "the CA bundles pki/tls links to, Red Hat layout",
    ),
    (
        "crypto-policies/back-ends",
        "OpenSSL and GnuTLS policy files Red Hat's openssl.cnf includes",
    ),
    ("localtime", "the host's time zone (date, logs)"),
    ("timezone", "the host's time zone name (Debian)"),
    (
        "alternatives",
        "Debian's /usr/bin links (awk, java, editor, …) go through here",
    ),
    (
        "ld.so.cache",
        "where the dynamic loader finds shared libraries",
    ),
    ("ld.so.conf", "dynamic loader search path"),
    ("ld.so.conf.d", "dynamic loader search path"),
    ("locale.alias", "locale names (setlocale)"),
    (
        "mime.types",
        "file types by extension (python mimetypes, curl)",
    ),
    ("magic", "file types by content (file)"),
    ("magic.mime", "file types by content (file --mime)"),
    (
        "os-release",
        "the distribution (python platform, scripts that branch on it)",
    ),
    (
        "ssh/ssh_config",
        "ssh client configuration (git over ssh), not the host keys",
    ),
    ("ssh/ssh_config.d", "ssh client configuration"),
    ("ssh/ssh_known_hosts", "system-wide ssh known hosts"),
    ("python3", "Debian's python3 configuration"),
    (
        "python3.*",
        "Debian's sitecustomize for each python3 version",
    ),
    (
        "java-*",
        "Debian's OpenJDK configuration, which /usr/lib/jvm/*/conf links to",
    ),
    (
        "mtab",
        "mounted file systems (df, mount): a link to the sandbox's own /proc",
    ),
];

/// What a top-level host path such as `/bin` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    /// A symlink with this target (e.g. `usr/bin`), recreated inside the sandbox.
    Symlink(String),
    /// A real directory or file (or a symlink to one), bound read-only.
    Dir,
}

/// The host's `/bin`, `/sbin`, `/lib`, `/lib32`, `/lib64` and `/libx32`, and the
/// [`ETC_ENTRIES`], as found on disk; absent entries are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLayout {
    /// `(absolute path, kind)` pairs.
    pub entries: Vec<(String, HostEntry)>,
    /// `(absolute path, kind)` pairs of the `/etc` entries the sandbox gets.
    pub etc: Vec<(String, HostEntry)>,
}

/// Where a host symlink at `link` points to, when that target is inside the sandbox anyway
/// (under `/usr` or `/proc`), as its link text; `None` for anything else.
fn link_kept(link: &Path) -> Option<String> {
    let text = std::fs::read_link(link).ok()?;
    let abs = link.parent().unwrap_or(Path::new("/")).join(&text);
    // Resolve the target's directory (not the target: `/proc/mounts` would resolve into the
    // host's /proc/<pid>), then match the prefix.
    let resolved = match (abs.parent(), abs.file_name()) {
        (Some(d), Some(n)) => std::fs::canonicalize(d).ok()?.join(n),
        _ => return None,
    };
    (resolved.starts_with("/usr/") || resolved.starts_with("/proc/"))
        .then(|| text.to_string_lossy().into_owned())
}

/// The `/etc` entries of [`ETC_ENTRIES`] present under `etc` (the host's `/etc`), sorted.
fn detect_etc(etc: &Path) -> Vec<(String, HostEntry)> {
    let mut names: Vec<String> = Vec::new();
    let top: Vec<String> = std::fs::read_dir(etc)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (entry, _) in ETC_ENTRIES {
        match entry.strip_suffix('*') {
            Some(prefix) => names.extend(top.iter().filter(|n| n.starts_with(prefix)).cloned()),
            None => names.push((*entry).to_string()),
        }
    }
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for n in names {
        let host = etc.join(&n);
        let Ok(m) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        let inside = format!("/etc/{n}");
        if m.file_type().is_symlink() {
            if let Some(t) = link_kept(&host) {
                out.push((inside, HostEntry::Symlink(t)));
            } else if host.exists() {
                out.push((inside, HostEntry::Dir)); // bound as what it points to
            }
        } else {
            out.push((inside, HostEntry::Dir));
        }
    }
    out
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
        HostLayout {
            entries,
            etc: detect_etc(Path::new("/etc")),
        }
    }

    /// The layout of this machine, read again only when `/` or `/etc` changed (their
    /// modification times: an entry added, removed or replaced by rename). Every workflow
    /// calls this; reading `/etc` each time was 1% of a cold pass's CPU.
    pub fn current() -> Arc<Self> {
        type Cached = Option<((Option<SystemTime>, Option<SystemTime>), Arc<HostLayout>)>;
        static CACHE: Mutex<Cached> = Mutex::new(None);
        let mtime = |p: &str| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let key = (mtime("/"), mtime("/etc"));
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        match &*cache {
            Some((k, layout)) if *k == key && key.0.is_some() && key.1.is_some() => layout.clone(),
            _ => {
                let layout = Arc::new(HostLayout::detect());
                *cache = Some((key, layout.clone()));
                layout
            }
        }
    }
}

/// A host path pipelines must never see (see [`SandboxSpec::hidden`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hidden {
    /// Absolute, canonical host path.
    pub path: PathBuf,
    /// A directory (masked with an empty tmpfs) or a file (masked with `/dev/null`).
    pub dir: bool,
}

impl Hidden {
    /// `path` made absolute and canonical (as far as it exists), and whether it is a
    /// directory. Paths that do not exist are kept as absolute paths.
    pub fn of(path: &Path) -> Hidden {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let canon = std::fs::canonicalize(&abs).unwrap_or(abs);
        Hidden {
            dir: !canon.is_file(),
            path: canon,
        }
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
    /// Environment, in order (later duplicates win); given to bwrap through [`bwrap_env`].
    pub env: &'a [(String, String)],
    /// The command and its arguments.
    pub argv: &'a [String],
    /// Host paths masked wherever a bind would expose them (canonical paths, so compare them
    /// with canonical bind sources).
    pub hidden: &'a [Hidden],
}

/// Refuses an image-override mount whose host path is, or is inside, a hidden path (the
/// state directory, the secrets directory, the webhook secret file): masking it would leave
/// nothing to mount. Mount host paths are compared canonically.
///
/// Errors: [`Error::MountExposesSecret`].
pub fn check_mounts(image: &str, mounts: &[Mount], hidden: &[Hidden]) -> Result<(), Error> {
    for m in mounts {
        let host = std::fs::canonicalize(&m.host).unwrap_or_else(|_| m.host.clone());
        if let Some(h) = hidden.iter().find(|h| host.starts_with(&h.path)) {
            return Err(Error::MountExposesSecret {
                image: image.to_string(),
                host: m.host.display().to_string(),
                hidden: h.path.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Masks for every hidden path inside the host directory `src` bound at `dst`: an empty
/// read-only tmpfs over a directory, `/dev/null` over a file.
fn masks(src: &Path, dst: &str, hidden: &[Hidden], push: &mut dyn FnMut(&[&dyn AsRefOs])) {
    if hidden.is_empty() {
        return;
    }
    let src = std::fs::canonicalize(src).unwrap_or_else(|_| src.to_path_buf());
    for h in hidden {
        let Ok(rel) = h.path.strip_prefix(&src) else {
            continue;
        };
        if rel.as_os_str().is_empty() || !h.path.exists() {
            // The bind is the hidden path itself (refused by check_mounts), or there is
            // nothing to hide (and no mount point to mask it on).
            continue;
        }
        let at = Path::new(dst).join(rel);
        let at: &Path = &at;
        if h.dir {
            push(&[&"--tmpfs", &at, &"--remount-ro", &at]);
        } else {
            push(&[&"--ro-bind", &"/dev/null", &at]);
        }
    }
}

/// The bwrap arguments masking every hidden path inside host directory `src` once it is bound
/// at `dst` (what [`bwrap_args`] adds after each bind; the image runtime uses it for
/// `/promise`).
pub(super) fn mask_args(src: &Path, dst: &str, hidden: &[Hidden]) -> Vec<OsString> {
    let mut a = Vec::new();
    masks(src, dst, hidden, &mut |xs: &[&dyn AsRefOs]| {
        a.extend(xs.iter().map(|x| x.as_os()))
    });
    a
}

fn s(x: &str) -> OsString {
    OsString::from(x)
}

/// Builds the arguments to pass to `bwrap` (not including `bwrap` itself). Pure but for
/// resolving bind sources canonically to find the hidden paths they contain.
pub fn bwrap_args(layout: &HostLayout, spec: &SandboxSpec<'_>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |xs: &[&dyn AsRefOs]| {
        for x in xs {
            a.push(x.as_os());
        }
    };
    let hidden = spec.hidden;
    push(&[&"--ro-bind", &"/usr", &"/usr"]);
    masks(Path::new("/usr"), "/usr", hidden, &mut push);
    for (path, entry) in layout.entries.iter().chain(&layout.etc) {
        match entry {
            HostEntry::Symlink(t) => push(&[&"--symlink", t, path]),
            HostEntry::Dir => {
                push(&[&"--ro-bind-try", path, path]);
                masks(Path::new(path), path, hidden, &mut push);
            }
        }
    }
    push(&[&"--tmpfs", &"/tmp", &"--proc", &"/proc", &"--dev", &"/dev"]);
    push(&[&"--ro-bind", &spec.input, &"/kratix/input"]);
    push(&[&"--bind", &spec.output, &"/kratix/output"]);
    push(&[&"--bind", &spec.metadata, &"/kratix/metadata"]);
    if let Some(p) = spec.promise_dir {
        push(&[&"--ro-bind", &p, &PROMISE_MOUNT]);
        masks(p, PROMISE_MOUNT, hidden, &mut push);
    }
    for m in spec.mounts {
        let flag = if m.writable { "--bind" } else { "--ro-bind" };
        push(&[&flag, &m.host.as_path(), &m.target.as_str()]);
        masks(&m.host, &m.target, hidden, &mut push);
    }
    push(&[&"--remount-ro", &"/"]);
    push(&[&"--unshare-all"]);
    if spec.network {
        push(&[&"--share-net"]);
    }
    // No `--clearenv`/`--setenv`: the environment is bwrap's own ([`bwrap_env`]), which it
    // passes on, so no value (a pipeline Secret) is ever on a command line.
    push(&[&"--die-with-parent", &"--new-session"]);
    push(&[&"--chdir", &spec.working_dir.unwrap_or("/")]);
    push(&[&"--"]);
    for x in spec.argv {
        push(&[x]);
    }
    a
}

/// The complete environment to start `bwrap` with (the parent's is not inherited): `PATH`,
/// then [`SandboxSpec::env`] in order (later duplicates win). bwrap passes it on to the
/// container unchanged.
pub fn bwrap_env(spec: &SandboxSpec<'_>) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), DEFAULT_PATH.to_string())];
    env.extend(spec.env.iter().cloned());
    env
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
    fn the_current_layout_is_the_detected_one_and_is_read_once_while_etc_is_unchanged() {
        let first = HostLayout::current();
        assert_eq!(*first, HostLayout::detect());
        assert!(
            !first.etc.is_empty(),
            "this machine's /etc has passwd at least"
        );
        // Nothing in `/` or `/etc` changes while the suite runs: the same copy is handed out.
        assert!(Arc::ptr_eq(&first, &HostLayout::current()));
    }

    #[test]
    fn argv_shape() {
        let layout = HostLayout {
            entries: vec![
                ("/bin".into(), HostEntry::Symlink("usr/bin".into())),
                ("/lib64".into(), HostEntry::Dir),
            ],
            etc: vec![
                ("/etc/passwd".into(), HostEntry::Dir),
                (
                    "/etc/localtime".into(),
                    HostEntry::Symlink("/usr/share/zoneinfo/UTC".into()),
                ),
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
            hidden: &[],
        };
        let a = strs(&bwrap_args(&layout, &spec));
        assert!(pos(&a, &["--symlink", "usr/bin", "/bin"]).is_some());
        assert!(pos(&a, &["--ro-bind-try", "/lib64", "/lib64"]).is_some());
        assert!(pos(&a, &["--ro-bind-try", "/etc/passwd", "/etc/passwd"]).is_some());
        assert!(
            pos(
                &a,
                &["--symlink", "/usr/share/zoneinfo/UTC", "/etc/localtime"]
            )
            .is_some()
        );
        assert!(
            !a.iter().any(|x| x == "/etc"),
            "the host's /etc is not bound whole: {a:?}"
        );
        assert!(pos(&a, &["--ro-bind", "/r/in", "/kratix/input"]).is_some());
        assert!(pos(&a, &["--bind", "/r/out", "/kratix/output"]).is_some());
        assert!(pos(&a, &["--bind", "/r/meta", "/kratix/metadata"]).is_some());
        assert!(pos(&a, &["--ro-bind", "/repo/promises/x", "/promise"]).is_some());
        let tmp = pos(&a, &["--tmpfs", "/tmp"]).unwrap();
        let transfer = pos(&a, &["--ro-bind", "/h/res", "/tmp/transfer"]).unwrap();
        assert!(tmp < transfer, "mounts under /tmp come after the tmpfs");
        assert!(!a.contains(&"--share-net".to_string()));
        assert!(a.contains(&"--unshare-all".to_string()));
        // The environment is bwrap's own, never on its command line.
        assert!(
            !a.iter().any(|x| x == "resource" || x == "--setenv"),
            "{a:?}"
        );
        assert_eq!(
            bwrap_env(&spec),
            [
                ("PATH".to_string(), DEFAULT_PATH.to_string()),
                ("KRATIX_WORKFLOW_TYPE".to_string(), "resource".to_string())
            ]
        );
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

    #[test]
    fn hidden_paths_are_masked_inside_binds_and_refused_as_mounts() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("state/blobs")).unwrap();
        std::fs::write(root.join("webhook-secret"), "x").unwrap();
        let hidden = vec![
            Hidden::of(&root.join("state")),
            Hidden::of(&root.join("webhook-secret")),
            Hidden::of(&root.join("not-there")),
        ];
        assert!(hidden[0].dir && !hidden[1].dir);
        let mounts = vec![Mount {
            host: root.clone(),
            target: "/image".into(),
            writable: false,
        }];
        let spec = SandboxSpec {
            input: Path::new("/r/in"),
            output: Path::new("/r/out"),
            metadata: Path::new("/r/meta"),
            promise_dir: Some(&root),
            mounts: &mounts,
            network: false,
            working_dir: None,
            env: &[],
            argv: &[],
            hidden: &hidden,
        };
        let a = strs(&bwrap_args(&HostLayout::default(), &spec));
        for at in ["/promise", "/image"] {
            let bind = pos(&a, &["--ro-bind", root.to_str().unwrap(), at]).unwrap();
            let state = format!("{at}/state");
            let mask = pos(&a, &["--tmpfs", &state, "--remount-ro", &state]).unwrap();
            assert!(bind < mask, "the mask comes after the bind");
            let file = format!("{at}/webhook-secret");
            assert!(pos(&a, &["--ro-bind", "/dev/null", &file]).is_some());
        }
        assert!(!a.iter().any(|x| x.contains("not-there")), "{a:?}");
        // Mounting a hidden path, or something inside one, is refused.
        assert!(check_mounts("i", &mounts, &hidden).is_ok());
        for host in [
            root.join("state"),
            root.join("state/blobs"),
            root.join("webhook-secret"),
        ] {
            let m = [Mount {
                host,
                target: "/image".into(),
                writable: false,
            }];
            assert!(matches!(
                check_mounts("i", &m, &hidden),
                Err(Error::MountExposesSecret { .. })
            ));
        }
    }
}
