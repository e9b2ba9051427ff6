//! The write-permission check of an S3 store ([`StateStore::check`](crate::StateStore::check)):
//! a probe object under `<spec.path>/.promised/` written with conditional PUTs, which also tells
//! whether the server honours `If-None-Match` / `If-Match` ([`S3StateStore::conditional_writes`]).
//! A probe left by a process killed mid-check (its name carries its creation time) is deleted
//! by the next check once it is an hour old ([`PROBE_STALE_AFTER`]).

use std::sync::atomic::Ordering;

use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{COND_IGNORED, COND_OK, S3StateStore};
use crate::Error;

/// The name of every probe object starts with this (then `<pid>-<unix nanoseconds>`).
pub const PROBE_PREFIX: &str = "write-permission-check-";

/// A probe object older than this (by the time in its name) was left by a process that was
/// killed mid-check; the next check deletes it. A check takes milliseconds, so a probe this
/// old is never one a running check (another daemon's, a shard's) still uses.
pub const PROBE_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether the probe object named `name` (its last path segment) was made before
/// `now_nanos - PROBE_STALE_AFTER` (pure; unit-tested). Names that are not probes: `false`.
fn stale_probe(name: &str, now_nanos: u128) -> bool {
    let Some((_, nanos)) = name
        .strip_prefix(PROBE_PREFIX)
        .and_then(|rest| rest.split_once('-'))
    else {
        return false;
    };
    nanos
        .parse::<u128>()
        .is_ok_and(|t| t.saturating_add(PROBE_STALE_AFTER.as_nanos()) < now_nanos)
}

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
        self.delete_stale_probes(nanos).await;
        let key = ObjPath::from(
            self.meta_key(&format!("{PROBE_PREFIX}{}-{nanos}", std::process::id()))
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

    /// Deletes the probes of earlier checks that did not finish ([`PROBE_STALE_AFTER`]). A
    /// failure here is left to the check that follows (which writes the same directory) and
    /// to the next check: it is logged, never an error.
    async fn delete_stale_probes(&self, now_nanos: u128) {
        use futures::TryStreamExt;
        let dir = ObjPath::from(self.meta_key("").trim_end_matches('/'));
        let listed: Result<Vec<object_store::ObjectMeta>, _> =
            self.inner.client.list(Some(&dir)).try_collect().await;
        let stale = match listed {
            Ok(objects) => objects
                .into_iter()
                .filter(|m| {
                    m.location
                        .filename()
                        .is_some_and(|n| stale_probe(n, now_nanos))
                })
                .map(|m| m.location),
            Err(e) => {
                tracing::debug!(store = %self.inner.display, error = %e, "cannot list old write-permission probes");
                return;
            }
        };
        for key in stale {
            match self.inner.client.delete(&key).await {
                Ok(()) => {
                    tracing::info!(store = %self.inner.display, key = %key, "deleted a write-permission probe left by a check that did not finish")
                }
                Err(e) => {
                    tracing::debug!(store = %self.inner.display, key = %key, error = %e, "cannot delete an old write-permission probe")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_stale_an_hour_after_the_time_in_its_name() {
        let hour = PROBE_STALE_AFTER.as_nanos();
        let now = 10 * hour;
        let name = |t: u128| format!("{PROBE_PREFIX}4242-{t}");
        assert!(stale_probe(&name(now - hour - 1), now));
        assert!(!stale_probe(&name(now - hour), now));
        assert!(!stale_probe(&name(now - 1), now));
        assert!(
            !stale_probe(&name(now + hour), now),
            "a clock ahead of ours"
        );
        assert!(!stale_probe("index.json", now));
        assert!(!stale_probe(&format!("{PROBE_PREFIX}4242-soon"), now));
        assert!(!stale_probe(&format!("{PROBE_PREFIX}4242"), now));
    }
}
