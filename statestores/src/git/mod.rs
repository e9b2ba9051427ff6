//! Git state stores (Kratix `GitStateStore`, `kratix-contract.md` §1.4 and §4.2).
//!
//! [`GitStateStore`] is one type with two backends, chosen from `spec.url`:
//!
//! - **Remote** (`https://`, `ssh://`, `user@host:path`, `http://`, `git://`): one persistent bare
//!   clone per store at `<state_dir>/git/<store name>-<hash>.git` (Kratix re-clones into a temp
//!   dir; we keep the clone so fetches are incremental). Each apply attempt fetches the branch
//!   with gix, plans against the remote head, writes blobs and one commit with gix, and pushes
//!   it with a lease on the fetched head: in process over `git://` and http(s) (`send_pack.rs`),
//!   else (first push of a branch, large changes, ssh, `file://`) with `git push --porcelain
//!   --force-with-lease=refs/heads/<b>:<fetched head>` (`push.rs`).
//! - **Local** (`file://…` or a plain path): a bare repository on disk, created if missing,
//!   written directly with gix; the branch ref is updated with a compare-and-swap
//!   (`PreviousValue::MustExistAndMatch`). No server, no push. This is the embedded default.
//!
//! On a lost race (stale lease, non-fast-forward, moved local ref) the change is **rebuilt from
//! desired state** on the new head, never textually rebased, so files we do not own are never
//! touched; retries back off exponentially (`backon`) up to [`GitOptions::max_push_attempts`],
//! then fail with [`Error::Conflict`]. Kratix instead errors and requeues after 15 s
//! (`util/git/git.go` `CommitAndPush`). All applies to one store are serialised by an async
//! mutex (Kratix: one lock per repo). Commits are signed when [`GitOptions::signing`] is set.

mod access;
mod adopt;
pub mod config;
pub mod gc;

pub mod credentials;
mod objects;
mod pack;
mod push;
mod read;
mod repo;
mod send_pack;
pub mod signing;
pub mod transport;
mod tree;
mod verified;

pub use gc::{GC_BACKOFF, gc_if_needed};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use gix::ObjectId;

pub use config::{
    AuthMethod, BeforePublish, GitAuthor, GitOptions, GitStateStoreSpec, RemoteUrl, SecretRef,
};
use credentials::{Credentials, Secrets};
use push::PushOutcome;
use repo::CasOutcome;
use verified::Verified;

use crate::index::IndexEntry;
use crate::{ApplyOutcome, ChangeSet, Error, StateStore, message, plan};

enum Backend {
    Local,
    Remote {
        url: String,
        creds: Credentials,
        env: Vec<(String, String)>,
    },
}

impl Inner {
    /// A failed fetch or write-permission check as the store's error: [`Error::Auth`] naming
    /// where the credentials came from, else [`Error::Transport`] as `<operation>: <why>`
    /// (the deadline first when it passed).
    fn access_error(
        &self,
        e: repo::FetchError,
        opts: &transport::FetchOptions,
        operation: &str,
    ) -> Error {
        match e {
            repo::FetchError::Auth(message) => Error::Auth {
                url_without_secrets: self.url_display.clone(),
                message: match &self.spec.secret_ref {
                    Some(r) => format!("{message} (credentials from secret {:?})", r.name),
                    None => format!("{message} (no secretRef configured)"),
                },
            },
            repo::FetchError::Other(message) => Error::Transport {
                url_without_secrets: self.url_display.clone(),
                message: transport::describe(operation, &opts.deadline, &message),
            },
        }
    }
}

struct Inner {
    spec: GitStateStoreSpec,
    opts: GitOptions,
    backend: Backend,
    repo_path: PathBuf,
    repo: std::sync::RwLock<gix::ThreadSafeRepository>,
    overrides: Vec<String>,
    secrets: Secrets,
    url_display: String,
    lock: tokio::sync::Mutex<()>,
    /// The last branch head whose tree is known to match the ownership index (checked by an
    /// apply, or committed by us on top of a checked tree), with its listing and index.
    verified: std::sync::Mutex<Option<Verified>>,
    /// The branch head the write-permission check just fetched (`None` inside: no branch
    /// yet) and when: the next apply starts from it instead of fetching again, once, within
    /// [`GitOptions::trust_head_for`] (a fresh `promised reconcile` checks, then applies).
    checked_head: std::sync::Mutex<Option<(Option<ObjectId>, std::time::Instant)>>,
    /// How many pushes were made in process and with the git CLI ([`GitStateStore::push_counts`]).
    pushes: send_pack::PushCounts,
}

