//! Holding one `coordination.k8s.io/v1` Lease, with a write gate that closes before anyone
//! else may take the Lease.
//!
//! The Lease protocol (acquire a free or expired Lease with a server-side apply, renew it,
//! release it) is `kube-lease-manager` 0.13.1's. Its `watch()` channel says `true` from the
//! acquisition until the crate next reads the Lease and finds another holder, which it does
//! only once its cached expiry has passed; a renewal the API refuses or never answers leaves
//! the channel `true`. So a [`Keeper`] adds a *fence*: every `retryPeriod` it reads the Lease
//! (`GET`) and keeps the gate open only while the crate says leader **and** the Lease names
//! this replica with a `renewTime` younger than `renewDeadline` (measured from when the read
//! was sent). A leader that cannot renew (API unreachable, renewal refused) therefore closes
//! its gate at `renewTime + renewDeadline` by its own clock, while another replica may take the
//! Lease only after `renewTime + leaseDuration` by its clock: the difference is the clock skew
//! tolerated. A read that shows another holder closes the gate at once.
//!
//! The gate is what the reconcile engine checks right before each state store write
//! ([`crate::reconcile::Engine::with_write_gate`]). Between that check and the end of the
//! write (a Git push, an S3 upload) the Lease may still be lost: the compare-and-swap push
//! (`--force-with-lease`, S3 conditional writes) is the final guard against a stale leader
//! overwriting a newer commit.
//!
//! Prompt takeover: a standby without a running crate manager reads the Lease every
//! `retryPeriod` and starts one when the Lease is free (released) or expired, so a Lease
//! released on SIGTERM is taken within one `retryPeriod`. A crate manager is stopped as soon as
//! a read shows another live holder: one that waits would only notice a release at the
//! holder's expiry, and one that still believes it leads would renew over the other holder.
//!
//! Release is this module's, never the crate's: the crate's release (when its channel closes)
//! trusts its cached holder, which it refreshes only once its cached expiry has passed, and
//! sends an unconditional strategic merge patch that nulls `holderIdentity`; the API server
//! applies that whoever holds the Lease (field-manager conflicts are a server-side apply
//! matter), so a replica that had just lost the Lease would clear the new holder's hold. So the
//! crate's task is aborted (it writes nothing more), and on stop the Lease is read and, only if
//! it names this replica, released by a patch carrying the `resourceVersion` read: a
//! precondition, answered `409 Conflict` if anyone wrote the Lease since.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::settings::LeaderElectionSettings;

/// The timing of a Lease, from [`LeaderElectionSettings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `leaseDurationSeconds` written to the Lease (whole seconds, at least 2): another replica
    /// may take the Lease this long after its last renewal.
    pub lease_duration: Duration,
    /// A leader whose last renewal seen is older than this stops writing (< `lease_duration`).
    pub renew_deadline: Duration,
    /// How often the Lease is read (fence, standby polling, shard rebalancing).
    pub retry_period: Duration,
}

impl Timing {
    /// Checks and converts `leaderElection:`. Errors name the setting: `leaseDuration` not a
    /// whole number of seconds or under 2 s, `renewDeadline` not below it, `retryPeriod` not
    /// below half of `renewDeadline` (the fence must see a renewal before the deadline).
    pub fn from_settings(s: &LeaderElectionSettings) -> Result<Timing, String> {
        let t = Timing {
            lease_duration: s.lease_duration,
            renew_deadline: s.renew_deadline,
            retry_period: s.retry_period,
        };
        if t.lease_duration.subsec_nanos() != 0 || t.lease_duration < Duration::from_secs(2) {
            return Err(format!(
                "leaderElection.leaseDuration must be whole seconds, at least 2s (is {:?})",
                t.lease_duration
            ));
        }
        if t.renew_deadline.is_zero() || t.renew_deadline >= t.lease_duration {
            return Err(format!(
                "leaderElection.renewDeadline must be above 0 and below leaseDuration (is {:?})",
                t.renew_deadline
            ));
        }
        if t.retry_period.is_zero() || t.retry_period * 2 > t.renew_deadline {
            return Err(format!(
                "leaderElection.retryPeriod must be above 0 and at most half of renewDeadline (is {:?})",
                t.retry_period
            ));
        }
        Ok(t)
    }

    /// The crate's parameters: duration `lease_duration`, and a grace (seconds before expiry
    /// at which the holder renews) such that it renews about `renew_deadline / 2` after the
    /// last renewal, well before the fence closes.
    fn params(&self, identity: &str) -> LeaseParams {
        let duration = self.lease_duration.as_secs();
        let renew_after = self.renew_deadline.as_secs_f64() / 2.0;
        let grace = (duration as f64 - renew_after).floor() as u64;
        LeaseParams::new(identity, duration, grace.clamp(1, duration - 1))
    }
}

