//! Fetch connections: `TCP_NODELAY` on `git://`, and a deadline for every scheme.
//!
//! gix connects to a `git daemon` (`git://`) with a plain `TcpStream`, Nagle's algorithm on.
//! A protocol v2 request is several small pkt-line writes; Nagle holds the second one until
//! the first is acknowledged, and the daemon, which has nothing to send yet, delays that
//! acknowledgement (Linux: 40 ms). Every fetch paid that stall once per request (`ls-refs`,
//! then `fetch`): about 45 ms each on loopback, measured with `strace` on `git upload-pack`
//! (`docs/benchmarks.md`). The git CLI client has the same stall. Here the TCP connection is
//! made by us with `TCP_NODELAY` set and handed to gix as a custom transport. gix's own
//! `git://` connection also has no read timeout: a server that accepts and never answers
//! would hang a fetch forever. https and ssh get their timeouts through the HTTP client's
//! settings and the `ssh` command line ([`connect_fetch`], [`crate::net`]).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use gix::remote::Direction;
use gix_transport::client::blocking_io::Transport;

use crate::net::{Deadline, human};

thread_local! {
    /// Where the ssh fetch starting on this thread logs (`ssh -E`), set by
    /// [`super::repo::fetch`] so it can read why ssh failed. gix reads ssh's stderr on another
    /// thread and may not have it yet when the connection ends (seen under load: a refused
    /// key became "failed to fill whole buffer"); the log file is written before ssh exits.
    pub(crate) static SSH_LOG: std::cell::RefCell<Option<std::path::PathBuf>> =
        const { std::cell::RefCell::new(None) };
}

/// What a fetch connection needs besides the remote.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// When the whole operation must have ended; also carries the connect and read timeouts.
    pub deadline: Deadline,
    /// Accept any TLS certificate (https).
    pub insecure_skip_tls_verify: bool,
}

impl FetchOptions {
    /// Options for an operation starting now.
    pub fn new(timeouts: &crate::NetworkTimeouts) -> Self {
        Self {
            deadline: timeouts.deadline(),
            insecure_skip_tls_verify: false,
        }
    }
}

/// A fetch connection to `remote`: `Remote::connect(Direction::Fetch)` with every step bounded
/// by `opts.deadline` (see [`crate::net`]):
///
/// - `git://`: the TCP stream is opened here with `TCP_NODELAY`, the connect timeout (port
///   9418 unless the URL names one, as gix does), and read and write timeouts that end at
///   the deadline;
/// - `http(s)://`: the HTTP client gets the connect timeout and, as its request timeout, what
///   is left of the deadline;
/// - ssh: `ssh` is run with `ConnectTimeout` (TCP, banner, key exchange) and
///   `ServerAliveInterval`, inside `timeout` (coreutils, when installed) for the deadline.
///
/// Hand [`crate::net::Alarm`]'s flag to `receive` so a pack download stops at the deadline too.
///
/// # Errors
/// gix's error when the remote has no fetch URL or its scheme is denied; for `git://`, the
/// name resolution or connection error with `host:port` (a URL of that scheme carries no
/// credentials).
pub fn connect_fetch<'a, 'repo>(
    remote: &'a gix::Remote<'repo>,
    opts: &FetchOptions,
) -> Result<gix::remote::Connection<'a, 'static, 'repo, Box<dyn Transport + Send>>, gix::Error> {
    let scheme = remote
        .url(Direction::Fetch)
        .map(|u| u.scheme.clone())
        .unwrap_or(gix::url::Scheme::File);
    match scheme {
        gix::url::Scheme::Git => match git_daemon_transport(remote, &opts.deadline) {
            Some(Ok(transport)) => Ok(remote.to_connection_with_transport(transport)),
            Some(Err(e)) => Err(gix::Error::from_error(e)),
            None => remote.connect(Direction::Fetch),
        },
        gix::url::Scheme::Ssh => match ssh_transport(remote, &opts.deadline) {
            Some(t) => Ok(remote.to_connection_with_transport(t?)),
            None => remote.connect(Direction::Fetch),
        },
        gix::url::Scheme::Http | gix::url::Scheme::Https => {
            let mut conn = remote.connect(Direction::Fetch)?;
            conn.set_transport_options(http_options(remote, opts)?);
            Ok(conn)
        }
        _ => remote.connect(Direction::Fetch),
    }
}

