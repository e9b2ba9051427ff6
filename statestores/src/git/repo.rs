//! Blocking gix operations: open/create the bare repository, fetch, read the branch head's
//! files and our index, build the new tree and commit, compare-and-swap a local ref.
//! Everything here runs inside `tokio::task::spawn_blocking`.

use std::collections::HashMap;
use std::path::Path;

use gix::ObjectId;
use gix::bstr::ByteSlice;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};

use super::config::GitAuthor;
use super::credentials::{Credentials, Secrets};
use super::objects::Objects;
use super::tree;
use crate::Error;
use crate::plan::Plan;

/// Convert any gix error into [`Error::Repository`], scrubbing secrets.
pub fn repo_err(secrets: &Secrets) -> impl Fn(gix::Error) -> Error + '_ {
    move |e| Error::Repository(secrets.redact(&error_text(&e)))
}

/// The full chain of an error as one line.
pub fn error_text(e: &gix::Error) -> String {
    super::transport::error_text(e)
}

/// Open the bare repository at `path`, creating it (and its parents) when missing.
/// `overrides` are git config overrides (`key=value`) applied in memory.
pub fn open_or_init(
    path: &Path,
    overrides: Vec<String>,
    secrets: &Secrets,
) -> Result<gix::ThreadSafeRepository, Error> {
    let opts = || {
        gix::open::Options::isolated()
            .config_overrides(overrides.clone())
            .strict_config(false)
    };
    match gix::open_opts(path, opts()) {
        Ok(repo) => Ok(repo.into_sync()),
        Err(open_err) => {
            let exists_nonempty = std::fs::read_dir(path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if exists_nonempty {
                return Err(Error::Repository(secrets.redact(&format!(
                    "{} exists but is not a git repository: {open_err}",
                    path.display()
                ))));
            }
            std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
            gix::init_bare(path)
                .map_err(|e| Error::Repository(format!("cannot create {}: {e}", path.display())))?;
            gix::open_opts(path, opts())
                .map(gix::Repository::into_sync)
                .map_err(|e| Error::Repository(format!("cannot open {}: {e}", path.display())))
        }
    }
}

/// The value of `refs/heads/<branch>` (or any full ref name) in `repo`, if it exists.
pub fn read_ref(
    repo: &gix::Repository,
    full_name: &str,
    secrets: &Secrets,
) -> Result<Option<ObjectId>, Error> {
    match repo
        .try_find_reference(full_name)
        .map_err(repo_err(secrets))?
    {
        None => Ok(None),
        Some(mut r) => {
            let id = r.peel_to_id().map_err(repo_err(secrets))?;
            Ok(Some(id.detach()))
        }
    }
}

/// How a fetch failed.
pub enum FetchError {
    /// The server wants (other) credentials.
    Auth(String),
    /// Anything else.
    Other(String),
}

pub(super) fn looks_like_auth(text: &str) -> bool {
    // URLs are left out: a port such as 40335 is not an HTTP 403.
    let t: String = text
        .to_ascii_lowercase()
        .split_whitespace()
        .filter(|w| !w.contains("://"))
        .collect::<Vec<_>>()
        .join(" ");
    let status = t
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w == "401" || w == "403");
    status
        || [
            "authenticat",
            "unauthorized",
            "permission denied",
            "credentials",
            "forbidden",
        ]
        .iter()
        .any(|k| t.contains(k))
}

/// For an `ssh://` URL, a file `ssh -E` logs to while this lives (see `transport::SSH_LOG`):
/// why ssh failed is read from there, whatever gix saw of its stderr. Other URLs: nothing.
pub(super) struct SshLog(Option<tempfile::NamedTempFile>);

impl SshLog {
    /// Sets `transport::SSH_LOG` on this thread for an ssh URL, until dropped.
    pub(super) fn for_url(url: &str) -> Self {
        let log = url
            .starts_with("ssh://")
            .then(|| tempfile::NamedTempFile::new().ok())
            .flatten();
        super::transport::SSH_LOG
            .with(|l| *l.borrow_mut() = log.as_ref().map(|f| f.path().to_path_buf()));
        Self(log)
    }