/// The Lease a [`Keeper`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTarget {
    /// Lease name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica's `holderIdentity`.
    pub identity: String,
    /// Labels the Lease is created with when absent (membership Leases, listed by label);
    /// empty: the crate creates it without labels.
    pub labels: BTreeMap<String, String>,
}

/// Holds one Lease in a background task; [`Keeper::gate`] is `true` while this replica holds
/// it and may write (see the module docs).
pub struct Keeper {
    gate: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<watch::Sender<bool>>,
}

impl Keeper {
    /// Starts trying to hold `target` (immediately, then every `retry_period`).
    pub fn start(client: kube::Client, target: LeaseTarget, timing: Timing) -> Keeper {
        Keeper::start_with_gate(client, target, timing, watch::channel(false).0)
    }

    /// As [`Keeper::start`], publishing the gate on `gate` (whose receivers outlive this
    /// keeper: a shard's gate stays the same channel across keepers); [`Keeper::stop`] gives
    /// it back, closed.
    pub fn start_with_gate(
        client: kube::Client,
        target: LeaseTarget,
        timing: Timing,
        gate: watch::Sender<bool>,
    ) -> Keeper {
        gate.send_replace(false);
        let rx = gate.subscribe();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(keep(client, target, timing, gate, stop_rx));
        Keeper {
            gate: rx,
            stop,
            task,
        }
    }

    /// The write gate: `true` while held (fenced); watch it for changes.
    pub fn gate(&self) -> watch::Receiver<bool> {
        self.gate.clone()
    }

    /// Whether the gate is open now.
    pub fn holds(&self) -> bool {
        *self.gate.borrow()
    }

    /// Closes the gate and releases the Lease if it names this replica (so another replica
    /// can take it at once), never a Lease someone else has taken meanwhile; returns when the
    /// release was answered or failed, with the gate's sender.
    pub async fn stop(self) -> Option<watch::Sender<bool>> {
        let _ = self.stop.send(true);
        self.task.await.ok()
    }
}

/// The crate's manager while this replica tries to hold or holds the Lease.
type Running = (
    watch::Receiver<bool>,
    JoinHandle<kube_lease_manager::Result<LeaseManager>>,
);

/// What a read of the Lease showed.
struct Seen {
    holder: Option<String>,
    /// When the Lease expires by the wall clock (`renewTime + leaseDurationSeconds`).
    expires: Option<SystemTime>,
    renewed: Option<SystemTime>,
}

fn seen(lease: &Lease) -> Seen {
    let spec = lease.spec.clone().unwrap_or_default();
    let renewed: Option<SystemTime> = spec.renew_time.map(|t| t.0.into());
    let expires = match (renewed, spec.lease_duration_seconds) {
        (Some(r), Some(d)) => Some(r + Duration::from_secs(d.max(0) as u64)),
        _ => None,
    };
    Seen {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        expires,
        renewed,
    }
}

async fn keep(
    client: kube::Client,
    target: LeaseTarget,
    timing: Timing,
    gate: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> watch::Sender<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &target.namespace);
    let mut running: Option<Running> = None;
    // Until when the gate may stay open (from the last read that showed us as holder).
    let mut deadline: Option<Instant> = None;
    let mut tick = tokio::time::interval(timing.retry_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let leader = running.as_ref().is_some_and(|(rx, _)| *rx.borrow());
        let open = leader && deadline.is_some_and(|d| Instant::now() < d);
        gate.send_if_modified(|g| std::mem::replace(g, open) != open);
        let far = Instant::now() + Duration::from_secs(86_400);
        let until = deadline.filter(|_| open).unwrap_or(far);
        tokio::select! {
            biased;
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            _ = tokio::time::sleep_until(until), if open => {
                tracing::warn!(lease = %target.name, "no renewal seen before renewDeadline: not writing");
                deadline = None;
                continue;
            }
            changed = async { running.as_mut().expect("guarded").0.changed().await }, if running.is_some() => {
                if changed.is_err() {
                    // The crate's task ended (an error it does not retry): start anew.
                    let (_, task) = running.take().expect("guarded");
                    if let Ok(Err(e)) = task.await {
                        tracing::warn!(lease = %target.name, error = %e, "lease manager stopped");
                    }
                    deadline = None;
                    continue;
                }
                // Leadership changed: read the Lease now to set (or clear) the fence.
            }
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        let wall = SystemTime::now();
        let leader = running.as_ref().is_some_and(|(rx, _)| *rx.borrow());
        match api.get_opt(&target.name).await {
            Ok(Some(lease)) => {
                let s = seen(&lease);
                let mine = s.holder.as_deref() == Some(target.identity.as_str());
                let live = s.holder.is_some() && s.expires.is_some_and(|e| e > wall);
                deadline = match (mine && live && leader, s.renewed) {
                    (true, Some(renewed)) => {
                        let age = wall.duration_since(renewed).unwrap_or_default();
                        Some(sent + timing.renew_deadline.saturating_sub(age))
                    }
                    _ => None,
                };
                if running.is_none() && !live {
                    running = start_manager(&client, &target, &timing).await;
                } else if running.is_some() && live && !mine {
                    // Someone else holds it: stop the crate (waiting, it would see a release
                    // only at the holder's expiry; believing it still leads, it would renew over
                    // the holder) without a release; poll instead.
                    stop_manager(&mut running, &target.name).await;
                }
            }
            Ok(None) => {
                deadline = None;
                if running.is_none() {
                    if !target.labels.is_empty() {
                        create_labelled(&api, &target).await;
                    }
                    running = start_manager(&client, &target, &timing).await;
                }
            }
            Err(e) => {
                // Keep the deadline: the gate closes when it passes.
                tracing::warn!(lease = %target.name, error = %e, "reading the Lease failed");
            }
        }
    }
    gate.send_replace(false);
    if running.is_some() {
        stop_manager(&mut running, &target.name).await;
        // Bounded like a renewal: an API that does not answer must not hold up shutdown (the
        // Lease then expires on its own).
        if tokio::time::timeout(timing.renew_deadline, release(&api, &target))
            .await
            .is_err()
        {
            tracing::warn!(lease = %target.name, "releasing the Lease timed out; it expires on its own");
        }
    }
    gate
}

