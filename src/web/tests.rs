//! Rendering tests of the console pages over a made-up state directory.

use std::sync::Arc;

use super::*;
use crate::model::ObjectRef;
use crate::state::{FileRecord, ObjectRecord, PlacementRecord, StateDir};
use crate::status::{ConditionStatus, ObjectStatus};

fn record(kind: &str, ns: Option<&str>, name: &str, promise: &str, state: &str) -> ObjectRecord {
    let mut s = ObjectStatus::new(
        ObjectRef {
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
        },
        promise,
    );
    let cs = if state == "Reconciled" {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    s.set("Reconciled", cs, "R", state);
    ObjectRecord {
        input_hash: Default::default(),
        completed: true,
        object: Arc::new(serde_json::json!({})).into(),
        ..ObjectRecord::new(s)
    }
}

/// A state directory with Promise `app`, `n` reconciled requests, one failing request
/// `app/default/zz-broken` (sorted last by key) and a placed request `app/default/r000`.
fn world(n: usize) -> (tempfile::TempDir, Console) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let mut st = dir.load().unwrap();
    let mut p = record("Promise", None, "app", "app", "Reconciled");
    p.promise = Some(
        serde_json::json!({"metadata": {"name": "app", "labels": {"kratix.io/promise-version": "v2"}},
        "spec": {"api": {"spec": {"group": "example.com", "names": {"kind": "App"}, "versions": [{"name": "v1",
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "required": ["size"],
                "properties": {"size": {"type": "string", "default": "small", "enum": ["small", "big"]}}}}}}}]}}}}),
    );
    st.promises.insert("promise/app".into(), Box::new(p));
    for i in 0..n {
        let name = format!("r{i:03}");
        let mut r = record("App", Some("default"), &name, "app", "Reconciled");
        if i == 0 {
            r.placements.push(PlacementRecord {
                key: "k".into(),
                store: "GitStateStore/local".into(),
                destination: "dev".into(),
                pipeline: "configure".into(),
                group_id: "g".into(),
                dir: "dev/resources/default/app/r000/configure/g".into(),
                misplaced: false,
                files: vec![FileRecord {
                    path: "dev/x.yaml".into(),
                    sha256: "0".repeat(64).into(),
                }],
            });
            r.status.commits.insert(
                "GitStateStore/local".into(),
                ("c0ffee".repeat(6) + "abcd").into(),
            );
            r.status.message = "<script>alert(1)</script>".into();
        }
        st.requests
            .insert(format!("app/default/{name}"), Box::new(r));
    }
    let mut broken = record("App", Some("default"), "zz-broken", "app", "Failing");
    broken.status.message = "Failing: pipeline configure".into();
    st.requests
        .insert("app/default/zz-broken".into(), Box::new(broken));
    dir.save(&mut st).unwrap();
    let logs = crate::pipeline::PipelineResult {
        name: "configure".into(),
        outcome: crate::pipeline::Outcome::Succeeded,
        outputs: vec![],
        selectors: vec![],
        status: None,
        logs: vec![crate::pipeline::ContainerLog {
            name: "render".into(),
            stdout: String::new(),
            stderr: "render: quota exhausted\n".into(),
            exit_code: Some(1),
        }],
        images: vec![],
    };
    records::save_logs(tmp.path(), "app/default/zz-broken", &[logs]);
    let settings = WebSettings {
        commit_urls: [(
            "GitStateStore/local".to_string(),
            "https://git.example/state/commit/{commit}".to_string(),
        )]
        .into(),
        ..WebSettings::default()
    };
    let c = Console::new(tmp.path().to_path_buf(), settings).unwrap();
    (tmp, c)
}

