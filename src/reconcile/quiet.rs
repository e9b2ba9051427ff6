//! Quiet passes: a trigger that brings nothing new is answered from the last pass.
//!
//! A pass is *quiet* when it ran no workflow or health check, wrote nothing to any state
//! store (no commit, no drift repaired, no error), changed no record but the config commit it
//! is at ([`crate::state::Dirty`]: every request was steady) and warned about nothing. Run
//! again over the same config commit before anything time-based is due, a pass would find
//! the same inputs and do the same nothing, so [`Engine::reconcile`] returns that pass's
//! report instead ([`PassReport::reused`]) while all of this holds:
//! - the config is the same validated config (same object, same Git commit; a directory
//!   source has no commit and is always reconciled in full);
//! - nothing time-based is due: a retry (`retryAfter`, failure backoff), a health check or
//!   health state store read, a state store write-permission check, a workflow's
//!   reconciliation interval, a rollout step (no rollout may be in progress);
//! - every state store in use would read nothing on an apply with nothing to write
//!   ([`statestores::StateStore::quiet_for`]: a Git remote within `git.driftCheckInterval` of
//!   the head it last saw; S3 and local repositories read on every apply, so with one of them
//!   every pass is a full one);
//! - at most `pollInterval`, and at most a minute, went by since the quiet pass: what the
//!   engine cannot watch for (host files under image-override mounts, tags of images with
//!   `imagePullPolicy: Always`, cached outputs removed from the state directory) is looked at
//!   again by the next full pass, which the daemon's own timer and polls always are.
//!
//! The settings changing (SIGHUP), the write gate opening or closing (leader election), an
//! operator's `promised rollout pause|resume|abort` (`rollout-overrides.json` changing), or a
//! pass that is not quiet end it.

use std::time::{Duration, SystemTime};

use super::{Engine, PassReport};
use crate::validate::ValidConfig;

/// The longest a quiet pass is answered from, whatever `pollInterval` says.
pub const QUIET_AT_MOST: Duration = Duration::from_secs(60);

/// The last pass, when it was quiet: what a repeat of it is answered with, and until when.
#[derive(Debug)]
pub(super) struct QuietPass {
    /// The config it reconciled: its address and its commit.
    config: usize,
    commit: String,
    /// Its report (duration excepted).
    report: PassReport,
    /// When something becomes due (by tokio's clock, which the health clock follows).
    until: tokio::time::Instant,
    /// When [`Engine::next_due`] said the next time-based work is (it walks every record;
    /// while the quiet pass stands, the records do not change).
    next_due: Option<tokio::time::Instant>,
    /// The write gate as it was seen then: any change to it (leadership lost or gained) ends
    /// the quiet pass, as another replica may have written meanwhile.
    gate: Option<tokio::sync::watch::Receiver<bool>>,
    /// `rollout-overrides.json` as it was then (`promised rollout pause|resume|abort`
    /// records there what the next pass acts on).
    overrides: Option<(u64, SystemTime, u64)>,
}

impl Engine {
    /// The last pass's report, when `cfg` is the config it reconciled and nothing became due
    /// since (module docs). Ends the quiet pass when `cfg` is another config.
    pub(super) fn reuse_quiet(&mut self, cfg: &ValidConfig) -> Option<PassReport> {
        let q = self.quiet.as_ref()?;
        let same = q.config == std::ptr::from_ref(cfg) as usize
            && cfg.commit.as_deref() == Some(q.commit.as_str());
        let gate_moved = q
            .gate
            .as_ref()
            .is_some_and(|g| g.has_changed().unwrap_or(true));
        if !same
            || tokio::time::Instant::now() >= q.until
            || gate_moved
            || !self.may_write()
            || q.overrides != self.overrides_stamp()
        {
            self.quiet = None;
            return None;
        }
        let mut report = q.report.clone();
        report.reused = true;
        Some(report)
    }

    /// After a full pass over `cfg` that started at `started` (`t0` by tokio's clock):
    /// remembers it as the quiet pass when it was one and nothing is due soon, forgets the
    /// last one otherwise.
    pub(super) fn note_quiet(
        &mut self,
        cfg: &ValidConfig,
        (started, t0): (SystemTime, tokio::time::Instant),
        r: &PassReport,
    ) {
        self.quiet = None;
        let quiet = is_quiet(r) && self.dry_run.is_none() && !self.rollout_in_progress();
        let Some(commit) = cfg.commit.clone().filter(|_| quiet) else {
            return;
        };
        let Some(stores) = self
            .stores
            .values()
            .map(|(_, s)| s.quiet_for())
            .collect::<Option<Vec<Duration>>>()
        else {
            return;
        };
        if self.settings.state_store_check_interval.is_zero() {
            return; // every pass checks the stores
        }
        let now = tokio::time::Instant::now();
        // From the pass's start: the daemon's own timer, a minute at most after a pass ends,
        // always finds the quiet pass over.
        let cap = t0 + self.settings.poll_interval.min(QUIET_AT_MOST);
        let next_due = self.next_due(started);
        let due = stores
            .into_iter()
            .chain(next_due)
            .chain(self.next_resync(cfg))
            .min()
            .map_or(cap, |d| cap.min(now + d));
        if due <= now {
            return;
        }
        self.quiet = Some(QuietPass {
            config: std::ptr::from_ref(cfg) as usize,
            commit,
            report: r.clone(),
            until: due,
            next_due: next_due.map(|d| now + d),
            gate: self.write_gate.clone().map(|mut g| {
                g.borrow_and_update();
                g
            }),
            overrides: self.overrides_stamp(),
        });
    }

