//! Tests of the state directory (`src/state.rs`).
use super::*;
use crate::status::ObjectStatus;

#[test]
fn round_trip_and_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path().join("s")).unwrap();
    let empty = dir.load().unwrap();
    assert!(empty.requests.is_empty());
    let mut st = empty.clone();
    st.config_commit = Some("abc".into());
    dir.save(&mut st).unwrap();
    assert_eq!(dir.load().unwrap(), st);
    std::fs::write(tmp.path().join("s/state.json"), b"{not json").unwrap();
    assert!(matches!(dir.load(), Err(StateError::Corrupt { .. })));
    let sha = dir.put_blob(b"hello").unwrap();
    assert_eq!(
        sha,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(dir.get_blob(&sha).unwrap(), b"hello");
}

fn record(hash: &str) -> ObjectRecord {
    ObjectRecord {
        input_hash: hash.into(),
        completed: true,
        object: Value::Null.into(),
        ..ObjectRecord::new(ObjectStatus::new(
            crate::model::ObjectRef {
                kind: "p".into(),
                namespace: Some("default".into()),
                name: hash.into(),
            },
            "p",
        ))
    }
}

fn dirty_requests(keys: &[&str]) -> Dirty {
    Dirty {
        requests: keys.iter().map(|k| k.to_string()).collect(),
        ..Dirty::default()
    }
}

#[test]
fn load_without_documents_skips_request_documents_and_outputs_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let mut st = dir.load().unwrap();
    let heavy = |hash: &str| {
        let mut r = record(hash);
        r.object = serde_json::json!({"kind": "p", "spec": {"size": hash}}).into();
        r.outputs = vec![OutputRecord {
            pipeline: "configure".into(),
            files: vec![FileRecord {
                path: "cm.yaml".into(),
                sha256: "ab".into(),
            }],
            selectors: vec![],
            health: None,
        }];
        r
    };
    st.promises
        .insert("promise/p".into(), Box::new(heavy("p0")));
    st.requests
        .insert("p/default/r0".into(), Box::new(heavy("h0")));
    dir.save_changes(&mut st, &dirty_requests(&["p/default/r0"]))
        .unwrap();
    // A journal line with a request and a Promise record.
    st.requests
        .insert("p/default/r1".into(), Box::new(heavy("h1")));
    st.promises.get_mut("promise/p").unwrap().input_hash = "p1".into();
    let mut dirty = dirty_requests(&["p/default/r1"]);
    dirty.promises.insert("promise/p".into());
    dir.save_changes(&mut st, &dirty).unwrap();
    assert!(tmp.path().join("state.journal").exists());

    let light = dir.load_without_documents().unwrap();
    for key in ["p/default/r0", "p/default/r1"] {
        let r = &light.requests[key];
        assert_eq!(**r.object, Value::Null, "{key}");
        assert!(r.outputs.is_empty(), "{key}");
        assert_eq!(r.status, st.requests[key].status, "{key}");
        assert_eq!(r.input_hash, st.requests[key].input_hash, "{key}");
    }
    assert_eq!(
        light.promises, st.promises,
        "Promise records keep everything"
    );
    // The same thread loads everything again afterwards.
    assert_eq!(dir.load().unwrap(), st);
}