/// The full chain of a gix error as one line.
pub fn error_text(e: &gix::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for err in e.iter_errors() {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// `<operation>: <why>` for a failed network operation: when its deadline has passed, that is
/// said first (the transport's own text, often just "early EOF", follows).
pub fn describe(operation: &str, deadline: &Deadline, text: &str) -> String {
    if deadline.expired() && !text.contains("network.operationTimeout") {
        format!("{operation}: {}: {text}", deadline.expired_text())
    } else {
        format!("{operation}: {text}")
    }
}

/// The reqwest client settings of an http(s) fetch: connect timeout, request timeout = what
/// is left of the deadline, and `insecure_skip_tls_verify` (gix's reqwest backend does not
/// honour `http.sslVerify`, so the client is configured directly).
pub(super) fn http_options(
    remote: &gix::Remote<'_>,
    opts: &FetchOptions,
) -> Result<Box<gix_transport::client::blocking_io::http::Options>, gix::Error> {
    use gix_transport::client::blocking_io::http;
    let url = remote
        .url(Direction::Fetch)
        .map(|u| u.to_bstring().to_string())
        .unwrap_or_default();
    let mut options = remote
        .repo()
        .transport_options(url.as_str(), None)?
        .and_then(|o| o.downcast::<http::Options>().ok())
        .map(|o| *o)
        .unwrap_or_default();
    let deadline = opts.deadline;
    let insecure = opts.insecure_skip_tls_verify;
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |b: reqwest::blocking::ClientBuilder| {
            let b = b
                .connect_timeout(deadline.connect_timeout())
                .timeout(deadline.remaining().max(Duration::from_millis(1)));
            Ok(if insecure {
                b.tls_danger_accept_invalid_certs(true)
            } else {
                b
            })
        })),
        configure_request: None,
    };
    options.backend = Some(std::sync::Arc::new(std::sync::Mutex::new(backend)));
    Ok(Box::new(options))
}

/// The ssh transport with timeouts; `None` when the configured ssh program is not OpenSSH
/// (its options are unknown), so gix runs it as configured.
fn ssh_transport(
    remote: &gix::Remote<'_>,
    deadline: &Deadline,
) -> Option<Result<Box<dyn Transport + Send>, gix::Error>> {
    use gix_transport::client::blocking_io::ssh;
    let (url, version) = match remote.sanitized_url_and_version(Direction::Fetch) {
        Ok(x) => x,
        Err(e) => return Some(Err(e)),
    };
    let base = match remote.repo().ssh_connect_options() {
        Ok(o) => o,
        Err(e) => return Some(Err(e)),
    };
    if base
        .kind
        .is_some_and(|k| !matches!(k, ssh::ProgramKind::Ssh))
    {
        return None;
    }
    let program = match &base.command {
        None => "ssh".to_owned(),
        Some(c) if base.disallow_shell => shell_quote(&c.to_string_lossy()),
        Some(c) => c.to_string_lossy().into_owned(),
    };
    let first = program.split_whitespace().next().unwrap_or_default();
    let stem = std::path::Path::new(first.trim_matches(['\'', '"']))
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if !stem.eq_ignore_ascii_case("ssh") {
        return None;
    }
    let mut command = ssh_command_with_timeouts(&program, deadline);
    if let Some(log) = SSH_LOG.with(|l| l.borrow().clone()) {
        command.push_str(&format!(" -E {}", shell_quote(&log.to_string_lossy())));
    }
    let options = ssh::connect::Options {
        command: Some(command.into()),
        disallow_shell: false,
        kind: Some(ssh::ProgramKind::Ssh),
    };
    Some(
        ssh::connect(url, version, options, false)
            .map(|t| Box::new(t) as Box<dyn Transport + Send>)
            .map_err(gix::Error::from_error),
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `-o ConnectTimeout=… -o ServerAliveInterval=… -o ServerAliveCountMax=1`: OpenSSH options
/// for `timeouts` (ssh takes the first value of an option, so any a command line already set
/// before these win). `ConnectTimeout` covers the TCP connection, the banner and the key
/// exchange; a silent server is dropped after two alive intervals, about `read`.
pub fn ssh_timeout_options(timeouts: &crate::NetworkTimeouts) -> String {
    let secs = |d: Duration| d.as_secs_f64().ceil().max(1.0) as u64;
    format!(
        "-o ConnectTimeout={} -o ServerAliveInterval={} -o ServerAliveCountMax=1",
        secs(timeouts.connect),
        secs(timeouts.read / 2)
    )
}

/// `<ssh> <ssh_timeout_options>`, inside `timeout --kill-after=5 <what is left of the
/// deadline>` when coreutils' `timeout` is installed.
pub fn ssh_command_with_timeouts(ssh: &str, deadline: &Deadline) -> String {
    let cmd = format!("{ssh} {}", ssh_timeout_options(deadline.timeouts()));
    match timeout_program() {
        Some(timeout) => format!(
            "{} --kill-after=5 {} {cmd}",
            shell_quote(timeout),
            deadline.remaining().as_secs_f64().ceil().max(1.0) as u64
        ),
        None => cmd,
    }
}

/// coreutils' `timeout`, if installed.
fn timeout_program() -> Option<&'static str> {
    static FOUND: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|d| d.join("timeout"))
                .find(|p| p.is_file())
                .map(|p| p.display().to_string())
        })
        .as_deref()
}

