//! Runs in flight at the same time are isolated from each other, in the resident sandbox
//! (the daemon's default) and with one bwrap per container: a run cannot see another run's
//! `/kratix` or `/tmp`, cannot signal another run's processes and cannot reach the network,
//! the host's or another run's loopback.
//!
//! Needs bubblewrap (skipped without it; fails instead with `PROMISED_REQUIRE_SANDBOX=1`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use promised::model::{Container, Pipeline, PipelineMeta, PipelineSpec};
use promised::pipeline::{
    Action, ObjectIdentity, RunnerConfig, WorkflowInput, WorkflowResult, WorkflowType, run_workflow,
};

fn pipeline(script: &str) -> Vec<Pipeline> {
    vec![Pipeline {
        api_version: "platform.kratix.io/v1alpha1".into(),
        kind: "Pipeline".into(),
        metadata: PipelineMeta {
            name: "p".into(),
            ..Default::default()
        },
        spec: PipelineSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "test".into(),
                command: Some(vec!["bash".into(), "-c".into(), script.into()]),
                ..Default::default()
            }],
            ..Default::default()
        },
    }]
}

fn input<'a>(name: &str, pipelines: &'a [Pipeline]) -> WorkflowInput<'a> {
    WorkflowInput {
        workflow_type: WorkflowType::Resource,
        action: Action::Configure,
        promise_name: "iso".into(),
        crd_plural: "isos".into(),
        object: ObjectIdentity {
            kind: "iso".into(),
            group: "test.promised.dev".into(),
            version: "v1".into(),
            name: name.into(),
            namespace: "default".into(),
        },
        object_yaml: format!(
            "apiVersion: test.promised.dev/v1\nkind: iso\nmetadata:\n  name: {name}\n  namespace: default\n"
        ),
        promise_dir: None,
        pipeline_namespace: None,
        pipelines,
        existing_status: Default::default(),
        runtime_annotation: None,
        promise_hash: String::new(),
    }
}

fn runners(tmp: &Path) -> Vec<(&'static str, RunnerConfig)> {
    let base = |sub: &str| RunnerConfig {
        work_dir: tmp.join(sub),
        timeout: Duration::from_secs(120),
        ..Default::default()
    };
    vec![
        (
            "resident",
            RunnerConfig {
                resident: Some(PathBuf::from(env!("CARGO_BIN_EXE_promised"))),
                ..base("resident")
            },
        ),
        ("bwrap", base("bwrap")),
    ]
}

fn outcome(r: &WorkflowResult) -> String {
    let logs: Vec<String> = r
        .pipelines
        .iter()
        .flat_map(|p| &p.logs)
        .map(|l| format!("exit {:?}\n{}{}", l.exit_code, l.stdout, l.stderr))
        .collect();
    format!(
        "{:?}\n{}",
        r.pipelines.iter().map(|p| &p.outcome).collect::<Vec<_>>(),
        logs.join("\n")
    )
}

/// The host directory of the run whose output holds `marker`.
fn run_dir_with(work_dir: &Path, marker: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(work_dir).ok()?.flatten() {
        let out = e.path().join("output").join(marker);
        if out.exists() {
            return Some(e.path());
        }
        // Run directories may be nested one level (per-run directories).
        for e2 in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
            if e2.path().join("output").join(marker).exists() {
                return Some(e2.path());
            }
        }
    }
    None
}

/// Run A starts a background process, keeps a file in `/tmp`, listens on loopback if it can,
/// and waits (for a file the test puts into its input directory on the host). Meanwhile run
/// B looks for A's files, tries to kill every process it can, and to connect to A's
/// listener and to a listener on the host. A must then find its process and file intact, and
/// B must have seen and reached nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_cannot_see_signal_or_reach_each_other() {
    if !common::bwrap_works() {
        eprintln!("skipping: bubblewrap is not installed or cannot create namespaces");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    let a_script = r#"set -u
echo secret-a > /tmp/a-marker
sleep 1000 &
bg=$!
python3 -c 'import socket,time
s=socket.socket(); s.bind(("127.0.0.1", 45321)); s.listen(); time.sleep(1000)' 2>/dev/null &
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a-started\n' > /kratix/output/a-started.yaml
while [ ! -e /kratix/input/go ]; do sleep 0.05; done
kill -0 "$bg" || { echo "A: my background process was killed"; exit 7; }
[ "$(cat /tmp/a-marker)" = secret-a ] || { echo "A: /tmp/a-marker changed"; exit 8; }
[ ! -e /tmp/b-marker ] || { echo "A: sees B's /tmp"; exit 9; }
[ ! -e /kratix/output/b-done.yaml ] || { echo "A: sees B's output"; exit 10; }
"#;
    let b_script = format!(
        r#"set -u
echo b > /tmp/b-marker
[ ! -e /tmp/a-marker ] || {{ echo "B: sees A's /tmp"; exit 3; }}
[ ! -e /kratix/output/a-started.yaml ] || {{ echo "B: sees A's output"; exit 4; }}
if cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' | grep -q 'sleep [1]000'; then
  echo "B: sees A's processes"; exit 5
fi
kill -9 -1 2>/dev/null
(echo > /dev/tcp/127.0.0.1/45321) 2>/dev/null && {{ echo "B: reached A's loopback"; exit 6; }}
(echo > /dev/tcp/127.0.0.1/{host_port}) 2>/dev/null && {{ echo "B: reached the host"; exit 11; }}
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b-done\n' > /kratix/output/b-done.yaml
"#
    );
    for (label, cfg) in runners(tmp.path()) {
        let a_ps = pipeline(a_script);
        let b_ps = pipeline(&b_script);
        let a_cfg = cfg.clone();
        let a = tokio::spawn(async move {
            let ps = a_ps;
            run_workflow(&a_cfg, &input("a", &ps)).await
        });
        // Wait for A to be running (its output appears on the host).
        let a_dir = loop {
            if let Some(d) = run_dir_with(&cfg.work_dir, "a-started.yaml") {
                break d;
            }
            assert!(
                !a.is_finished(),
                "{label}: A ended before it started waiting"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let b = run_workflow(&cfg, &input("b", &b_ps)).await;
        assert!(b.succeeded(), "{label}: B: {}", outcome(&b));
        std::fs::write(a_dir.join("input").join("go"), "").unwrap();
        let a = a.await.unwrap();
        assert!(a.succeeded(), "{label}: A: {}", outcome(&a));
    }
    drop(host);
}
