//! Server render time of the web console's pages at 10,000 requests (README "Web console";
//! results in `docs/benchmarks.md`, "Web console").
//!
//! Run: `cargo bench --bench web`. `BENCH_WEB_REQUESTS` (default 10000) sets the request
//! count, `BENCH_WEB_RUNS` (default 20) the renders per page.
//!
//! It writes a state directory of N request records over 3 Promises (each request placed on
//! one of 3 Destinations, with conditions, events and a store commit; 1% failing) and a local
//! Git state store with 100 commits carrying promised's trailers, then times, in process:
//! loading the snapshot once (what the first page after a pass pays), and each page built
//! from the cached snapshot and rendered to HTML (what every page view pays): median and
//! slowest of the runs.

#![allow(missing_docs)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use promised::infra::{DestinationStatus, InfraStatus, LastWrite, StateStoreStatus};
use promised::model::ObjectRef;
use promised::state::{FileRecord, ObjectRecord, PlacementRecord, StateDir};
use promised::status::{ConditionStatus, EventType, Landed, ObjectStatus};
use promised::web::{Console, WebSettings, audit, overview, promise, request};

const PROMISES: [&str; 3] = ["alpha", "beta", "gamma"];
const DESTS: [&str; 3] = ["dev", "staging", "prod"];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(status: ObjectStatus, object: serde_json::Value) -> ObjectRecord {
    ObjectRecord {
        input_hash: "h".into(),
        completed: true,
        object: Arc::new(object).into(),
        ..ObjectRecord::new(status)
    }
}

fn promise_doc(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "platform.kratix.io/v1alpha1", "kind": "Promise",
        "metadata": {"name": name, "labels": {"kratix.io/promise-version": "v1.2.0"}},
        "spec": {"api": {"spec": {"group": "bench.promised.dev", "names": {"kind": name},
            "versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "required": ["size"], "properties": {
                    "size": {"type": "string", "enum": ["small", "large"], "description": "How big."},
                    "replicas": {"type": "integer", "minimum": 1, "default": 1}}}}}}}]}},
            "workflows": {"resource": {"configure": [{"metadata": {"name": "configure"},
                "spec": {"containers": [{"name": "render", "image": "example.com/render:1"}]}}]}}}
    })
}

fn write_state(dir: &Path, n: usize, commit: &str) {
    let sd = StateDir::open(dir).unwrap();
    let mut st = sd.load().unwrap();
    for p in PROMISES {
        let mut s = ObjectStatus::new(
            ObjectRef {
                kind: "Promise".into(),
                namespace: None,
                name: p.into(),
            },
            p,
        );
        s.status = Some("Available".into());
        s.set(
            "Reconciled",
            ConditionStatus::True,
            "Reconciled",
            "Reconciled",
        );
        let mut r = record(s, promise_doc(p));
        r.promise = Some(promise_doc(p));
        st.promises.insert(format!("promise/{p}"), Box::new(r));
    }
    for i in 0..n {
        let p = PROMISES[i % 3];
        let d = DESTS[i % 3];
        let (ns, name) = (format!("team-{}", i % 50), format!("req-{i:05}"));
        let mut s = ObjectStatus::new(
            ObjectRef {
                kind: p.into(),
                namespace: Some(ns.clone()),
                name: name.clone(),
            },
            p,
        );
        s.source = format!("requests/{p}/{name}.yaml[0]");
        let dir = format!("clusters/{d}/resources/{ns}/{p}/{name}/configure/5058f");
        if i % 100 == 7 {
            s.set(
                "Reconciled",
                ConditionStatus::False,
                "ConfigureWorkflowFailed",
                "Failing",
            );
            s.message = format!(
                "Failing: pipeline configure: container render failed (exit code 1); last lines of stderr:\nerror: quota for {name}"
            );
        } else {
            s.set(
                "Reconciled",
                ConditionStatus::True,
                "Reconciled",
                "Reconciled",
            );
            s.message = "Resource requested".into();
            s.destinations.push(Landed {
                destination: d.into(),
                pipeline: "configure".into(),
                path: dir.clone(),
                misplaced: false,
            });
            s.commits
                .insert("GitStateStore/local".into(), commit.into());
        }
        for e in 0..5 {
            s.events.push(promised::status::Event {
                type_: EventType::Normal,
                reason: "ConfigureWorkflowCompleted".into(),
                message: format!("event {e}").into(),
                time: "2026-01-01T00:00:00Z".into(),
            });
        }
        let obj = serde_json::json!({"apiVersion": "bench.promised.dev/v1", "kind": p,
            "metadata": {"name": name, "namespace": ns}, "spec": {"size": "small"}});
        let mut r = record(s, obj);
        r.placements.push(PlacementRecord {
            key: format!("{p}/{ns}/{name}"),
            store: "GitStateStore/local".into(),
            destination: d.into(),
            pipeline: "configure".into(),
            group_id: "5058f".into(),
            dir: dir.clone(),
            misplaced: false,
            files: vec![FileRecord {
                path: format!("{dir}/configmap.yaml"),
                sha256: "0".repeat(64).into(),
            }],
        });
        st.requests.insert(format!("{p}/{ns}/{name}"), Box::new(r));
    }
    sd.save(&mut st).unwrap();
    let mut infra = InfraStatus::default();
    for d in DESTS {
        let mut ds = DestinationStatus::new(d, "GitStateStore", "local");
        ds.requests = n / 3;
        infra.destinations.insert(d.into(), ds);
    }
    infra.state_stores.insert(
        "GitStateStore/local".into(),
        StateStoreStatus {
            kind: "GitStateStore".into(),
            name: "local".into(),
            status: "Ready".into(),
            url: "store.git".into(),
            branch_or_bucket: "main".into(),
            conditions: Vec::new(),
            destinations: DESTS.iter().map(|d| d.to_string()).collect(),
            last_successful_write: Some(LastWrite {
                time: "2026-01-01T00:00:00Z".into(),
                version: commit.into(),
            }),
            last_check_time: None,
            events: Vec::new(),
        },
    );
    promised::infra::save(dir, &infra).unwrap();
}

