//! [`Loader`]: one config source read pass after pass (fetch, verification, parse cache,
//! Promise folder exports).

use std::path::{Path, PathBuf};

use super::*;

/// A config repo read by a [`Loader`].
#[derive(Debug)]
pub struct Loaded {
    /// The classified objects.
    pub objects: Objects,
    /// Where the Promise folders are on disk (the directory itself for directory sources).
    pub root: PathBuf,
}

/// Reads one config source pass after pass, reusing what did not change: a Git source is
/// fetched into a bare cache, unchanged blobs are neither read nor parsed again
/// ([`ParseCache`]), and only Promise folders are exported for pipelines (into
/// `<checkouts>/<commit>`, of which the newest two are kept, so a delete pipeline of a
/// Promise removed by the latest commit still finds its scripts in the previous one).
pub struct Loader {
    source: Source,
    filter: source::CompiledFilter,
    cache_dir: Option<PathBuf>,
    checkouts: Option<PathBuf>,
    parsed: ParseCache,
    fetched: Option<(GitRepo, gix::ObjectId)>,
    /// The file listing of the last commit read (unchanged subtrees are not walked again).
    listing: Option<source::TreeListing>,
    /// Timeouts of a remote's fetch.
    network: statestores::NetworkTimeouts,
    /// Commit verification, when on ([`verify`]).
    verifier: Option<verify::Verifier>,
    /// The last commit that verified (or was applied before verification started), and
    /// its provenance: what stays in force while newer commits are refused.
    applied: Option<(String, Provenance)>,
    /// Why the newest commit was not applied, until one verifies again.
    refused: Option<verify::Refused>,
    /// Provenance of the commit of the last [`Loader::fetch`].
    provenance: Option<Provenance>,
    /// Where the parse cache is kept between processes ([`Loader::with_parse_record`]).
    record: Option<PathBuf>,
}

impl Loader {
    /// A loader for `source`. `cache_dir` holds bare clones of remote repositories (a
    /// temporary directory when `None`); `checkouts` is where Promise folders of Git sources
    /// are exported (not at all when `None`).
    ///
    /// Errors: an invalid glob in `filter`.
    pub fn new(
        source: Source,
        filter: &FileFilter,
        cache_dir: Option<PathBuf>,
        checkouts: Option<PathBuf>,
    ) -> Result<Loader, SourceError> {
        Ok(Loader {
            source,
            filter: filter.compile()?,
            cache_dir,
            checkouts,
            parsed: ParseCache::default(),
            fetched: None,
            listing: None,
            network: statestores::NetworkTimeouts::default(),
            verifier: None,
            applied: None,
            refused: None,
            provenance: None,
            record: None,
        })
    }

    /// Applies only verified commits ([`verify`]). `last_applied` is the config commit
    /// applied before (the state directory's): under `mode: all` the commits since it are
    /// checked, and it stays in force when the first new commit is refused.
    pub fn with_verifier(
        mut self,
        verifier: verify::Verifier,
        last_applied: Option<String>,
    ) -> Loader {
        self.verifier = Some(verifier);
        self.applied = last_applied.map(|c| (c, Provenance::default()));
        self
    }

    /// Keeps the parse cache in the file `path` between processes (`promised reconcile`):
    /// read now, written after each [`Loader::load`] that parsed a file or dropped one. The
    /// daemon keeps its cache in memory instead (a write costs a pass about 10 ms at 10,000
    /// requests). See `config::parsed`.
    pub fn with_parse_record(mut self, path: PathBuf) -> Loader {
        self.parsed = ParseCache::read_record(&path);
        self.record = Some(path);
        self
    }

    /// Why the newest config commit is not applied (verification is on and it does not
    /// verify); `None` once a commit verifies.
    pub fn refused(&self) -> Option<&verify::Refused> {
        self.refused.as_ref()
    }

    /// Fetches within `network` (default: [`statestores::NetworkTimeouts::default`]).
    pub fn with_network(mut self, network: statestores::NetworkTimeouts) -> Loader {
        self.network = network;
        self
    }

