//! The write-permission check of a remote Git state store, in process.
//!
//! Kratix checks that it may write to a Git state store with a `git push` that has nothing to
//! push (the Git writer's `ValidatePermissions`, `kratix-contract.md`). `git push --dry-run` does the same: it
//! connects to the server's `git-receive-pack` service, reads the ref advertisement (where the
//! server has already decided whether we may push: an http(s) server answers `401`/`403` to
//! `info/refs?service=git-receive-pack`, a `git daemon` without `--enable=receive-pack` says
//! `service not enabled`, an ssh server refuses to run `git-receive-pack`), and then ends the
//! conversation with a flush packet, sending no command. This module does exactly that
//! handshake with gix's transport instead of spawning `git push` (one process and, over
//! `git://`, the git CLI's 40 ms Nagle stall per request; see `docs/benchmarks.md`): the
//! same connection as a fetch ([`super::transport::connect_fetch`]: `TCP_NODELAY` and the
//! network deadlines), the same credentials, a different service.

use gix::protocol::transport::Service;
use gix::protocol::transport::client::TransportWithoutIO as _;
use gix::remote::Direction;
use gix_transport::client::blocking_io::Transport;

use super::credentials::{Credentials, Secrets};
use super::repo::{FetchError, SshLog, classify_error, credentials_helper};
use super::transport::FetchOptions;

/// Connect to `url`'s `git-receive-pack` service, read its ref advertisement and end the
/// conversation without pushing. `Ok` when the server accepted us as a pusher.
///
/// # Errors
/// [`FetchError::Auth`] when the server wants (other) credentials, else
/// [`FetchError::Other`] with the transport's or server's reason (secrets redacted).
pub fn check_receive_pack(
    repo: &gix::Repository,
    url: &str,
    creds: &Credentials,
    opts: &FetchOptions,
    secrets: &Secrets,
) -> Result<(), FetchError> {
    // Dropping the connection sends the flush packet that tells receive-pack we push nothing.
    with_receive_pack(repo, url, creds, opts, secrets, |_, _| ())
}

/// Connect to `url`'s `git-receive-pack` service (the connection of a fetch, see the module
/// docs), do the handshake (credentials from `creds` when the server asks) and hand the
/// transport and the server's ref advertisement and capabilities (protocol v0/v1: receive-pack
/// has no v2) to `f`. The connection ends when `f` returns; what `f` sends is up to it
/// (`super::send_pack`).
///
/// # Errors
/// As [`check_receive_pack`], for the connection and handshake; `f`'s own result is returned
/// as is.
pub fn with_receive_pack<R>(
    repo: &gix::Repository,
    url: &str,
    creds: &Credentials,
    opts: &FetchOptions,
    secrets: &Secrets,
    f: impl FnOnce(&mut Box<dyn Transport + Send>, &gix::protocol::Handshake) -> R,
) -> Result<R, FetchError> {
    let ssh_log = SshLog::for_url(url);
    let log_path = ssh_log.path();
    let classify = |e: gix::Error| classify_error(e, secrets, log_path.as_deref());
    let remote = repo.remote_at(url).map_err(classify)?;
    let mut conn = super::transport::connect_fetch(&remote, opts).map_err(classify)?;
    let is_http = remote
        .url(Direction::Fetch)
        .is_some_and(|u| matches!(u.scheme, gix::url::Scheme::Http | gix::url::Scheme::Https));
    if is_http {
        // `connect_fetch` leaves the http options for gix's own handshake; this one is ours.
        let options = super::transport::http_options(&remote, opts).map_err(classify)?;
        conn.transport_mut()
            .configure(&*options)
            .map_err(|e| classify(gix::Error::from_error(e)))?;
    }
    let handshake = gix::protocol::handshake(
        conn.transport_mut(),
        Service::ReceivePack,
        credentials_helper(creds.clone()),
        Vec::new(),
        &mut gix::progress::Discard,
    )
    .map_err(classify)?;
    Ok(f(conn.transport_mut(), &handshake))
}