impl Inner {
    /// A thread-local handle on the repository.
    fn repo(&self) -> gix::Repository {
        self.repo
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .to_thread_local()
    }

    /// Keep the repository fast over thousands of applies: when there are many packs or loose
    /// objects, run `git gc` (one process, only when needed, under the store lock), then reopen
    /// the gix handle so it sees the new pack layout. Failures are logged, never fatal.
    fn maybe_gc(&self, env: &[(String, String)]) {
        if !gc_if_needed(&self.repo_path, env) {
            return;
        }
        match repo::open_or_init(&self.repo_path, self.overrides.clone(), &self.secrets) {
            Ok(fresh) => {
                *self
                    .repo
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh
            }
            Err(e) => tracing::warn!(error = %e, "cannot reopen repository after git gc"),
        }
    }
}

/// A Git state store (remote or local backend, see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct GitStateStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GitStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitStateStore")
            .field("url", &self.inner.url_display)
            .field("branch", &self.inner.spec.branch)
            .field("repo_path", &self.inner.repo_path)
            .finish()
    }
}

/// Result of one attempt, before publishing.
enum Prepared {
    NoChange(ApplyOutcome),
    Commit {
        commit: ObjectId,
        head: Option<ObjectId>,
        outcome: ApplyOutcome,
        /// What the store holds once `commit` is published.
        next: Verified,
    },
}

/// Why an attempt failed.
enum AttemptError {
    Stale,
    Fatal(Error),
}

impl From<Error> for AttemptError {
    fn from(e: Error) -> Self {
        AttemptError::Fatal(e)
    }
}

/// The store's id: its name (sanitised) and a hash of its URL and branch. Names the
/// persistent clone and the credential files.
fn store_id(name: &str, url: &RemoteUrl, branch: &str) -> String {
    let h = plan::sha256_hex(format!("{}\n{}", url.as_str(), branch).as_bytes());
    format!("{}-{}", config::sanitize(name), &h[..12])
}