/// The `git://` transport with `TCP_NODELAY` and timeouts; `None` for URLs gix should judge
/// itself (no host, denied scheme), so its own error is reported.
fn git_daemon_transport(
    remote: &gix::Remote<'_>,
    deadline: &Deadline,
) -> Option<std::io::Result<Box<dyn Transport + Send>>> {
    let (url, version) = remote.sanitized_url_and_version(Direction::Fetch).ok()?;
    if url.scheme != gix::url::Scheme::Git {
        return None;
    }
    let host = url.host()?.to_string();
    let port = url.port;
    let connect = || -> std::io::Result<Box<dyn Transport + Send>> {
        // gix keeps an IPv6 host in brackets; the resolver wants it bare.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let target = format!("{host}:{}", port.unwrap_or(9418));
        let in_context =
            |e: std::io::Error| std::io::Error::new(e.kind(), format!("git daemon {target}: {e}"));
        let addr = (bare, port.unwrap_or(9418))
            .to_socket_addrs()
            .map_err(in_context)?
            .next()
            .ok_or_else(|| {
                in_context(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the name resolves to no address",
                ))
            })?;
        let read = TcpStream::connect_timeout(&addr, deadline.connect_timeout()).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                in_context(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection within {} (network.connectTimeout)",
                        human(deadline.connect_timeout())
                    ),
                ))
            } else {
                in_context(e)
            }
        })?;
        read.set_nodelay(true).map_err(in_context)?;
        read.set_read_timeout(Some(deadline.read_timeout()))
            .map_err(in_context)?;
        read.set_write_timeout(Some(deadline.read_timeout()))
            .map_err(in_context)?;
        let write = read.try_clone().map_err(in_context)?;
        let conn = gix_transport::client::git::blocking_io::Connection::new(
            Bounded::new(read, *deadline, target.clone()),
            Bounded::new(write, *deadline, target),
            version,
            url.path.clone(),
            Some((host.clone(), port)),
            gix_transport::client::git::ConnectMode::Daemon,
            false,
        );
        Ok(Box::new(conn))
    };
    Some(connect())
}

/// One half of a `git://` connection, bounded by the deadline: each read or write waits at
/// most the read timeout and never past the deadline, and a timeout is an error naming the
/// server and which limit it hit. Reads acknowledge at once: `TCP_QUICKACK` is set again
/// before every read (Linux leaves quick-ack mode by itself). Without it the daemon's side,
/// which sends its pack in small side-band writes without `TCP_NODELAY`, waits for our
/// delayed acknowledgement (40 ms) in the middle of a fetch.
struct Bounded {
    stream: TcpStream,
    deadline: Deadline,
    target: String,
    /// The socket timeout last set (it only shrinks, near the deadline).
    timeout: Duration,
}

impl Bounded {
    fn new(stream: TcpStream, deadline: Deadline, target: String) -> Self {
        Self {
            stream,
            timeout: deadline.read_timeout(),
            deadline,
            target,
        }
    }

    /// Before an I/O call: fails past the deadline, else cuts the socket timeout to it.
    fn arm(&mut self, write: bool) -> std::io::Result<()> {
        if self.deadline.expired() {
            return Err(self.timed_out());
        }
        let t = self.deadline.read_timeout();
        if t < self.timeout {
            self.timeout = t;
            if write {
                self.stream.set_write_timeout(Some(t))?;
            } else {
                self.stream.set_read_timeout(Some(t))?;
            }
        }
        Ok(())
    }

    fn timed_out(&self) -> std::io::Error {
        let why = if self.deadline.expired() {
            self.deadline.expired_text()
        } else {
            format!(
                "no data for {} (network.readTimeout)",
                human(self.deadline.timeouts().read)
            )
        };
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("git daemon {}: {why}", self.target),
        )
    }

    fn check<T>(&self, r: std::io::Result<T>) -> std::io::Result<T> {
        match r {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(self.timed_out())
            }
            r => r,
        }
    }
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm(false)?;
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&self.stream).set_tcp_quickack(true);
        let r = self.stream.read(buf);
        self.check(r)
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm(true)?;
        let r = self.stream.write(buf);
        self.check(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.stream.flush();
        self.check(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schemes other than `git://` are left to gix.
    #[test]
    fn only_git_daemon_urls_get_the_direct_transport() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = gix::init_bare(dir.path()).expect("init");
        for url in ["https://example.invalid/x.git", "file:///nonexistent/x.git"] {
            let remote = repo.remote_at(url).expect("remote");
            assert!(
                git_daemon_transport(&remote, &crate::NetworkTimeouts::default().deadline())
                    .is_none(),
                "{url}"
            );
        }
    }

    /// A `git://` server that is not there is one error naming host and port (not a second
    /// attempt through gix).
    #[test]
    fn an_unreachable_git_daemon_is_one_error_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = gix::init_bare(dir.path()).expect("init");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port(); // released again: nothing listens there
        let remote = repo
            .remote_at(format!("git://127.0.0.1:{port}/x.git"))
            .expect("remote");
        let opts = FetchOptions::new(&crate::NetworkTimeouts::default());
        let err = match connect_fetch(&remote, &opts) {
            Ok(_) => panic!("connected to a closed port"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("git daemon 127.0.0.1:{port}")),
            "{err}"
        );
    }
}
