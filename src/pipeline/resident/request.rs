//! What the daemon asks the resident sandbox for: one container run, as a list of mount
//! operations read off the bubblewrap command line the per-run sandbox would use
//! ([`from_bwrap_args`], [`from_image_args`]), so both sandboxes build the same tree from one
//! description ([`super::super::sandbox::bwrap_args`], [`super::super::oci::invocation_args`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One step of building a run's root, in order. `dst` is a path inside the sandbox; `src` a
/// host path. Mount points are created as needed (directories, or empty files for files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    /// A bind mount of host `src` (recursive); `ro`: read-only, submounts included;
    /// `optional`: skipped when `src` does not exist (bwrap's `--ro-bind-try`).
    Bind {
        /// Host path.
        src: PathBuf,
        /// Path inside the sandbox.
        dst: String,
        /// Read-only.
        ro: bool,
        /// Skip when `src` is missing.
        optional: bool,
    },
    /// A symlink `dst` → `target` (bwrap's `--symlink`).
    Symlink {
        /// What the link points to.
        target: String,
        /// Path inside the sandbox.
        dst: String,
    },
    /// An empty tmpfs, mode 0755 (bwrap's `--tmpfs`).
    Tmpfs {
        /// Path inside the sandbox.
        dst: String,
    },
    /// A `proc` file system of the run's own PID namespace, with `sys`, `sysrq-trigger`,
    /// `irq` and `bus` read-only (bwrap's `--proc`).
    Proc {
        /// Path inside the sandbox.
        dst: String,
    },
    /// A minimal `/dev`: `null`, `zero`, `full`, `random`, `urandom`, `tty`, `shm`, a private
    /// `pts` and the usual symlinks (bwrap's `--dev`).
    Dev {
        /// Path inside the sandbox.
        dst: String,
    },
    /// Makes the mount at `dst` read-only, not its submounts (bwrap's `--remount-ro`).
    RemountRo {
        /// Path inside the sandbox.
        dst: String,
    },
    /// A directory, with its parents, mode 0755 (bwrap's `--dir`).
    Dir {
        /// Path inside the sandbox.
        dst: String,
    },
}

/// The root file system a run starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Root {
    /// An empty tmpfs the [`Op`]s fill (the process runtime).
    Tmpfs,
    /// A writable overlay: the image's read-only root `lower` below a tmpfs of
    /// [`super::super::oci::OVERLAY_SIZE`] (the image runtime).
    Overlay {
        /// The image's unpacked root file system on the host.
        lower: PathBuf,
    },
}

/// One container run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    /// An empty host directory the run's root is mounted on (in the run's own mount
    /// namespace; the host sees it empty).
    pub mountpoint: PathBuf,
    /// What the root starts as.
    pub root: Root,
    /// How the rest of the tree is built, in order.
    pub ops: Vec<Op>,
    /// The command and its arguments (`argv[0]` looked up in the `PATH` of `env`).
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub chdir: String,
    /// User and group the command runs as inside; `None`: the daemon's own, as bwrap does.
    pub uid: Option<u32>,
    /// See `uid`.
    pub gid: Option<u32>,
}

/// A message on the helper's socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Message {
    /// Start a run; the message carries the run's stdout, stderr and status pipes.
    Run(Box<RunRequest>),
    /// The run whose supervisor has this pid is finished: reap it.
    Reap(i32),
}

/// The parts of a bubblewrap command line that describe a run, or `None` when it asks for
/// something the resident sandbox does not do (the host network, a flag it does not know):
/// such runs use bwrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Mount operations, in order.
    pub ops: Vec<Op>,
    /// `--chdir`, default `/`.
    pub chdir: String,
    /// `--uid`.
    pub uid: Option<u32>,
    /// `--gid`.
    pub gid: Option<u32>,
    /// After `--`.
    pub argv: Vec<String>,
}

fn utf8(s: &OsString) -> Option<String> {
    s.to_str().map(str::to_owned)
}

/// Reads a bwrap command line as built by [`super::super::sandbox::bwrap_args`] (and the
/// bwrap part of [`super::super::oci::invocation_args`]). `None` for `--share-net` (the
/// resident sandbox has no network at all), any flag it does not know, or a path that is not
/// UTF-8.
pub fn from_bwrap_args(args: &[OsString]) -> Option<Parsed> {
    let mut p = Parsed {
        ops: Vec::new(),
        chdir: "/".into(),
        uid: None,
        gid: None,
        argv: Vec::new(),
    };
    let mut i = 0;
    let arg = |i: usize| args.get(i).and_then(utf8);
    while i < args.len() {
        let flag = arg(i)?;
        let take = match flag.as_str() {
            "--ro-bind" | "--ro-bind-try" | "--bind" | "--bind-try" => {
                p.ops.push(Op::Bind {
                    src: PathBuf::from(arg(i + 1)?),
                    dst: arg(i + 2)?,
                    ro: flag.starts_with("--ro"),
                    optional: flag.ends_with("-try"),
                });
                2
            }
            "--symlink" => {
                p.ops.push(Op::Symlink {
                    target: arg(i + 1)?,
                    dst: arg(i + 2)?,
                });
                2
            }
            "--tmpfs" | "--proc" | "--dev" | "--remount-ro" | "--dir" => {
                let dst = arg(i + 1)?;
                p.ops.push(match flag.as_str() {
                    "--tmpfs" => Op::Tmpfs { dst },
                    "--proc" => Op::Proc { dst },
                    "--dev" => Op::Dev { dst },
                    "--dir" => Op::Dir { dst },
                    _ => Op::RemountRo { dst },
                });
                1
            }
            "--chdir" => {
                p.chdir = arg(i + 1)?;
                1
            }
            "--uid" => {
                p.uid = Some(arg(i + 1)?.parse().ok()?);
                1
            }
            "--gid" => {
                p.gid = Some(arg(i + 1)?.parse().ok()?);
                1
            }
            // Every namespace is the run's own, or (the network) empty and shared: what
            // `--unshare-all` without `--share-net` promises.
            "--unshare-all" | "--die-with-parent" | "--new-session" => 0,
            "--" => {
                p.argv = args[i + 1..].iter().map(utf8).collect::<Option<_>>()?;
                break;
            }
            _ => return None,
        };
        i += 1 + take;
    }
    (!p.argv.is_empty()).then_some(p)
}

