//! Reading the files of a config repo: from a directory, or from a Git commit's tree
//! (with gix, without a checkout).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use statestores::NetworkTimeouts;
use statestores::git::transport::{FetchOptions, connect_fetch, describe, error_text};
use thiserror::Error;

/// Where a config repo comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory on disk; every matching file under it is read.
    Dir(PathBuf),
    /// A Git repository and a ref (branch, tag, commit or `HEAD`). `url` is a local path
    /// (work tree or bare repository) or anything gix can fetch (`file://`, `git://`,
    /// `https://`, ssh). Remote repositories are fetched into a bare cache first.
    Git {
        /// Repository location.
        url: String,
        /// Revision to read, e.g. `main`, `refs/tags/v1`, a commit id.
        reference: String,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Dir(p) => write!(f, "{}", p.display()),
            Source::Git { url, reference } => write!(f, "{url}@{reference}"),
        }
    }
}

/// Which files of the repo are read. Globs match repository-relative, `/`-separated paths
/// with shell semantics: `*` stays within one directory, `**` crosses directories
/// (`requests/*.yaml` does not read `requests/drafts/a.yaml`; `requests/**` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFilter {
    /// Globs a repository-relative path must match (default `**/*.yaml`, `**/*.yml`).
    pub include: Vec<String>,
    /// Globs that exclude a path even when included (default `.git/**`).
    pub exclude: Vec<String>,
}

impl Default for FileFilter {
    fn default() -> Self {
        FileFilter {
            include: vec!["**/*.yaml".into(), "**/*.yml".into()],
            exclude: vec![".git/**".into(), "**/.git/**".into()],
        }
    }
}

/// A compiled [`FileFilter`].
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    include: GlobSet,
    exclude: GlobSet,
}

impl FileFilter {
    /// Compiles the globs. Errors name the bad glob.
    pub fn compile(&self) -> Result<CompiledFilter, SourceError> {
        let build = |globs: &[String]| -> Result<GlobSet, SourceError> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                let glob = GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| SourceError::Glob {
                        glob: g.clone(),
                        message: e.kind().to_string(),
                    })?;
                b.add(glob);
            }
            b.build().map_err(|e| SourceError::Glob {
                glob: globs.join(","),
                message: e.to_string(),
            })
        };
        Ok(CompiledFilter {
            include: build(&self.include)?,
            exclude: build(&self.exclude)?,
        })
    }
}

impl CompiledFilter {
    /// True when the repository-relative path is read.
    pub fn matches(&self, rel: &str) -> bool {
        self.include.is_match(rel) && !self.exclude.is_match(rel)
    }
}

/// One file read from the repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFile {
    /// Repository-relative path, `/`-separated.
    pub path: String,
    /// File contents. Empty when the reader was told it already has this blob
    /// ([`GitRepo::read_commit`]'s `want`); `oid` then names the content.
    pub bytes: Vec<u8>,
    /// The executable bit (Git mode 100755, or any execute bit on disk).
    pub executable: bool,
    /// Git blob id of the content (computed the same way for directory sources), the key
    /// of the loader's parse cache.
    pub oid: gix::ObjectId,
}

/// Git blob id (SHA-1) of `bytes`, as `git hash-object` computes it.
pub fn blob_id(bytes: &[u8]) -> gix::ObjectId {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, bytes)
        .expect("sha1 hashing of an in-memory buffer cannot fail")
}

/// Files read from a source, plus the commit they came from (Git sources only).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Matching files, sorted by path.
    pub files: Vec<RawFile>,
    /// Full commit id for Git sources.
    pub commit: Option<String>,
    /// Matching files that could not be read (path, error): each becomes a file diagnostic,
    /// and the objects it held at the last good load are kept ([`crate::reconcile::held`]).
    pub unreadable: Vec<(String, String)>,
}

