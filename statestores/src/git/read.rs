//! Reading files others write into a Git state store ([`crate::StateStore::read_files`]),
//! such as HealthRecords from health agents.

use super::{GitStateStore, blocking, repo};
use crate::{Error, StoredFile};

impl GitStateStore {
    /// [`crate::StateStore::read_files`]: the branch head is fetched (remote) or read (local),
    /// then every blob under `prefix` ending with one of `suffixes` is read, our
    /// `.promised/` metadata left out, sorted by path.
    pub(super) async fn read_files_at_head(
        &self,
        prefix: &str,
        suffixes: &[&str],
    ) -> Result<Vec<StoredFile>, Error> {
        let _guard = self.inner.lock.lock().await;
        let inner = self.inner.clone();
        let prefix = prefix.trim_matches('/').to_owned();
        let suffixes: Vec<String> = suffixes.iter().map(|s| s.to_string()).collect();
        blocking(move || {
            let repo = inner.repo();
            let head = Self::head_blocking(&inner, &repo)?;
            let (files, _) = repo::head_files(&repo, head, &inner.secrets)?;
            let mut out = Vec::new();
            for (path, oid) in files {
                if path.starts_with(".promised/") || !crate::wanted(&path, &prefix, &suffixes) {
                    continue;
                }
                let content = repo::read_blob(&repo, &oid, &inner.secrets)?;
                out.push(StoredFile { path, content });
            }
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
        .await
    }
}