#[test]
fn journal_extends_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let mut st = dir.load().unwrap();
    for i in 0..50 {
        st.requests
            .insert(format!("p/default/r{i}"), Box::new(record("h0")));
    }
    // No snapshot yet: the first save writes one whatever the dirty set says.
    dir.save_changes(&mut st, &dirty_requests(&["p/default/r0"]))
        .unwrap();
    let snapshot = std::fs::read(tmp.path().join("state.json")).unwrap();
    assert!(!tmp.path().join("state.journal").exists());

    // Two small passes: journal lines, the snapshot untouched.
    st.requests.get_mut("p/default/r1").unwrap().input_hash = "h1".into();
    st.requests.remove("p/default/r2");
    dir.save_changes(&mut st, &dirty_requests(&["p/default/r1", "p/default/r2"]))
        .unwrap();
    st.config_commit = Some("c2".into());
    dir.save_changes(
        &mut st,
        &Dirty {
            globals: true,
            ..Dirty::default()
        },
    )
    .unwrap();
    assert_eq!(
        std::fs::read(tmp.path().join("state.json")).unwrap(),
        snapshot
    );
    let journal = std::fs::read_to_string(tmp.path().join("state.journal")).unwrap();
    assert_eq!(journal.lines().count(), 2, "{journal}");
    assert_eq!(dir.load().unwrap(), st);

    // Nothing dirty: nothing written.
    dir.save_changes(&mut st, &Dirty::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("state.journal")).unwrap(),
        journal
    );

    // A torn last line (crash mid-append) is ignored and cut, so later lines count.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(tmp.path().join("state.journal"))
        .unwrap();
    f.write_all(br#"{"generation":"#).unwrap();
    drop(f);
    assert_eq!(dir.load().unwrap(), st);
    st.requests.get_mut("p/default/r3").unwrap().input_hash = "h3".into();
    dir.save_changes(&mut st, &dirty_requests(&["p/default/r3"]))
        .unwrap();
    assert_eq!(dir.load().unwrap(), st);

    // The journal outgrows the snapshot: a new snapshot, no journal.
    for round in 0..200 {
        st.requests.get_mut("p/default/r4").unwrap().input_hash = format!("x{round}").into();
        dir.save_changes(&mut st, &dirty_requests(&["p/default/r4"]))
            .unwrap();
    }
    assert_ne!(
        std::fs::read(tmp.path().join("state.json")).unwrap(),
        snapshot
    );
    assert_eq!(dir.load().unwrap(), st);
}

#[test]
fn a_pass_whose_journal_line_would_pass_4_mib_writes_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let mut st = dir.load().unwrap();
    for i in 0..10 {
        st.requests.insert(
            format!("p/default/r{i}"),
            Box::new(record(&"a".repeat(1 << 20))),
        );
    }
    dir.save_changes(&mut st, &dirty_requests(&["p/default/r0"]))
        .unwrap();
    let snapshot = std::fs::read(tmp.path().join("state.json")).unwrap();
    // Five changed records: a 5 MiB line, shorter than the 10 MiB snapshot.
    let keys: Vec<String> = (0..5).map(|i| format!("p/default/r{i}")).collect();
    for k in &keys {
        st.requests.get_mut(k).unwrap().input_hash = "b".repeat(1 << 20).into();
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    dir.save_changes(&mut st, &dirty_requests(&keys)).unwrap();
    assert!(
        !tmp.path().join("state.journal").exists(),
        "a snapshot, not a journal line"
    );
    assert_ne!(
        std::fs::read(tmp.path().join("state.json")).unwrap(),
        snapshot
    );
    assert_eq!(dir.load().unwrap(), st);
    // One changed record: a journal line again.
    st.requests.get_mut("p/default/r9").unwrap().input_hash = "c".into();
    dir.save_changes(&mut st, &dirty_requests(&["p/default/r9"]))
        .unwrap();
    assert!(tmp.path().join("state.journal").exists());
    assert_eq!(dir.load().unwrap(), st);
}

