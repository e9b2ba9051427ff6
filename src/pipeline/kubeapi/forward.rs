//! `promised adapter kube-forward`: runs inside the sandbox of a Pipeline without network.
//! It listens on [`super::FORWARD_ADDR`] in the run's own network namespace, forwards every
//! connection to the pipeline API's unix socket ([`super::SOCKET`]), runs the container's
//! command as its child and exits with its exit status (128 + the signal when it was killed),
//! so `kubectl` and the SDKs, which speak TCP, reach the API while the sandbox keeps no other
//! network.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

/// Copies `from` to `to` until end of file, then closes `to`'s write side.
fn pump(mut from: impl Read, mut to: impl Write, close: impl FnOnce()) {
    let _ = std::io::copy(&mut from, &mut to);
    close();
}

/// Forwards one accepted connection to the unix socket `socket`, both ways, until each side
/// ends (also used by the resident sandbox's init, [`crate::pipeline::resident::helper`]).
pub fn forward(tcp: TcpStream, socket: &Path) {
    let Ok(unix) = UnixStream::connect(socket) else {
        let _ = tcp.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(tcp_r), Ok(unix_w)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let closer = unix_w.try_clone();
        pump(tcp_r, unix_w, move || {
            if let Ok(u) = closer {
                let _ = u.shutdown(Shutdown::Write);
            }
        })
    });
    let closer = tcp.try_clone();
    pump(unix, tcp, move || {
        if let Ok(t) = closer {
            let _ = t.shutdown(Shutdown::Write);
        }
    });
    let _ = up.join();
}

/// Listens on `listen`, forwards to `socket`, runs `argv` and returns its exit code.
///
/// Errors (returned as exit code 1 with a line on stderr): the address cannot be bound, or
/// the command cannot be started (`promised adapter: execvp <cmd>: <why>`, as bwrap says it).
pub fn run(socket: &Path, listen: &str, argv: &[String]) -> i32 {
    let Some((cmd, args)) = argv.split_first() else {
        eprintln!("promised adapter: no command to run");
        return 1;
    };
    match TcpListener::bind(listen) {
        Ok(l) => {
            let socket: PathBuf = socket.to_path_buf();
            std::thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    let s = socket.clone();
                    std::thread::spawn(move || forward(conn, &s));
                }
            });
        }
        Err(e) => {
            // The command still runs; only the pipeline API is unreachable.
            eprintln!("promised adapter: the pipeline API cannot listen on {listen}: {e}");
        }
    }
    match std::process::Command::new(cmd).args(args).status() {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => {
                // Die of the same signal, so the runner reports it as it would without the
                // forwarder; 128 + the signal when that does not end this process.
                if let Some(signal) = rustix::process::Signal::from_named_raw(sig) {
                    let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
                }
                128 + sig
            }
            (None, None) => 1,
        },
        Err(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "No such file or directory".to_string(),
                std::io::ErrorKind::PermissionDenied => "Permission denied".to_string(),
                _ => e.to_string(),
            };
            eprintln!("promised adapter: execvp {cmd}: {why}");
            1
        }
    }
}
