//! Pushing one branch update in process, over gix's transport (gix itself cannot push,
//! GitoxideLabs/gitoxide#306). The git CLI ([`super::push`]) stays for everything not covered
//! here: [`InProcess::UseCli`] says why.
//!
//! The send-pack side of the protocol (`Documentation/gitprotocol-pack.txt`, "Pushing Data To
//! a Server"), for one ref:
//!
//! 1. connect to `git-receive-pack` as the write-permission check does ([`super::access`]:
//!    `TCP_NODELAY` on `git://`, the network deadlines, credentials) and read the ref
//!    advertisement;
//! 2. the lease, as `git push --force-with-lease=refs/heads/<b>:<expected>`: the advertised
//!    branch head must be `expected`, else [`PushOutcome::Stale`] and nothing is sent (already
//!    `new`: [`PushOutcome::Pushed`]);
//! 3. one command pkt-line `<expected> <new> refs/heads/<b>\0report-status side-band-64k
//!    quiet agent=…` (each capability only when the server advertised it), a flush, then a pack of
//!    the objects the server lacks ([`super::pack`]; thin, with large changed blobs as deltas,
//!    unless the server advertises `no-thin`);
//! 4. the report: `unpack ok` and `ok <ref>` is [`PushOutcome::Pushed`]; `ng <ref> <reason>`
//!    is [`PushOutcome::Stale`] when someone else moved the branch (the server compares the
//!    old id of our command with the ref under its lock) and [`PushOutcome::Rejected`] with
//!    the server's `remote:` lines (hooks) otherwise.
//!
//! The server updates the ref only after it has the whole pack and checked it, all or
//! nothing: an interrupted push leaves the branch at the old or the new commit. We never
//! update remote refs ourselves.
//!
//! Not covered (the CLI pushes): `ssh://` and `file://` URLs, the first push of a branch
//! (no `expected`: the server has nothing in common with us that we know of), merge or root
//! commits, and changes larger than [`super::pack::MAX_OBJECTS`] objects (the CLI deltifies).

use std::io::Write as _;
use std::sync::atomic::AtomicU32;

use gix::ObjectId;
use gix_transport::client::blocking_io::Transport;
use gix_transport::client::{MessageKind, WriteMode};

use super::credentials::{Credentials, Secrets};
use super::pack::{self, Selection};
use super::push::PushOutcome;
use super::repo::FetchError;
use super::transport::FetchOptions;

/// What the in-process push did.
#[derive(Debug, PartialEq, Eq)]
pub enum InProcess {
    /// It ran: the outcome, as the git CLI's would have been.
    Done(PushOutcome),
    /// Not a case it covers (nothing was sent): push with the git CLI. The text says why.
    UseCli(String),
}

/// Push `new` to `refs/heads/<branch>` of `url` if the branch is at `expected` (see the
/// module docs). Blocking: run it on a blocking thread. Every network step is bounded by
/// `opts.deadline` (`network.operationTimeout`).
#[allow(clippy::too_many_arguments)]
pub fn push(
    repo: &gix::Repository,
    url: &str,
    branch: &str,
    expected: Option<ObjectId>,
    new: ObjectId,
    creds: &Credentials,
    opts: &FetchOptions,
    secrets: &Secrets,
) -> InProcess {
    let lower = url.to_ascii_lowercase();
    if !["git://", "http://", "https://"]
        .iter()
        .any(|s| lower.starts_with(s))
    {
        return InProcess::UseCli("not a git:// or http(s):// URL".into());
    }
    let Some(expected) = expected else {
        return InProcess::UseCli("the branch does not exist yet".into());
    };
    let objects = match pack::select(repo, expected, new) {
        Ok(Selection::Objects(o)) => o,
        Ok(Selection::TooLarge) => {
            return InProcess::UseCli("a large change (the git CLI deltifies)".into());
        }
        Ok(Selection::Unsupported(why)) => return InProcess::UseCli(why),
        Err(e) => return InProcess::UseCli(secrets.redact(&e)),
    };
    let dst = format!("refs/heads/{branch}");
    let sent = super::access::with_receive_pack(repo, url, creds, opts, secrets, |t, hs| {
        // A thin pack (deltas against blobs the server has) unless the server refuses them.
        match pack::write(&objects, !hs.capabilities.contains("no-thin")) {
            Ok(pack) => send(t, hs, &dst, expected, new, &pack),
            Err(e) => Sent::UseCli(format!("cannot write the pack: {e}")),
        }
    });
    let failed = |text: String| {
        let text = secrets.redact(&text);
        if opts.deadline.expired() && !text.contains("network.operationTimeout") {
            format!("{}: {text}", opts.deadline.expired_text())
        } else {
            text
        }
    };
    match sent {
        Ok(Sent::Report(report)) => InProcess::Done(report.outcome(&dst, secrets)),
        Ok(Sent::Lease(outcome)) => InProcess::Done(outcome),
        Ok(Sent::UseCli(why)) => InProcess::UseCli(why),
        Ok(Sent::Auth(text)) => InProcess::Done(PushOutcome::Auth(secrets.redact(&text))),
        Ok(Sent::Failed(text)) => InProcess::Done(PushOutcome::Failed(failed(text))),
        Err(FetchError::Auth(text)) => InProcess::Done(PushOutcome::Auth(text)),
        Err(FetchError::Other(text)) => InProcess::Done(PushOutcome::Failed(failed(text))),
    }
}

