//! Versions stage: which Promise version each request runs at, and its upgrade status.
//!
//! Kratix (kratix-lifecycle.md §2.1–§2.3): a request's `ResourceBinding` (found by the labels
//! `kratix.io/promise-name` and `kratix.io/resource-name` in the request's namespace) says
//! `spec.version: latest` (float) or a version (pin). Without a binding, the daemon setting
//! `resourceBindingVersionStrategy` decides as Kratix's binding controller does when it
//! creates one: `floating` → `latest`; `pinned` → the version latest resolved to when the
//! request was first seen (kept in `status.resourceBindingVersion`). `latest` is the current
//! Promise's `kratix.io/promise-version`. Resource configure workflows run at the resolved
//! version's revision ([`super::revisions`]); promise workflows at latest; delete at the
//! applied version (`status.promiseVersion`). A Promise without the label has no versions:
//! its requests always run at the current Promise, as before.
//!
//! [`resolve`] is pure: it decides one request's [`Target`] from the binding, the record and
//! the revisions. A later rollout stage (UpgradePlans) can replace a request's target before
//! the plan reads it: the plan only sees [`Targets`].

use std::collections::BTreeMap;

use super::revisions::{RevisionRun, Revisions};
use super::{Engine, Pass};
use crate::config::Located;
use crate::model::{LATEST_VERSION, ResourceBinding};
use crate::settings::BindingStrategy;
use crate::state::{ObjectRecord, sha256_hex};
use crate::status::{ConditionStatus as CS, EventType, Text, cond};
use crate::validate::{ValidPromise, ValidRequest};

/// Reason of the condition and event when a binding names a version without a revision
/// (Kratix's Warning event `FailedPromiseRevisionLookup`).
pub const LOOKUP_FAILED: &str = "FailedPromiseRevisionLookup";

/// Start of `status.message` while a request cannot run at the version its binding names.
pub const MESSAGE_PREFIX: &str = "Failing: cannot follow the ResourceBinding: ";

/// Where one request runs in this pass.
#[derive(Debug, Clone, Default)]
pub(super) struct Target {
    /// The version its configure workflow runs at.
    pub version: String,
    /// Its binding's `spec.version` (`latest` or a version): `status.resourceBindingVersion`.
    pub binding_version: String,
    /// The revision to run at, when not the current Promise.
    pub revision: Option<RevisionRun>,
    /// Why the desired version cannot be used (the request stays where it is).
    pub error: Option<String>,
    /// No version to run at (a new request bound to an unknown version): nothing runs.
    pub blocked: bool,
    /// Moving from the applied version to another one.
    pub upgrading: bool,
    /// Spec, binding and version of this attempt: a failed upgrade is not retried while
    /// they stay the same.
    pub inputs: String,
}

/// Request key → where it runs (only requests of labelled Promises).
pub(super) type Targets = BTreeMap<String, Target>;

/// Decides where request `r` of `p` (at `current` version) runs: `bindings` are the
/// ResourceBindings that name it, `record` its last record.
pub(super) fn resolve(
    r: &ValidRequest,
    current: &str,
    bindings: &[&Located<ResourceBinding>],
    strategy: BindingStrategy,
    record: Option<&ObjectRecord>,
    revisions: &mut Revisions,
) -> Target {
    let applied = record.and_then(|rec| rec.status.promise_version.as_deref().map(str::to_string));
    let mut t = Target::default();
    let binding = match bindings {
        [] => None,
        [b] => Some(*b),
        many => {
            let names: Vec<String> = many.iter().map(|b| b.id.to_string()).collect();
            t.error = Some(format!(
                "{} ResourceBindings name this request ({}); keep one",
                many.len(),
                names.join(", ")
            ));
            return stay(t, applied, current, &r.promise, revisions);
        }
    };
    t.binding_version = match binding {
        Some(b) => b.object.spec.version.clone(),
        None => match strategy {
            BindingStrategy::Floating => LATEST_VERSION.to_string(),
            BindingStrategy::Pinned => record
                .and_then(|rec| rec.status.resource_binding_version.as_deref())
                .or(applied.as_deref())
                .unwrap_or(current)
                .to_string(),
        },
    };
    let wanted = if t.binding_version == LATEST_VERSION {
        current.to_string()
    } else {
        t.binding_version.clone()
    };
    t.inputs = sha256_hex(format!("{}\n{}\n{wanted}", r.spec_digest, t.binding_version).as_bytes());
    // A failed upgrade is not retried until the spec, the binding or the version changes.
    if let Some(rec) = record
        && rec.status.failed_version.as_deref() == Some(&wanted)
        && rec.failed_upgrade == t.inputs
        && applied.as_ref().is_some_and(|a| *a != wanted)
    {
        let inputs = std::mem::take(&mut t.inputs);
        let mut t = stay(t, applied, current, &r.promise, revisions);
        t.inputs = inputs;
        return t;
    }
    match at(&wanted, current, r.promise.as_str(), revisions) {
        Ok(revision) => {
            t.upgrading = applied.as_ref().is_some_and(|a| *a != wanted);
            t.version = wanted;
            t.revision = revision;
            t
        }
        Err(e) => {
            t.error = Some(match binding {
                Some(b) => format!("{} (version {wanted}): {e}", b.id),
                None => format!("version {wanted}: {e}"),
            });
            stay(t, applied, current, &r.promise, revisions)
        }
    }
}

