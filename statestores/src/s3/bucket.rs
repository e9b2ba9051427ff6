//! What the bucket holds: the ownership index object ([`S3Index`], at
//! `<spec.path>/.promised/index.json`), how it is read and written with compare-and-swap, and
//! the listing of the store's keys with their ETags (see the module docs of [`crate::s3`]).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::S3StateStore;
use crate::Error;
use crate::index::IndexEntry;

/// The index object as stored (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Index {
    /// Format version, always 1.
    pub version: u32,
    /// Content generation; increases by one per committed apply.
    pub generation: u64,
    /// Owned files, sorted by path.
    pub entries: Vec<IndexEntry>,
    /// ETag of each owned object as returned by the server when we wrote it (quotes removed).
    #[serde(default)]
    pub etags: BTreeMap<String, String>,
    /// Keys an unfinished apply may have written (before commit) or must still delete (after).
    #[serde(default)]
    pub pending: Vec<String>,
}

impl S3Index {
    fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Task(format!("cannot serialise the ownership index: {e}")))?;
        out.push(b'\n');
        Ok(out)
    }
}
/// What the bucket holds right now.
pub(super) struct Head {
    /// The ownership index as read.
    pub(super) index: S3Index,
    /// Its ETag (`None` when there is no index yet).
    pub(super) index_etag: Option<String>,
    /// key -> ETag (quotes removed), excluding our metadata keys.
    pub(super) listing: BTreeMap<String, String>,
}

/// An ETag without the weak prefix `W/` and without quotes.
pub(super) fn norm_etag(e: &str) -> String {
    e.trim_start_matches("W/").trim_matches('"').to_owned()
}

impl S3StateStore {
    /// The index object and its ETag; an empty generation-0 index and `None` when the bucket
    /// has none yet.
    ///
    /// # Errors
    /// [`Error::CorruptIndex`] when it does not parse or has another version than 1; transport
    /// and auth errors.
    pub(super) async fn load_index(&self) -> Result<(S3Index, Option<String>), Error> {
        let key = self.index_key();
        match self.inner.client.get(&ObjPath::from(key.as_str())).await {
            Ok(r) => {
                let etag = r.meta.e_tag.clone();
                let bytes = r.bytes().await.map_err(|e| self.map_err("get index", e))?;
                let idx: S3Index =
                    serde_json::from_slice(&bytes).map_err(|e| Error::CorruptIndex {
                        path: key.clone(),
                        message: e.to_string(),
                    })?;
                if idx.version != 1 {
                    return Err(Error::CorruptIndex {
                        path: key,
                        message: format!("unsupported index version {}", idx.version),
                    });
                }
                Ok((idx, etag))
            }
            Err(object_store::Error::NotFound { .. }) => Ok((
                S3Index {
                    version: 1,
                    ..Default::default()
                },
                None,
            )),
            Err(e) => Err(self.map_err("get index", e)),
        }
    }

    /// The index and a listing of every key under `spec.path` with its ETag, our metadata keys
    /// left out.
    pub(super) async fn load(&self) -> Result<Head, Error> {
        let (index, index_etag) = self.load_index().await?;
        let prefix =
            (!self.inner.prefix.is_empty()).then(|| ObjPath::from(self.inner.prefix.as_str()));
        let metas: Vec<object_store::ObjectMeta> = self
            .inner
            .client
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.map_err("list", e))?;
        let listing = metas
            .into_iter()
            .map(|m| {
                let key = m.location.as_ref().to_owned();
                (key, norm_etag(m.e_tag.as_deref().unwrap_or_default()))
            })
            .filter(|(k, _)| !self.is_meta(k))
            .collect();
        Ok(Head {
            index,
            index_etag,
            listing,
        })
    }

    /// CAS write of the index. `Ok(Some(etag))` on success, `Ok(None)` on a lost race.
    pub(super) async fn put_index(
        &self,
        idx: &S3Index,
        expected: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let mode = match expected {
            None => PutMode::Create,
            Some(e) => PutMode::Update(UpdateVersion {
                e_tag: Some(e.to_owned()),
                version: None,
            }),
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let key = ObjPath::from(self.index_key().as_str());
        match self
            .inner
            .client
            .put_opts(&key, PutPayload::from(idx.encode()?), opts)
            .await
        {
            Ok(r) => Ok(Some(r.e_tag.unwrap_or_default())),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(None),
            Err(e) => Err(self.map_err("put index", e)),
        }
    }

    /// The ETag of one object (quotes removed), `None` when it is gone.
    pub(super) async fn head_etag(&self, key: String) -> Result<(String, Option<String>), Error> {
        match self.inner.client.head(&ObjPath::from(key.as_str())).await {
            Ok(m) => {
                let e = norm_etag(m.e_tag.as_deref().unwrap_or_default());
                Ok((key, Some(e)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok((key, None)),
            Err(e) => Err(self.map_err(&format!("head {key}"), e)),
        }
    }

    /// The owned entries of the index under `prefix` (a store-relative directory, `""` for
    /// all), sorted by path.
    pub(super) async fn owned_unbounded(&self, prefix: &str) -> Result<Vec<IndexEntry>, Error> {
        let (idx, _) = self.load_index().await?;
        let prefix = prefix.trim_matches('/');
        let mut out: Vec<IndexEntry> = idx
            .entries
            .into_iter()
            .filter(|e| {
                prefix.is_empty()
                    || e.path == prefix
                    || e.path
                        .strip_prefix(prefix)
                        .is_some_and(|r| r.starts_with('/'))
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// [`crate::StateStore::read_files`]: the keys under `prefix` (store-relative, `""` for
    /// the store's whole `spec.path`) ending with one of `suffixes`, our metadata left out,
    /// each read, sorted by key.
    pub(super) async fn read_files_unbounded(
        &self,
        prefix: &str,
        suffixes: &[String],
    ) -> Result<Vec<crate::StoredFile>, Error> {
        let prefix = prefix.trim_matches('/');
        let base = if prefix.is_empty() {
            self.inner.prefix.clone()
        } else {
            prefix.to_owned()
        };
        let list = (!base.is_empty()).then(|| ObjPath::from(base.as_str()));
        let metas: Vec<object_store::ObjectMeta> = self
            .inner
            .client
            .list(list.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.map_err("list", e))?;
        let mut out = Vec::new();
        for m in metas {
            let key = m.location.as_ref().to_owned();
            if self.is_meta(&key) || !crate::wanted(&key, &base, suffixes) {
                continue;
            }
            let r = self
                .inner
                .client
                .get(&m.location)
                .await
                .map_err(|e| self.map_err(&format!("get {key}"), e))?;
            let bytes = r
                .bytes()
                .await
                .map_err(|e| self.map_err(&format!("get {key}"), e))?;
            out.push(crate::StoredFile {
                path: key,
                content: bytes.to_vec(),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}