    /// The log file, if any.
    pub(super) fn path(&self) -> Option<std::path::PathBuf> {
        self.0.as_ref().map(|f| f.path().to_path_buf())
    }
}

impl Drop for SshLog {
    fn drop(&mut self) {
        super::transport::SSH_LOG.with(|l| *l.borrow_mut() = None);
    }
}

/// A gix error as a [`FetchError`]: [`FetchError::Auth`] when gix classifies it as
/// unauthenticated or permission denied or its text reads like an authentication failure.
/// `ssh_log` is the file `ssh -E` wrote (its last line is appended: gix may not have seen
/// ssh's stderr yet). Secrets are redacted.
pub(super) fn classify_error(
    e: gix::Error,
    secrets: &Secrets,
    ssh_log: Option<&Path>,
) -> FetchError {
    let unauth = {
        let c = e.classify();
        c.is_unauthenticated()
    } || e.classify().is_permission_denied();
    let mut text = secrets.redact(&error_text(&e));
    let ssh_said = ssh_log
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| secrets.redact(t.trim()))
        .filter(|t| !t.is_empty());
    if let Some(said) = &ssh_said {
        text = format!("{text}: ssh: {}", said.lines().last().unwrap_or_default());
    }
    if unauth || looks_like_auth(&text) {
        FetchError::Auth(text)
    } else {
        FetchError::Other(text)
    }
}

/// The credentials callback of a connection: `creds` when the server asks (Basic only;
/// anything else is an error saying none are configured), nothing stored or erased.
pub(super) fn credentials_helper(creds: Credentials) -> gix::protocol::AuthenticateFn<'static> {
    Box::new(move |action| match action {
        gix::credentials::helper::Action::Get(ctx) => match &creds {
            Credentials::Basic { username, password } => {
                Ok(Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: username.clone(),
                        password: password.clone(),
                        oauth_refresh_token: None,
                    },
                    next: ctx.into(),
                }))
            }
            _ => Err(gix::error::message(
                "the server asked for credentials but none are configured (set secretRef)",
            )
            .into()),
        },
        // We keep no credential cache: nothing to store or erase.
        gix::credentials::helper::Action::Store(_) | gix::credentials::helper::Action::Erase(_) => {
            Ok(None)
        }
    })
}

/// Fetch `refs/heads/<branch>` from `url` into `refs/remotes/origin/<branch>` and return the
/// remote's branch tip (`None` when the branch does not exist on the remote).
pub fn fetch(
    repo: &gix::Repository,
    url: &str,
    branch: &str,
    creds: &Credentials,
    opts: &super::transport::FetchOptions,
    secrets: &Secrets,
) -> Result<Option<ObjectId>, FetchError> {
    let ssh_log = SshLog::for_url(url);
    let log_path = ssh_log.path();
    let classify = |e: gix::Error| classify_error(e, secrets, log_path.as_deref());
    let remote_ref = format!("refs/heads/{branch}");
    let remote = repo
        .remote_at(url)
        .map_err(classify)?
        .with_refspecs(
            [format!("+{remote_ref}:refs/remotes/origin/{branch}").as_str()],
            gix::remote::Direction::Fetch,
        )
        .map_err(classify)?;
    let conn = super::transport::connect_fetch(&remote, opts).map_err(classify)?;
    let conn = conn.with_credentials(credentials_helper(creds.clone()));
    let prepare = conn
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(classify)?;
    let tip = prepare.ref_map().remote_refs.iter().find_map(|r| {
        let (name, target, peeled) = r.unpack();
        (name.to_str_lossy() == remote_ref)
            .then(|| peeled.or(target).map(|o| o.to_owned()))
            .flatten()
    });
    if tip.is_none() {
        return Ok(None);
    }
    let alarm = crate::net::Alarm::start(&opts.deadline);
    prepare
        .receive(gix::progress::Discard, alarm.flag())
        .map_err(classify)?;
    Ok(tip)
}