/// A bare repo `store.git` in `dir` with 100 commits carrying promised's trailers; returns the
/// last commit.
fn write_store(dir: &Path) -> String {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "promised")
            .env("GIT_AUTHOR_EMAIL", "p@example.com")
            .env("GIT_COMMITTER_NAME", "promised")
            .env("GIT_COMMITTER_EMAIL", "p@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q", "--bare", "-b", "main", "store.git"]);
    let mut stream = String::new();
    for i in 1..=100 {
        let msg = format!(
            "promised: 1 updated, 0 deleted (config c{i:06})\n\n- updated alpha/team-1/req-{i:05}\n\nPromised-Config-Commit: {i:040x}\nPromised-Promise: alpha\nPromised-Resource: alpha/team-1/req-{i:05}\n"
        );
        stream.push_str(&format!(
            "commit refs/heads/main\nmark :{i}\ncommitter promised <p@example.com> {} +0000\ndata {}\n{msg}\n",
            1_700_000_000 + i,
            msg.len()
        ));
        if i > 1 {
            stream.push_str(&format!("from :{}\n", i - 1));
        }
        stream.push_str(&format!("M 644 inline f{i}.yaml\ndata 2\nx\n\n"));
    }
    let mut child = Command::new("git")
        .args(["--git-dir", "store.git", "fast-import", "--quiet"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    git(&["--git-dir", "store.git", "rev-parse", "main"])
}

fn time(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, Duration, usize) {
    let mut all = Vec::with_capacity(runs);
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        bytes = f();
        all.push(t.elapsed());
    }
    all.sort();
    (all[runs / 2], all[runs - 1], bytes)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_or("BENCH_WEB_REQUESTS", 10_000);
    let runs = env_or("BENCH_WEB_RUNS", 20).max(1);
    let tmp = tempfile::tempdir().unwrap();
    let commit = write_store(tmp.path());
    write_state(tmp.path(), n, &commit);
    let console = Console::new(tmp.path().to_path_buf(), WebSettings::default()).unwrap();
    let t = Instant::now();
    let snap = console.snapshot().unwrap();
    let load = t.elapsed();
    assert_eq!(snap.state.requests.len(), n);
    let key = snap.state.requests.keys().nth(n / 2).unwrap().clone();
    let filter = overview::Filter::default();
    let failed = overview::Filter {
        state: "failed".into(),
        ..Default::default()
    };
    let last_page = overview::Filter {
        page: n / overview::PAGE_SIZE,
        ..Default::default()
    };
    let search = overview::Filter {
        q: "req-0999".into(),
        ..Default::default()
    };
    println!("| page ({n} requests) | median | slowest | HTML |");
    println!("|---|---|---|---|");
    println!("| snapshot load (once per pass) | {} | | |", ms(load));
    let row = |name: &str, f: &mut dyn FnMut() -> usize| {
        let (med, max, bytes) = time(runs, f);
        println!(
            "| {name} | {} | {} | {} KB |",
            ms(med),
            ms(max),
            bytes / 1024
        );
    };
    row("overview", &mut || {
        let s = console.snapshot().unwrap();
        overview::render(&overview::build(&console, &s, &filter))
            .into_string()
            .len()
    });
    row("overview, failed only", &mut || {
        let s = console.snapshot().unwrap();
        overview::render(&overview::build(&console, &s, &failed))
            .into_string()
            .len()
    });
    row("overview, last page", &mut || {
        let s = console.snapshot().unwrap();
        overview::render(&overview::build(&console, &s, &last_page))
            .into_string()
            .len()
    });
    row("overview, name search", &mut || {
        let s = console.snapshot().unwrap();
        overview::render(&overview::build(&console, &s, &search))
            .into_string()
            .len()
    });
    row("Promise page (1/3 of the requests)", &mut || {
        let s = console.snapshot().unwrap();
        promise::render(&promise::build(&console, &s, "alpha", &filter).unwrap())
            .into_string()
            .len()
    });
    row("request page", &mut || {
        let s = console.snapshot().unwrap();
        request::render(&request::build(&console, &s, &key).unwrap())
            .into_string()
            .len()
    });
    row("audit page (100 store commits, `git log`)", &mut || {
        let s = console.snapshot().unwrap();
        audit::render(&audit::build(&console, &s, &audit::Filter::default()))
            .into_string()
            .len()
    });
    row("overview JSON twin", &mut || {
        let s = console.snapshot().unwrap();
        serde_json::to_vec(&overview::build(&console, &s, &filter))
            .unwrap()
            .len()
    });
}
