//! The helper process of the resident sandbox (`promised sandbox-helper`, started by
//! [`super::Resident`]; not a command for users).
//!
//! At start it enters a user namespace of its own (the daemon's uid and gid mapped to
//! themselves), a mount namespace with private propagation and an empty network namespace,
//! says `ready` on stdout, and then serves [`Message`]s on its stdin, a `SOCK_SEQPACKET`
//! socket. Each run is three processes:
//! 1. the **supervisor**, forked from the helper: writes `pid <its pid>` on the run's status
//!    pipe, unshares a mount, PID, IPC and UTS namespace and forks
//! 2. the run's **init** (PID 1 of the new PID namespace): builds the root (`build`),
//!    `pivot_root`s into it, detaches the host tree, enters a user namespace of its own with
//!    the run's uid and gid mapped (so no capability it keeps reaches the mounts, the PID or
//!    the network namespace), drops the bounding set and every capability, sets
//!    `no_new_privs`, and forks
//! 3. the **command** (PID 2), in a new session, with a default signal set, stdin
//!    `/dev/null` and stdout and stderr on the run's pipes.
//!
//! Init reaps every process of the run; when the command ends it writes `exit <code>` or
//! `signal <number>` on the status pipe and exits, which kills whatever the command left
//! (the PID namespace ends with its PID 1). Killing the supervisor (the daemon's timeout)
//! kills init (`PR_SET_PDEATHSIG`) and so the whole run; the helper ending (its socket
//! closed: the daemon is gone) kills every supervisor the same way. The helper reaps a
//! supervisor only when the daemon says so ([`Message::Reap`]), so the pid the daemon may
//! kill is never reused while it may still do so.
//!
//! Setup errors reach the run's stderr as `promised sandbox: <what>: <why>` with `exit 1`,
//! like bwrap's own `bwrap: …` messages.

use std::ffi::CString;
use std::io::{IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use super::request::{Message, Op, Root, RunRequest};

/// Where the host's root is while a run's root is built (then detached and removed).
const HOST: &str = "/.promised-host";

/// Largest message the helper reads; [`super::Resident`] never sends more.
pub const MAX_MESSAGE: usize = 512 * 1024;

type Res<T> = Result<T, String>;

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn check(rc: libc::c_int, what: &str) -> Res<()> {
    if rc == 0 { Ok(()) } else { Err(os_err(what)) }
}

fn cstr(p: &Path) -> Res<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{}: NUL in path", p.display()))
}

/// The helper's `main`: returns the process's exit code (0 when the daemon closed the
/// socket, 1 when the namespaces cannot be made).
pub fn main() -> i32 {
    let mut stdout = std::io::stdout();
    if let Err(e) = enter_namespaces() {
        let _ = writeln!(stdout, "error {e}");
        return 1;
    }
    let _ = writeln!(stdout, "ready");
    let _ = stdout.flush();
    // SAFETY: fd 0 is the socket the daemon gave as stdin; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(0) };
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            &sock,
            &mut [IoSliceMut::new(&mut buf)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC,
        );
        let n = match got {
            Ok(m) if m.bytes == 0 => return 0,
            Ok(m) => m.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return 0,
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(r) = m {
                fds.extend(r);
            }
        }
        match serde_json::from_slice::<Message>(&buf[..n]) {
            Ok(Message::Run(req)) if fds.len() == 3 => {
                let status = fds.pop().expect("three fds");
                let err = fds.pop().expect("three fds");
                let out = fds.pop().expect("three fds");
                // SAFETY: the helper is single-threaded; the child only runs this module's
                // code and ends in `_exit` or `execve`.
                match unsafe { libc::fork() } {
                    0 => {
                        drop(sock);
                        supervise(&req, out, err, status)
                    }
                    -1 => report(&err, &status, &os_err("fork")),
                    _ => {}
                }
            }
            Ok(Message::Reap(pid)) => {
                let mut st = 0;
                // SAFETY: plain syscall on our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
            }
            // A malformed message closes its pipes: the daemon sees the run end without a
            // status and reports it.
            _ => {}
        }
    }
}

fn enter_namespaces() -> Res<()> {
    // SAFETY: plain syscalls; the helper is single-threaded at this point.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    check(
        unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWNET) },
        "unshare (user, mount and network namespaces)",
    )?;
    map_ids(uid, uid, gid, gid)?;
    // Slave, as bwrap: host mounts still reach the helper and its runs, nothing goes back.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
    )
}

