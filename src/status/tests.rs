//! Unit tests of [`super`]: conditions, shared statuses, lists and maps.
use super::*;

/// A `redis` request in `default`.
fn redis(name: &str) -> ObjectRef {
    ObjectRef {
        kind: "redis".into(),
        namespace: Some("default".into()),
        name: name.into(),
    }
}

#[test]
fn transition_time_moves_only_on_status_change() {
    let mut s = ObjectStatus::new(redis("a"), "redis");
    s.set(
        cond::RECONCILED,
        ConditionStatus::Unknown,
        "WorkflowPending",
        "Pending",
    );
    let t0 = s
        .condition(cond::RECONCILED)
        .unwrap()
        .last_transition_time
        .clone();
    s.conditions[0].last_transition_time = "2000-01-01T00:00:00Z".into();
    s.set(
        cond::RECONCILED,
        ConditionStatus::Unknown,
        "WorksPending",
        "Pending",
    );
    assert_eq!(
        s.condition(cond::RECONCILED).unwrap().last_transition_time,
        "2000-01-01T00:00:00Z"
    );
    s.set(
        cond::RECONCILED,
        ConditionStatus::True,
        "Reconciled",
        "Reconciled",
    );
    assert_ne!(
        s.condition(cond::RECONCILED).unwrap().last_transition_time,
        "2000-01-01T00:00:00Z"
    );
    assert!(t0.ends_with('Z'));
    assert_eq!(s.summary(), "Reconciled");
}

#[test]
fn a_shared_status_is_copied_on_write_and_serialises_as_the_status() {
    let mut mine = SharedStatus::from(ObjectStatus::new(redis("a"), "redis"));
    let theirs = mine.share();
    assert!(mine.is(&theirs), "sharing copies nothing");
    // A read does not copy; a write copies, and the other holder keeps what it had.
    assert_eq!(mine.message, "Pending");
    assert!(mine.is(&theirs));
    mine.message = "Reconciled".into();
    assert!(!mine.is(&theirs));
    assert_eq!(theirs.message, "Pending");
    assert_eq!(mine.message, "Reconciled");
    // Unshared, a write happens in place.
    drop(theirs);
    let ptr = Arc::as_ptr(&mine.share());
    mine.workflows = 1;
    assert_eq!(Arc::as_ptr(&mine.share()), ptr);
    assert_eq!(
        serde_json::to_value(&mine).unwrap(),
        serde_json::to_value(&*mine).unwrap()
    );
    let back: SharedStatus = serde_json::from_value(serde_json::to_value(&mine).unwrap()).unwrap();
    assert_eq!(back, mine);
    assert_eq!(back.workflows, 1);
}

#[test]
fn fields_and_commits_serialise_as_objects_and_are_left_out_when_empty() {
    let mut s = ObjectStatus::new(redis("a"), "redis");
    let empty = serde_json::to_value(&s).unwrap();
    assert!(empty.get("fields").is_none() && empty.get("commits").is_none());
    // Keys out of order, as a pipeline's status.yaml may have them.
    let written: Map<String, Value> =
        serde_json::from_str(r#"{"url":"https://x","message":"ok","n":{"a":1}}"#).unwrap();
    s.fields = fields_from(written.clone());
    s.commits.insert("GitStateStore/b".into(), "2222".into());
    s.commits.insert("GitStateStore/a".into(), "1111".into());
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["fields"], Value::Object(written.clone()));
    assert_eq!(
        v["commits"],
        serde_json::json!({"GitStateStore/a": "1111", "GitStateStore/b": "2222"})
    );
    assert_eq!(fields_map(&s.fields), written);
    assert_eq!(s.fields.get("message").and_then(Value::as_str), Some("ok"));
    assert_eq!(
        s.commits.get("GitStateStore/b").map(Text::as_str),
        Some("2222")
    );
    let back: ObjectStatus = serde_json::from_value(v).unwrap();
    assert_eq!(back, s);
}

#[test]
fn statuses_share_equal_condition_lists_and_an_unchanged_set_copies_nothing() {
    let status = |name: &str| {
        let mut s = ObjectStatus::new(redis(name), "redis");
        s.set(
            cond::RECONCILED,
            ConditionStatus::True,
            "Reconciled",
            "Shared list",
        );
        s.conditions[0].last_transition_time = "2000-01-01T00:00:00Z".into();
        s.shrink_to_fit();
        s
    };
    let (a, mut b) = (status("a"), status("b"));
    let ptr = |s: &ObjectStatus| s.conditions.as_ptr();
    assert_eq!(ptr(&a), ptr(&b), "equal condition lists are one list");
    b.set(
        cond::RECONCILED,
        ConditionStatus::True,
        "Reconciled",
        "Shared list",
    );
    assert_eq!(
        ptr(&a),
        ptr(&b),
        "setting a condition to what it is copies nothing"
    );
    b.set(cond::RECONCILED, ConditionStatus::False, "Failing", "Other");
    assert_ne!(ptr(&a), ptr(&b));
    assert_eq!(
        a.condition(cond::RECONCILED).unwrap().message,
        "Shared list"
    );
    assert_eq!(b.condition(cond::RECONCILED).unwrap().message, "Other");
}

#[test]
fn compacted_fields_and_commits_are_sorted_without_spare_room() {
    let mut s = ObjectStatus::new(redis("a"), "redis");
    let map: Map<String, Value> = serde_json::from_str(r#"{"zeta": 1, "alpha": "x"}"#).unwrap();
    s.fields = fields_from(map);
    s.fields.insert("message".into(), Value::from("m"));
    s.commits.insert("GitStateStore/b".into(), "c2".into());
    s.commits.insert("GitStateStore/a".into(), "c1".into());
    s.shrink_to_fit();
    let fields = std::mem::take(&mut s.fields).into_tuple_vec();
    assert_eq!(fields.capacity(), fields.len());
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["alpha", "message", "zeta"]);
    let commits = std::mem::take(&mut s.commits).into_tuple_vec();
    assert_eq!((commits.len(), commits.capacity()), (2, 2));
    assert_eq!(&*commits[0].0, "GitStateStore/a");
}