/// Pushes of one store by how they were made ([`super::GitStateStore::push_counts`]).
#[derive(Debug, Default)]
pub(super) struct PushCounts {
    pub(super) in_process: AtomicU32,
    pub(super) cli: AtomicU32,
}

impl super::Inner {
    /// [`push`] of `new` over `expected` with this store's URL, credentials and
    /// network options (blocking).
    pub(super) fn push_in_process(&self, expected: Option<ObjectId>, new: ObjectId) -> InProcess {
        let super::Backend::Remote { url, creds, .. } = &self.backend else {
            return InProcess::UseCli("not a remote store".into());
        };
        let opts = FetchOptions {
            deadline: self.opts.network.deadline(),
            insecure_skip_tls_verify: self.opts.insecure_skip_tls_verify,
        };
        push(
            &self.repo(),
            url,
            &self.spec.branch,
            expected,
            new,
            creds,
            &opts,
            &self.secrets,
        )
    }
}

enum Sent {
    Report(Report),
    Lease(PushOutcome),
    UseCli(String),
    /// An http server asked for (other) credentials only when the pack was posted.
    Auth(String),
    Failed(String),
}

fn send(
    t: &mut Box<dyn Transport + Send>,
    hs: &gix::protocol::Handshake,
    dst: &str,
    expected: ObjectId,
    new: ObjectId,
    pack: &[u8],
) -> Sent {
    use gix::protocol::handshake::Ref;
    let current = hs.refs.iter().flatten().find_map(|r| match r {
        Ref::Direct {
            full_ref_name,
            object,
        } if full_ref_name == dst => Some(*object),
        Ref::Peeled {
            full_ref_name, tag, ..
        } if full_ref_name == dst => Some(*tag),
        Ref::Symbolic {
            full_ref_name,
            tag,
            object,
            ..
        } if full_ref_name == dst => Some(tag.unwrap_or(*object)),
        _ => None,
    });
    if current == Some(new) {
        return Sent::Lease(PushOutcome::Pushed);
    }
    if current != Some(expected) {
        return Sent::Lease(PushOutcome::Stale);
    }
    let caps = &hs.capabilities;
    if !caps.contains("report-status") {
        return Sent::UseCli("the server does not offer report-status".into());
    }
    let sideband = caps.contains("side-band-64k");
    let mut ours = vec!["report-status".to_owned()];
    if sideband {
        ours.push("side-band-64k".into());
    }
    // No progress lines among the server's messages (the git CLI asks the same when its
    // stderr is not a terminal).
    if caps.contains("quiet") {
        ours.push("quiet".into());
    }
    if caps.contains("agent") {
        ours.push(format!("agent=promised/{}", env!("CARGO_PKG_VERSION")));
    }
    let command = format!("{expected} {new} {dst}\0{}", ours.join(" "));
    let mut request = Vec::with_capacity(command.len() + 8 + pack.len());
    request.extend_from_slice(format!("{:04x}", command.len() + 4).as_bytes());
    request.extend_from_slice(command.as_bytes());
    request.extend_from_slice(b"0000");
    request.extend_from_slice(pack);

    let writer = match t.request(WriteMode::Binary, MessageKind::Flush, false) {
        Ok(w) => w,
        Err(e) => return Sent::Failed(e.to_string()),
    };
    // Verbatim: the command is already a pkt-line and the pack is not one.
    let (mut w, mut reader) = writer.into_parts();
    let written = w.write_all(&request).and_then(|()| w.flush());
    // The body of an http request ends here; the response can only be read after.
    drop(w);
    reader.reset(gix::protocol::transport::Protocol::V1);
    let mut report = Report::new(sideband);
    let mut read_error = None;
    while let Some(line) = reader.readline() {
        match line {
            Ok(Ok(gix::protocol::transport::packetline::PacketLineRef::Data(d))) => {
                report.feed(d);
            }
            Ok(Ok(_)) => break,
            Ok(Err(e)) => {
                read_error = Some(e.to_string());
                break;
            }
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
    }
    if !report.has_status() {
        // The server's reason, if it printed one, else ours.
        if let Some(fatal) = report.fatal.take() {
            return Sent::Failed(format!("remote: {fatal}"));
        }
        let why = match (written, read_error) {
            (Err(e), _) => format!("sending the pack: {e}"),
            (Ok(()), Some(e)) => format!("reading the push report: {e}"),
            (Ok(()), None) => "the server ended the push without a report".into(),
        };
        if super::repo::looks_like_auth(&why) {
            return Sent::Auth(why);
        }
        return Sent::Failed(report.with_remote_lines(why));
    }
    Sent::Report(report)
}

/// The server's answer to a push: report-status lines, side-band demultiplexed (pure;
/// unit-tested). With `side-band-64k` the report is the pkt-line stream inside band 1,
/// band 2 is the server's `remote:` text and band 3 a fatal error.
#[derive(Debug, Default)]
struct Report {
    sideband: bool,
    band1: Vec<u8>,
    lines: Vec<String>,
    remote: String,
    fatal: Option<String>,
}

/// `ng` reasons that mean someone else moved the branch (the server compares our command's
/// old id under its ref lock; the wording varies between git versions).
const STALE_REASONS: &[&str] = &[
    "stale info",
    "fetch first",
    "non-fast-forward",
    "failed to lock",
    "cannot lock",
    "failed to update ref",
    "incorrect old value",
    "reference already exists",
];

impl Report {
    fn new(sideband: bool) -> Self {
        Self {
            sideband,
            ..Self::default()
        }
    }

    /// One pkt-line payload of the response.
    fn feed(&mut self, payload: &[u8]) {
        if let Some(msg) = payload.strip_prefix(b"ERR ") {
            self.fatal = Some(text(msg));
            return;
        }
        if !self.sideband {
            self.lines.push(text(payload));
            return;
        }
        match payload.split_first() {
            Some((1, rest)) => {
                self.band1.extend_from_slice(rest);
                self.split_band1();
            }
            Some((2, rest)) => self.remote.push_str(&String::from_utf8_lossy(rest)),
            Some((3, rest)) => {
                let t = text(rest);
                self.fatal = Some(match self.fatal.take() {
                    Some(f) => format!("{f} {t}"),
                    None => t,
                });
            }
            _ => {}
        }
    }

    /// Move the complete pkt-lines of band 1 to `lines` (a band-1 packet may end in the
    /// middle of an inner line).
    fn split_band1(&mut self) {
        let mut at = 0;
        while let Some(head) = self.band1.get(at..at + 4) {
            let Some(len) = std::str::from_utf8(head)
                .ok()
                .and_then(|h| usize::from_str_radix(h, 16).ok())
            else {
                break;
            };
            if len < 4 {
                at += 4; // flush: the end of the report
                continue;
            }
            let Some(body) = self.band1.get(at + 4..at + len) else {
                break;
            };
            self.lines.push(text(body));
            at += len;
        }
        self.band1.drain(..at);
    }

    fn has_status(&self) -> bool {
        self.lines.iter().any(|l| l.starts_with("unpack "))
    }

    /// The `remote:` lines (trimmed, empty ones dropped) followed by `last`.
    fn with_remote_lines(&self, last: String) -> String {
        let mut out: Vec<String> = self
            .remote
            .split(['\n', '\r'])
            .map(|l| l.trim_end().strip_prefix(' ').unwrap_or(l.trim_end()))
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        out.push(last);
        out.join("\n")
    }

    fn outcome(&self, dst: &str, secrets: &Secrets) -> PushOutcome {
        let redacted = |s: String| secrets.redact(&s);
        let unpack = self
            .lines
            .iter()
            .find_map(|l| l.strip_prefix("unpack "))
            .unwrap_or("");
        for line in &self.lines {
            if line.strip_prefix("ok ") == Some(dst) {
                return PushOutcome::Pushed;
            }
            if let Some(rest) = line.strip_prefix("ng ")
                && let Some(reason) = rest.strip_prefix(dst).and_then(|r| r.strip_prefix(' '))
            {
                if STALE_REASONS.iter().any(|s| reason.contains(s)) {
                    return PushOutcome::Stale;
                }
                return PushOutcome::Rejected(redacted(
                    self.with_remote_lines(format!("[remote rejected] ({reason})")),
                ));
            }
        }
        let why = if unpack != "ok" {
            format!("the server could not unpack our objects: {unpack}")
        } else {
            format!("the server did not report on {dst}")
        };
        PushOutcome::Failed(redacted(self.with_remote_lines(why)))
    }
}

/// A report line without its line feed.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches('\n').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST: &str = "refs/heads/main";

    fn pkt(s: &str) -> Vec<u8> {
        let mut v = format!("{:04x}", s.len() + 4).into_bytes();
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn band(n: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![n];
        v.extend_from_slice(data);
        v
    }

    fn no_secrets() -> Secrets {
        Secrets::default()
    }

    #[test]
    fn ok_without_side_band() {
        let mut r = Report::new(false);
        r.feed(b"unpack ok\n");
        r.feed(b"ok refs/heads/main\n");
        assert_eq!(r.outcome(DST, &no_secrets()), PushOutcome::Pushed);
    }

    /// The report inside band 1 may be split anywhere, even inside a length; band 2 is the
    /// server's text.
    #[test]
    fn ok_in_band_one_split_across_packets() {
        let mut inner = pkt("unpack ok\n");
        inner.extend(pkt("ok refs/heads/main\n"));
        inner.extend_from_slice(b"0000");
        let mut r = Report::new(true);
        r.feed(&band(2, b"remote: hello\n"));
        for chunk in inner.chunks(3) {
            r.feed(&band(1, chunk));
        }
        assert_eq!(r.outcome(DST, &no_secrets()), PushOutcome::Pushed);
    }

    #[test]
    fn a_hook_refusal_is_rejected_with_the_hooks_text() {
        let mut inner = pkt("unpack ok\n");
        inner.extend(pkt("ng refs/heads/main pre-receive hook declined\n"));
        inner.extend_from_slice(b"0000");
        let mut r = Report::new(true);
        r.feed(&band(2, b"no pushes on fridays   \n"));
        r.feed(&band(2, b"\rsecond line\n"));
        r.feed(&band(1, &inner));
        assert_eq!(
            r.outcome(DST, &no_secrets()),
            PushOutcome::Rejected(
                "no pushes on fridays\nsecond line\n[remote rejected] (pre-receive hook declined)"
                    .into()
            )
        );
    }

    #[test]
    fn someone_else_moving_the_branch_is_stale() {
        for reason in [
            "failed to update ref",
            "cannot lock ref 'refs/heads/main': is at 1 but expected 2",
            "fetch first",
        ] {
            let mut r = Report::new(false);
            r.feed(b"unpack ok\n");
            r.feed(format!("ng refs/heads/main {reason}\n").as_bytes());
            assert_eq!(
                r.outcome(DST, &no_secrets()),
                PushOutcome::Stale,
                "{reason}"
            );
        }
    }

    #[test]
    fn an_unpack_failure_or_a_missing_line_fails() {
        let mut r = Report::new(false);
        r.feed(b"unpack index-pack abnormal exit\n");
        assert!(
            matches!(r.outcome(DST, &no_secrets()), PushOutcome::Failed(m) if m.contains("abnormal exit"))
        );
        let mut r = Report::new(false);
        r.feed(b"unpack ok\n");
        r.feed(b"ok refs/heads/other\n");
        assert!(matches!(
            r.outcome(DST, &no_secrets()),
            PushOutcome::Failed(_)
        ));
    }

    #[test]
    fn an_err_line_is_fatal() {
        let mut r = Report::new(true);
        r.feed(b"ERR access denied\n");
        assert!(!r.has_status());
        assert_eq!(r.fatal.as_deref(), Some("access denied"));
    }

    #[test]
    fn band_three_is_fatal() {
        let mut r = Report::new(true);
        r.feed(&band(3, b"out of disk\n"));
        assert!(!r.has_status());
        assert_eq!(r.fatal.as_deref(), Some("out of disk"));
    }
}