/// The revision for `version` (`None`: the current Promise).
fn at(
    version: &str,
    current: &str,
    promise: &str,
    revisions: &mut Revisions,
) -> Result<Option<RevisionRun>, String> {
    if version == current {
        Ok(None)
    } else {
        revisions.run_at(promise, version).map(Some)
    }
}

/// `t` kept at the applied version (blocked when there is none to run at).
pub(super) fn stay(
    mut t: Target,
    applied: Option<String>,
    current: &str,
    promise: &str,
    revisions: &mut Revisions,
) -> Target {
    t.upgrading = false;
    let Some(a) = applied else {
        t.blocked = true;
        return t;
    };
    match at(&a, current, promise, revisions) {
        Ok(revision) => t.revision = revision,
        Err(e) => {
            t.blocked = true;
            let msg = t.error.take().map_or(e.clone(), |m| format!("{m}; {e}"));
            t.error = Some(msg);
        }
    }
    t.version = a;
    t
}

impl Engine {
    /// After the run stage: the upgrade status of every request that ran ([`ran`]).
    pub(super) fn note_upgrades(&mut self, pass: &Pass<'_>, targets: &Targets) {
        for run in &pass.report.runs {
            if let (Some(t), Some(rec)) =
                (targets.get(&run.key), self.state.requests.get_mut(&run.key))
            {
                let completed = rec.completed;
                ran(rec, t, completed);
            }
        }
    }