/// Why a config repo could not be read at all. Problems with single files are diagnostics,
/// not errors.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The directory does not exist or cannot be listed.
    #[error("config directory {path}: {message}")]
    Dir {
        /// The directory.
        path: String,
        /// What failed.
        message: String,
    },
    /// An include/exclude glob is invalid.
    #[error("invalid glob {glob:?}: {message}")]
    Glob {
        /// The glob.
        glob: String,
        /// Why.
        message: String,
    },
    /// The Git repository cannot be opened or fetched.
    #[error("git repository {url}: {message}")]
    GitRepo {
        /// Repository location.
        url: String,
        /// What failed.
        message: String,
    },
    /// Verification is on and the commit does not verify, with no earlier verified commit to
    /// keep applying ([`super::verify`]).
    #[error("git repository {url}: {refused}; nothing applied")]
    Unverified {
        /// Repository location.
        url: String,
        /// The commit and why.
        refused: super::verify::Refused,
    },
    /// The ref does not resolve to a commit.
    #[error("git repository {url}: ref {reference:?} not found: {message}")]
    GitRef {
        /// Repository location.
        url: String,
        /// The ref asked for.
        reference: String,
        /// Details.
        message: String,
    },
}

/// Reads every matching file of `source`. `cache_dir` holds bare clones of remote Git
/// repositories (a temporary directory is used when `None`).
pub fn read(
    source: &Source,
    filter: &FileFilter,
    cache_dir: Option<&Path>,
) -> Result<Snapshot, SourceError> {
    let compiled = filter.compile()?;
    match source {
        Source::Dir(dir) => read_dir(dir, &compiled),
        Source::Git { url, reference } => read_git(url, reference, &compiled, cache_dir),
    }
}