/// Maps `inside` to `outside` for uid and gid in the current (new) user namespace.
fn map_ids(uid_in: u32, uid_out: u32, gid_in: u32, gid_out: u32) -> Res<()> {
    let w = |f: &str, s: String| std::fs::write(f, s).map_err(|e| format!("{f}: {e}"));
    match std::fs::write("/proc/self/setgroups", "deny") {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("/proc/self/setgroups: {e}"));
        }
        _ => {}
    }
    w("/proc/self/uid_map", format!("{uid_in} {uid_out} 1"))?;
    w("/proc/self/gid_map", format!("{gid_in} {gid_out} 1"))
}

fn write_fd(fd: &OwnedFd, s: &str) {
    let b = s.as_bytes();
    // SAFETY: writing a valid buffer to an fd we own.
    unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), b.len()) };
}

/// A setup error: the message on the run's stderr, `exit 1` on its status pipe.
fn report(err: &OwnedFd, status: &OwnedFd, msg: &str) {
    write_fd(err, &format!("promised sandbox: {msg}\n"));
    write_fd(status, "exit 1\n");
}

fn die_with_parent() {
    // SAFETY: plain prctl.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

fn supervise(req: &RunRequest, out: OwnedFd, err: OwnedFd, status: OwnedFd) -> ! {
    die_with_parent();
    // SAFETY: plain syscalls in the forked, single-threaded supervisor.
    write_fd(&status, &format!("pid {}\n", unsafe { libc::getpid() }));
    // A network namespace of the run's own, with only `lo` (bwrap's `--unshare-net`).
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if let Err(e) = check(unsafe { libc::unshare(flags) }, "unshare") {
        report(&err, &status, &e);
        unsafe { libc::_exit(1) };
    }
    match unsafe { libc::fork() } {
        0 => init(req, out, err, status),
        -1 => report(&err, &status, &os_err("fork")),
        pid => {
            drop((out, err, status));
            let mut st = 0;
            while unsafe { libc::waitpid(pid, &mut st, 0) } == -1
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
    }
    unsafe { libc::_exit(0) }
}

fn init(req: &RunRequest, out: OwnedFd, err: OwnedFd, status: OwnedFd) -> ! {
    die_with_parent();
    let setup = build(req)
        .and_then(|()| loopback_up())
        .and_then(|()| drop_privileges(req.uid, req.gid));
    if let Err(e) = setup {
        report(&err, &status, &e);
        unsafe { libc::_exit(1) };
    }
    // Reset by the credential change in drop_privileges.
    die_with_parent();
    let Ok(null) = std::fs::File::open("/dev/null") else {
        report(&err, &status, "/dev/null: missing in the sandbox");
        unsafe { libc::_exit(1) }
    };
    // SAFETY: plain syscalls on fds we own; the forked command only execs or _exits.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
    }
    drop((null, out));
    // The pipeline API's forwarder, which bwrap runs as `promised adapter kube-forward -- cmd`
    // (an exec of this binary per container), is served by init itself: listening before
    // the command starts, accepting in a thread started after the fork.
    let (argv, listener) = match forwarded(&req.argv) {
        Some(cmd) => {
            let l = std::net::TcpListener::bind(crate::pipeline::kubeapi::FORWARD_ADDR);
            if let Err(e) = &l {
                write_fd(
                    &err,
                    &format!(
                        "promised sandbox: the pipeline API cannot listen on {}: {e}\n",
                        crate::pipeline::kubeapi::FORWARD_ADDR
                    ),
                );
            }
            (cmd, l.ok())
        }
        None => (&req.argv[..], None),
    };
    let chdir = cstr(Path::new(&req.chdir)).unwrap_or_default();
    if unsafe { libc::chdir(chdir.as_ptr()) } != 0 {
        report(&err, &status, &os_err(&format!("chdir {}", req.chdir)));
        unsafe { libc::_exit(1) };
    }
    let cmd = match unsafe { libc::fork() } {
        0 => {
            drop((err, status, listener));
            exec(argv, &req.env)
        }
        -1 => {
            report(&err, &status, &os_err("fork"));
            unsafe { libc::_exit(1) }
        }
        pid => pid,
    };
    drop(err);
    unsafe {
        libc::close(1);
        libc::close(2);
    }
    if let Some(l) = listener {
        std::thread::spawn(move || {
            let socket = Path::new(crate::pipeline::kubeapi::SOCKET);
            for conn in l.incoming().flatten() {
                std::thread::spawn(move || {
                    crate::pipeline::kubeapi::forward::forward(conn, socket)
                });
            }
        });
    }
    let mut st = 0;
    loop {
        let r = unsafe { libc::waitpid(-1, &mut st, 0) };
        if r == cmd {
            break;
        }
        if r == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    let line = if libc::WIFSIGNALED(st) {
        format!("signal {}\n", libc::WTERMSIG(st))
    } else {
        format!("exit {}\n", libc::WEXITSTATUS(st))
    };
    write_fd(&status, &line);
    unsafe { libc::_exit(0) }
}

/// The command inside `promised adapter kube-forward [--] cmd…` when `argv` is that wrapper
/// (as the runner, `run.rs`, builds it for the pipeline API without network).
fn forwarded(argv: &[String]) -> Option<&[String]> {
    let rest = argv.strip_prefix(&[
        crate::pipeline::kubeapi::BINARY.to_string(),
        "adapter".to_string(),
        "kube-forward".to_string(),
        "--".to_string(),
    ])?;
    (!rest.is_empty()).then_some(rest)
}

/// The run's command, in the state bwrap leaves it: a new session, default signal
/// dispositions and mask, only fds 0–2 open, `argv[0]` looked up in the `PATH` of its own
/// environment (`execvp`, including running a file without `#!` with `/bin/sh`).
fn exec(argv: &[String], environment: &[(String, String)]) -> ! {
    unsafe {
        libc::setsid();
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
        libc::close_range(3, libc::c_uint::MAX, 0);
    }
    // Later duplicates win, as with a Command's `envs`.
    let mut env: Vec<(&str, &str)> = Vec::new();
    for (k, v) in environment {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v,
            None => env.push((k, v)),
        }
    }
    let path = env
        .iter()
        .find(|(k, _)| *k == "PATH")
        .map(|(_, v)| *v)
        .unwrap_or(crate::pipeline::sandbox::DEFAULT_PATH)
        .to_string();
    let cenv: Vec<CString> = env
        .iter()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    let cargv: Vec<CString> = argv
        .iter()
        .filter_map(|a| CString::new(a.as_str()).ok())
        .collect();
    let argv0 = argv.first().cloned().unwrap_or_default();
    let candidates: Vec<String> = if argv0.contains('/') {
        vec![argv0.clone()]
    } else {
        path.split(':')
            .map(|d| format!("{}/{argv0}", if d.is_empty() { "." } else { d }))
            .collect()
    };
    let mut errno = libc::ENOENT;
    for c in &candidates {
        let e = try_exec(c, &cargv, &cenv);
        if !matches!(e, libc::ENOENT | libc::ENOTDIR) || errno == libc::ENOENT {
            errno = e;
        }
        if !matches!(e, libc::ENOENT | libc::ENOTDIR | libc::EACCES) {
            break;
        }
    }
    // As bwrap words it (`strerror`, no "(os error N)"): the runner's hints match the text.
    let why = std::io::Error::from_raw_os_error(errno).to_string();
    let why = why.split(" (os error").next().unwrap_or_default();
    let msg = format!("promised sandbox: execvp {argv0}: {why}\n");
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(1)
    }
}

