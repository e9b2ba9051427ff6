//! Leader election at the HTTP level, against [`super::fake_lease_api`]: acquire, renew, lose (a
//! refused renewal closes the write gate and the engine then writes nothing), takeover after
//! the leader stops renewing (its gate closes first), release on stop (never of a Lease another
//! replica has taken), and every call allowed by [`crate::cluster::access::LEADER_ELECTION`].
//!
//! `kube-lease-manager` reckons expiry with the wall clock (`SystemTime`) while it sleeps on
//! tokio's clock, so these tests run on the real clock with a short Lease (3 s) and wait for
//! events (gate changes), never for a time.

use std::time::Duration;

use tokio::sync::watch;

use super::fake_lease_api::{FakeApi, PREFIX, verb};
use crate::cluster::access::{LEADER_ELECTION, allows};
use crate::cluster::lease::{Keeper, LeaseTarget, Timing};

const NS: &str = "kratix";

fn timing() -> Timing {
    Timing {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(200),
    }
}

fn target(identity: &str) -> LeaseTarget {
    LeaseTarget {
        name: "promised".into(),
        namespace: NS.into(),
        identity: identity.into(),
        labels: Default::default(),
    }
}

/// Waits (at most a minute, so a broken test fails rather than hangs) until `gate` is `want`.
async fn until(gate: &mut watch::Receiver<bool>, want: bool) {
    tokio::time::timeout(Duration::from_secs(60), gate.wait_for(|g| *g == want))
        .await
        .expect("the gate never changed")
        .expect("the keeper is gone");
}

fn assert_calls_allowed(api: &FakeApi) {
    let calls = api.calls();
    assert!(!calls.is_empty());
    for c in &calls {
        assert!(
            c.path == format!("{PREFIX}{NS}/leases")
                || c.path.starts_with(&format!("{PREFIX}{NS}/leases/")),
            "unexpected path {}",
            c.path
        );
        assert!(
            allows(LEADER_ELECTION, "coordination.k8s.io", "leases", verb(c)),
            "{} {} ({}) is not in LEADER_ELECTION",
            c.method,
            c.path,
            verb(c)
        );
    }
}