/// Reads every file under `dir` that `filter` matches, sorted by path.
///
/// Errors: [`SourceError::Dir`] when `dir` or a file cannot be read.
pub fn read_dir(dir: &Path, filter: &CompiledFilter) -> Result<Snapshot, SourceError> {
    let meta = std::fs::metadata(dir).map_err(|e| SourceError::Dir {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(SourceError::Dir {
            path: dir.display().to_string(),
            message: "not a directory".into(),
        });
    }
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry = entry.map_err(|e| SourceError::Dir {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if !filter.matches(&rel) {
            continue;
        }
        let bytes = match std::fs::read(entry.path()) {
            Ok(b) => b,
            Err(e) => {
                // One unreadable file is that file's problem, not the whole repo's.
                unreadable.push((rel, format!("cannot read the file: {e}")));
                continue;
            }
        };
        let executable = {
            use std::os::unix::fs::PermissionsExt;
            entry
                .metadata()
                .map(|m| m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        };
        files.push(RawFile {
            path: rel,
            oid: blob_id(&bytes),
            bytes,
            executable,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Snapshot {
        files,
        commit: None,
        unreadable,
    })
}

fn read_git(
    url: &str,
    reference: &str,
    filter: &CompiledFilter,
    cache_dir: Option<&Path>,
) -> Result<Snapshot, SourceError> {
    let repo = GitRepo::open(url, cache_dir, &NetworkTimeouts::default())?;
    let commit = repo.resolve(reference)?;
    let files = repo.read_commit(commit, filter, |_| true)?;
    Ok(Snapshot {
        files,
        commit: Some(commit.to_string()),
        unreadable: Vec::new(),
    })
}

/// A Git config source, fetched (remote URLs) into a bare cache and read at a commit.
pub struct GitRepo {
    url: String,
    repo: gix::Repository,
    _tmp: Option<tempfile::TempDir>,
}

impl GitRepo {
    /// Opens `url`: a local repository in place, anything else fetched into
    /// `<cache_dir>/<name>` (a temporary directory when `cache_dir` is `None`), within
    /// `net` (connect, read and whole-fetch timeouts).
    ///
    /// Errors: [`SourceError::GitRepo`] (credentials redacted from the URL; a fetch error
    /// starts with `fetch:` and names the server).
    pub fn open(
        url: &str,
        cache_dir: Option<&Path>,
        net: &NetworkTimeouts,
    ) -> Result<GitRepo, SourceError> {
        let repo_err = |m: String| SourceError::GitRepo {
            url: statestores::git::config::redact_url(url),
            message: m,
        };
        let local = Path::new(url);
        let mut tmp = None;
        let repo = if !url.contains("://") && local.exists() {
            gix::open(local).map_err(|e| repo_err(e.to_string()))?
        } else {
            let dir = match cache_dir {
                Some(d) => d.join(cache_name(url)),
                None => {
                    let t = tempfile::tempdir().map_err(|e| repo_err(e.to_string()))?;
                    let d = t.path().join("repo.git");
                    tmp = Some(t);
                    d
                }
            };
            fetch_bare(url, &dir, net).map_err(repo_err)?
        };
        Ok(GitRepo {
            url: url.to_string(),
            repo,
            _tmp: tmp,
        })
    }

    fn err(&self, message: String) -> SourceError {
        SourceError::GitRepo {
            url: self.display_url(),
            message,
        }
    }

    /// The repository URL with any credentials removed (for messages).
    pub fn display_url(&self) -> String {
        statestores::git::config::redact_url(&self.url)
    }

    /// The commit `reference` (branch, tag, commit id, `HEAD`) points at.
    ///
    /// Errors: [`SourceError::GitRef`] when it does not resolve to a commit.
    pub fn resolve(&self, reference: &str) -> Result<gix::ObjectId, SourceError> {
        let candidates = [
            reference.to_string(),
            format!("refs/remotes/origin/{reference}"),
            format!("refs/heads/{reference}"),
        ];
        let mut last = String::new();
        // A ref that exists but is not a commit keeps its own error.
        let mut found = false;
        for c in &candidates {
            match self.repo.rev_parse_single(c.as_str()) {
                Ok(id) => match id.object().map(|o| o.peel_to_commit()) {
                    Ok(Ok(cm)) => return Ok(cm.id),
                    Ok(Err(e)) => (found, last) = (true, e.to_string()),
                    Err(e) => (found, last) = (true, e.to_string()),
                },
                Err(e) => {
                    if last.is_empty() {
                        last = e.to_string();
                    }
                }
            }
        }
        let message = if found {
            last.clone()
        } else {
            let head = self.repo.head_name().ok().flatten();
            missing_ref(
                reference,
                head.as_ref().map(|h| h.shorten().to_string()),
                self.branches(),
            )
        };
        tracing::debug!(url = %self.display_url(), reference, error = %last, "ref not found");
        Err(SourceError::GitRef {
            url: statestores::git::config::redact_url(&self.url),
            reference: reference.to_string(),
            message,
        })
    }

    /// The repository's Git directory (what `git --git-dir` takes).
    pub fn git_dir(&self) -> &Path {
        self.repo.git_dir()
    }

    /// `Name <email>` of `commit`'s author; `None` when the commit cannot be read.
    pub fn author(&self, commit: gix::ObjectId) -> Option<String> {
        let c = self.repo.find_commit(commit).ok()?;
        let a = c.author().ok()?;
        Some(format!("{} <{}>", a.name, a.email))
    }

    /// The repository's branch names (`refs/heads/*`, which a fetch mirrors), sorted.
    fn branches(&self) -> Vec<String> {
        branches_of(&self.repo)
    }

    /// The id of the tree at each directory of `dirs` in `commit` (`""`: the commit's root
    /// tree), in order; `None` where the commit has no directory. Errors: the commit or one of
    /// the trees on a path cannot be read.
    pub fn trees_at(
        &self,
        commit: gix::ObjectId,
        dirs: &[String],
    ) -> Result<Vec<Option<gix::ObjectId>>, SourceError> {
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(|e| self.err(e.to_string()))?;
        let at = |dir: &str| {
            if dir.is_empty() {
                return Ok(Some(tree.id));
            }
            let entry = tree
                .lookup_entry_by_path(dir)
                .map_err(|e| self.err(format!("{dir}/: {e}")))?;
            Ok(entry.filter(|e| e.mode().is_tree()).map(|e| e.object_id()))
        };
        dirs.iter().map(|d| at(d)).collect()
    }

    /// The blobs of `commit`'s tree that `filter` matches, sorted by path. Blobs for which
    /// `want(oid)` is false are listed without reading them (`bytes` empty).
    pub fn read_commit(
        &self,
        commit: gix::ObjectId,
        filter: &CompiledFilter,
        want: impl Fn(&gix::ObjectId) -> bool,
    ) -> Result<Vec<RawFile>, SourceError> {
        self.read_commit_with(commit, filter, want, &mut None)
    }

    /// [`GitRepo::read_commit`] reusing `listing`, the matching files of the tree read last
    /// time: a subtree whose id is unchanged is not decoded, joined into paths or matched
    /// against the globs again (at 10,000 request files, a commit that changes one file
    /// walks only the trees on that file's path). `listing` is replaced by this commit's;
    /// it must have been built with the same `filter`.
    pub fn read_commit_with(
        &self,
        commit: gix::ObjectId,
        filter: &CompiledFilter,
        want: impl Fn(&gix::ObjectId) -> bool,
        listing: &mut Option<TreeListing>,
    ) -> Result<Vec<RawFile>, SourceError> {
        let commit = self
            .repo
            .find_commit(commit)
            .map_err(|e| self.err(e.to_string()))?;
        let tree = commit
            .tree_id()
            .map_err(|e| self.err(e.to_string()))?
            .detach();
        let root = self.list_tree(tree, "", filter, listing.take())?;
        let mut listed = Vec::new();
        root.collect(&mut listed);
        let mut files = Vec::with_capacity(listed.len());
        for l in listed {
            let bytes = if want(&l.oid) {
                self.repo
                    .find_object(l.oid)
                    .map_err(|err| self.err(format!("{}: {err}", l.path)))?
                    .detach()
                    .data
            } else {
                Vec::new()
            };
            files.push(RawFile {
                path: l.path.clone(),
                bytes,
                executable: l.executable,
                oid: l.oid,
            });
        }
        *listing = Some(root);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// The listing of tree `oid` at `prefix`: `prev` itself when it is of the same tree,
    /// else built from the tree's entries, reusing `prev`'s unchanged subtrees.
    fn list_tree(
        &self,
        oid: gix::ObjectId,
        prefix: &str,
        filter: &CompiledFilter,
        prev: Option<TreeListing>,
    ) -> Result<TreeListing, SourceError> {
        let mut prev_dirs = match prev {
            Some(p) if p.oid == oid => return Ok(p),
            Some(p) => p.dirs,
            None => BTreeMap::new(),
        };
        let tree = self
            .repo
            .find_tree(oid)
            .map_err(|e| self.err(format!("{prefix}/: {e}")))?;
        let decoded = tree
            .decode()
            .map_err(|e| self.err(format!("{prefix}/: {e}")))?;
        let mut node = TreeListing {
            oid,
            files: Vec::new(),
            dirs: BTreeMap::new(),
        };
        for e in &decoded.entries {
            let name = e.filename.to_string();
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if e.mode.is_tree() {
                let child =
                    self.list_tree(e.oid.to_owned(), &path, filter, prev_dirs.remove(&name))?;
                node.dirs.insert(name, child);
            } else if e.mode.is_blob() && filter.matches(&path) {
                node.files.push(ListedFile {
                    path,
                    oid: e.oid.to_owned(),
                    executable: e.mode.is_executable(),
                });
            }
        }
        Ok(node)
    }
}

/// The files of one Git tree that a filter matched, with the listings of its subtrees: what
/// [`GitRepo::read_commit_with`] keeps between reads.
#[derive(Debug, Clone)]
pub struct TreeListing {
    oid: gix::ObjectId,
    files: Vec<ListedFile>,
    dirs: BTreeMap<String, TreeListing>,
}

#[derive(Debug, Clone)]
struct ListedFile {
    path: String,
    oid: gix::ObjectId,
    executable: bool,
}

impl TreeListing {
    fn collect<'a>(&'a self, out: &mut Vec<&'a ListedFile>) {
        out.extend(&self.files);
        for d in self.dirs.values() {
            d.collect(out);
        }
    }
}

/// Fetches `url` into a bare repository at `dir` (created first when missing, its `HEAD`
/// then following the remote's) and opens it. Every step is bounded by `net`
/// ([`statestores::net`]); an error starts with `fetch:`.
fn fetch_bare(url: &str, dir: &Path, net: &NetworkTimeouts) -> Result<gix::Repository, String> {
    let fresh = !dir.join("HEAD").exists();
    if fresh {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        gix::init_bare(dir).map_err(|e| e.to_string())?;
    }
    let repo = gix::open(dir).map_err(|e| e.to_string())?;
    let opts = FetchOptions::new(net);
    let fail = |e: gix::Error| describe("fetch", &opts.deadline, &error_text(&e));
    let remote = repo
        .remote_at(url)
        .map_err(fail)?
        .with_refspecs(
            ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            gix::remote::Direction::Fetch,
        )
        .map_err(fail)?;
    let alarm = statestores::net::Alarm::start(&opts.deadline);
    // The remote's HEAD is listed (not stored) so a new cache's HEAD can follow it, as a
    // clone's does.
    let head_spec = gix::refspec::parse("HEAD".into(), gix::refspec::parse::Operation::Fetch)
        .map_err(|e| e.to_string())?
        .to_owned();
    let outcome = connect_fetch(&remote, &opts)
        .map_err(fail)?
        .prepare_fetch(
            gix::progress::Discard,
            gix::remote::ref_map::Options {
                extra_refspecs: vec![head_spec],
                ..Default::default()
            },
        )
        .map_err(fail)?
        .receive(gix::progress::Discard, alarm.flag())
        .map_err(fail)?;
    drop(alarm);
    // HEAD follows the remote's (also when a first fetch failed after the cache was created).
    {
        let head = outcome
            .ref_map
            .remote_refs
            .iter()
            .find_map(remote_head_target)
            .cloned();
        let current = repo.head_name().ok().flatten();
        if let Some(target) = head
            && current
                .as_ref()
                .is_none_or(|c| c.as_bstr() != target.as_slice())
        {
            use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit};
            let name = gix::refs::FullName::try_from(target).map_err(|e| e.to_string())?;
            repo.edit_reference(RefEdit {
                change: Change::Update {
                    log: LogChange::default(),
                    expected: PreviousValue::Any,
                    new: gix::refs::Target::Symbolic(name),
                },
                name: "HEAD"
                    .try_into()
                    .map_err(|e: gix::refs::name::Error| e.to_string())?,
                deref: false,
            })
            .map_err(|e| e.to_string())?;
        }
    }
    // Every fetch with new objects adds a pack; a daemon fetches for every config commit.
    if statestores::git::gc_if_needed(dir, &[]) {
        return gix::open(dir).map_err(|e| e.to_string());
    }
    Ok(repo)
}

/// `repo`'s branch names (`refs/heads/*`), sorted.
fn branches_of(repo: &gix::Repository) -> Vec<String> {
    let mut names: Vec<String> = repo
        .references()
        .ok()
        .and_then(|r| {
            r.local_branches().ok().map(|it| {
                it.filter_map(Result::ok)
                    .map(|r| r.name().shorten().to_string())
                    .collect()
            })
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Why `reference` does not resolve, and what to use instead: the branch `HEAD` names (when
/// `reference` is `HEAD`) and up to five of the repository's `branches` (sorted), or that it
/// has none.
fn missing_ref(reference: &str, head: Option<String>, branches: Vec<String>) -> String {
    if branches.is_empty() {
        return "the repository has no branches (nothing was pushed to it)".to_string();
    }
    let mut listed = branches
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if branches.len() > 5 {
        listed.push_str(&format!(", … ({} in all)", branches.len()));
    }
    let what = match head {
        Some(head) if reference == "HEAD" => {
            format!("HEAD names branch {head:?}, which does not exist")
        }
        _ => "no such branch, tag or commit".to_string(),
    };
    format!("{what}; branches: {listed}; choose one with --ref <branch>")
}

/// A directory name for the cache of `url`: a readable tail plus a hash of the whole URL.
fn cache_name(url: &str) -> String {
    use sha2::Digest;
    let tail: String = url
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("repo")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .take(40)
        .collect();
    let h = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..6]);
    format!("{tail}-{h}")
}

/// The commit a ref points at, checked as cheaply as possible: a local repository's ref is
/// read directly; a remote is asked for its refs only (`ls-refs`, no pack is downloaded),
/// through the bare cache that [`read`] created under `cache_dir`. Used by the daemon's poller.
///
/// `net` bounds the ref listing as it bounds a fetch; an error starts with `list refs:`.
pub fn peek_ref(
    url: &str,
    reference: &str,
    cache_dir: &Path,
    net: &NetworkTimeouts,
) -> Result<String, SourceError> {
    let repo_err = |m: String| SourceError::GitRepo {
        url: statestores::git::config::redact_url(url),
        message: m,
    };
    let local = Path::new(url);
    if !url.contains("://") && local.exists() {
        let repo = gix::open(local).map_err(|e| repo_err(e.to_string()))?;
        for c in [reference.to_string(), format!("refs/heads/{reference}")] {
            if let Ok(id) = repo.rev_parse_single(c.as_str()) {
                return Ok(id.detach().to_string());
            }
        }
        let head = repo.head_name().ok().flatten();
        return Err(SourceError::GitRef {
            url: statestores::git::config::redact_url(url),
            reference: reference.into(),
            message: missing_ref(
                reference,
                head.as_ref().map(|h| h.shorten().to_string()),
                branches_of(&repo),
            ),
        });
    }
    // A repository of its own: the config cache is only ever written by `read`.
    let cache = cache_dir.join(format!("{}.peek", cache_name(url)));
    let repo = if cache.join("HEAD").exists() {
        gix::open(&cache).map_err(|e| repo_err(e.to_string()))?
    } else {
        std::fs::create_dir_all(&cache).map_err(|e| repo_err(e.to_string()))?;
        gix::init_bare(&cache).map_err(|e| repo_err(e.to_string()))?
    };
    let remote = repo
        .remote_at(url)
        .map_err(|e| repo_err(e.to_string()))?
        .with_refspecs(
            [
                "+refs/heads/*:refs/remotes/peek/*",
                "+HEAD:refs/remotes/peek/HEAD",
            ],
            gix::remote::Direction::Fetch,
        )
        .map_err(|e| repo_err(e.to_string()))?;
    let opts = FetchOptions::new(net);
    let fail = |e: gix::Error| repo_err(describe("list refs", &opts.deadline, &error_text(&e)));
    let (map, _) = connect_fetch(&remote, &opts)
        .map_err(fail)?
        .ref_map(gix::progress::Discard, Default::default())
        .map_err(fail)?;
    let wanted = if reference == "HEAD" {
        "HEAD".to_string()
    } else {
        format!("refs/heads/{reference}")
    };
    for r in &map.remote_refs {
        let (name, oid, peeled) = r.unpack();
        if (name == wanted.as_str() || name == reference)
            && let Some(id) = peeled.or(oid)
        {
            return Ok(id.to_string());
        }
    }
    // A commit id never moves.
    if reference.len() == 40 && reference.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(reference.to_string());
    }
    let mut head = None;
    let mut branches = Vec::new();
    for r in &map.remote_refs {
        if let Some(target) = remote_head_target(r) {
            let t = target.to_string();
            head = Some(t.strip_prefix("refs/heads/").unwrap_or(&t).to_string());
        } else if let Some(b) = r.unpack().0.to_string().strip_prefix("refs/heads/") {
            branches.push(b.to_string());
        }
    }
    branches.sort();
    Err(SourceError::GitRef {
        url: statestores::git::config::redact_url(url),
        reference: reference.into(),
        message: format!(
            "not among the remote's refs: {}",
            missing_ref(reference, head, branches)
        ),
    })
}

/// The ref a remote's `HEAD` names (`refs/heads/main`), when `r` is that symbolic (or unborn)
/// `HEAD` of a ref advertisement.
fn remote_head_target(r: &gix::protocol::handshake::Ref) -> Option<&gix::bstr::BString> {
    match r {
        gix::protocol::handshake::Ref::Symbolic {
            full_ref_name,
            target,
            ..
        }
        | gix::protocol::handshake::Ref::Unborn {
            full_ref_name,
            target,
        } if full_ref_name == "HEAD" => Some(target),
        _ => None,
    }
}