    /// Fetches a Git source and returns the commit its ref points at (`None` for a
    /// directory). The next [`Loader::load`] reads that commit.
    pub fn fetch(&mut self) -> Result<Option<String>, SourceError> {
        let Source::Git { url, reference } = &self.source else {
            return Ok(None);
        };
        let repo = GitRepo::open(url, self.cache_dir.as_deref(), &self.network)?;
        let mut commit = repo.resolve(reference)?;
        let mut provenance = Provenance {
            author: repo.author(commit).unwrap_or_default(),
            signed_by: None,
        };
        if let Some(v) = &self.verifier {
            let head = commit.to_string();
            let last = self.applied.as_ref().map(|(c, _)| c.as_str());
            match v.check(repo.git_dir(), &head, last) {
                Ok(signed) => {
                    provenance.signed_by = Some(format!("{} {}", signed.signer, signed.key));
                    self.applied = Some((head, provenance.clone()));
                    self.refused = None;
                }
                Err(refused) => {
                    if self.refused.as_ref() != Some(&refused) {
                        tracing::warn!(
                            commit = %refused.commit,
                            author = %refused.author,
                            reason = %refused.reason,
                            "config commit not verified: not applied"
                        );
                    }
                    self.refused = Some(refused.clone());
                    let Some((prev, prev_provenance)) = self.applied.clone() else {
                        return Err(SourceError::Unverified {
                            url: repo.display_url(),
                            refused,
                        });
                    };
                    commit = gix::ObjectId::from_hex(prev.as_bytes()).map_err(|e| {
                        SourceError::GitRepo {
                            url: repo.display_url(),
                            message: format!("last applied commit {prev}: {e}"),
                        }
                    })?;
                    provenance = if prev_provenance.author.is_empty() {
                        Provenance {
                            author: repo.author(commit).unwrap_or_default(),
                            signed_by: None,
                        }
                    } else {
                        prev_provenance
                    };
                }
            }
        }
        self.provenance = Some(provenance);
        self.fetched = Some((repo, commit));
        Ok(Some(commit.to_string()))
    }

    /// Reads and classifies the source (for Git, the commit of the last [`Loader::fetch`],
    /// fetching first when there was none).
    pub fn load(&mut self) -> Result<Loaded, SourceError> {
        let dir = match &self.source {
            Source::Dir(d) => Some(d.clone()),
            Source::Git { .. } => None,
        };
        if let Some(dir) = dir {
            let snap = source::read_dir(&dir, &self.filter)?;
            let (docs, mut diags) = self.parse(&snap.files);
            diags.extend(
                snap.unreadable
                    .iter()
                    .map(|(path, msg)| Diagnostic::file_error(Code::Read, path, msg)),
            );
            let mut objects = classify(docs);
            objects.diagnostics.splice(0..0, diags);
            return Ok(Loaded { objects, root: dir });
        }
        if self.fetched.is_none() {
            self.fetch()?;
        }
        let (repo, commit) = self.fetched.take().expect("fetched above");
        let parsed = &self.parsed;
        let files = repo.read_commit_with(
            commit,
            &self.filter,
            |oid| !parsed.has(oid),
            &mut self.listing,
        )?;
        let (docs, diags) = self.parse(&files);
        let mut objects = classify(docs);
        objects.diagnostics.splice(0..0, diags);
        objects.commit = Some(commit.to_string());
        objects.provenance = self.provenance.clone();
        objects.history = Some(history::History {
            git_dir: repo.git_dir().to_path_buf(),
            head: commit.to_string(),
        });
        let root = match &self.checkouts {
            Some(parent) => export_promise_dirs(&repo, commit, &objects, parent)?,
            None => PathBuf::new(),
        };
        Ok(Loaded { objects, root })
    }

    /// Parses `files` through the cache, and records the cache when it is kept on disk.
    fn parse(&mut self, files: &[source::RawFile]) -> (Vec<Document>, Vec<Diagnostic>) {
        let parsed = self.parsed.parse(files);
        if let Some(path) = &self.record
            && let Err(e) = self.parsed.write_record(path)
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot record the parse cache (the next process parses every file)");
        }
        parsed
    }
}

