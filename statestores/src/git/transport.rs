//! Fetch connections, with `TCP_NODELAY` on `git://`.
//!
//! gix connects to a `git daemon` (`git://`) with a plain `TcpStream`, Nagle's algorithm on.
//! A protocol v2 request is several small pkt-line writes; Nagle holds the second one until
//! the first is acknowledged, and the daemon, which has nothing to send yet, delays that
//! acknowledgement (Linux: 40 ms). Every fetch paid that stall once per request (`ls-refs`,
//! then `fetch`): about 45 ms each on loopback, measured with `strace` on `git upload-pack`
//! (`docs/benchmarks.md`). The git CLI client has the same stall. Here the TCP connection is
//! made by us with `TCP_NODELAY` set and handed to gix as a custom transport; every other
//! scheme (https, ssh, file) goes through gix's own `connect`.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use gix::remote::Direction;
use gix_transport::client::blocking_io::Transport;

/// A fetch connection to `remote`: `Remote::connect(Direction::Fetch)`, except that for a
/// `git://` URL the TCP stream is opened here with `TCP_NODELAY` (5 s connect timeout, port
/// 9418 unless the URL names one, as gix does).
///
/// # Errors
/// gix's error when the remote has no fetch URL or its scheme is denied; for `git://`, the
/// name resolution or connection error with `host:port` (a URL of that scheme carries no
/// credentials).
pub fn connect_fetch<'a, 'repo>(
    remote: &'a gix::Remote<'repo>,
) -> Result<gix::remote::Connection<'a, 'static, 'repo, Box<dyn Transport + Send>>, gix::Error> {
    match git_daemon_transport(remote) {
        Some(Ok(transport)) => Ok(remote.to_connection_with_transport(transport)),
        Some(Err(e)) => Err(gix::Error::from_error(e)),
        None => remote.connect(Direction::Fetch),
    }
}

/// The `git://` transport with `TCP_NODELAY`; `None` for other schemes and for URLs gix
/// should judge itself (no host, denied scheme), so its own error is reported.
fn git_daemon_transport(
    remote: &gix::Remote<'_>,
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
        let read = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(in_context)?;
        read.set_nodelay(true).map_err(in_context)?;
        let write = read.try_clone().map_err(in_context)?;
        let conn = gix_transport::client::git::blocking_io::Connection::new(
            QuickAck(read),
            write,
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

/// The read half of a `git://` connection, acknowledging at once: `TCP_QUICKACK` is set again
/// before every read (Linux leaves quick-ack mode by itself). Without it the daemon's side,
/// which sends its pack in small side-band writes without `TCP_NODELAY`, waits for our delayed
/// acknowledgement (40 ms) in the middle of a fetch.
struct QuickAck(TcpStream);

impl std::io::Read for QuickAck {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
        self.0.read(buf)
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
            assert!(git_daemon_transport(&remote).is_none(), "{url}");
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
        let err = match connect_fetch(&remote) {
            Ok(_) => panic!("connected to a closed port"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("git daemon 127.0.0.1:{port}")),
            "{err}"
        );
    }
}