/// Every blob path of `commit`'s tree with its object id, and the tree id
/// (the empty tree when there is no commit).
pub fn head_files(
    repo: &gix::Repository,
    commit: Option<ObjectId>,
    secrets: &Secrets,
) -> Result<(HashMap<String, ObjectId>, ObjectId), Error> {
    let Some(commit) = commit else {
        return Ok((HashMap::new(), ObjectId::empty_tree(repo.object_hash())));
    };
    let err = repo_err(secrets);
    let commit = repo.find_commit(commit).map_err(&err)?;
    let tree_id = commit.tree_id().map_err(&err)?.detach();
    let tree = repo.find_tree(tree_id).map_err(&err)?;
    let mut rec = gix::traverse::tree::Recorder::default();
    tree.traverse().breadthfirst(&mut rec).map_err(&err)?;
    let mut files = HashMap::with_capacity(rec.records.len());
    for e in rec.records {
        if e.mode.is_blob() || e.mode.is_link() {
            files.insert(e.filepath.to_str_lossy().into_owned(), e.oid);
        }
    }
    Ok((files, tree_id))
}

/// Read a blob's bytes.
pub fn read_blob(
    repo: &gix::Repository,
    oid: &ObjectId,
    secrets: &Secrets,
) -> Result<Vec<u8>, Error> {
    let obj = repo.find_object(*oid).map_err(repo_err(secrets))?;
    Ok(obj.detach().data)
}

/// Write the plan's blobs, build the new tree on top of `base_tree` in one editing pass, and
/// write a commit with `parent`. Returns the commit id and how many objects were written, or
/// `None` when the tree did not change.
///
/// Objects go to [`Objects`] as they are produced: the blobs from the plan (not copied), each
/// new tree as [`tree::build`] writes it, the commit last. A few are written loose, more as one pack
/// streamed to disk (see [`super::objects`]).
#[allow(clippy::too_many_arguments)]
pub fn build_commit(
    repo: &gix::Repository,
    base_tree: ObjectId,
    parent: Option<ObjectId>,
    plan: &Plan<'_>,
    message: String,
    author: &GitAuthor,
    signer: Option<&super::signing::Signer>,
    secrets: &Secrets,
) -> Result<Option<(ObjectId, usize)>, Error> {
    let err = repo_err(secrets);
    let mut reader = repo.clone();
    reader.object_cache_size_if_unset(16 * 1024 * 1024);
    let mut objects = Objects::new(repo);
    // New blobs, once each (the same content may sit at several paths; `Objects` skips an id
    // it has). `Upsert::oid` is the blob id of `content` (`Plan`'s invariant).
    for u in &plan.upserts {
        match plan.bytes(u) {
            Some(content) => objects.add(u.oid, gix::objs::Kind::Blob, &content)?,
            // Restored from history: the object must be there already.
            None if !repo.has_object(u.oid) => {
                return Err(Error::Repository(format!(
                    "the object {} at {:?} could not be found",
                    u.oid, u.path
                )));
            }
            None => {}
        }
    }
    let hash = repo.object_hash();
    let mut buf = Vec::new();
    let mut write_tree = |t: &gix::objs::Tree| -> Result<ObjectId, Error> {
        // The file names the porcelain editor would accept.
        for e in &t.entries {
            let mode = e
                .mode
                .is_link()
                .then_some(gix::validate::path::component::Mode::Symlink);
            gix::validate::path::component(e.filename.as_ref(), mode, PROTECT).map_err(|v| {
                Error::Repository(format!(
                    "invalid file name {:?} in the tree: {v}",
                    e.filename
                ))
            })?;
        }
        buf.clear();
        gix::objs::WriteTo::write_to(t, &mut buf).map_err(|e| Error::Repository(e.to_string()))?;
        let id = gix::objs::compute_hash(hash, gix::objs::Kind::Tree, &buf)
            .map_err(|e| Error::Repository(e.to_string()))?;
        objects.add(id, gix::objs::Kind::Tree, &buf)?;
        Ok(id)
    };
    let changes = tree::changes(
        plan.removes.iter().map(String::as_str),
        plan.upserts.iter().map(|u| (&*u.path, u.oid)),
    );
    let built = tree::build(&reader, base_tree, &changes, &mut write_tree, &err)?;
    drop(changes);
    let tree = match built {
        Ok(id) => id,
        // The same name as a file and a directory: gix's plumbing editor applies the
        // removals and upserts in order (the porcelain one checks that every entry's object
        // exists, and the new blobs are not in the repository until `objects` is finished).
        Err(tree::Conflict) => {
            let mut ed = reader.edit_tree(base_tree).map_err(&err)?.detach();
            for path in &plan.removes {
                ed.remove(path.split('/')).map_err(&err)?;
            }
            for u in &plan.upserts {
                ed.upsert(u.path.split('/'), gix::objs::tree::EntryKind::Blob, u.oid)
                    .map_err(&err)?;
            }
            ed.write(&mut write_tree)?
        }
    };
    if tree == base_tree {
        // Nothing is written: blobs added to a pack are in its temporary file, removed here.
        return Ok(None);
    }
    let sig = gix::actor::Signature {
        name: author.name.as_str().into(),
        email: author.email.as_str().into(),
        time: gix::date::Time::now_local_or_utc(),
    };
    let mut commit = gix::objs::Commit {
        tree,
        parents: parent.into_iter().collect(),
        author: sig.clone(),
        committer: sig,
        encoding: None,
        // Moved, not copied: a cold pass's message names every request (1.4 MB at 10,000).
        message: message.into(),
        extra_headers: Vec::new(),
    };
    if let Some(signer) = signer {
        // As git: the signature covers the commit object without its `gpgsig` header.
        let mut payload = Vec::new();
        gix::objs::WriteTo::write_to(&commit, &mut payload)
            .map_err(|e| Error::Repository(e.to_string()))?;
        let signature = signer.sign(&payload)?;
        commit
            .extra_headers
            .push(("gpgsig".into(), signature.trim_end().into()));
    }
    buf.clear();
    gix::objs::WriteTo::write_to(&commit, &mut buf)
        .map_err(|e| Error::Repository(e.to_string()))?;
    let commit = gix::objs::compute_hash(hash, gix::objs::Kind::Commit, &buf)
        .map_err(|e| Error::Repository(e.to_string()))?;
    objects.add(commit, gix::objs::Kind::Commit, &buf)?;
    let n = objects.finish(secrets)?;
    Ok(Some((commit, n)))
}