#[tokio::test]
async fn acquires_renews_and_releases_on_stop() {
    let api = FakeApi::default();
    let a = Keeper::start(api.client("a", NS), target("a"), timing());
    let mut gate = a.gate();
    until(&mut gate, true).await;
    assert_eq!(api.holder("promised").as_deref(), Some("a"));
    // Renewals: the Lease's resourceVersion moves while the gate stays open through them.
    let renewals = |api: &FakeApi| {
        api.calls()
            .iter()
            .filter(|c| c.replica == "a" && verb(c) == "patch")
            .count()
    };
    let before = renewals(&api);
    tokio::time::timeout(Duration::from_secs(60), async {
        while renewals(&api) < before + 2 {
            assert!(*gate.borrow(), "the gate closed while renewals succeed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("no renewals");
    assert!(a.holds());
    a.stop().await;
    assert!(!*gate.borrow());
    assert_eq!(api.holder("promised"), None, "released on stop");
    // The exact calls: GET/POST/PATCH on the Lease, nothing else.
    let calls = api.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.method == http::Method::POST && c.path == format!("{PREFIX}{NS}/leases"))
    );
    assert!(calls.iter().any(|c| c.method == http::Method::PATCH
        && c.path == format!("{PREFIX}{NS}/leases/promised")
        && c.query.contains("fieldManager=kube-lease-manager-a")));
    assert_calls_allowed(&api);
}

#[tokio::test]
async fn a_standby_takes_over_a_released_lease() {
    let api = FakeApi::default();
    let a = Keeper::start(api.client("a", NS), target("a"), timing());
    until(&mut a.gate(), true).await;
    let b = Keeper::start(api.client("b", NS), target("b"), timing());
    let mut gb = b.gate();
    // b stands by while a holds the Lease: it has read the Lease and not taken it.
    tokio::time::timeout(Duration::from_secs(60), async {
        while !api
            .calls()
            .iter()
            .any(|c| c.replica == "b" && verb(c) == "get")
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("b never read the Lease");
    assert!(!*gb.borrow());
    assert_eq!(api.holder("promised").as_deref(), Some("a"));
    a.stop().await;
    until(&mut gb, true).await;
    assert_eq!(api.holder("promised").as_deref(), Some("b"));
    b.stop().await;
    assert_calls_allowed(&api);
}

#[tokio::test]
async fn a_leader_cut_off_stops_writing_before_the_standby_takes_over() {
    let api = FakeApi::default();
    let a = Keeper::start(api.client("a", NS), target("a"), timing());
    let mut ga = a.gate();
    until(&mut ga, true).await;
    let b = Keeper::start(api.client("b", NS), target("b"), timing());
    let mut gb = b.gate();
    // a can no longer reach the API: no renewal, no fence read.
    api.0.lock().unwrap().cut_off.insert("a".into());
    // Record the order of events: a's gate must close before b's opens.
    let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    let t1 = order_tx.clone();
    let mut ga2 = ga.clone();
    tokio::spawn(async move {
        until(&mut ga2, false).await;
        let _ = t1.send("a closed");
    });
    let mut gb2 = gb.clone();
    tokio::spawn(async move {
        until(&mut gb2, true).await;
        let _ = order_tx.send("b opened");
    });
    assert_eq!(order.recv().await, Some("a closed"));
    assert_eq!(order.recv().await, Some("b opened"));
    until(&mut gb, true).await;
    assert!(!*ga.borrow());
    assert_eq!(api.holder("promised").as_deref(), Some("b"));
    b.stop().await;
    drop(a);
    assert_calls_allowed(&api);
}

#[tokio::test]
async fn a_refused_renewal_closes_the_gate_and_the_engine_writes_nothing() {
    let api = FakeApi::default();
    let a = Keeper::start(api.client("a", NS), target("a"), timing());
    let mut ga = a.gate();
    until(&mut ga, true).await;
    // The next renewal is answered 409: "b" took the Lease (and keeps it).
    api.0.lock().unwrap().steal_on_renew = Some(("a".into(), "b".into()));
    until(&mut ga, false).await;
    assert_eq!(api.holder("promised").as_deref(), Some("b"));
    // The engine behind that gate refuses to write.
    super::gate_tests::engine_does_not_write_with(ga.clone()).await;
    stop_leaves_b_holding(a, &api, "a's stop did not clear b's hold").await;
}

/// `kube-lease-manager` believes it holds the Lease until it next writes it (it rereads the
/// Lease after a write, or once its cached expiry has passed); a replica stopped before that,
/// after another took the Lease, must not release the Lease on that stale belief (a release
/// patch the API server would apply to the new holder's Lease).
#[tokio::test]
async fn a_replica_that_lost_the_lease_does_not_release_it_on_stop() {
    let api = FakeApi::default();
    let a = Keeper::start(api.client("a", NS), target("a"), timing());
    let mut ga = a.gate();
    until(&mut ga, true).await;
    // "b" takes the Lease behind a's back (and keeps it); a's next read closes its gate.
    api.take("promised", "b");
    until(&mut ga, false).await;
    stop_leaves_b_holding(a, &api, "a's stop released b's Lease").await;
}

/// Stops replica `a` and checks that "b" still holds the Lease and that every call `a` made
/// was one a replica may make.
async fn stop_leaves_b_holding(a: Keeper, api: &FakeApi, why: &str) {
    a.stop().await;
    assert_eq!(api.holder("promised").as_deref(), Some("b"), "{why}");
    assert_calls_allowed(api);
}

#[test]
fn timing_settings_are_checked() {
    let mut s = crate::cluster::LeaderElectionSettings::default();
    let t = Timing::from_settings(&s).unwrap();
    assert_eq!(t.lease_duration, Duration::from_secs(15));
    s.renew_deadline = Duration::from_secs(15);
    assert!(
        Timing::from_settings(&s)
            .unwrap_err()
            .contains("renewDeadline")
    );
    s.renew_deadline = Duration::from_secs(10);
    s.retry_period = Duration::from_secs(6);
    assert!(
        Timing::from_settings(&s)
            .unwrap_err()
            .contains("retryPeriod")
    );
    s.retry_period = Duration::from_secs(2);
    s.lease_duration = Duration::from_millis(15_500);
    assert!(
        Timing::from_settings(&s)
            .unwrap_err()
            .contains("leaseDuration")
    );
}
