//! The image runtime: one container run inside its image's root file system.
//!
//! What runs follows Kubernetes (`k8s.io/kubernetes/pkg/kubelet/kuberuntime`,
//! "Define a Command and Arguments for a Container"):
//! - the container's `command` replaces the image's `Entrypoint` and then the image's `Cmd` is
//!   not used; the container's `args` replace `Cmd`;
//! - environment: the image's `Env`, then the `KRATIX_*` variables, then the container's `env`
//!   (later duplicates win); `PATH` from the image, else the sandbox default;
//! - working directory: the container's `workingDir`, else the image's `WorkingDir`, else `/`
//!   (created when the image lacks it, as container runtimes do);
//! - user: the image's `User` (`uid`, `uid:gid`, or a name looked up in the image's
//!   `/etc/passwd` and `/etc/group`); root when empty.
//!
//! Each run gets a writable root of its own, as a Kratix container does: an overlay whose
//! lower layer is the image's shared, read-only root and whose upper layer is a tmpfs in a
//! private mount namespace (`unshare -Urm`, then `mount -t overlay`, then bubblewrap with the
//! merged tree as `/`). Nothing a run writes reaches the image or another run, and everything
//! goes away with the namespace when the run ends (measured in
//! `../shared/reference/oci-images.md` §4: about 11 ms per container). `/tmp` is the image's
//! own, writable on that overlay like the rest of the root, as in a container: images put
//! files there (the marketplace pipelines `ADD resources/ /tmp/transfer/`), so no tmpfs hides
//! it; an image without `/tmp` has none, as on Kubernetes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::Error;
use super::sandbox::DEFAULT_PATH;
use crate::image::{ImageConfig, ImageStore, PullPolicy};
use crate::model::Container;

/// How one container runs from its image: argv, environment, working directory and the
/// numeric user, after the Kubernetes rules of the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageProcess {
    /// The program and its arguments (never empty).
    pub argv: Vec<String>,
    /// The complete environment, in order (later duplicates win).
    pub env: Vec<(String, String)>,
    /// Absolute working directory inside the container.
    pub working_dir: String,
    /// Numeric user and group the process runs as inside the container.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
}

/// Applies the Kubernetes rules to container `c` of `pipeline` on an image with `defaults`
/// and root file system `rootfs` (read for `/etc/passwd` and `/etc/group` when the user is a
/// name). `env` is the `KRATIX_*` variables followed by the container's resolved `env`.
///
/// Errors: [`Error::ImageNoCommand`] when neither the container nor the image names a program;
/// [`Error::ImageUser`] when the image's `User` names a user or group the image does not have.
pub fn process_for(
    pipeline: &str,
    c: &Container,
    defaults: &ImageConfig,
    rootfs: &Path,
    env: &[(String, String)],
) -> Result<ImageProcess, Error> {
    let argv: Vec<String> = match (&c.command, &c.args) {
        (Some(cmd), args) if !cmd.is_empty() => {
            cmd.iter().chain(args.iter().flatten()).cloned().collect()
        }
        (_, Some(args)) => defaults.entrypoint.iter().chain(args).cloned().collect(),
        (_, None) => defaults
            .entrypoint
            .iter()
            .chain(&defaults.cmd)
            .cloned()
            .collect(),
    };
    if argv.is_empty() {
        return Err(Error::ImageNoCommand {
            pipeline: pipeline.into(),
            container: c.name.clone(),
            image: c.image.clone(),
        });
    }
    let mut full = Vec::with_capacity(defaults.env.len() + env.len() + 1);
    if !defaults.env.iter().any(|(k, _)| k == "PATH") {
        full.push(("PATH".to_string(), DEFAULT_PATH.to_string()));
    }
    full.extend(defaults.env.iter().cloned());
    full.extend(env.iter().cloned());
    let working_dir = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| defaults.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    let (uid, gid) = match defaults.user.as_deref().filter(|u| !u.is_empty()) {
        None => (0, 0),
        Some(user) => resolve_user(user, rootfs).map_err(|message| Error::ImageUser {
            image: c.image.clone(),
            user: user.to_string(),
            message,
        })?,
    };
    Ok(ImageProcess {
        argv,
        env: full,
        working_dir,
        uid,
        gid,
    })
}