/// `execve`, then `/bin/sh file args…` for a file the kernel cannot execute (no `#!`), as
/// `execvp` does. Returns the errno when nothing could be executed.
fn try_exec(file: &str, argv: &[CString], env: &[CString]) -> libc::c_int {
    let Ok(f) = CString::new(file) else {
        return libc::ENOENT;
    };
    let ptrs = |v: &[CString]| {
        let mut p: Vec<*const libc::c_char> = v.iter().map(|c| c.as_ptr()).collect();
        p.push(std::ptr::null());
        p
    };
    let (a, e) = (ptrs(argv), ptrs(env));
    unsafe { libc::execve(f.as_ptr(), a.as_ptr(), e.as_ptr()) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if errno == libc::ENOEXEC {
        let mut sh = vec![c"/bin/sh".to_owned(), f];
        sh.extend(argv.iter().skip(1).cloned());
        let a = ptrs(&sh);
        unsafe { libc::execve(sh[0].as_ptr(), a.as_ptr(), e.as_ptr()) };
    }
    errno
}

/// Drops every privilege before the command runs: a user namespace of the run's own with
/// `uid`/`gid` (default: the daemon's) mapped to the daemon's ids, an empty bounding set,
/// no capabilities (ambient included) and `no_new_privs`. What bwrap does
/// (`drop_privs`, `--uid`, `--gid`).
fn drop_privileges(uid: Option<u32>, gid: Option<u32>) -> Res<()> {
    let (uid_out, gid_out) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (uid_in, gid_in) = (uid.unwrap_or(uid_out), gid.unwrap_or(gid_out));
    check(
        unsafe { libc::unshare(libc::CLONE_NEWUSER) },
        "unshare (user namespace)",
    )?;
    map_ids(uid_in, uid_out, gid_in, gid_out)?;
    unsafe {
        check(libc::setresgid(gid_in, gid_in, gid_in), "setresgid")?;
        check(libc::setresuid(uid_in, uid_in, uid_in), "setresuid")?;
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            "no_new_privs",
        )?;
    }
    // capset(2) with every set empty (version 3: two 32-bit words per set).
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [0u32; 6];
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check(rc as libc::c_int, "capset")
}