    /// How long until the soonest time-based work after a pass that started at `started`: a
    /// retry (`retryAfter`, failure backoff; times before the pass's own second are skipped,
    /// as that pass already weighed them), a health check or health state store read, a
    /// rollout step, a state store write-permission check. `None`: nothing is scheduled.
    /// While a quiet pass stands (nothing in the records can have changed), what it computed.
    pub fn next_due(&self, started: SystemTime) -> Option<Duration> {
        if let Some(q) = &self.quiet {
            let now = tokio::time::Instant::now();
            return q.next_due.map(|at| at.saturating_duration_since(now));
        }
        // Retry times are kept to the second: weigh those of the pass's own second too.
        let since = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                started
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
            );
        [
            super::next_retry(&self.state, since),
            self.health_due(),
            self.rollout_due(),
            self.store_check_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Inode, modification time and size of `<stateDir>/rollout-overrides.json` (`None`:
    /// there is none): an operator's override ends the quiet pass.
    fn overrides_stamp(&self) -> Option<(u64, SystemTime, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.dir.root().join(crate::rollout::OVERRIDES_FILE)).ok()?;
        Some((m.ino(), m.modified().ok()?, m.len()))
    }

    /// How long until the soonest reconciliation interval (Kratix: a completed workflow runs
    /// again every interval) of a Promise or request of `cfg` ends, taking the shortest
    /// interval of any Promise for every record (a pinned request may run at an older
    /// revision's). `None` without completed workflows.
    fn next_resync(&self, cfg: &ValidConfig) -> Option<Duration> {
        let shortest = cfg
            .promises
            .iter()
            .map(|p| super::reconciliation_interval(p, &self.settings))
            .min()?;
        let last = self
            .state
            .requests
            .values()
            .chain(self.state.promises.values())
            .filter(|r| r.completed)
            .filter_map(|r| {
                r.status
                    .last_successful_configure_workflow_time
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
            })
            .min()?;
        Some(
            (last + shortest)
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        )
    }
}

/// Whether the pass `r` reports was quiet (module docs): nothing ran, nothing was written or
/// failed, no record but the config commit changed, no warning.
fn is_quiet(r: &PassReport) -> bool {
    let d = &r.dirty;
    !d.all
        && (!d.globals || d.commit_only)
        && d.promises.is_empty()
        && d.requests.is_empty()
        && r.pipelines_run == 0
        && r.warnings.is_empty()
        && r.stores.iter().all(|s| {
            s.commit.is_none()
                && s.error.is_none()
                && s.drift.is_empty()
                && s.written == 0
                && s.deleted == 0
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::StoreReport;

    fn quiet_report() -> PassReport {
        PassReport {
            stores: vec![StoreReport {
                store: "GitStateStore/default".into(),
                commit: None,
                written: 0,
                deleted: 0,
                unchanged: 12,
                drift: Vec::new(),
                conflicts_retried: 0,
                error: None,
            }],
            ..PassReport::default()
        }
    }

    #[test]
    fn a_pass_that_changed_nothing_but_the_config_commit_is_quiet() {
        assert!(is_quiet(&quiet_report()));
        let mut r = quiet_report();
        r.dirty.globals = true;
        r.dirty.commit_only = true;
        assert!(is_quiet(&r), "a new commit that changed no record");
    }

    #[test]
    fn anything_run_written_failed_changed_or_warned_about_is_not_quiet() {
        type Change = fn(&mut PassReport);
        let cases: [(&str, Change); 10] = [
            ("a workflow ran", |r| r.pipelines_run = 1),
            ("a warning", |r| r.warnings.push("w".into())),
            ("a commit", |r| r.stores[0].commit = Some("abc".into())),
            ("a file written", |r| r.stores[0].written = 1),
            ("a file deleted", |r| r.stores[0].deleted = 1),
            ("a store failed", |r| {
                r.stores[0].error = Some("down".into())
            }),
            ("drift repaired", |r| {
                r.stores[0].drift.push(statestores::Drift {
                    path: "p".into(),
                    owner: statestores::Owner {
                        key: "k".into(),
                        destination: "d".into(),
                        promise: String::new(),
                        resource: None,
                        pipeline: None,
                    },
                    kind: statestores::DriftKind::Modified,
                })
            }),
            ("a request record changed", |r| {
                r.dirty.requests.insert("p/ns/r".into());
            }),
            ("a Destination record changed", |r| r.dirty.globals = true),
            ("everything", |r| r.dirty.all = true),
        ];
        for (what, change) in cases {
            let mut r = quiet_report();
            change(&mut r);
            assert!(!is_quiet(&r), "{what}");
        }
    }
}