/// Where [`GitStateStore::open`] keeps the persistent clone of the remote store `name` with
/// `url` and `branch`, given [`GitOptions`]' `state_dir`: `<state_dir>/git/<id>.git`. `None`
/// for a local store (the repository at `url` is the store itself) or a URL that does not
/// parse. The clone's `refs/remotes/origin/<branch>` is the remote branch as last fetched or
/// pushed.
#[must_use]
pub fn clone_path(
    name: &str,
    url: &str,
    branch: &str,
    state_dir: &std::path::Path,
) -> Option<PathBuf> {
    match config::parse_url_quiet(url).ok()?.url {
        RemoteUrl::Local(_) => None,
        remote => Some(
            state_dir
                .join("git")
                .join(format!("{}.git", store_id(name, &remote, branch))),
        ),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

impl GitStateStore {
    /// Open (or create) the store named `name` (the GitStateStore's metadata name; it names the
    /// persistent clone directory).
    ///
    /// Reads credentials now (so a missing secret fails fast) and opens or creates the local
    /// repository: the bare repo at `spec.url` for the local backend, the persistent clone under
    /// `state_dir` for the remote backend. No network I/O; call [`StateStore::check`] for that.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], [`Error::Config`] (missing secret keys, `githubApp`), I/O and
    /// repository errors.
    pub fn open(name: &str, spec: GitStateStoreSpec, opts: GitOptions) -> Result<Self, Error> {
        if spec.branch.is_empty()
            || gix::refs::FullName::try_from(format!("refs/heads/{}", spec.branch)).is_err()
        {
            return Err(Error::Config(format!(
                "invalid branch name {:?}",
                spec.branch
            )));
        }
        if opts.max_push_attempts == 0 {
            return Err(Error::Config("max_push_attempts must be at least 1".into()));
        }
        let parsed = config::parse_url(&spec.url)?;
        let store_id = store_id(name, &parsed.url, &spec.branch);
        let (creds, secrets) = credentials::load(&spec, &opts, &parsed, &store_id)?;
        let url_display = config::redact_url(&spec.url);
        let mut overrides = vec![
            "core.bare=true".to_owned(),
            "gc.auto=0".to_owned(),
            "core.fsyncMethod=fsync".to_owned(),
        ];
        let (backend, repo_path) = match &parsed.url {
            RemoteUrl::Local(path) => (Backend::Local, path.clone()),
            url => {
                if opts.insecure_skip_tls_verify {
                    tracing::warn!(url = %url_display, "TLS certificate verification is disabled for this state store");
                    overrides.push("http.sslVerify=false".into());
                }
                if let Some(cmd) = creds.ssh_command() {
                    overrides.push(format!("core.sshCommand={cmd}"));
                }
                let env = creds.git_env(opts.insecure_skip_tls_verify, &opts.network);
                let path = opts.state_dir.join("git").join(format!("{store_id}.git"));
                (
                    Backend::Remote {
                        url: url.as_str(),
                        creds,
                        env,
                    },
                    path,
                )
            }
        };
        let repo = match (
            &backend,
            repo::open_or_init(&repo_path, overrides.clone(), &secrets),
        ) {
            (_, Ok(r)) => r,
            // The persistent clone is only a cache of the remote: if it is unusable (a crash
            // mid-write, disk trouble), move it aside and start a fresh one instead of failing
            // forever (the Kratix "stale clone" failure mode, syntasso/kratix#850).
            (Backend::Remote { .. }, Err(e)) => {
                let aside = repo_path.with_extension(format!(
                    "broken-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                tracing::warn!(path = %repo_path.display(), moved_to = %aside.display(), error = %e,
                    "persistent clone unusable; starting a fresh one");
                std::fs::rename(&repo_path, &aside).map_err(|e| Error::io(&repo_path, e))?;
                repo::open_or_init(&repo_path, overrides.clone(), &secrets)?
            }
            (Backend::Local, Err(e)) => return Err(e),
        };
        if let Backend::Remote { .. } = &backend {
            repo::remove_stale_keeps(&repo_path);
            repo::remove_stale_ref_locks(&repo_path);
        }
        let repo = std::sync::RwLock::new(repo);
        Ok(Self {
            inner: Arc::new(Inner {
                spec,
                opts,
                backend,
                repo_path,
                repo,
                overrides,
                secrets,
                url_display,
                lock: tokio::sync::Mutex::new(()),
                verified: std::sync::Mutex::new(None),
                checked_head: std::sync::Mutex::new(None),
                pushes: send_pack::PushCounts::default(),
            }),
        })
    }

    /// The local bare repository: the store itself (local backend) or the persistent clone.
    pub fn repo_path(&self) -> &std::path::Path {
        &self.inner.repo_path
    }

    /// The spec this store was opened with.
    pub fn spec(&self) -> &GitStateStoreSpec {
        &self.inner.spec
    }

    /// How many pushes this store made in process (`send_pack.rs`) and with the git CLI, in
    /// that order, since it was opened: `git://` and `http(s)://` pushes of a small change go in
    /// process; the first push of a branch, large changes, ssh and `file://` use the CLI.
    pub fn push_counts(&self) -> (u32, u32) {
        (
            self.inner.pushes.in_process.load(Ordering::Relaxed),
            self.inner.pushes.cli.load(Ordering::Relaxed),
        )
    }

    /// `true` for the local-repository backend.
    pub fn is_local(&self) -> bool {
        matches!(self.inner.backend, Backend::Local)
    }

    fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.inner.spec.branch)
    }

    /// Current branch head: fetched (remote) or read (local). Blocking.
    fn head_blocking(inner: &Inner, repo: &gix::Repository) -> Result<Option<ObjectId>, Error> {
        match &inner.backend {
            Backend::Local => repo::read_ref(
                repo,
                &format!("refs/heads/{}", inner.spec.branch),
                &inner.secrets,
            ),
            Backend::Remote { url, creds, .. } => {
                let opts = transport::FetchOptions {
                    deadline: inner.opts.network.deadline(),
                    insecure_skip_tls_verify: inner.opts.insecure_skip_tls_verify,
                };
                repo::fetch(repo, url, &inner.spec.branch, creds, &opts, &inner.secrets)
                    .map_err(|e| inner.access_error(e, &opts, "fetch"))
            }
        }
    }

    /// One attempt up to (not including) publishing. Blocking.
    fn prepare_blocking(
        inner: &Inner,
        changes: &ChangeSet,
        attempt: u32,
    ) -> Result<Prepared, Error> {
        let repo = inner.repo();
        // First attempt: a recently verified head is used without fetching (the push lease
        // protects it); a retry after a lost race always fetches.
        let trusted = if attempt <= 1 {
            inner.trusted_head().map(|(head, _)| head)
        } else {
            None
        };
        let checked = if attempt <= 1 && trusted.is_none() {
            inner.take_checked_head()
        } else {
            None
        };
        let head = match (trusted, checked) {
            (Some(h), _) => Some(h),
            (None, Some(h)) => h,
            (None, None) => Self::head_blocking(inner, &repo)?,
        };
        let found = ApplyOutcome {
            head: head.map(|h| h.to_string()),
            ..ApplyOutcome::default()
        };
        // Known to match its index: verified in this process, or (its listing not in memory)
        // by the last process, which recorded it in the clone.
        let known = inner.take_verified(head).or_else(|| {
            let h = head?;
            (inner.persisted_head() == Some(h)).then(|| Verified {
                head: h,
                listing: None,
                seen: std::time::Instant::now(),
            })
        });
        let (files, index, base_tree) = match known {
            Some(mut v) if changes.writes.is_empty() && changes.removals.is_empty() => {
                if trusted.is_none() {
                    v.seen = std::time::Instant::now(); // just fetched: still at this head
                }
                inner.set_verified(Some(v));
                return Ok(Prepared::NoChange(found));
            }
            Some(Verified {
                head: h,
                listing: Some((files, index)),
                ..
            }) => {
                let tree = repo
                    .find_commit(h)
                    .and_then(|c| c.tree_id().map(|t| t.detach()))
                    .map_err(repo::repo_err(&inner.secrets))?;
                (files, index, tree)
            }
            _ => {
                let (files, tree) = repo::head_files(&repo, head, &inner.secrets)?;
                let index = adopt::load_index(inner, &repo, head, &files)?;
                (files, index, tree)
            }
        };
        let p = plan::plan(&files, index, changes, |oid| repo.has_object(oid))?;
        let mut outcome = ApplyOutcome {
            written: p.written,
            deleted: p.deleted,
            unchanged: p.unchanged,
            drift: p.drift.clone(),
            ..found
        };
        if p.is_empty() {
            if p.drift.is_empty()
                && let Some(h) = head
            {
                inner.set_verified(Some(Verified {
                    head: h,
                    // An empty plan's index is the index it was given.
                    listing: Some((files, p.index)),
                    seen: std::time::Instant::now(),
                }));
            }
            return Ok(Prepared::NoChange(outcome));
        }
        let msg = message::render(&changes.meta, &p);
        match repo::build_commit(
            &repo,
            base_tree,
            head,
            &p,
            msg,
            &inner.spec.git_author,
            inner.opts.signing.as_deref(),
            &inner.secrets,
        )? {
            None => {
                outcome.written = 0;
                outcome.deleted = 0;
                Ok(Prepared::NoChange(outcome))
            }
            Some((commit, _objects)) => {
                let mut files = files;
                for path in &p.removes {
                    files.remove(path);
                }
                for u in &p.upserts {
                    files.insert(u.path.to_string(), u.oid);
                }
                let next = Verified {
                    head: commit,
                    listing: Some((files, p.index)),
                    seen: std::time::Instant::now(),
                };
                Ok(Prepared::Commit {
                    commit,
                    head,
                    outcome,
                    next,
                })
            }
        }
    }

    async fn attempt(
        &self,
        changes: Arc<ChangeSet>,
        attempt: u32,
    ) -> Result<ApplyOutcome, AttemptError> {
        let inner = self.inner.clone();
        let t_prepare = std::time::Instant::now();
        let prepared = blocking(move || Self::prepare_blocking(&inner, &changes, attempt)).await?;
        let prepare_s = t_prepare.elapsed().as_secs_f64();
        let (commit, head, mut outcome, next) = match prepared {
            Prepared::NoChange(o) => return Ok(o),
            Prepared::Commit {
                commit,
                head,
                outcome,
                next,
            } => (commit, head, outcome, next),
        };
        if let Some(hook) = self.inner.opts.before_publish.clone() {
            blocking(move || {
                hook(attempt);
                Ok(())
            })
            .await?;
        }
        let branch_ref = self.branch_ref();
        let t_publish = std::time::Instant::now();
        match &self.inner.backend {
            Backend::Local => {
                let inner = self.inner.clone();
                let cas = blocking(move || {
                    let repo = inner.repo();
                    repo::cas_ref(
                        &repo,
                        &branch_ref,
                        head,
                        commit,
                        "promised: apply",
                        &inner.secrets,
                    )
                })
                .await?;
                if let CasOutcome::Stale = cas {
                    return Err(AttemptError::Stale);
                }
                crate::crash::point("git-pushed");
            }
            Backend::Remote { url, env, .. } => {
                let inner = self.inner.clone();
                let in_process = blocking(move || Ok(inner.push_in_process(head, commit))).await?;
                let res = match in_process {
                    send_pack::InProcess::Done(res) => {
                        self.inner.pushes.in_process.fetch_add(1, Ordering::Relaxed);
                        res
                    }
                    send_pack::InProcess::UseCli(why) => {
                        tracing::debug!(store = %self.inner.url_display, why, "pushing with the git CLI");
                        self.inner.pushes.cli.fetch_add(1, Ordering::Relaxed);
                        push::push(
                            &self.inner.repo_path,
                            url,
                            &self.inner.spec.branch,
                            head,
                            commit,
                            env,
                            &self.inner.secrets,
                            &self.inner.opts.network,
                        )
                        .await
                        .map_err(|e| Error::Transport {
                            url_without_secrets: self.inner.url_display.clone(),
                            message: format!("cannot run git push: {e}"),
                        })?
                    }
                };
                self.push_result(res, "push")?;
                crate::crash::point("git-pushed");
                // Keep the tracking ref (and so our objects) current for the next negotiation.
                let inner = self.inner.clone();
                let tracking = format!("refs/remotes/origin/{}", self.inner.spec.branch);
                blocking(move || {
                    let repo = inner.repo();
                    repo::set_ref(&repo, &tracking, commit, &inner.secrets)
                })
                .await?;
            }
        }
        tracing::debug!(
            store = %self.inner.url_display,
            prepare_s,
            publish_s = t_publish.elapsed().as_secs_f64(),
            "state store commit published"
        );
        let inner = self.inner.clone();
        let env = match &self.inner.backend {
            Backend::Remote { env, .. } => env.clone(),
            Backend::Local => Credentials::None.git_env(false, &self.inner.opts.network),
        };
        self.inner.set_verified(Some(next));
        blocking(move || {
            adopt::record_applied(&inner.repo(), commit, &inner.secrets, &inner.url_display);
            inner.maybe_gc(&env);
            Ok(())
        })
        .await?;
        outcome.version = Some(commit.to_string());
        outcome.head = outcome.version.clone();
        Ok(outcome)
    }

    /// `operation` names the push in transport errors.
    fn push_result(&self, res: PushOutcome, operation: &str) -> Result<(), AttemptError> {
        let url = self.inner.url_display.clone();
        match res {
            PushOutcome::Pushed => Ok(()),
            PushOutcome::Stale => Err(AttemptError::Stale),
            PushOutcome::Rejected(server_message) => Err(Error::Rejected { server_message }.into()),
            PushOutcome::Auth(message) => Err(Error::Auth {
                url_without_secrets: url,
                message,
            }
            .into()),
            PushOutcome::Failed(message) => Err(Error::Transport {
                url_without_secrets: url,
                message: format!("{operation}: {message}"),
            }
            .into()),
        }
    }
}

#[async_trait]
impl StateStore for GitStateStore {
    fn quiet_for(&self) -> Option<std::time::Duration> {
        self.inner.trusted_head().map(|(_, left)| left)
    }

    async fn check(&self) -> Result<(), Error> {
        let _guard = self.inner.lock.lock().await;
        let inner = self.inner.clone();
        match &self.inner.backend {
            Backend::Local => {
                blocking(move || {
                    let repo = inner.repo();
                    repo::read_ref(
                        &repo,
                        &format!("refs/heads/{}", inner.spec.branch),
                        &inner.secrets,
                    )?;
                    // Kratix writes nothing in its check either; we prove we can create files
                    // where objects and refs go.
                    for dir in ["objects", "refs/heads"] {
                        let d = repo.path().join(dir);
                        // `.lock` suffix: git never reads such a file as a ref or object.
                        let probe =
                            d.join(format!(".promised-write-check-{}.lock", std::process::id()));
                        std::fs::write(&probe, b"").map_err(|e| Error::io(&probe, e))?;
                        std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))?;
                    }
                    Ok(())
                })
                .await
            }
            Backend::Remote { .. } => {
                // The fetch checks read access and credentials; the handshake with the
                // server's receive-pack service checks write access, as Kratix's empty `git
                // push` does, in process (see `access`).
                blocking(move || {
                    let repo = inner.repo();
                    let head = Self::head_blocking(&inner, &repo)?;
                    let Backend::Remote { url, creds, .. } = &inner.backend else {
                        return Ok(());
                    };
                    let opts = transport::FetchOptions {
                        deadline: inner.opts.network.deadline(),
                        insecure_skip_tls_verify: inner.opts.insecure_skip_tls_verify,
                    };
                    access::check_receive_pack(&repo, url, creds, &opts, &inner.secrets)
                        .map_err(|e| inner.access_error(e, &opts, "write-permission check"))?;
                    *inner
                        .checked_head
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((head, std::time::Instant::now()));
                    Ok(())
                })
                .await
            }
        }
    }

    async fn owned(&self, prefix: &str) -> Result<Vec<IndexEntry>, Error> {
        let _guard = self.inner.lock.lock().await;
        let inner = self.inner.clone();
        let prefix = prefix.trim_matches('/').to_owned();
        blocking(move || {
            let repo = inner.repo();
            let head = Self::head_blocking(&inner, &repo)?;
            let (files, _) = repo::head_files(&repo, head, &inner.secrets)?;
            let mut entries =
                plan::load_index(&files, |oid| repo::read_blob(&repo, oid, &inner.secrets))?;
            entries.retain(|e| {
                prefix.is_empty() || e.path == prefix || e.path.starts_with(&format!("{prefix}/"))
            });
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(entries)
        })
        .await
    }

    async fn read_files(
        &self,
        prefix: &str,
        suffixes: &[&str],
    ) -> Result<Vec<crate::StoredFile>, Error> {
        self.read_files_at_head(prefix, suffixes).await
    }

    async fn apply(&self, changes: &ChangeSet) -> Result<ApplyOutcome, Error> {
        self.apply_shared(Arc::new(changes.clone())).await
    }

    async fn apply_shared(&self, changes: Arc<ChangeSet>) -> Result<ApplyOutcome, Error> {
        let _guard = self.inner.lock.lock().await;
        let attempts = AtomicU32::new(0);
        let max = self.inner.opts.max_push_attempts;
        let run = || {
            let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            self.attempt(changes.clone(), n)
        };
        let res = run
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(max.saturating_sub(1) as usize)
                    .with_jitter(),
            )
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, AttemptError::Stale))
            .notify(|_, d| tracing::info!(url = %self.inner.url_display, delay = ?d, "branch moved; rebuilding the change on the new head"))
            .await;
        let used = attempts.load(Ordering::SeqCst);
        match res {
            Ok(mut o) => {
                o.conflicts_retried = used.saturating_sub(1);
                if !o.drift.is_empty() {
                    tracing::warn!(url = %self.inner.url_display, drift = o.drift.len(), "restored files changed outside promised");
                }
                Ok(o)
            }
            Err(AttemptError::Stale) => Err(Error::Conflict { attempts: used }),
            Err(AttemptError::Fatal(e)) => Err(e),
        }
    }
}