    /// Where every request of a labelled Promise runs in this pass ([`resolve`]).
    pub(super) fn resolve_versions(&mut self, pass: &Pass<'_>) -> Targets {
        let mut bindings: BTreeMap<(&str, &str, &str), Vec<&Located<ResourceBinding>>> =
            BTreeMap::new();
        for b in &pass.cfg.resource_bindings {
            if let Some(t) = b.object.target() {
                bindings.entry(t).or_default().push(b);
            }
        }
        let strategy = self.settings.resource_binding_version_strategy;
        let mut targets = Targets::new();
        for r in &pass.cfg.requests {
            let Some(current) = pass.cfg.promise(&r.promise).and_then(ValidPromise::version) else {
                continue;
            };
            let found = bindings
                .get(&(r.promise.as_str(), r.namespace(), r.name()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let record = self.state.requests.get(r.key()).map(|r| &**r);
            let t = resolve(r, current, found, strategy, record, &mut self.revisions);
            targets.insert(r.key().to_string(), t);
        }
        targets
    }

    /// Saves the revision of Promise `p` at its version (create-or-update, as Kratix does on
    /// every Promise reconcile). Unlabelled Promises have none.
    pub(super) fn save_revision(
        &mut self,
        p: &ValidPromise,
        promise_hash: &str,
        resource_fingerprint: &str,
        config_root: &std::path::Path,
        commit: Option<&String>,
    ) -> Result<(), crate::state::StateError> {
        let Some(version) = p.version() else {
            return Ok(());
        };
        let folder = super::promise_dir(config_root, &p.promise.origin.file);
        let rev = super::revisions::Revision {
            promise: p.name().to_string(),
            version: version.to_string(),
            document: (*p.promise.raw).clone(),
            promise_hash: promise_hash.to_string(),
            resource_fingerprint: resource_fingerprint.to_string(),
            folder: folder
                .as_ref()
                .map(|_| super::parent_dir(&p.promise.origin.file)),
            tree_error: None,
            config_commit: commit.cloned(),
            applied_at: crate::status::now_rfc3339(),
        };
        self.revisions.save(rev, folder.as_deref())
    }

    /// The Promise (and folder) a request's delete pipeline runs with: its applied version's
    /// revision when that is not the current Promise's version (kratix-lifecycle.md §2.1,
    /// `resolveAppliedVersionForDelete`); `None` to use the current (or last seen) Promise.
    pub(super) fn promise_for_delete(
        &mut self,
        record: &ObjectRecord,
        current: Option<&ValidPromise>,
    ) -> Option<(ValidPromise, Option<std::path::PathBuf>)> {
        let applied = record.status.promise_version.as_deref()?;
        if current.and_then(ValidPromise::version) == Some(applied) {
            return None;
        }
        let run = self
            .revisions
            .run_at(&record.status.promise, applied)
            .ok()?;
        Some(((*run.promise).clone(), run.dir))
    }
}

/// At admission: `UpgradeSucceeded=Unknown UpgradeInProgress` when the request moves to
/// another version; a request completed without a run takes its version at once.
pub(super) fn admitted(record: &mut ObjectRecord, t: &Target, completed_now: bool) {
    if completed_now {
        ran(record, t, true);
    } else if t.upgrading {
        record.status.set(
            cond::UPGRADE_SUCCEEDED,
            CS::Unknown,
            "UpgradeInProgress",
            &format!("Upgrade to version {} is in progress", t.version),
        );
    }
}

/// After its configure workflow: the applied version moves on success
/// (`UpgradeComplete` after an upgrade); a failed upgrade sets `UpgradeFailed` and
/// `failedVersion` (kratix-lifecycle.md §2.2, §2.3).
pub(super) fn ran(record: &mut ObjectRecord, t: &Target, completed: bool) {
    let failed = record
        .status
        .pipelines
        .iter()
        .any(|p| p.phase == crate::status::Phase::Failed);
    if completed {
        record.status.promise_version = Some(Text::new(&t.version));
        record.status.resource_binding_version = Some(Text::new(&t.binding_version));
        if t.upgrading {
            record.status.set(
                cond::UPGRADE_SUCCEEDED,
                CS::True,
                "UpgradeComplete",
                &format!("Resource is at version {}", t.version),
            );
            let note = format!(
                "Resource request moved to promise {} version {} (binding {})",
                record.status.promise, t.version, t.binding_version
            );
            record
                .status
                .event(EventType::Normal, "ResourceBindingVersionUpdated", &note);
            record.status.failed_version = None;
            record.failed_upgrade.clear();
        }
    } else if failed && t.upgrading {
        let message = record
            .status
            .condition(cond::CONFIGURE_WORKFLOW_COMPLETED)
            .map(|c| c.message.clone())
            .unwrap_or_else(|| format!("Upgrade to version {} failed", t.version).into());
        record.status.set(
            cond::UPGRADE_SUCCEEDED,
            CS::False,
            "UpgradeFailed",
            &message,
        );
        let note = format!(
            "Upgrade to version {} failed; the request stays at version {}",
            t.version,
            record.status.promise_version.as_deref().unwrap_or("-")
        );
        record
            .status
            .event(EventType::Warning, "UpgradeFailed", &note);
        record.status.failed_version = Some(t.version.clone());
        record.failed_upgrade = t.inputs.clone();
    }
}

/// After landing: a request whose binding cannot be followed says so
/// (`Reconciled=False FailedPromiseRevisionLookup`, the message names the binding and the
/// version) and stays where it is; once the problem is gone its message comes back.
pub(super) fn note_errors(records: &mut crate::state::Records, targets: &Targets) {
    for (key, t) in targets {
        let Some(record) = records.get_mut(key) else {
            continue;
        };
        match &t.error {
            Some(e) => {
                let message = format!("{MESSAGE_PREFIX}{e}");
                if record.status.message != message {
                    record.status.event(EventType::Warning, LOOKUP_FAILED, e);
                }
                record.status.message = message;
                record
                    .status
                    .set(cond::RECONCILED, CS::False, LOOKUP_FAILED, "Failing");
                record.steady.clear();
            }
            None => {
                if record.status.message.starts_with(MESSAGE_PREFIX) {
                    if record
                        .status
                        .condition(cond::RECONCILED)
                        .is_some_and(|c| c.reason == LOOKUP_FAILED)
                    {
                        record.status.clear(cond::RECONCILED);
                        super::records::finish_status(record);
                    }
                    record.status.message = record
                        .status
                        .fields
                        .get("message")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("Resource requested")
                        .to_string();
                }
            }
        }
    }
}
