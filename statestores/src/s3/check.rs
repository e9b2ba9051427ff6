//! The write-permission check of an S3 store ([`StateStore::check`](crate::StateStore::check)):
//! a probe object under `<spec.path>/.promised/` written with conditional PUTs, which also tells
//! whether the server honours `If-None-Match` / `If-Match` ([`S3StateStore::conditional_writes`]).

use std::sync::atomic::Ordering;

use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{COND_IGNORED, COND_OK, S3StateStore};
use crate::Error;

impl S3StateStore {
    /// [`StateStore::check`](crate::StateStore::check) without the operation timeout: the
    /// probe, the warning (or error) about ignored conditional writes, then an index read.
    pub(super) async fn check_unbounded(&self) -> Result<(), Error> {
        let honoured = self.probe_conditional().await?;
        self.inner.conditional.store(
            if honoured { COND_OK } else { COND_IGNORED },
            Ordering::Relaxed,
        );
        if !honoured {
            let msg = format!(
                "the S3 server at {} ignores conditional writes (If-None-Match / If-Match); two daemons writing this bucket could overwrite each other's ownership index",
                self.inner.display
            );
            if self.inner.opts.require_conditional_writes {
                return Err(Error::Config(msg));
            }
            tracing::warn!("{msg}");
        }
        self.load_index().await?;
        Ok(())
    }

    /// Create a probe object with `If-None-Match: *`, create it again and update it with a wrong
    /// `If-Match`, then delete it. `Ok(true)` when the server refused both conditional writes
    /// (it honours them), `Ok(false)` when it accepted either.
    ///
    /// # Errors
    /// The first failure that is not a refused precondition (auth, transport).
    async fn probe_conditional(&self) -> Result<bool, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = ObjPath::from(
            self.meta_key(&format!(
                "write-permission-check-{}-{nanos}",
                std::process::id()
            ))
            .as_str(),
        );
        let create = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let body = || PutPayload::from_static(b"promised write-permission check\n");
        let c = &self.inner.client;
        c.put_opts(&key, body(), create())
            .await
            .map_err(|e| self.map_err("write-permission check (put probe)", e))?;
        let second = c.put_opts(&key, body(), create()).await;
        let update = c
            .put_opts(
                &key,
                body(),
                PutOptions {
                    mode: PutMode::Update(UpdateVersion {
                        e_tag: Some("\"promised-no-such-etag\"".into()),
                        version: None,
                    }),
                    ..Default::default()
                },
            )
            .await;
        let cleanup = c.delete(&key).await;
        let refused = |r: &Result<object_store::PutResult, object_store::Error>| {
            matches!(
                r,
                Err(object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. })
            )
        };
        let honoured = refused(&second) && refused(&update);
        if !honoured && second.is_err() && update.is_err() {
            // A real failure (not a 412): report the first one.
            for r in [second, update] {
                if let Err(e) = r
                    && !matches!(
                        e,
                        object_store::Error::AlreadyExists { .. }
                            | object_store::Error::Precondition { .. }
                    )
                {
                    return Err(self.map_err("write-permission check (conditional put)", e));
                }
            }
        }
        cleanup.map_err(|e| self.map_err("write-permission check (delete probe)", e))?;
        Ok(honoured)
    }
}