#[test]
fn the_overview_puts_failed_requests_first_with_their_log_tail() {
    let (_tmp, c) = world(3);
    let snap = c.snapshot().unwrap();
    let v = overview::build(&c, &snap, &overview::Filter::default());
    assert_eq!(v.counts.failed, 1);
    assert_eq!(v.counts.reconciled, 3);
    assert_eq!(v.attention[0].kind, "failedRequest");
    assert_eq!(v.attention[0].subject, "app/default/zz-broken");
    assert_eq!(
        v.attention[0].log_tail.as_deref(),
        Some("render: quota exhausted")
    );
    assert_eq!(v.requests.rows[0].key, "app/default/zz-broken");
    let html = overview::render(&v).into_string();
    assert!(html.contains("render: quota exhausted"), "{html}");
    // Text from the state directory is escaped.
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[test]
fn long_lists_are_paged_and_filtered() {
    let (_tmp, c) = world(120);
    let snap = c.snapshot().unwrap();
    let page = |state: &str, q: &str, page: usize| {
        let f = overview::Filter {
            state: state.into(),
            q: q.into(),
            page,
        };
        overview::build(&c, &snap, &f).requests
    };
    let all = page("", "", 1);
    assert_eq!((all.total, all.pages, all.rows.len()), (121, 3, 50));
    let last = page("", "", 3);
    assert_eq!(last.rows.len(), 21);
    assert_eq!(last.rows.last().unwrap().key, "app/default/r119");
    // Out-of-range pages clamp.
    assert_eq!(page("", "", 99).filter.page, 3);
    assert_eq!(page("failed", "", 1).total, 1);
    assert_eq!(page("reconciled", "", 1).total, 120);
    assert_eq!(page("", "r11", 1).total, 10);
    let html =
        overview::render(&overview::build(&c, &snap, &overview::Filter::default())).into_string();
    assert!(html.contains("page 1 of 3"), "{html}");
    assert!(
        html.contains(r#"rel="next" href="/ui/?state=&amp;q=&amp;page=2""#),
        "{html}"
    );
}

#[test]
fn the_request_page_links_its_commit_and_the_promise_page_shows_its_api() {
    let (_tmp, c) = world(2);
    let snap = c.snapshot().unwrap();
    let r = request::build(&c, &snap, "app/default/r000").unwrap();
    let p = &r.placements[0];
    assert_eq!(p.destination, "dev");
    assert_eq!(p.store, "GitStateStore/local");
    let commit = "c0ffee".repeat(6) + "abcd";
    assert_eq!(p.commit.as_deref(), Some(commit.as_str()));
    let url = format!("https://git.example/state/commit/{commit}");
    assert_eq!(p.commit_url.as_deref(), Some(url.as_str()));
    let html = request::render(&r).into_string();
    assert!(html.contains(&format!("href=\"{url}\"")), "{html}");
    assert!(html.contains("dev/resources/default/app/r000/configure/g"));
    assert!(request::build(&c, &snap, "app/default/none").is_none());

    let v = promise::build(&c, &snap, "app", &overview::Filter::default()).unwrap();
    assert_eq!(v.promise_version.as_deref(), Some("v2"));
    let f = &v.api[0].fields;
    assert_eq!(v.api[0].api_version, "example.com/v1");
    let size = f.iter().find(|f| f.path == "spec.size").unwrap();
    assert!(size.required);
    assert_eq!(size.default.as_deref(), Some("\"small\""));
    assert_eq!(
        size.constraints,
        vec![r#"enum: ["small","big"]"#.to_string()]
    );
    assert_eq!(v.requests.total, 3);
    assert!(promise::build(&c, &snap, "nope", &overview::Filter::default()).is_none());
}

#[test]
fn the_snapshot_is_reloaded_only_when_the_state_directory_changes() {
    let (tmp, c) = world(1);
    let a = c.snapshot().unwrap();
    let b = c.snapshot().unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    records::save_pass(tmp.path(), &records::PassRecord::default()).unwrap();
    let d = c.snapshot().unwrap();
    assert!(!Arc::ptr_eq(&a, &d));
    assert_ne!(a.version, d.version);
    assert!(d.last_pass.is_some());
}

/// After a pass the daemon re-reads the snapshot only while someone looks at the console;
/// otherwise it lets it go, and the next page reads the state directory again.
#[test]
fn after_a_pass_the_snapshot_is_kept_warm_only_while_the_console_is_viewed() {
    let (tmp, c) = world(1);
    // Never viewed: nothing is read, nothing held.
    c.after_pass();
    assert!(!c.holds_snapshot());
    // Viewed: the pass's changes are read at once.
    let a = c.snapshot().unwrap();
    records::save_pass(tmp.path(), &records::PassRecord::default()).unwrap();
    c.after_pass();
    assert!(c.holds_snapshot());
    let b = c.cache.get(tmp.path()).unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert!(b.last_pass.is_some());
    // Last viewed longer ago than KEEP_WARM: let go.
    *c.viewed.lock().unwrap() = std::time::Instant::now().checked_sub(KEEP_WARM * 2);
    c.after_pass();
    assert!(!c.holds_snapshot());
    let d = c.snapshot().unwrap();
    assert_eq!(d.version, b.version);
}

#[test]
fn bearer_tokens_come_from_the_header_or_the_cookie() {
    let mut h = HeaderMap::new();
    assert_eq!(presented(&h), None);
    h.insert(header::COOKIE, "a=b; promised-token=t1".parse().unwrap());
    assert_eq!(presented(&h).as_deref(), Some("t1"));
    h.insert(header::AUTHORIZATION, "Bearer t2".parse().unwrap());
    assert_eq!(presented(&h).as_deref(), Some("t2"));
}