/// What file names a tree may hold: gix's defaults on Linux (git's `core.protectNTFS` on,
/// `core.protectHFS` and gitoxide's `core.protectWindows` off), as gix's porcelain tree editor
/// applies them; `build_commit` checks every entry of every tree it writes.
const PROTECT: gix::validate::path::component::Options = gix::validate::path::component::Options {
    protect_windows: false,
    protect_hfs: false,
    protect_ntfs: true,
};

/// Removes `objects/pack/*.keep` from our own persistent clone: we never keep one (our packs
/// are written without, [`super::objects`]), so any there is left by an older version killed
/// between writing a pack and removing it, or by one killed mid-fetch, and would stop
/// `git gc` from consolidating that pack. Call it
/// only while nothing else uses the clone (when the store opens). Failures are ignored.
pub fn remove_stale_keeps(git_dir: &std::path::Path) {
    let dir = git_dir.join("objects").join("pack");
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".keep") {
            tracing::debug!(path = %e.path().display(), "removing a stale pack .keep file");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Removes the ref lock files (`refs/**/*.lock`, `packed-refs.lock`) from our own persistent
/// clone: a process killed while a fetch or a push moved a ref leaves its lock behind, and
/// every later ref update (the next fetch) fails on it ("The lock for resource ... could not
/// be obtained"). Like [`remove_stale_keeps`], call it only while nothing else uses the clone
/// (when the store opens: the state directory's lock keeps other processes out). Failures are
/// ignored.
pub fn remove_stale_ref_locks(git_dir: &std::path::Path) {
    let mut dirs = vec![git_dir.join("refs")];
    let mut locks = vec![git_dir.join("packed-refs.lock")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(_) if e.file_name().to_string_lossy().ends_with(".lock") => locks.push(e.path()),
                _ => {}
            }
        }
    }
    for lock in locks.into_iter().filter(|l| l.exists()) {
        tracing::debug!(path = %lock.display(), "removing a stale ref lock");
        let _ = std::fs::remove_file(lock);
    }
}