/// The numeric `(uid, gid)` of an OCI `User` value: `uid`, `uid:gid`, `name` or `name:group`,
/// names looked up in the image's `/etc/passwd` and `/etc/group` (never the host's). A user
/// without a group takes its passwd entry's group (0 for a bare number not in passwd).
fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_db(rootfs, "etc/passwd");
    let entry = |name: &str| {
        passwd
            .iter()
            .find(|f| f.first().map(String::as_str) == Some(name))
            .cloned()
    };
    let by_uid = |uid: u32| {
        passwd
            .iter()
            .find(|f| f.get(2).and_then(|x| x.parse::<u32>().ok()) == Some(uid))
            .cloned()
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            by_uid(uid).and_then(|f| f.get(3).and_then(|x| x.parse().ok())),
        ),
        Err(_) => {
            let f = entry(u).ok_or_else(|| format!("no user {u:?} in the image's /etc/passwd"))?;
            let uid = f
                .get(2)
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| format!("user {u:?} has no numeric uid in /etc/passwd"))?;
            (uid, f.get(3).and_then(|x| x.parse().ok()))
        }
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_db(rootfs, "etc/group")
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| f.get(2).and_then(|x| x.parse().ok()))
                .ok_or_else(|| format!("no group {g:?} in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// The `:`-separated fields of each line of a passwd-style file inside `rootfs` (empty when it
/// is missing or is not a regular file: a symlink is never followed on the host).
fn read_db(rootfs: &Path, rel: &str) -> Vec<Vec<String>> {
    let path = rootfs.join(rel);
    let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let parent_ok = path.parent().is_some_and(|d| d == rootfs || real_dir(d));
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && parent_ok => {}
        _ => return Vec::new(),
    }
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// The per-run directories of an overlay root, under the run's own directory (removed with it).
#[derive(Debug, Clone)]
pub struct OverlayDirs {
    /// Where the tmpfs for the upper and work directories is mounted.
    pub scratch: PathBuf,
    /// Where the merged root is mounted.
    pub merged: PathBuf,
}

impl OverlayDirs {
    /// Creates `scratch/` and `merged/` under `run_root`. Errors: the directory cannot be made.
    pub fn create(run_root: &Path) -> Result<OverlayDirs, Error> {
        let dirs = OverlayDirs {
            scratch: run_root.join("overlay-scratch"),
            merged: run_root.join("overlay-root"),
        };
        for d in [&dirs.scratch, &dirs.merged] {
            std::fs::create_dir_all(d).map_err(|e| Error::Io {
                context: format!("creating {}", d.display()),
                message: e.to_string(),
            })?;
        }
        Ok(dirs)
    }
}

/// Size of the tmpfs that holds one run's writes to its root file system.
pub const OVERLAY_SIZE: &str = "1g";

/// The shell step between `unshare -Urm` and bubblewrap: a tmpfs upper layer, the overlay,
/// then `exec bwrap` (the host's tools are found on the host's `PATH`; the container gets the
/// image's back). Nothing is created inside the merged tree from the host side, where an
/// image's symlink could lead out of it: bubblewrap makes the mount points and the working
/// directory (`--dir`) inside the sandbox. Arguments: `$1` image root (lower), `$2` scratch,
/// `$3` merged; the rest is the bwrap command line.
const OVERLAY_SCRIPT: &str = r#"set -e
lower=$1 scratch=$2 merged=$3; shift 3
image_path=$PATH
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t tmpfs -o size=SIZE,mode=0755 promised-run "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay promised-root -o "lowerdir=$lower,upperdir=$scratch/upper,workdir=$scratch/work" "$merged"
PATH=$image_path
exec "$@"
"#;

/// One container run prepared by [`image_invocation`].
pub(super) struct ImageRun {
    /// What to spawn.
    pub invocation: super::runtime::Invocation,
    /// What the sandbox allows, for error messages.
    pub note: String,
    /// The program the container runs (for the CRLF hint).
    pub command0: String,
    /// `sha256:…` of the image manifest that ran.
    pub digest: String,
}

/// Pulls (or finds in the cache) the image of container `c` and prepares its run on an
/// overlay root: the Kubernetes rules of [`process_for`], the contract directories of `dirs`,
/// network when the runner, the Pipeline or nothing else allows it. `env` is the `KRATIX_*`
/// variables and the container's resolved `env`.
///
/// Errors: [`Error::ImagePull`] naming the image and the registry's answer (also when the
/// image store could not be opened, or the sandbox is off: the image runtime needs it), and
/// those of [`process_for`] and [`OverlayDirs::create`].
#[allow(clippy::too_many_arguments)]
pub(super) async fn image_invocation(
    cfg: &super::RunnerConfig,
    images: &super::Images,
    pipeline: &str,
    c: &Container,
    env: &[(String, String)],
    dirs: &super::contract::PipelineDirs,
    input: &super::WorkflowInput<'_>,
    pipeline_network: bool,
) -> Result<ImageRun, Error> {
    let fail = |message: String| Error::ImagePull {
        pipeline: pipeline.into(),
        container: c.name.clone(),
        message,
    };
    if cfg.sandbox != super::SandboxMode::Bwrap {
        return Err(fail(format!(
            "image {:?}: the image runtime needs the sandbox (sandbox: bwrap); add an imageOverrides entry to run it as a host process",
            c.image
        )));
    }
    let store: &ImageStore = images.0.as_ref().map_err(|e| fail(e.clone()))?;
    let policy = PullPolicy::for_container(
        c.image_pull_policy
            .as_ref()
            .and_then(serde_json::Value::as_str),
        &c.image,
    )
    .map_err(|e| fail(format!("image {:?}: imagePullPolicy: {e}", c.image)))?;
    let pulled = store
        .ensure(&c.image, policy)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let process = process_for(pipeline, c, &pulled.config, &pulled.rootfs, env)?;
    let run_dir = dirs.root().join(format!("container-{}", sanitize(&c.name)));
    let overlay = OverlayDirs::create(&run_dir)?;
    let network = cfg.allow_network || pipeline_network;
    let (input_dir, output_dir, meta_dir) = (dirs.input(), dirs.output(), dirs.metadata());
    let spec = OverlaySpec {
        rootfs: &pulled.rootfs,
        dirs: &overlay,
        bwrap: &cfg.bwrap,
        input: &input_dir,
        output: &output_dir,
        metadata: &meta_dir,
        promise_dir: input.promise_dir.as_deref(),
        hidden: &cfg.hidden,
        network,
        process: &process,
    };
    let (program, args) = invocation_args(&spec);
    Ok(ImageRun {
        invocation: super::runtime::Invocation {
            program,
            args,
            env: process.env.clone(),
            cwd: None,
            timeout: cfg.timeout,
            log_cap: cfg.log_cap_bytes,
        },
        note: format!(
            "; image {}@{}: network {}, a writable root of its own (discarded after the run)",
            c.image,
            pulled.digest,
            if network { "on" } else { "off" }
        ),
        command0: process.argv[0].clone(),
        digest: pulled.digest,
    })
}

/// A container name as a directory name (anything but `[A-Za-z0-9._-]` becomes `_`).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "._-".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect()
}

/// Everything [`invocation_args`] needs for one container run.
#[derive(Debug, Clone)]
pub struct OverlaySpec<'a> {
    /// The image's shared, read-only root file system.
    pub rootfs: &'a Path,
    /// Per-run overlay directories.
    pub dirs: &'a OverlayDirs,
    /// The `bwrap` binary.
    pub bwrap: &'a Path,
    /// Host directory mounted read-only at `/kratix/input`.
    pub input: &'a Path,
    /// Host directory mounted writable at `/kratix/output`.
    pub output: &'a Path,
    /// Host directory mounted writable at `/kratix/metadata`.
    pub metadata: &'a Path,
    /// Host directory mounted read-only at `/promise`.
    pub promise_dir: Option<&'a Path>,
    /// Host paths no pipeline may see, masked where the `/promise` bind would expose them
    /// (the state directory inside a Promise folder, say), as the host runtime does.
    pub hidden: &'a [super::sandbox::Hidden],
    /// Share the host network (with its `/etc/resolv.conf` and `/etc/hosts`).
    pub network: bool,
    /// What runs.
    pub process: &'a ImageProcess,
}