/// Brings `lo` up in the run's own network namespace (what bwrap's `--unshare-net` does), so
/// a pipeline can serve and reach itself on 127.0.0.1, and nothing else.
fn loopback_up() -> Res<()> {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("socket"));
    }
    // SAFETY: fd is the socket just made; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    check(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) },
        "loopback flags",
    )?;
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    check(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) },
        "loopback up",
    )
}

fn mount(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Res<()> {
    let c_src = src.map(cstr).transpose()?;
    let c_dst = cstr(dst)?;
    let c_fs = fstype.map(|f| CString::new(f).unwrap_or_default());
    let c_data = data.map(|d| CString::new(d).unwrap_or_default());
    let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    let rc = unsafe {
        libc::mount(
            p(&c_src),
            c_dst.as_ptr(),
            p(&c_fs),
            flags,
            c_data
                .as_ref()
                .map_or(std::ptr::null(), |c| c.as_ptr().cast()),
        )
    };
    check(rc, &format!("mount {}", dst.display()))
}

/// Read-only for the mount at `dst` (and its submounts when `recursive`), keeping its other
/// flags: `mount_setattr(2)`, else a remount with the flags `statvfs` reports.
fn set_read_only(dst: &Path, recursive: bool) -> Res<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let c = cstr(dst)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            flags,
            &attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
        return Err(os_err(&format!("read-only {}", dst.display())));
    }
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    check(
        unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) },
        "statvfs",
    )?;
    let f = unsafe { st.assume_init() }.f_flag;
    let keep = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ]
    .iter()
    .filter(|(s, _)| f & s != 0)
    .fold(0, |acc, (_, m)| acc | m);
    mount(
        None,
        dst,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | keep,
        None,
    )
}

fn mkdirs(p: &Path) -> Res<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)
        .map_err(|e| format!("mkdir {}: {e}", p.display()))
}

/// A mount point at `dst`: a directory, or an empty file for a file.
fn mount_point(dst: &Path, dir: bool) -> Res<()> {
    if dir {
        return mkdirs(dst);
    }
    if let Some(parent) = dst.parent() {
        mkdirs(parent)?;
    }
    if std::fs::symlink_metadata(dst).is_ok() {
        return Ok(());
    }
    std::fs::File::create(dst)
        .map(drop)
        .map_err(|e| format!("create {}: {e}", dst.display()))
}

fn on_host(p: &Path) -> PathBuf {
    Path::new(HOST).join(p.strip_prefix("/").unwrap_or(p))
}