/// Exports the folder of every Promise of `commit` to `parent/promises-<key>` and removes
/// older exports but the newest other one. The key is a hash of each exported folder's path
/// and Git tree id, so a commit that changes no Promise folder (a request edit, a README)
/// reuses the export it finds instead of writing every folder again: about 1 ms per Promise
/// on every new commit before (docs/benchmarks.md, "Fifth round").
fn export_promise_dirs(
    repo: &GitRepo,
    commit: gix::ObjectId,
    objects: &Objects,
    parent: &Path,
) -> Result<PathBuf, SourceError> {
    let io_err = |e: std::io::Error, what: &Path| SourceError::GitRepo {
        url: repo.display_url(),
        message: format!("exporting the commit to {}: {e}", what.display()),
    };
    // The folders of Promises, and of files that do not load: such a file may be a
    // `promise.yaml` whose last good version is kept (its scripts are still needed).
    let mut dirs: Vec<String> = objects
        .promises
        .iter()
        .map(|p| p.origin.file.as_str())
        .chain(unloadable_files(&objects.diagnostics).into_keys())
        .map(|file| {
            file.rsplit_once('/')
                .map(|(d, _)| d.to_string())
                .unwrap_or_default()
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let key = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (d, tree) in dirs.iter().zip(repo.trees_at(commit, &dirs)?) {
            h.update(d.as_bytes());
            h.update([0]);
            match tree {
                Some(tree) => h.update(tree.as_bytes()),
                None => h.update(b"-"),
            }
            h.update([b'\n']);
        }
        hex::encode(&h.finalize()[..16])
    };
    let root = parent.join(format!("promises-{key}"));
    if !root.is_dir() {
        let include: Vec<String> = dirs
            .iter()
            .map(|d| {
                if d.is_empty() {
                    "**".to_string()
                } else {
                    format!("{}/**", globset::escape(d))
                }
            })
            .collect();
        let files = if include.is_empty() {
            Vec::new()
        } else {
            let filter = FileFilter {
                include,
                exclude: Vec::new(),
            }
            .compile()?;
            repo.read_commit(commit, &filter, |_| true)?
        };
        let tmp = parent.join(format!(".promises-{key}.tmp"));
        export(&files, &tmp)
            .and_then(|_| std::fs::create_dir_all(&tmp))
            .and_then(|_| std::fs::rename(&tmp, &root))
            .map_err(|e| io_err(e, &root))?;
    }
    // Keep this export and the newest other one. An export is renamed out of the way before
    // it is removed, so one that a crash left half-removed is never found and reused under
    // its name (leftovers start with a dot and are removed here next time).
    if let Ok(entries) = std::fs::read_dir(parent) {
        let (mut others, leftovers): (Vec<_>, Vec<_>) = entries
            .flatten()
            .filter(|e| e.path() != root)
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .partition(|(_, p)| {
                p.file_name()
                    .is_none_or(|n| n.as_encoded_bytes().first() != Some(&b'.'))
            });
        others.sort();
        others.pop();
        for (_, p) in others.into_iter().chain(leftovers) {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let gone = if name.starts_with('.') {
                p.clone()
            } else {
                parent.join(format!(".removing-{name}"))
            };
            let removed = std::fs::rename(&p, &gone).and_then(|_| std::fs::remove_dir_all(&gone));
            if let Err(e) = removed {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove an old config export");
            }
        }
    }
    Ok(root)
}

/// Writes `files` under `dest` (created; existing content is replaced), keeping executable
/// bits, so Promise folders read from a Git commit can be mounted into pipelines.
fn export(files: &[source::RawFile], dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dest.exists() {
        std::fs::remove_dir_all(dest)?;
    }
    for f in files {
        if f.path.split('/').any(|s| s == ".." || s.is_empty()) {
            continue;
        }
        let p = dest.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, &f.bytes)?;
        let mode = if f.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