/// The program (`unshare`) and its arguments for one container run on an overlay root; the
/// environment goes to [`ImageProcess::env`] through bwrap's own environment (never on a
/// command line).
pub fn invocation_args(spec: &OverlaySpec<'_>) -> (OsString, Vec<OsString>) {
    let os = |s: &str| OsString::from(s);
    let p = |p: &Path| p.as_os_str().to_os_string();
    let mut a: Vec<OsString> = vec![
        os("-Urm"),
        os("--"),
        os("/bin/sh"),
        os("-c"),
        os(&OVERLAY_SCRIPT.replace("SIZE", OVERLAY_SIZE)),
        os("promised-overlay"),
        p(spec.rootfs),
        p(&spec.dirs.scratch),
        p(&spec.dirs.merged),
        p(spec.bwrap),
        os("--bind"),
        p(&spec.dirs.merged),
        os("/"),
        os("--proc"),
        os("/proc"),
        os("--dev"),
        os("/dev"),
        os("--ro-bind"),
        p(spec.input),
        os("/kratix/input"),
        os("--bind"),
        p(spec.output),
        os("/kratix/output"),
        os("--bind"),
        p(spec.metadata),
        os("/kratix/metadata"),
    ];
    if let Some(d) = spec.promise_dir {
        a.extend([os("--ro-bind"), p(d), os(super::sandbox::PROMISE_MOUNT)]);
        a.extend(super::sandbox::mask_args(
            d,
            super::sandbox::PROMISE_MOUNT,
            spec.hidden,
        ));
    }
    a.push(os("--unshare-all"));
    if spec.network {
        a.extend([
            os("--share-net"),
            os("--ro-bind-try"),
            os("/etc/resolv.conf"),
            os("/etc/resolv.conf"),
            os("--ro-bind-try"),
            os("/etc/hosts"),
            os("/etc/hosts"),
        ]);
    }
    a.extend([
        os("--die-with-parent"),
        os("--new-session"),
        os("--uid"),
        os(&spec.process.uid.to_string()),
        os("--gid"),
        os(&spec.process.gid.to_string()),
        os("--dir"),
        os(&spec.process.working_dir),
        os("--chdir"),
        os(&spec.process.working_dir),
        os("--"),
    ]);
    a.extend(spec.process.argv.iter().map(|x| os(x)));
    (os("unshare"), a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(command: Option<&[&str]>, args: Option<&[&str]>) -> Container {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Container {
            name: "c".into(),
            image: "example/i:v1".into(),
            command: command.map(v),
            args: args.map(v),
            ..Default::default()
        }
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo image".into()],
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("GREETING".into(), "image".into()),
            ],
            working_dir: Some("/work".into()),
            user: None,
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let root = Path::new("/nonexistent");
        let run = |c: &Container| process_for("p", c, &image(), root, &[]).unwrap().argv;
        // Neither: Entrypoint + Cmd.
        assert_eq!(run(&container(None, None)), ["/bin/sh", "-c", "echo image"]);
        // args only: Entrypoint + args (Cmd dropped).
        assert_eq!(
            run(&container(None, Some(&["echo args"]))),
            ["/bin/sh", "-c", "echo args"]
        );
        // command only: command, and neither Cmd nor Entrypoint.
        assert_eq!(run(&container(Some(&["/bin/true"]), None)), ["/bin/true"]);
        // both: command + args.
        assert_eq!(
            run(&container(Some(&["/bin/echo"]), Some(&["a", "b"]))),
            ["/bin/echo", "a", "b"]
        );
        // Nothing to run at all.
        let empty = ImageConfig::default();
        assert!(matches!(
            process_for("p", &container(None, None), &empty, root, &[]),
            Err(Error::ImageNoCommand { .. })
        ));
    }

    #[test]
    fn env_is_image_then_kratix_then_container_and_working_dir_falls_back() {
        let root = Path::new("/nonexistent");
        let env = vec![
            ("KRATIX_WORKFLOW_TYPE".to_string(), "resource".to_string()),
            ("GREETING".to_string(), "container".to_string()),
        ];
        let p = process_for("p", &container(None, None), &image(), root, &env).unwrap();
        assert_eq!(
            p.env,
            [
                ("PATH".to_string(), "/bin".to_string()),
                ("GREETING".into(), "image".into()),
                ("KRATIX_WORKFLOW_TYPE".into(), "resource".into()),
                ("GREETING".into(), "container".into()),
            ]
        );
        assert_eq!(p.working_dir, "/work");
        let mut c = container(None, None);
        c.working_dir = Some("/elsewhere".into());
        assert_eq!(
            process_for("p", &c, &image(), root, &[])
                .unwrap()
                .working_dir,
            "/elsewhere"
        );
        let bare = ImageConfig {
            entrypoint: vec!["/x".into()],
            ..Default::default()
        };
        let p = process_for("p", &container(None, None), &bare, root, &[]).unwrap();
        assert_eq!(p.working_dir, "/");
        assert_eq!(p.env[0], ("PATH".to_string(), DEFAULT_PATH.to_string()));
    }

    #[test]
    fn hidden_paths_inside_the_promise_folder_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let promise = dir.path().join("promise");
        let state = promise.join(".promised");
        std::fs::create_dir_all(&state).unwrap();
        let hidden = [super::super::sandbox::Hidden::of(&state)];
        let dirs = OverlayDirs {
            scratch: dir.path().join("s"),
            merged: dir.path().join("m"),
        };
        let process = ImageProcess {
            argv: vec!["/bin/true".into()],
            env: Vec::new(),
            working_dir: "/".into(),
            uid: 0,
            gid: 0,
        };
        let (_, args) = invocation_args(&OverlaySpec {
            rootfs: dir.path(),
            dirs: &dirs,
            bwrap: Path::new("/usr/bin/bwrap"),
            input: dir.path(),
            output: dir.path(),
            metadata: dir.path(),
            promise_dir: Some(&promise),
            hidden: &hidden,
            network: false,
            process: &process,
        });
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = args
            .windows(2)
            .position(|w| w[0] == "--tmpfs" && w[1] == "/promise/.promised");
        assert!(at.is_some(), "{args:?}");
    }

    #[test]
    fn users_resolve_in_the_image_not_on_the_host() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\npipeline:x:1000:1001::/home:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let user = |u: &str| resolve_user(u, dir.path());
        assert_eq!(user("0"), Ok((0, 0)));
        assert_eq!(user("root"), Ok((0, 0)));
        assert_eq!(user("pipeline"), Ok((1000, 1001)));
        assert_eq!(user("1000"), Ok((1000, 1001)));
        assert_eq!(user("1000:50"), Ok((1000, 50)));
        assert_eq!(user("pipeline:staff"), Ok((1000, 50)));
        assert_eq!(user("4242"), Ok((4242, 0)));
        assert!(user("nobody-here").unwrap_err().contains("/etc/passwd"));
        assert!(user("0:nogroup").unwrap_err().contains("/etc/group"));
    }
}