/// Builds the run's root at `req.mountpoint`, moves into it (`pivot_root`), applies the
/// operations and detaches the host. Bind sources are resolved on the host first (an
/// absolute symlink such as `/etc/resolv.conf` → `/run/…` is bound as its target).
fn build(req: &RunRequest) -> Res<()> {
    let mp = &req.mountpoint;
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
    let new_root = match &req.root {
        Root::Tmpfs => {
            mount(None, mp, Some("tmpfs"), nosuid, Some("mode=0755"))?;
            mp.clone()
        }
        Root::Overlay { lower } => {
            let size = format!("size={},mode=0755", crate::pipeline::oci::OVERLAY_SIZE);
            mount(None, mp, Some("tmpfs"), nosuid, Some(&size))?;
            for d in ["upper", "work", "merged"] {
                mkdirs(&mp.join(d))?;
            }
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                mp.join("upper").display(),
                mp.join("work").display()
            );
            let merged = mp.join("merged");
            mount(None, &merged, Some("overlay"), 0, Some(&opts))?;
            merged
        }
    };
    // Sources as the host sees them, before the host moves.
    let mut sources: Vec<Option<PathBuf>> = Vec::with_capacity(req.ops.len());
    for op in &req.ops {
        sources.push(match op {
            Op::Bind { src, optional, .. } => match std::fs::canonicalize(src) {
                Ok(p) => Some(p),
                Err(_) if *optional => None,
                Err(e) => return Err(format!("bind source {}: {e}", src.display())),
            },
            _ => None,
        });
    }
    let host = new_root.join(HOST.trim_start_matches('/'));
    mkdirs(&host)?;
    let (a, b) = (cstr(&new_root)?, cstr(&host)?);
    check(
        unsafe { libc::syscall(libc::SYS_pivot_root, a.as_ptr(), b.as_ptr()) } as libc::c_int,
        "pivot_root",
    )?;
    check(unsafe { libc::chdir(c"/".as_ptr()) }, "chdir /")?;
    let mut root_read_only = false;
    for (op, src) in req.ops.iter().zip(sources) {
        apply(op, src.as_deref(), &mut root_read_only)?;
    }
    let h = cstr(Path::new(HOST))?;
    check(
        unsafe { libc::umount2(h.as_ptr(), libc::MNT_DETACH) },
        "detach the host",
    )?;
    let _ = std::fs::remove_dir(HOST);
    if root_read_only {
        set_read_only(Path::new("/"), false)?;
    }
    Ok(())
}

fn apply(op: &Op, src: Option<&Path>, root_read_only: &mut bool) -> Res<()> {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
    match op {
        Op::Bind { dst, ro, .. } => {
            let Some(src) = src else { return Ok(()) };
            let dst = Path::new(dst);
            let hsrc = on_host(src);
            let dir = std::fs::metadata(&hsrc)
                .map_err(|e| format!("bind source {}: {e}", src.display()))?
                .is_dir();
            mount_point(dst, dir)?;
            mount(Some(&hsrc), dst, None, libc::MS_BIND | libc::MS_REC, None)?;
            if *ro {
                set_read_only(dst, true)?;
            }
        }
        Op::Symlink { target, dst } => {
            let dst = Path::new(dst);
            if let Some(parent) = dst.parent() {
                mkdirs(parent)?;
            }
            if let Err(e) = std::os::unix::fs::symlink(target, dst) {
                let same = std::fs::read_link(dst).is_ok_and(|t| t == Path::new(target));
                if !same {
                    return Err(format!("symlink {}: {e}", dst.display()));
                }
            }
        }
        Op::Tmpfs { dst } => {
            mkdirs(Path::new(dst))?;
            mount(
                None,
                Path::new(dst),
                Some("tmpfs"),
                nosuid,
                Some("mode=0755"),
            )?;
        }
        Op::Proc { dst } => {
            let dst = Path::new(dst);
            mkdirs(dst)?;
            mount(None, dst, Some("proc"), nosuid | libc::MS_NOEXEC, None)?;
            for sub in ["sys", "sysrq-trigger", "irq", "bus"] {
                let p = dst.join(sub);
                if p.exists() {
                    mount(Some(&p), &p, None, libc::MS_BIND | libc::MS_REC, None)?;
                    set_read_only(&p, true)?;
                }
            }
        }
        Op::Dev { dst } => dev(Path::new(dst))?,
        Op::RemountRo { dst } if dst == "/" => *root_read_only = true,
        Op::RemountRo { dst } => set_read_only(Path::new(dst), false)?,
        Op::Dir { dst } => mkdirs(Path::new(dst))?,
    }
    Ok(())
}

/// bwrap's `--dev`: a tmpfs with the host's harmless device nodes bound in, `shm`, a
/// private `pts` instance and the usual links.
fn dev(dst: &Path) -> Res<()> {
    mkdirs(dst)?;
    mount(
        None,
        dst,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = on_host(&Path::new("/dev").join(node));
        if std::fs::symlink_metadata(&host).is_err() {
            continue;
        }
        let at = dst.join(node);
        mount_point(&at, false)?;
        mount(Some(&host), &at, None, libc::MS_BIND, None)?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, dst.join(link))
            .map_err(|e| format!("symlink {}/{link}: {e}", dst.display()))?;
    }
    mkdirs(&dst.join("shm"))?;
    let pts = dst.join("pts");
    mkdirs(&pts)?;
    // Without a pts instance only terminal-less programs work; that is every pipeline, so
    // a kernel that refuses one is not an error (bwrap would fail the run).
    let _ = mount(
        None,
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    );
    Ok(())
}