/// Releases the Lease if it names this replica: a strategic merge patch clearing the holder,
/// conditional on the `resourceVersion` read (so a Lease taken by someone else after the read
/// is left alone: `409 Conflict`).
async fn release(api: &Api<Lease>, target: &LeaseTarget) {
    let lease = match api.get_opt(&target.name).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(lease = %target.name, error = %e, "reading the Lease to release it failed");
            return;
        }
    };
    if seen(&lease).holder.as_deref() != Some(target.identity.as_str()) {
        return;
    }
    let Some(version) = lease.metadata.resource_version else {
        tracing::warn!(lease = %target.name, "the Lease has no resourceVersion: not releasing it");
        return;
    };
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": version },
        "spec": {
            "acquireTime": null,
            "renewTime": null,
            "holderIdentity": null,
            "leaseDurationSeconds": null,
        },
    });
    let params = PatchParams {
        field_manager: Some(field_manager(&target.identity)),
        ..Default::default()
    };
    match api
        .patch(&target.name, &params, &Patch::Strategic(patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(lease = %target.name, "the Lease changed since it was read: not releasing it");
        }
        Err(e) => tracing::warn!(lease = %target.name, error = %e, "releasing the Lease failed"),
    }
}

/// The field manager `kube-lease-manager` writes the Lease with (`LeaseParams::new`'s
/// default), used for the release too.
fn field_manager(identity: &str) -> String {
    format!("kube-lease-manager-{identity}")
}

/// Creates the Lease with `target.labels` (a membership Lease); an existing one is kept.
async fn create_labelled(api: &Api<Lease>, target: &LeaseTarget) {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(target.name.clone()),
            labels: Some(target.labels.clone()),
            ..Default::default()
        },
        spec: Some(Default::default()),
    };
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => tracing::warn!(lease = %target.name, error = %e, "creating the Lease failed"),
    }
}

async fn start_manager(
    client: &kube::Client,
    target: &LeaseTarget,
    timing: &Timing,
) -> Option<Running> {
    match LeaseManager::new(
        client.clone(),
        &target.name,
        &target.namespace,
        timing.params(&target.identity),
        LeaseCreateMode::AutoCreate,
    )
    .await
    {
        Ok(m) => Some(m.watch().await),
        Err(e) => {
            tracing::warn!(lease = %target.name, error = %e, "cannot start the lease manager");
            None
        }
    }
}

/// Stops the crate's task without letting it release the Lease: it is aborted (cancelled at
/// its next await point) and waited for while its channel is still open, so it never sees the
/// channel closed, which would make it release the Lease by its possibly stale cache (see the
/// module docs); [`release`] does that safely.
async fn stop_manager(running: &mut Option<Running>, name: &str) {
    if let Some((rx, task)) = running.take() {
        task.abort();
        match task.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(lease = %name, error = %e, "lease manager stopped"),
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::warn!(lease = %name, error = %e, "lease manager task failed"),
        }
        drop(rx);
    }
}

/// This replica's identity: `identity` when set, else `$POD_NAME`, else the host name
/// (`$HOSTNAME`, else `/proc/sys/kernel/hostname`), else `promised`.
pub fn identity(configured: Option<&str>) -> String {
    let from_env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    configured
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .or_else(|| from_env("POD_NAME"))
        .or_else(|| from_env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "promised".into())
}
