//! Why an object runs, from its records before and after the pass.

use std::sync::Arc;

use super::*;
use crate::model::ObjectRef;
use crate::status::ObjectStatus;

fn rec(input: &str, spec: &str, completed: bool) -> ObjectRecord {
    let id = ObjectRef {
        kind: "App".into(),
        namespace: Some("default".into()),
        name: "a".into(),
    };
    ObjectRecord {
        input_hash: input.into(),
        completed,
        object: Arc::new(serde_json::Value::Null).into(),
        promise: None,
        promise_dir: None,
        outputs: Vec::new(),
        placements: Vec::new(),
        spec_hash: spec.into(),
        failures: 0,
        retry_at: None,
        deleting: false,
        steady: Default::default(),
        failed_upgrade: String::new(),
        status: ObjectStatus::new(id, "app").into(),
    }
}

/// A state with the `app` Promise at `promise` and request `app/default/a` as `request`.
fn state(promise: &str, request: Option<ObjectRecord>) -> State {
    let mut s = State::default();
    s.promises
        .insert("promise/app".into(), Box::new(rec(promise, "", true)));
    if let Some(r) = request {
        s.requests.insert("app/default/a".into(), Box::new(r));
    }
    s
}

#[test]
fn reasons() {
    let key = "app/default/a";
    let why = |before: &State, after: &State| reason(key, BaseKind::StateDir, before, after);
    let after = state("p1", Some(rec("i2", "s1", true)));
    assert_eq!(why(&state("p1", None), &after), Reason::New);
    assert_eq!(
        reason(key, BaseKind::StateStores, &state("p1", None), &after),
        Reason::NotRecorded
    );
    let after_spec = state("p1", Some(rec("i2", "s2", true)));
    assert_eq!(
        why(&state("p1", Some(rec("i1", "s1", true))), &after_spec),
        Reason::SpecChanged
    );
    let after_promise = state("p2", Some(rec("i2", "s1", true)));
    assert_eq!(
        why(&state("p1", Some(rec("i1", "s1", true))), &after_promise),
        Reason::PromiseChanged
    );
    assert_eq!(
        reason(
            "promise/app",
            BaseKind::StateDir,
            &state("p1", None),
            &after_promise
        ),
        Reason::PromiseChanged
    );
    assert_eq!(
        why(&state("p1", Some(rec("i1", "s1", true))), &after),
        Reason::ImageChanged
    );
    assert_eq!(
        why(&state("p1", Some(rec("i2", "s1", false))), &after),
        Reason::Retry
    );
    assert_eq!(
        why(&state("p1", Some(rec("i2", "s1", true))), &after),
        Reason::Resync
    );
    // Cached output lost: its inputs are unknown; a Promise change is still a reason.
    assert_eq!(
        why(&state("p1", Some(rec("", "s1", true))), &after),
        Reason::Resync
    );
    assert_eq!(
        why(&state("p1", Some(rec("", "s1", true))), &after_promise),
        Reason::PromiseChanged
    );
    assert_eq!(
        reason(
            "promise/app",
            BaseKind::StateDir,
            &state("", None),
            &after_promise
        ),
        Reason::Resync
    );
}