/// Packs above which [`needs_gc`] asks for a `git gc` (git's `gc.autoPackLimit` is 50).
pub const GC_PACK_LIMIT: usize = 25;
/// Estimated loose objects above which [`needs_gc`] asks for a `git gc` (git's `gc.auto` is
/// 6700; estimated like git does, from the `objects/17` fan-out directory).
pub const GC_LOOSE_LIMIT: usize = 3000;

/// Whether the repository at `git_dir` has enough packs or loose objects to be worth a gc.
pub fn needs_gc(git_dir: &Path) -> bool {
    let count = |dir: &Path, pred: &dyn Fn(&std::path::Path) -> bool| {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| pred(&e.path()))
                    .count()
            })
            .unwrap_or(0)
    };
    let packs = count(&git_dir.join("objects/pack"), &|p| {
        p.extension().is_some_and(|x| x == "pack")
    });
    let loose = count(&git_dir.join("objects/17"), &|_| true) * 256;
    packs > GC_PACK_LIMIT || loose > GC_LOOSE_LIMIT
}

/// Outcome of a compare-and-swap ref update.
pub enum CasOutcome {
    /// The ref now points at the new commit.
    Updated,
    /// The ref was not at the expected value.
    Stale,
}

/// Set `full_name` to `new` if and only if it currently is `expected` (`None` = must not exist).
pub fn cas_ref(
    repo: &gix::Repository,
    full_name: &str,
    expected: Option<ObjectId>,
    new: ObjectId,
    message: &str,
    secrets: &Secrets,
) -> Result<CasOutcome, Error> {
    let err = repo_err(secrets);
    let edit = RefEdit {
        change: Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: message.lines().next().unwrap_or("promised").into(),
            },
            expected: match expected {
                Some(oid) => PreviousValue::MustExistAndMatch(gix::refs::Target::Object(oid)),
                None => PreviousValue::MustNotExist,
            },
            new: gix::refs::Target::Object(new),
        },
        name: full_name
            .try_into()
            .map_err(|e: gix::refs::name::Error| Error::Repository(e.to_string()))?,
        deref: false,
    };
    match repo.edit_reference(edit) {
        Ok(_) => Ok(CasOutcome::Updated),
        Err(e) => {
            // Distinguish a lost race from a real failure by looking at the ref again.
            let now = read_ref(repo, full_name, secrets)?;
            if now != expected {
                Ok(CasOutcome::Stale)
            } else {
                Err(err(e))
            }
        }
    }
}

/// Unconditionally point `full_name` at `new` (tracking refs).
pub fn set_ref(
    repo: &gix::Repository,
    full_name: &str,
    new: ObjectId,
    secrets: &Secrets,
) -> Result<(), Error> {
    let edit = RefEdit {
        change: Change::Update {
            log: LogChange::default(),
            expected: PreviousValue::Any,
            new: gix::refs::Target::Object(new),
        },
        name: full_name
            .try_into()
            .map_err(|e: gix::refs::name::Error| Error::Repository(e.to_string()))?,
        deref: false,
    };
    repo.edit_reference(edit).map_err(repo_err(secrets))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_errors_are_recognised_and_ports_are_not_status_codes() {
        assert!(looks_like_auth("HTTP status 401 Unauthorized"));
        assert!(looks_like_auth("remote: Permission denied (publickey)."));
        assert!(looks_like_auth("server said 403"));
        assert!(!looks_like_auth(
            "error sending request for url (https://127.0.0.1:40335/repo.git/info/refs): invalid peer certificate"
        ));
        assert!(!looks_like_auth("connection refused on port 4031"));
    }
}