/// Reads the image runtime's command line ([`super::super::oci::invocation_args`]:
/// `unshare -Urm -- /bin/sh -c SCRIPT promised-overlay LOWER SCRATCH MERGED BWRAP --bind
/// MERGED / …`) as the image root `LOWER`, the empty directory `SCRATCH` (where the run's
/// overlay goes) and the bwrap part. `None` when it has another shape or the bwrap part
/// cannot be read ([`from_bwrap_args`]).
pub fn from_image_args(args: &[OsString]) -> Option<(PathBuf, PathBuf, Parsed)> {
    let fixed = ["-Urm", "--", "/bin/sh", "-c"];
    if args.len() < 13 || fixed.iter().zip(args).any(|(f, a)| a != f) {
        return None;
    }
    if args[5] != "promised-overlay" {
        return None;
    }
    let lower = PathBuf::from(&args[6]);
    let merged = &args[8];
    if args[10] != "--bind" || &args[11] != merged || args[12] != "/" {
        return None;
    }
    Some((
        lower,
        PathBuf::from(&args[7]),
        from_bwrap_args(&args[13..])?,
    ))
}

/// `true` when `p` is absolute and has no `..` (what a sandbox path must be).
pub fn clean_inside(p: &str) -> bool {
    let p = Path::new(p);
    p.is_absolute()
        && p.components()
            .all(|c| !matches!(c, std::path::Component::ParentDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn reads_the_process_runtime_command_line() {
        let p = from_bwrap_args(&os(&[
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/bin",
            "/bin",
            "--ro-bind-try",
            "/etc/hosts",
            "/etc/hosts",
            "--tmpfs",
            "/tmp",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--bind",
            "/r/out",
            "/kratix/output",
            "--remount-ro",
            "/",
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--chdir",
            "/w",
            "--",
            "sh",
            "-c",
            "true",
        ]))
        .unwrap();
        assert_eq!(p.argv, ["sh", "-c", "true"]);
        assert_eq!(p.chdir, "/w");
        assert_eq!(p.ops.len(), 8);
        assert_eq!(
            p.ops[2],
            Op::Bind {
                src: "/etc/hosts".into(),
                dst: "/etc/hosts".into(),
                ro: true,
                optional: true
            }
        );
        assert_eq!(p.ops[7], Op::RemountRo { dst: "/".into() });
    }

    #[test]
    fn network_and_unknown_flags_are_left_to_bwrap() {
        assert!(from_bwrap_args(&os(&["--share-net", "--", "true"])).is_none());
        assert!(from_bwrap_args(&os(&["--cap-add", "ALL", "--", "true"])).is_none());
        assert!(from_bwrap_args(&os(&["--bind", "/x"])).is_none());
        assert!(
            from_bwrap_args(&os(&["--unshare-all"])).is_none(),
            "no command"
        );
    }

    #[test]
    fn reads_the_image_runtime_command_line() {
        let a = os(&[
            "-Urm",
            "--",
            "/bin/sh",
            "-c",
            "script",
            "promised-overlay",
            "/img",
            "/s",
            "/m",
            "/usr/bin/bwrap",
            "--bind",
            "/m",
            "/",
            "--proc",
            "/proc",
            "--uid",
            "0",
            "--gid",
            "0",
            "--dir",
            "/work",
            "--chdir",
            "/work",
            "--",
            "run",
        ]);
        let (lower, scratch, p) = from_image_args(&a).unwrap();
        assert_eq!(lower, PathBuf::from("/img"));
        assert_eq!(scratch, PathBuf::from("/s"));
        assert_eq!((p.uid, p.gid), (Some(0), Some(0)));
        assert_eq!(
            p.ops,
            [
                Op::Proc {
                    dst: "/proc".into()
                },
                Op::Dir {
                    dst: "/work".into()
                }
            ]
        );
        let mut b = a.clone();
        b[11] = "/other".into();
        assert!(from_image_args(&b).is_none());
    }

    #[test]
    fn inside_paths_must_be_absolute_without_dotdot() {
        assert!(clean_inside("/a/b"));
        assert!(!clean_inside("a"));
        assert!(!clean_inside("/a/../b"));
    }
}