#[test]
fn a_journal_of_another_snapshot_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let mut st = dir.load().unwrap();
    st.requests
        .insert("p/default/a".into(), Box::new(record("h0")));
    dir.save(&mut st).unwrap();
    let old_snapshot = std::fs::read(tmp.path().join("state.json")).unwrap();
    let before = st.clone();
    st.requests.get_mut("p/default/a").unwrap().input_hash = "h1".into();
    dir.save_changes(&mut st, &dirty_requests(&["p/default/a"]))
        .unwrap();
    assert_eq!(dir.load().unwrap(), st);
    // Losing the snapshot (or restoring an old copy) must not apply a journal written
    // for another one.
    std::fs::remove_file(tmp.path().join("state.json")).unwrap();
    assert!(dir.load().unwrap().requests.is_empty());
    let mut other = before.clone();
    dir.save(&mut other).unwrap(); // new generation
    std::fs::write(
        tmp.path().join("state.journal"),
        std::fs::read_to_string(tmp.path().join("state.json"))
            .map(|_| format!("{{\"generation\":\"{}\",\"requests\":{{}}}}\n", "stale"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(dir.load().unwrap(), other);
    drop(old_snapshot);
}

#[test]
fn a_read_only_state_dir_is_never_written() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no/such/dir");
    let err = StateDir::open_read_only(&missing).unwrap_err();
    assert!(matches!(err, StateError::Missing { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("state directory {} does not exist", missing.display())
    );
    assert!(!tmp.path().join("no").exists());
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = StateDir::open_read_only(&file).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");

    // A journal being appended (its last line not yet whole) is read up to the torn
    // line and left as it is: its writer, a running daemon, may still finish it.
    let dir = StateDir::open(tmp.path().join("s")).unwrap();
    let mut st = dir.load().unwrap();
    st.requests
        .insert("p/default/a".into(), Box::new(record("h0")));
    dir.save(&mut st).unwrap();
    st.requests.get_mut("p/default/a").unwrap().input_hash = "h1".into();
    dir.save_changes(&mut st, &dirty_requests(&["p/default/a"]))
        .unwrap();
    let journal = tmp.path().join("s/state.journal");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap();
    f.write_all(br#"{"generation":"#).unwrap();
    drop(f);
    let before = std::fs::read(&journal).unwrap();
    let ro = StateDir::open_read_only(tmp.path().join("s")).unwrap();
    assert_eq!(ro.load().unwrap(), st);
    assert_eq!(std::fs::read(&journal).unwrap(), before);
    // A journal of another snapshot (the daemon just wrote a new one) is not dropped.
    std::fs::write(&journal, "{\"generation\":\"other\",\"requests\":{}}\n").unwrap();
    ro.load().unwrap();
    assert!(std::fs::read_to_string(&journal).unwrap().contains("other"));
}

#[test]
fn torn_blobs_read_as_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let sha = dir.put_blob(b"apiVersion: v1\n").unwrap();
    std::fs::write(tmp.path().join("blobs").join(&sha), b"apiVer").unwrap();
    let err = dir.get_blob(&sha).unwrap_err().to_string();
    assert!(err.contains("does not match its sha256"), "{err}");
}

#[test]
fn a_record_read_back_shares_its_placed_hashes_texts_and_status_lists() {
    let sha = "c0ffee".repeat(10) + "abcd";
    let placed = |r: &mut ObjectRecord| {
        r.outputs = vec![OutputRecord {
            pipeline: "configure".into(),
            files: vec![FileRecord {
                path: "cm.yaml".into(),
                sha256: sha.as_str().into(),
            }],
            selectors: Vec::new(),
            health: Some(false),
        }];
        r.placements = vec![PlacementRecord {
            key: "d/k".into(),
            store: "GitStateStore/s".into(),
            destination: "d".into(),
            pipeline: "configure".into(),
            group_id: "g".into(),
            dir: "d/k".into(),
            misplaced: false,
            files: vec![FileRecord {
                path: "d/k/cm.yaml".into(),
                sha256: sha.as_str().into(),
            }],
        }];
        r.status.set(
            crate::status::cond::RECONCILED,
            crate::status::ConditionStatus::True,
            "Reconciled",
            "Reconciled",
        );
        // The same time in both, whenever the second turns.
        r.status.conditions[0].last_transition_time = "2026-12-06T00:00:00Z".into();
    };
    let (mut a, mut b) = (record("a"), record("b"));
    placed(&mut a);
    placed(&mut b);
    let text = |r: &ObjectRecord| serde_json::to_string(r).unwrap();
    let mut a: ObjectRecord = serde_json::from_str(&text(&a)).unwrap();
    let mut b: ObjectRecord = serde_json::from_str(&text(&b)).unwrap();
    let hash = |r: &ObjectRecord, placed: bool| match placed {
        true => r.placements[0].files[0].sha256.as_ptr(),
        false => r.outputs[0].files[0].sha256.as_ptr(),
    };
    assert_ne!(hash(&a, true), hash(&a, false), "read back: two strings");
    let before = text(&a);
    a.share_texts();
    b.share_texts();
    assert_eq!(text(&a), before, "sharing changes no value");
    assert_eq!(
        hash(&a, true),
        hash(&a, false),
        "one hash for output and placement"
    );
    let store = |r: &ObjectRecord| r.placements[0].store.as_ptr();
    assert_eq!(store(&a), store(&b), "equal texts are one");
    let conditions = |r: &ObjectRecord| r.status.conditions.as_ptr();
    assert_eq!(
        conditions(&a),
        conditions(&b),
        "equal condition lists are one"
    );
    let promise = |r: &ObjectRecord| r.status.promise.as_ptr();
    assert_eq!(promise(&a), promise(&b), "one Promise name");
    let group = |r: &ObjectRecord| r.placements[0].group_id.as_ptr();
    assert_eq!(group(&a), group(&b), "one group id");
    let pipeline = |r: &ObjectRecord| r.outputs[0].pipeline.as_ptr();
    assert_eq!(pipeline(&a), pipeline(&b), "one pipeline name");
}
