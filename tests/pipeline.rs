//! Pipeline runner tests with real child processes and real bubblewrap.
//!
//! Tests that need bwrap print a message and return when it is missing or cannot create
//! namespaces (they fail instead with `PROMISED_REQUIRE_SANDBOX=1`, as in CI); the redis test
//! also needs `../shared/realworld/kratix-marketplace/redis`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use promised::model::{Container, EnvVar, Pipeline, PipelineMeta, PipelineSpec};
use promised::pipeline::{
    Action, Error, ImageOverride, Mount, ObjectIdentity, Outcome, RunnerConfig, SandboxMode,
    WorkflowInput, WorkflowResult, WorkflowType, run_workflow,
};
use serde_json::{Value, json};

use common::bwrap_works as bwrap_ok;

macro_rules! need_bwrap {
    () => {
        if !bwrap_ok() {
            eprintln!("skipping: bubblewrap is not installed or cannot create namespaces");
            return;
        }
    };
}

fn container(name: &str, script: &str) -> Container {
    Container {
        name: name.into(),
        image: "test".into(),
        command: Some(vec!["bash".into(), "-c".into(), script.into()]),
        ..Default::default()
    }
}

fn pipeline(name: &str, containers: Vec<Container>) -> Pipeline {
    Pipeline {
        api_version: "platform.kratix.io/v1alpha1".into(),
        kind: "Pipeline".into(),
        metadata: PipelineMeta {
            name: name.into(),
            ..Default::default()
        },
        spec: PipelineSpec {
            containers,
            ..Default::default()
        },
    }
}

/// The runner every test here uses: the resident sandbox (the daemon's default), or one
/// bwrap per container when `SANDBOX_UNDER_TEST=bwrap` (CI runs this file both ways).
fn cfg(tmp: &Path) -> RunnerConfig {
    let per_run_bwrap = std::env::var("SANDBOX_UNDER_TEST").is_ok_and(|v| v == "bwrap");
    RunnerConfig {
        work_dir: tmp.join("runs"),
        timeout: Duration::from_secs(30),
        resident: (!per_run_bwrap).then(|| PathBuf::from(env!("CARGO_BIN_EXE_promised"))),
        ..Default::default()
    }
}

const OBJECT: &str = "apiVersion: marketplace.kratix.io/v1alpha1\nkind: redis\nmetadata:\n  name: example\n  namespace: default\nspec:\n  size: small\n";

fn input(ty: WorkflowType, action: Action, pipelines: &[Pipeline]) -> WorkflowInput<'_> {
    WorkflowInput {
        workflow_type: ty,
        action,
        promise_name: "redis".into(),
        crd_plural: "redis".into(),
        object: ObjectIdentity {
            kind: "redis".into(),
            group: "marketplace.kratix.io".into(),
            version: "v1alpha1".into(),
            name: "example".into(),
            namespace: "default".into(),
        },
        object_yaml: OBJECT.into(),
        promise_dir: None,
        pipeline_namespace: None,
        pipelines,
        existing_status: Default::default(),
        runtime_annotation: None,
        promise_hash: String::new(),
    }
}

/// An env var with `valueFrom` given as Kubernetes YAML would give it.
fn env_from(name: &str, value_from: Value) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(serde_json::from_value(value_from).unwrap()),
    }
}

fn file<'a>(r: &'a WorkflowResult, pipeline: usize, path: &str) -> &'a str {
    let f = r.pipelines[pipeline]
        .outputs
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no output {path}: {r:#?}"));
    std::str::from_utf8(&f.bytes).unwrap()
}

fn err(r: &WorkflowResult) -> String {
    r.error()
        .unwrap_or_else(|| panic!("expected failure: {r:#?}"))
        .to_string()
}

#[tokio::test]
async fn contract_env_dirs_and_files() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let mut first = container(
        "first",
        r#"set -e
env | sort > /kratix/output/env.txt
cp /kratix/input/object.yaml /kratix/output/object.yaml
ls /kratix/input > /kratix/output/input-ls.txt
if touch /kratix/input/x 2>/dev/null; then echo rw; else echo ro; fi > /kratix/output/input-mode.txt
pwd > /kratix/output/pwd.txt
echo shared > /kratix/metadata/scratch
mkdir -p /kratix/output/deep/er && echo hi > /kratix/output/deep/er/f.txt
echo to-stdout; echo to-stderr >&2"#,
    );
    first.env = vec![
        EnvVar {
            name: "MY_VAR".into(),
            value: Some("1".into()),
            value_from: None,
        },
        EnvVar {
            name: "KRATIX_PIPELINE_NAME".into(),
            value: Some("overridden".into()),
            value_from: None,
        },
    ];
    let mut second = container(
        "second",
        r#"set -e
cat /kratix/metadata/scratch > /kratix/output/from-first.txt
test -f /kratix/output/env.txt
echo "$MY_VAR" > /kratix/output/second-env.txt
pwd > /kratix/output/pwd2.txt"#,
    );
    second.working_dir = Some("/kratix/output".into());
    let ps = [pipeline("p1", vec![first, second])];
    let r = run_workflow(
        &cfg(tmp.path()),
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert!(r.succeeded(), "{r:#?}");
    let env = file(&r, 0, "env.txt");
    for line in [
        "KRATIX_WORKFLOW_ACTION=configure",
        "KRATIX_WORKFLOW_TYPE=resource",
        "KRATIX_PROMISE_NAME=redis",
        "KRATIX_PIPELINE_NAME=overridden",
        "KRATIX_OBJECT_KIND=redis",
        "KRATIX_OBJECT_GROUP=marketplace.kratix.io",
        "KRATIX_OBJECT_VERSION=v1alpha1",
        "KRATIX_OBJECT_NAME=example",
        "KRATIX_OBJECT_NAMESPACE=default",
        "KRATIX_CRD_PLURAL=redis",
        "KRATIX_CLUSTER_SCOPED=false",
        "MY_VAR=1",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
    assert!(!env.contains("KRATIX_DRY_RUN"));
    assert!(
        !env.lines().any(|l| l.starts_with("HOME=")),
        "Kratix sets no HOME"
    );
    assert_eq!(file(&r, 0, "object.yaml"), OBJECT);
    assert_eq!(file(&r, 0, "input-ls.txt"), "object.yaml\n");
    assert_eq!(file(&r, 0, "input-mode.txt"), "ro\n");
    assert_eq!(file(&r, 0, "pwd.txt"), "/\n");
    assert_eq!(file(&r, 0, "pwd2.txt"), "/kratix/output\n");
    assert_eq!(file(&r, 0, "from-first.txt"), "shared\n");
    // `env` is per container: the second container has no MY_VAR.
    assert_eq!(file(&r, 0, "second-env.txt"), "\n");
    assert_eq!(file(&r, 0, "deep/er/f.txt"), "hi\n");
    let logs = &r.pipelines[0].logs;
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].stdout, "to-stdout\n");
    assert_eq!(logs[0].stderr, "to-stderr\n");
    assert_eq!(logs[0].exit_code, Some(0));
    // Each pipeline gets fresh directories: the second pipeline sees no scratch file.
    let ps = [
        pipeline(
            "a",
            vec![container(
                "c",
                "echo x > /kratix/metadata/scratch; echo a > /kratix/output/a",
            )],
        ),
        pipeline(
            "b",
            vec![container(
                "c",
                "ls -A /kratix/metadata /kratix/output > /tmp/l; cp /tmp/l /kratix/output/ls",
            )],
        ),
    ];
    let r = run_workflow(
        &cfg(tmp.path()),
        &input(WorkflowType::Promise, Action::Configure, &ps),
    )
    .await;
    assert!(r.succeeded(), "{r:#?}");
    assert_eq!(file(&r, 1, "ls"), "/kratix/metadata:\n\n/kratix/output:\n");
    // No run directories are left behind: this process's own directory (`rundir`) is empty.
    let runs: Vec<_> = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .collect();
    assert_eq!(runs.len(), 0, "{runs:?}");
}

#[tokio::test]
async fn promise_workflow_env() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let ps = [pipeline(
        "pp",
        vec![container("c", "env | sort > /kratix/output/env.txt")],
    )];
    let r = run_workflow(
        &cfg(tmp.path()),
        &input(WorkflowType::Promise, Action::Configure, &ps),
    )
    .await;
    let env = file(&r, 0, "env.txt");
    for line in [
        "KRATIX_WORKFLOW_TYPE=promise",
        "KRATIX_PIPELINE_NAME=pp",
        "KRATIX_OBJECT_KIND=Promise",
        "KRATIX_OBJECT_GROUP=platform.kratix.io",
        "KRATIX_OBJECT_VERSION=v1alpha1",
        "KRATIX_OBJECT_NAME=redis",
        "KRATIX_OBJECT_NAMESPACE=",
        "KRATIX_CRD_PLURAL=promises",
        "KRATIX_CLUSTER_SCOPED=true",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
}

#[tokio::test]
async fn status_merge_and_selectors_across_pipelines() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let ps = [
        pipeline(
            "one",
            vec![container(
                "c",
                r#"cat > /kratix/metadata/status.yaml <<'E'
stage: one
iam: {a: 1, b: 2}
conditions:
- {type: A, status: "False"}
E
mkdir /kratix/output/backstage; echo c > /kratix/output/backstage/c.yaml; echo r > /kratix/output/r.yaml
cat > /kratix/metadata/destination-selectors.yaml <<'E'

- matchLabels: {environment: dev}
- directory: backstage/
  matchLabels:
    environment: backstage
E"#,
            )],
        ),
        pipeline(
            "two",
            vec![container(
                "c",
                r#"cat > /kratix/metadata/status.yaml <<'E'
iam: {c: 3}
conditions:
- {type: A, status: "True"}
- {type: B, status: "True"}
E"#,
            )],
        ),
    ];
    let mut inp = input(WorkflowType::Resource, Action::Configure, &ps);
    inp.existing_status = json!({"keep": "me", "stage": "zero"})
        .as_object()
        .cloned()
        .unwrap();
    let r = run_workflow(&cfg(tmp.path()), &inp).await;
    assert!(r.succeeded(), "{r:#?}");
    let sel = &r.pipelines[0].selectors;
    assert_eq!(sel.len(), 2);
    assert_eq!(sel[0].directory, None);
    assert_eq!(sel[1].directory.as_deref(), Some("backstage"));
    assert_eq!(sel[1].match_labels["environment"], "backstage");
    assert_eq!(
        Value::Object(r.merged_status.clone()),
        json!({
            "keep": "me",
            "stage": "one",
            "iam": {"c": 3},
            "conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "True"}]
        })
    );
    // Promise workflows keep only `message`.
    let ps = [pipeline(
        "p",
        vec![container(
            "c",
            "printf 'message: hello\\nurl: x\\n' > /kratix/metadata/status.yaml",
        )],
    )];
    let r = run_workflow(
        &cfg(tmp.path()),
        &input(WorkflowType::Promise, Action::Configure, &ps),
    )
    .await;
    assert_eq!(Value::Object(r.merged_status), json!({"message": "hello"}));
}

#[tokio::test]
async fn each_pipeline_reads_the_status_so_far_in_object_yaml() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let copy = "cp /kratix/input/object.yaml /kratix/output/object.yaml";
    let ps = [
        pipeline(
            "one",
            vec![container(
                "c",
                &format!(
                    "{copy}; printf 'stage: one\\nconditions:\\n- {{type: A, status: \"True\"}}\\n' > /kratix/metadata/status.yaml"
                ),
            )],
        ),
        pipeline("two", vec![container("c", copy)]),
    ];
    let mut inp = input(WorkflowType::Resource, Action::Configure, &ps);
    inp.existing_status = json!({"stage": "zero", "keep": "me"})
        .as_object()
        .cloned()
        .unwrap();
    let r = run_workflow(&cfg(tmp.path()), &inp).await;
    assert!(r.succeeded(), "{r:#?}");
    let status = |p: usize| {
        let doc = promised::config::parse_yaml_stream(file(&r, p, "object.yaml")).unwrap();
        assert_eq!(doc[0]["spec"]["size"], "small");
        doc[0]["status"].clone()
    };
    assert_eq!(status(0), json!({"keep": "me", "stage": "zero"}));
    assert_eq!(
        status(1),
        json!({"keep": "me", "stage": "one", "conditions": [{"type": "A", "status": "True"}]})
    );
    // Sorted keys, so the file is deterministic.
    let text = file(&r, 1, "object.yaml");
    assert!(
        text.find("kind:").unwrap() < text.find("status:").unwrap(),
        "{text}"
    );
}

#[tokio::test]
async fn metadata_errors_fail_the_pipeline() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "echo 'kratix: {a: 1}' > /kratix/metadata/status.yaml",
            "reserved",
        ),
        (
            "echo '- directory: missing' > /kratix/metadata/destination-selectors.yaml",
            "matchLabels must not be empty",
        ),
        (
            "printf -- '- directory: missing\\n  matchLabels: {a: b}\\n' > /kratix/metadata/destination-selectors.yaml",
            "does not exist",
        ),
        (
            "mkdir -p /kratix/output/a/b; printf -- '- directory: a/b\\n  matchLabels: {a: b}\\n' > /kratix/metadata/destination-selectors.yaml",
            "top-level",
        ),
        (
            "printf -- '- matchLabels: {a: b}\\n- directory: .\\n  matchLabels: {c: d}\\n' > /kratix/metadata/destination-selectors.yaml",
            "duplicate directory",
        ),
        (
            "echo ': [' > /kratix/metadata/destination-selectors.yaml",
            "invalid YAML",
        ),
        (
            "echo 'retryAfter: whenever' > /kratix/metadata/workflow-control.yaml",
            "retryAfter",
        ),
    ];
    for (script, want) in cases {
        let ps = [
            pipeline("p", vec![container("c", script)]),
            pipeline("never", vec![container("c", "true")]),
        ];
        let r = run_workflow(
            &cfg(tmp.path()),
            &input(WorkflowType::Resource, Action::Configure, &ps),
        )
        .await;
        let e = err(&r);
        assert!(e.contains(want), "{script}: {e}");
        assert_eq!(r.pipelines.len(), 1, "later pipelines do not run");
        assert!(r.pipelines[0].outputs.is_empty());
    }
}

#[tokio::test]
async fn suspend_and_retry_stop_the_workflow() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let ps = [
        pipeline(
            "wait",
            vec![container(
                "c",
                "echo out > /kratix/output/f; echo 'message: waiting' > /kratix/metadata/status.yaml; printf 'suspend: true\\nmessage: need approval\\n' > /kratix/metadata/workflow-control.yaml",
            )],
        ),
        pipeline("never", vec![container("c", "true")]),
    ];
    let r = run_workflow(
        &cfg(tmp.path()),
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert_eq!(r.pipelines.len(), 1);
    assert_eq!(
        r.pipelines[0].outcome,
        Outcome::Suspended {
            message: "need approval".into()
        }
    );
    assert!(
        r.pipelines[0].outputs.is_empty(),
        "suspended output is not scheduled"
    );
    assert_eq!(r.merged_status["message"], "waiting");

    let ps = [pipeline(
        "retry",
        vec![container(
            "c",
            "echo out > /kratix/output/f; printf 'suspend: false\\nretryAfter: 5m\\nmessage: later\\n' > /kratix/metadata/workflow-control.yaml",
        )],
    )];
    let r = run_workflow(
        &cfg(tmp.path()),
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert_eq!(
        r.pipelines[0].outcome,
        Outcome::Retry {
            after: Duration::from_secs(300),
            message: "later".into()
        }
    );
    assert!(r.pipelines[0].outputs.is_empty());
}

fn tick(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn timeout_kills_the_process_group_in_the_sandbox() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let mut c = container(
        "slow",
        // Each tick replaces the file (a kill between `>`'s truncation and the write would
        // leave it empty).
        "(while :; do date +%s%N > /shared/tick.new; mv /shared/tick.new /shared/tick; sleep 0.05; done) & until [ -s /shared/tick ]; do sleep 0.01; done; sleep 1000 & echo started >&2; wait",
    );
    c.image = "slow-image".into();
    let mut config = cfg(tmp.path());
    // Long enough for the loop to start on a loaded machine; the script says `started` only
    // once the loop has ticked.
    config.timeout = Duration::from_secs(5);
    config.image_overrides.insert(
        "slow-image".into(),
        ImageOverride {
            mounts: vec![Mount {
                host: shared.clone(),
                target: "/shared".into(),
                writable: true,
            }],
            ..Default::default()
        },
    );
    let ps = [pipeline("p", vec![c])];
    let r = run_workflow(
        &config,
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    match r.error() {
        Some(Error::Timeout {
            stderr_tail, after, ..
        }) => {
            assert_eq!(*after, Duration::from_secs(5));
            assert!(stderr_tail.contains("started"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err(&r).contains("timed out"));
    let t1 = tick(&shared.join("tick"));
    assert!(!t1.is_empty(), "the background loop ran");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        t1,
        tick(&shared.join("tick")),
        "the background child is gone"
    );
}

fn process_alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A killed child not yet reaped by init is a zombie ("Z"): not running.
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[tokio::test]
async fn timeout_kills_the_process_group_without_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let ps = [pipeline(
        "p",
        vec![container(
            "slow",
            "sleep 1000 & echo $! > \"$KRATIX_OUTPUT_DIR/../../../child.pid\"; echo $$ > \"$KRATIX_OUTPUT_DIR/../../../parent.pid\"; sleep 1000",
        )],
    )];
    let mut config = cfg(tmp.path());
    config.sandbox = SandboxMode::None;
    config.timeout = Duration::from_millis(800);
    let r = run_workflow(
        &config,
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert!(matches!(r.error(), Some(Error::Timeout { .. })), "{r:#?}");
    let runs = tmp.path().join("runs");
    let child = std::fs::read_to_string(runs.join("child.pid")).unwrap();
    let parent = std::fs::read_to_string(runs.join("parent.pid")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!process_alive(child.trim()), "child {child} survived");
    assert!(!process_alive(parent.trim()), "parent {parent} survived");
}

#[tokio::test]
async fn sandbox_blocks_host_writes_and_network() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cases = [
        ("echo x > /etc/x".to_string(), "/etc/x"),
        (format!("echo x > {home}/x"), "/x"),
        ("echo x > /x".to_string(), "/x"),
        (format!("echo > /dev/tcp/127.0.0.1/{port}"), "network off"),
    ];
    for (script, want) in &cases {
        let ps = [pipeline("p", vec![container("c", script)])];
        let r = run_workflow(
            &cfg(tmp.path()),
            &input(WorkflowType::Resource, Action::Configure, &ps),
        )
        .await;
        let e = err(&r);
        assert!(e.contains(want), "{script}: {e}");
        assert!(e.contains("exit code 1"), "{e}");
        assert!(e.contains("network off, read-only root file system"), "{e}");
    }
    assert!(!Path::new(&format!("{home}/x")).exists());
    assert!(!Path::new("/etc/x").exists());
    // Positive control: the same connect works when the network is allowed.
    let ps = [pipeline(
        "p",
        vec![container("c", &format!("echo > /dev/tcp/127.0.0.1/{port}"))],
    )];
    let mut config = cfg(tmp.path());
    config.allow_network = true;
    let r = run_workflow(
        &config,
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert!(r.succeeded(), "{r:#?}");
    // ... and when the Pipeline's annotation allows it.
    let mut p = pipeline(
        "p",
        vec![container("c", &format!("echo > /dev/tcp/127.0.0.1/{port}"))],
    );
    p.metadata
        .annotations
        .insert("promised.dev/network".into(), "true".into());
    let ps = [p];
    let r = run_workflow(
        &cfg(tmp.path()),
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert!(r.succeeded(), "{r:#?}");
}

#[tokio::test]
async fn failure_reports_exit_code_and_stderr_tail() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let ps = [pipeline(
        "p",
        vec![
            container("ok", "echo fine"),
            container(
                "bad",
                "for i in $(seq 1 50); do echo line$i >&2; done; exit 7",
            ),
            container("never", "true"),
        ],
    )];
    let r = run_workflow(
        &cfg(tmp.path()),
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    match r.error() {
        Some(Error::ContainerFailed {
            container,
            exit_code,
            stderr_tail,
            ..
        }) => {
            assert_eq!(container, "bad");
            assert_eq!(*exit_code, Some(7));
            assert!(stderr_tail.ends_with("line49\nline50"));
            assert!(!stderr_tail.contains("line30\n"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err(&r).contains("exit code 7"));
    assert_eq!(r.pipelines[0].logs.len(), 2);
}

#[tokio::test]
async fn output_safety() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("ln -s /etc/passwd /kratix/output/link", "symbolic links"),
        ("mkfifo /kratix/output/fifo", "only regular files"),
        (
            "touch \"/kratix/output/$(printf 'bad\\377')\"",
            "not valid UTF-8",
        ),
        (
            "head -c 2000 /dev/zero > /kratix/output/big",
            "larger than the cap",
        ),
    ];
    let mut config = cfg(tmp.path());
    config.output_cap_bytes = 1000;
    for (script, want) in cases {
        let ps = [pipeline("p", vec![container("c", script)])];
        let r = run_workflow(
            &config,
            &input(WorkflowType::Resource, Action::Configure, &ps),
        )
        .await;
        let e = err(&r);
        assert!(e.contains(want), "{script}: {e}");
    }
}

#[tokio::test]
async fn unsupported_containers_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = cfg(tmp.path());
    config.sandbox = SandboxMode::None;
    let mut c = container("c", "true");
    c.command = None;
    c.image = "ghcr.io/x/y:v1".into();
    let ps = [pipeline("p", vec![c])];
    let r = run_workflow(
        &config,
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert!(matches!(r.error(), Some(Error::NoCommand { .. })), "{r:#?}");
    // A Secret the Promise may not read: refused before the container starts.
    let mut c = container("c", "true");
    c.env.push(env_from(
        "S",
        json!({"secretKeyRef": {"name": "s", "key": "k"}}),
    ));
    let ps = [pipeline("p", vec![c])];
    let r = run_workflow(
        &config,
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert!(err(&r).contains("pipelineSecrets.allow"), "{}", err(&r));
    assert!(r.error().unwrap().is_config());
    assert!(r.pipelines[0].logs.is_empty(), "nothing ran");
}

#[tokio::test]
async fn missing_sandbox_refuses_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = cfg(tmp.path());
    config.bwrap = PathBuf::from("/nonexistent/bwrap");
    let ps = [pipeline("p", vec![container("c", "true")])];
    let r = run_workflow(
        &config,
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    let e = err(&r);
    assert!(matches!(r.error(), Some(Error::SandboxUnavailable { .. })));
    assert!(
        e.contains("apt-get install bubblewrap") && e.contains("sandbox: none"),
        "{e}"
    );
}

#[tokio::test]
async fn delete_runs_first_pipeline_and_ignores_output() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let ps = [
        pipeline(
            "d1",
            vec![container(
                "c",
                "echo \"$KRATIX_WORKFLOW_ACTION\" > /kratix/output/a; echo '- directory: nope' > /kratix/metadata/destination-selectors.yaml",
            )],
        ),
        pipeline("d2", vec![container("c", "exit 1")]),
    ];
    let r = run_workflow(
        &cfg(tmp.path()),
        &input(WorkflowType::Resource, Action::Delete, &ps),
    )
    .await;
    assert!(r.succeeded(), "{r:#?}");
    assert_eq!(r.pipelines.len(), 1);
    assert!(r.pipelines[0].outputs.is_empty());
    assert!(r.pipelines[0].selectors.is_empty());
}

#[tokio::test]
async fn promise_folder_scripts_run_at_slash_promise() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let pd = tmp.path().join("promises/app");
    std::fs::create_dir_all(pd.join("pipeline")).unwrap();
    std::fs::write(
        pd.join("pipeline/configure"),
        "#!/bin/sh\nset -e\ncp /promise/pipeline/template.yaml /kratix/output/\necho \"$KRATIX_OBJECT_NAME\" > /kratix/output/name\ntouch /promise/x 2>/dev/null && echo writable > /kratix/output/bad || true\n",
    )
    .unwrap();
    std::fs::write(pd.join("pipeline/template.yaml"), "kind: ConfigMap\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        pd.join("pipeline/configure"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let c = Container {
        name: "configure".into(),
        image: "promised.dev/local".into(),
        command: Some(vec!["/promise/pipeline/configure".into()]),
        ..Default::default()
    };
    let ps = [pipeline("p", vec![c])];
    let mut inp = input(WorkflowType::Resource, Action::Configure, &ps);
    inp.promise_dir = Some(pd.clone());
    let r = run_workflow(&cfg(tmp.path()), &inp).await;
    assert!(r.succeeded(), "{r:#?}");
    let paths: Vec<_> = r.pipelines[0]
        .outputs
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(paths, ["name", "template.yaml"]);
    assert_eq!(file(&r, 0, "name"), "example\n");

    // The same Promise on `sandbox: none`: /promise/ is rewritten, dirs come from env.
    std::fs::write(
        pd.join("pipeline/configure"),
        "#!/bin/sh\nset -e\ncp \"$KRATIX_PROMISE_DIR/pipeline/template.yaml\" \"$KRATIX_OUTPUT_DIR/\"\n",
    )
    .unwrap();
    let mut config = cfg(tmp.path());
    config.sandbox = SandboxMode::None;
    let r = run_workflow(&config, &inp).await;
    assert!(r.succeeded(), "{r:#?}");
    assert_eq!(file(&r, 0, "template.yaml"), "kind: ConfigMap\n");
}

const REDIS_IMAGE: &str = "ghcr.io/syntasso/kratix-marketplace/redis-configure-pipeline:v0.1.0";

fn marketplace_redis() -> Option<PathBuf> {
    let d =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/realworld/kratix-marketplace/redis");
    let d = if d.exists() {
        d
    } else {
        PathBuf::from("/work/shared/realworld/kratix-marketplace/redis")
    };
    d.exists().then_some(d)
}

fn redis_config(tmp: &Path, redis: &Path) -> RunnerConfig {
    let mut config = cfg(tmp);
    let image_dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/images/redis-configure-pipeline");
    config.image_overrides = BTreeMap::from([(
        REDIS_IMAGE.to_string(),
        ImageOverride {
            command: vec!["sh".into(), "/image/execute-pipeline".into()],
            mounts: vec![
                Mount {
                    host: image_dir,
                    target: "/image".into(),
                    writable: false,
                },
                Mount {
                    host: redis.join("internal/configure-pipeline/resources"),
                    target: "/tmp/transfer".into(),
                    writable: false,
                },
            ],
            network: false,
            ..Default::default()
        },
    )]);
    config
}

#[tokio::test]
async fn marketplace_redis_via_image_override() {
    need_bwrap!();
    let Some(redis) = marketplace_redis() else {
        eprintln!("skipping: ../shared/realworld/kratix-marketplace/redis is absent");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = redis_config(tmp.path(), &redis);
    let objects = promised::config::load(
        &promised::config::Source::Dir(redis.clone()),
        &promised::config::FileFilter::default(),
        None,
    )
    .unwrap();
    let valid = promised::validate::validate(objects);
    let promise = valid.promise("redis").expect("redis promise is valid");
    let request = valid
        .requests
        .first()
        .expect("the redis request is admitted");

    // Promise workflow: the two dependency files at the output root.
    let r = run_workflow(
        &config,
        &WorkflowInput::for_promise(promise, Action::Configure),
    )
    .await;
    assert!(r.succeeded(), "{r:#?}");
    let paths: Vec<_> = r.pipelines[0]
        .outputs
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "all-redis-operator-resources.yaml",
            "databases.spotahome.com_redisfailovers.yaml"
        ]
    );
    let deps = redis.join("internal/configure-pipeline/resources/dependencies");
    for f in &r.pipelines[0].outputs {
        assert_eq!(f.bytes, std::fs::read(deps.join(&f.path)).unwrap());
    }

    // Resource workflow: small → 1 replica, large → 3.
    for (size, replicas) in [("small", 1), ("large", 3)] {
        let mut req = (**request).clone();
        let mut object = (*req.object()).clone();
        object["spec"]["size"] = json!(size);
        req.object = promised::state::CompactValue::new(object);
        let r = run_workflow(
            &config,
            &WorkflowInput::for_request(promise, &req, Action::Configure),
        )
        .await;
        assert!(r.succeeded(), "{r:#?}");
        assert_eq!(r.pipelines[0].name, "instance-configure");
        let out = &r.pipelines[0].outputs;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, "redis-instance.yaml");
        let v: Value = serde_saphyr::from_str(std::str::from_utf8(&out[0].bytes).unwrap()).unwrap();
        assert_eq!(v["kind"], "RedisFailover");
        assert_eq!(v["metadata"]["name"], "example");
        assert_eq!(v["spec"]["redis"]["replicas"], json!(replicas), "{size}");
        assert_eq!(v["spec"]["sentinel"]["replicas"], json!(3));
        assert!(
            r.pipelines[0].logs[0]
                .stdout
                .contains(&format!("{replicas} replicas"))
        );
    }
}

fn cli(args: &[&str]) -> (i32, String) {
    use clap::Parser;
    let cli = promised::cli::Cli::parse_from(args);
    let mut out = Vec::new();
    let code = promised::cli::run(cli, &mut out);
    (code, String::from_utf8(out).unwrap())
}

fn repo() -> String {
    format!("{}/testdata/pipeline-repo", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn cli_runs_promise_scripts_and_keeps_output() {
    if !bwrap_ok() {
        eprintln!("skipping: bubblewrap is not installed or cannot create namespaces");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let repo = repo();
    let (code, text) = cli(&[
        "promised",
        "pipeline",
        "run",
        "--config",
        &repo,
        "--promise",
        "app",
        "--workflow",
        "resource.configure",
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    for want in [
        "workflow: resource.configure of Promise app for App team-a/web",
        "pipeline instance: succeeded",
        "deployment.yaml  (",
        "docs/README.md  (",
        "docs: environment=docs",
        "| done: resource configure",
        "merged status:\n  message: deployed web",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let dep = std::fs::read_to_string(out_dir.join("instance/deployment.yaml")).unwrap();
    assert!(dep.contains("name: web\n  namespace: team-a"), "{dep}");

    // Promise workflow (the default without a request), JSON output.
    let (code, text) = cli(&[
        "promised",
        "pipeline",
        "run",
        "--config",
        &repo,
        "--promise",
        "app",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["pipelines"][0]["outputs"][0]["path"], "namespace.yaml");

    // A request file from outside the repo replaces the repo's request of the same identity.
    let req = tmp.path().join("req.yaml");
    std::fs::write(&req, "apiVersion: example.promised.dev/v1alpha1\nkind: App\nmetadata:\n  name: other\nspec: {}\n").unwrap();
    let (code, text) = cli(&[
        "promised",
        "pipeline",
        "run",
        "--config",
        &repo,
        "--promise",
        "app",
        "--request",
        req.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("for App default/other"), "{text}");
}

#[test]
fn cli_failures_exit_1_or_2() {
    let repo = repo();
    let (code, _) = cli(&[
        "promised",
        "pipeline",
        "run",
        "--config",
        &repo,
        "--promise",
        "nope",
    ]);
    assert_eq!(code, 2);
    let tmp = tempfile::tempdir().unwrap();
    let req = tmp.path().join("req.yaml");
    std::fs::write(&req, "apiVersion: example.promised.dev/v1alpha1\nkind: App\nmetadata:\n  name: x\nspec:\n  replicas: 1\n").unwrap();
    // With `sandbox: none`, the /promise script's hard-coded /kratix paths fail: exit 1 with stderr.
    let (code, text) = cli(&[
        "promised",
        "pipeline",
        "run",
        "--config",
        &repo,
        "--promise",
        "app",
        "--request",
        req.to_str().unwrap(),
        "--sandbox",
        "none",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("pipeline instance: failed") && text.contains("exit code"),
        "{text}"
    );
    // A --request of a kind no Promise serves: exit 1, saying so.
    std::fs::write(
        &req,
        "apiVersion: example.promised.dev/v1alpha1\nkind: Nope\nmetadata:\n  name: x\n",
    )
    .unwrap();
    let (code, text) = cli(&[
        "promised",
        "pipeline",
        "run",
        "--config",
        &repo,
        "--promise",
        "app",
        "--request",
        req.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        text,
        "request Nope x rejected:\n  no Promise serves example.promised.dev/v1alpha1 Nope\n"
    );
}

#[test]
fn cli_redis_with_image_overrides_file() {
    if !bwrap_ok() {
        eprintln!("skipping: bubblewrap is not installed or cannot create namespaces");
        return;
    }
    let Some(redis) = marketplace_redis() else {
        eprintln!("skipping: ../shared/realworld/kratix-marketplace/redis is absent");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let overrides = tmp.path().join("overrides.yaml");
    std::fs::write(
        &overrides,
        format!(
            "{REDIS_IMAGE}:\n  command: [sh, /image/execute-pipeline]\n  mounts:\n    - {{host: {}/testdata/images/redis-configure-pipeline, target: /image}}\n    - {{host: {}/internal/configure-pipeline/resources, target: /tmp/transfer}}\n",
            env!("CARGO_MANIFEST_DIR"),
            redis.display()
        ),
    )
    .unwrap();
    let req = tmp.path().join("large.yaml");
    std::fs::write(&req, "apiVersion: marketplace.kratix.io/v1alpha1\nkind: redis\nmetadata:\n  name: example\n  namespace: default\nspec:\n  size: large\n").unwrap();
    let (code, text) = cli(&[
        "promised",
        "pipeline",
        "run",
        "--config",
        redis.to_str().unwrap(),
        "--promise",
        "redis",
        "--request",
        req.to_str().unwrap(),
        "--image-overrides",
        overrides.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("redis-instance.yaml  (") && text.contains("3 replicas"),
        "{text}"
    );
}

#[tokio::test]
async fn container_command_wins_over_image_override() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = cfg(tmp.path());
    config.image_overrides.insert(
        "img".into(),
        ImageOverride {
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo override > /kratix/output/who".into(),
            ],
            ..Default::default()
        },
    );
    let mut own = container("own", "echo own-$0-$1 > /kratix/output/who");
    own.image = "img".into();
    own.args = Some(vec!["a".into(), "b".into()]);
    let ps = [pipeline("p", vec![own])];
    let r = run_workflow(
        &config,
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert_eq!(file(&r, 0, "who"), "own-a-b\n");
    let mut bare = container("bare", "");
    bare.command = None;
    bare.image = "img".into();
    let ps = [pipeline("p", vec![bare])];
    let r = run_workflow(
        &config,
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert_eq!(file(&r, 0, "who"), "override\n");
}

/// A random token nobody else writes: 32 hex digits from the clock and the process id.
fn random_token() -> String {
    use sha2::{Digest, Sha256};
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    hex::encode(Sha256::digest(seed.as_bytes()))[..32].to_string()
}

/// The state directory, the secrets directory and the webhook secret file, configured as
/// `promised run` has them, are invisible to a sandboxed pipeline even when the Promise folder
/// and an image-override mount contain them all: a random token written into each is found
/// nowhere in the whole file system the pipeline sees (everything but its private /proc, /sys
/// and /dev; the token reaches the script in two halves so its own command line does not hold
/// it). The host's `/etc/shadow` cannot be read, nor is it there; a mount of a secret itself is
/// refused.
#[tokio::test]
async fn no_host_secret_is_visible_in_the_sandbox() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("promise");
    let token = random_token();
    let state = root.join("state");
    let secrets = root.join("secrets");
    std::fs::create_dir_all(state.join("blobs")).unwrap();
    std::fs::create_dir_all(secrets.join("git-credentials")).unwrap();
    std::fs::write(state.join("state.json"), format!("{{\"t\":\"{token}\"}}")).unwrap();
    std::fs::write(state.join("blobs/x"), &token).unwrap();
    std::fs::write(secrets.join("git-credentials/password"), &token).unwrap();
    std::fs::write(secrets.join("s3_secretAccessKey"), &token).unwrap();
    let webhook = root.join("webhook-secret");
    std::fs::write(&webhook, &token).unwrap();
    std::fs::write(
        root.join("visible.txt"),
        "the rest of the folder is visible\n",
    )
    .unwrap();

    let settings = promised::settings::Settings {
        state_dir: state.clone(),
        secrets_dir: Some(secrets.clone()),
        webhook_secret_file: Some(webhook.clone()),
        ..Default::default()
    };
    let mut config = settings.runner();
    config.work_dir = tmp.path().join("runs");
    config.timeout = Duration::from_secs(600);
    config.image_overrides = BTreeMap::from([(
        "test".to_string(),
        ImageOverride {
            command: Vec::new(),
            mounts: vec![Mount {
                host: root.clone(),
                target: "/image".into(),
                writable: false,
            }],
            network: false,
            ..Default::default()
        },
    )]);
    let (a, b) = token.split_at(16);
    let script = r#"set -u
printf %s%s "$A" "$B" > /tmp/pattern
for d in /*; do
  case "$d" in /proc|/sys|/dev) continue ;; esac
  [ -L "$d" ] && continue # /bin and friends: links into /usr
  grep -rlF -f /tmp/pattern "$d" 2>/dev/null
done | grep -v '^/tmp/pattern$' > /kratix/output/found.txt
ls /promise /image > /kratix/output/listing.txt
cat /promise/visible.txt > /kratix/output/visible.txt
if cat /etc/shadow > /dev/null 2>&1; then echo readable; else echo unreadable; fi > /kratix/output/shadow.txt
ls -a /etc > /kratix/output/etc.txt
ls -a /etc/ssl > /kratix/output/etc-ssl.txt 2>&1 || true
true"#;
    let mut c = container("search", script);
    c.env = vec![
        EnvVar {
            name: "A".into(),
            value: Some(a.into()),
            value_from: None,
        },
        EnvVar {
            name: "B".into(),
            value: Some(b.into()),
            value_from: None,
        },
    ];
    let ps = [pipeline("p", vec![c])];
    let mut inp = input(WorkflowType::Resource, Action::Configure, &ps);
    inp.promise_dir = Some(root.clone());
    let r = run_workflow(&config, &inp).await;
    assert!(r.succeeded(), "{r:#?}");
    assert_eq!(file(&r, 0, "found.txt"), "", "the token is visible");
    assert_eq!(
        file(&r, 0, "visible.txt"),
        "the rest of the folder is visible\n"
    );
    let listing = file(&r, 0, "listing.txt");
    assert!(listing.contains("visible.txt"), "{listing}");
    assert_eq!(file(&r, 0, "shadow.txt"), "unreadable\n");
    let etc = file(&r, 0, "etc.txt");
    for absent in [
        "shadow",
        "gshadow",
        "promised",
        "environment",
        "ssh_host_rsa_key",
    ] {
        assert!(!etc.lines().any(|l| l == absent), "/etc/{absent}: {etc}");
    }
    assert!(etc.lines().any(|l| l == "passwd"), "{etc}");
    assert!(
        !file(&r, 0, "etc-ssl.txt").lines().any(|l| l == "private"),
        "/etc/ssl/private"
    );

    // Mounting a secret, or the state directory, is refused outright.
    for host in [secrets.clone(), state.join("blobs"), webhook.clone()] {
        config.image_overrides.get_mut("test").unwrap().mounts = vec![Mount {
            host: host.clone(),
            target: "/image".into(),
            writable: false,
        }];
        let ps = [pipeline("p", vec![container("c", "true")])];
        let r = run_workflow(
            &config,
            &input(WorkflowType::Resource, Action::Configure, &ps),
        )
        .await;
        let e = err(&r);
        assert!(
            e.contains("would expose") && e.contains(&host.display().to_string()),
            "{e}"
        );
    }
}

/// What common pipeline tools need from `/etc` is there: each tool the host has runs in the
/// sandbox (user and host lookups, time zone, CA certificates, Debian alternatives, python's
/// site and ssl, git with a default identity, java's config).
#[tokio::test]
async fn common_tools_run_in_the_sandbox() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"set -eu
have() { command -v "$1" > /dev/null 2>&1; }
id -un; id -gn; whoami
getent passwd root > /dev/null; getent group root > /dev/null
getent hosts localhost > /dev/null
date +%Z
ls -l / > /dev/null
test -s /etc/ssl/certs/ca-certificates.crt || test -s /etc/pki/tls/certs/ca-bundle.crt
echo a b | awk '{print $2}' | grep -q b
echo x | sed s/x/y/ | grep -q y
df / > /dev/null
if have git; then
  cd /tmp && git init -q r && cd r && echo x > f && git add f
  git -c user.email=p@example.com commit -qm x && git log --oneline | grep -q x
  cd /
fi
if have curl; then curl --version > /dev/null; fi
if have kubectl; then kubectl version --client > /dev/null; fi
if have yq; then echo 'a: 1' | yq '.a' | grep -q 1; fi
if have jq; then echo '{"a":1}' | jq .a | grep -q 1; fi
if have perl; then perl -MPOSIX -e 'print strftime("%Y", localtime)' > /dev/null; fi
if have python3; then
  python3 -c 'import ssl, socket, mimetypes, platform, getpass
ctx = ssl.create_default_context()
assert ctx.cert_store_stats()["x509_ca"] > 0, "no CA certificates"
assert socket.getservbyname("https") == 443
assert mimetypes.guess_type("a.json")[0] == "application/json"
getpass.getuser(); platform.freedesktop_os_release()'
fi
if have node; then node -e 'require("os").userInfo(); require("tls").rootCertificates.length > 0 || process.exit(1)'; fi
if have java; then java -version 2> /dev/null; fi
echo ok > /kratix/output/ok"#;
    let ps = [pipeline("p", vec![container("tools", script)])];
    let mut config = cfg(tmp.path());
    config.timeout = Duration::from_secs(120);
    let r = run_workflow(
        &config,
        &input(WorkflowType::Resource, Action::Configure, &ps),
    )
    .await;
    assert!(r.succeeded(), "{r:#?}");
    assert_eq!(file(&r, 0, "ok"), "ok\n");
}

/// `env[].valueFrom` resolved for every supported source, in the bubblewrap sandbox (when it
/// can run here) and with `sandbox: none`: `fieldRef` to the pod's namespace, name, labels
/// (Kratix's and the Pipeline's; a missing one is empty) and annotations, `secretKeyRef` from
/// `pipelineSecrets.dir` for an allowed Secret, `configMapKeyRef` from
/// `pipelineConfigMaps.dir`, and optional keys that do not exist left unset. The Secret's
/// value reaches the container (it writes its sha256) and appears in no log, status or error.
#[tokio::test]
async fn value_from_resolves_each_source() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = format!("s3cr3t-{}", random_token());
    let secrets = tmp.path().join("pipeline-secrets");
    let maps = tmp.path().join("pipeline-configmaps");
    std::fs::create_dir_all(secrets.join("db")).unwrap();
    std::fs::create_dir_all(maps.join("settings")).unwrap();
    std::fs::write(secrets.join("db/password"), &secret).unwrap();
    std::fs::write(maps.join("settings/region"), "eu-west-1").unwrap();
    let script = r#"set -eu
out="${KRATIX_OUTPUT_DIR:-/kratix/output}"
for v in POD_NAMESPACE POD_NAME PROMISE WORKFLOW_ACTION TEAM MISSING NOTE REGION OPT_SECRET OPT_MAP; do
  if env | grep -q "^$v="; then printenv "$v" > "$out/$v"; else echo unset > "$out/$v"; fi
done
printf %s "$DB_PASSWORD" | sha256sum | cut -d' ' -f1 > "$out/db-sha"
echo "stdout says hello"; echo "stderr says hello" >&2"#;
    let mut c = container("render", script);
    c.env = vec![
        env_from(
            "POD_NAMESPACE",
            json!({"fieldRef": {"fieldPath": "metadata.namespace"}}),
        ),
        env_from(
            "POD_NAME",
            json!({"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}),
        ),
        env_from(
            "PROMISE",
            json!({"fieldRef": {"fieldPath": "metadata.labels['kratix.io/promise-name']"}}),
        ),
        env_from(
            "WORKFLOW_ACTION",
            json!({"fieldRef": {"fieldPath": "metadata.labels['kratix.io/workflow-action']"}}),
        ),
        env_from(
            "TEAM",
            json!({"fieldRef": {"fieldPath": "metadata.labels['team']"}}),
        ),
        env_from(
            "MISSING",
            json!({"fieldRef": {"fieldPath": "metadata.labels['not-there']"}}),
        ),
        env_from(
            "NOTE",
            json!({"fieldRef": {"fieldPath": "metadata.annotations['example.com/note']"}}),
        ),
        env_from(
            "DB_PASSWORD",
            json!({"secretKeyRef": {"name": "db", "key": "password"}}),
        ),
        env_from(
            "OPT_SECRET",
            json!({"secretKeyRef": {"name": "db", "key": "nope", "optional": true}}),
        ),
        env_from(
            "REGION",
            json!({"configMapKeyRef": {"name": "settings", "key": "region"}}),
        ),
        env_from(
            "OPT_MAP",
            json!({"configMapKeyRef": {"name": "absent", "key": "k", "optional": true}}),
        ),
    ];
    let mut p = pipeline("configure", vec![c]);
    p.metadata.labels.insert("team".into(), "blue".into());
    p.metadata
        .annotations
        .insert("example.com/note".into(), "from the Pipeline".into());
    let ps = [p];
    let mut modes = vec![SandboxMode::None];
    if bwrap_ok() {
        modes.push(SandboxMode::Bwrap);
    } else {
        eprintln!("bubblewrap cannot run here: checking `sandbox: none` only");
    }
    for mode in modes {
        let mut config = cfg(tmp.path());
        config.sandbox = mode;
        config.env_sources.secrets_dir = Some(secrets.clone());
        config.env_sources.config_maps_dir = Some(maps.clone());
        config
            .env_sources
            .secrets_allow
            .insert("redis".into(), ["db".to_string()].into());
        let r = run_workflow(
            &config,
            &input(WorkflowType::Resource, Action::Configure, &ps),
        )
        .await;
        assert!(r.succeeded(), "{mode:?}: {r:#?}");
        let get = |f: &str| file(&r, 0, f).trim_end_matches('\n').to_string();
        assert_eq!(get("POD_NAMESPACE"), "default", "the request's namespace");
        assert!(
            get("POD_NAME").starts_with("kratix-redis-example-configure-"),
            "{}",
            get("POD_NAME")
        );
        assert_eq!(get("PROMISE"), "redis");
        assert_eq!(get("WORKFLOW_ACTION"), "configure");
        assert_eq!(get("TEAM"), "blue");
        assert_eq!(get("MISSING"), "", "set and empty, as in Kubernetes");
        assert_eq!(get("NOTE"), "from the Pipeline");
        assert_eq!(get("REGION"), "eu-west-1");
        assert_eq!(get("OPT_SECRET"), "unset");
        assert_eq!(get("OPT_MAP"), "unset");
        use sha2::Digest;
        assert_eq!(
            get("db-sha"),
            hex::encode(sha2::Sha256::digest(secret.as_bytes()))
        );
        let seen = format!("{:?} {:?} {:?}", r.pipelines, r.merged_status, r.error());
        assert!(!seen.contains(&secret), "the secret leaked: {seen}");

        // A promise workflow runs in kratix-platform-system, or in pipelineNamespace.
        let mut promise_input = input(WorkflowType::Promise, Action::Configure, &ps);
        let r = run_workflow(&config, &promise_input).await;
        assert!(r.succeeded(), "{r:#?}");
        assert_eq!(file(&r, 0, "POD_NAMESPACE"), "kratix-platform-system\n");
        promise_input.pipeline_namespace = Some("pipelines".into());
        let r = run_workflow(&config, &promise_input).await;
        assert_eq!(file(&r, 0, "POD_NAMESPACE"), "pipelines\n");

        // A Secret key that is not there and not optional fails the Pipeline before it runs,
        // naming the Secret, the key and the variable, not as a config problem.
        let mut broken = ps.clone();
        broken[0].spec.containers[0].env.push(env_from(
            "GONE",
            json!({"secretKeyRef": {"name": "db", "key": "gone"}}),
        ));
        let r = run_workflow(
            &config,
            &input(WorkflowType::Resource, Action::Configure, &broken),
        )
        .await;
        let e = err(&r);
        for part in [
            "\"redis\"",
            "\"configure\"",
            "\"render\"",
            "\"GONE\"",
            "\"db\"",
            "\"gone\"",
        ] {
            assert!(e.contains(part), "{part} in {e}");
        }
        assert!(!r.error().unwrap().is_config());
        assert!(r.pipelines[0].logs.is_empty(), "no container ran");
        assert!(!e.contains(&secret));
    }
}

/// A stand-in for an image like the marketplace runtime one: its script (under a read-only
/// mount) writes `deployment.yaml` into its working directory with a tool found through the
/// override's `PATH`, waits at a barrier until `$BARRIER` runs have written theirs (through a
/// writable mount, shared on purpose), then copies the file to the output with the variables
/// it sees. A `deployment.yaml` there already (another run's) fails it.
fn scratch_image(tmp: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let img = tmp.join("img");
    std::fs::create_dir_all(img.join("bin")).unwrap();
    let files = [
        (
            "configure",
            r#"#!/bin/sh
set -eu
if [ -e deployment.yaml ]; then echo "$(pwd)/deployment.yaml is there already" >&2; exit 3; fi
name=$(sed -n 's/^  name: *//p' /kratix/input/object.yaml | head -n1)
stamp "$name" > deployment.yaml
touch "/sync/$name"
i=0
while [ "$(ls /sync | wc -l)" -lt "$BARRIER" ] && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i+1)); done
{
  echo "pwd: $(pwd)"
  echo "greeting: $GREETING"
  echo "kratix: $KRATIX_OBJECT_NAME"
  echo "own: $OWN"
} >> deployment.yaml
cp deployment.yaml /kratix/output/deployment.yaml
"#,
        ),
        ("bin/stamp", "#!/bin/sh\necho \"name: $1\"\n"),
    ];
    for (f, text) in files {
        std::fs::write(img.join(f), text).unwrap();
        std::fs::set_permissions(img.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let sync = tmp.join("sync");
    std::fs::create_dir_all(&sync).unwrap();
    (img, sync)
}

/// The override for [`scratch_image`] (YAML as in the daemon config), `extra` appended.
fn scratch_override(img: &Path, sync: &Path, barrier: usize, extra: &str) -> ImageOverride {
    let yaml = format!(
        "command: [/opt/img/configure]\nmounts:\n  - {{host: {}, target: /opt/img}}\n  - {{host: {}, target: /sync, writable: true}}\nenv:\n  PATH: /opt/img/bin:/usr/bin:/bin\n  GREETING: hello\n  BARRIER: \"{barrier}\"\n  KRATIX_OBJECT_NAME: from-the-override\n  OWN: from-the-override\n{extra}",
        img.display(),
        sync.display()
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

/// A container of the override's image without a command, with its own `OWN`.
fn scratch_pipeline() -> Pipeline {
    let mut c = container("runtime", "");
    c.command = None;
    c.image = "ghcr.io/example/runtime:v1".into();
    c.env.push(EnvVar {
        name: "OWN".into(),
        value: Some("from-the-container".into()),
        value_from: None,
    });
    pipeline("instance", vec![c])
}

fn request_input<'a>(ps: &'a [Pipeline], name: &str) -> WorkflowInput<'a> {
    let mut i = input(WorkflowType::Resource, Action::Configure, ps);
    i.object.name = name.into();
    i.object_yaml = OBJECT.replace("name: example", &format!("name: {name}"));
    i
}

/// Every file left under the work directory (the per-process directories themselves aside).
fn left_in_runs(work_dir: &Path) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for proc_dir in std::fs::read_dir(work_dir).unwrap().flatten() {
        left.extend(
            std::fs::read_dir(proc_dir.path())
                .unwrap()
                .flatten()
                .map(|e| e.path()),
        );
    }
    left
}

#[tokio::test]
async fn image_override_working_dir_env_and_private_scratch() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let (img, sync) = scratch_image(tmp.path());
    let mut config = cfg(tmp.path());
    let over = scratch_override(&img, &sync, 1, "workingDir: /work\nscratch: [/work]\n");
    promised::pipeline::check_overrides(&BTreeMap::from([("x".to_string(), over.clone())]))
        .unwrap();
    config
        .image_overrides
        .insert("ghcr.io/example/runtime:v1".into(), over);
    let ps = [scratch_pipeline()];
    let r = run_workflow(&config, &request_input(&ps, "one")).await;
    assert!(r.succeeded(), "{r:#?}");
    // The tool came from the override's PATH; the KRATIX_* variables and the container's own
    // env win over the override's.
    assert_eq!(
        file(&r, 0, "deployment.yaml"),
        "name: one\npwd: /work\ngreeting: hello\nkratix: one\nown: from-the-container\n"
    );
    assert_eq!(left_in_runs(&config.work_dir), Vec::<PathBuf>::new());

    // 8 runs at once (all waiting at the barrier, so their scratch directories exist at the
    // same time): none finds another's file, each outputs only its own request's data.
    std::fs::remove_dir_all(&sync).unwrap();
    std::fs::create_dir(&sync).unwrap();
    config.image_overrides.insert(
        "ghcr.io/example/runtime:v1".into(),
        scratch_override(&img, &sync, 8, "workingDir: /work\nscratch: [/work]\n"),
    );
    let names: Vec<String> = (0..8).map(|i| format!("req-{i}")).collect();
    let inputs: Vec<_> = names.iter().map(|n| request_input(&ps, n)).collect();
    let results =
        futures_util::future::join_all(inputs.iter().map(|i| run_workflow(&config, i))).await;
    for (name, r) in names.iter().zip(&results) {
        assert!(r.succeeded(), "{name}: {r:#?}");
        assert_eq!(
            file(r, 0, "deployment.yaml"),
            format!(
                "name: {name}\npwd: /work\ngreeting: hello\nkratix: {name}\nown: from-the-container\n"
            )
        );
    }
    assert_eq!(std::fs::read_dir(&sync).unwrap().count(), 8);
    assert_eq!(left_in_runs(&config.work_dir), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn image_override_without_scratch_fails_read_only() {
    need_bwrap!();
    let tmp = tempfile::tempdir().unwrap();
    let (img, sync) = scratch_image(tmp.path());
    let mut config = cfg(tmp.path());
    // The marketplace runtime image's case: the working directory is `/`.
    config.image_overrides.insert(
        "ghcr.io/example/runtime:v1".into(),
        scratch_override(&img, &sync, 1, ""),
    );
    let ps = [scratch_pipeline()];
    let r = run_workflow(&config, &request_input(&ps, "one")).await;
    let e = err(&r);
    assert!(e.contains("deployment.yaml: Read-only file system"), "{e}");
    assert!(
        e.contains("list it in the image override's `scratch`"),
        "{e}"
    );
    assert_eq!(left_in_runs(&config.work_dir), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn image_override_without_sandbox_refuses_scratch_and_applies_working_dir_and_env() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = cfg(tmp.path());
    config.sandbox = SandboxMode::None;
    let wd = tmp.path().join("wd");
    std::fs::create_dir(&wd).unwrap();
    let over: ImageOverride = serde_saphyr::from_str(&format!(
        "command: [sh, -c, 'pwd > $KRATIX_OUTPUT_DIR/pwd; echo $GREETING > $KRATIX_OUTPUT_DIR/greeting']\nworkingDir: {}\nenv: [{{name: GREETING, value: hi}}]\n",
        wd.display()
    ))
    .unwrap();
    config
        .image_overrides
        .insert("ghcr.io/example/runtime:v1".into(), over.clone());
    let mut c = container("c", "");
    c.command = None;
    c.image = "ghcr.io/example/runtime:v1".into();
    let ps = [pipeline("p", vec![c])];
    let r = run_workflow(&config, &request_input(&ps, "one")).await;
    assert!(r.succeeded(), "{r:#?}");
    assert_eq!(file(&r, 0, "pwd"), format!("{}\n", wd.display()));
    assert_eq!(file(&r, 0, "greeting"), "hi\n");
    config.image_overrides.insert(
        "ghcr.io/example/runtime:v1".into(),
        ImageOverride {
            scratch: vec!["/work".into()],
            ..over
        },
    );
    let r = run_workflow(&config, &request_input(&ps, "one")).await;
    assert!(
        matches!(r.error(), Some(Error::MountsNeedSandbox { .. })),
        "{r:#?}"
    );
    assert!(err(&r).contains("scratch"), "{}", err(&r));
}

#[test]
fn invalid_scratch_paths_are_refused_when_the_config_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("promised.yaml");
    let load = |scratch: &str| {
        std::fs::write(
            &file,
            format!(
                "imageOverrides:\n  ghcr.io/example/runtime:v1:\n    command: [run]\n    workingDir: /work\n    env: {{PATH: /usr/bin}}\n    scratch: {scratch}\n"
            ),
        )
        .unwrap();
        promised::settings::Settings::load(
            Some(&file),
            json!({"stateDir": tmp.path().join("state")})
                .as_object()
                .unwrap()
                .clone(),
        )
    };
    let s = load("[/work, /var/cache/app]").unwrap();
    let o = &s.image_overrides["ghcr.io/example/runtime:v1"];
    assert_eq!(o.scratch, ["/work", "/var/cache/app"]);
    assert_eq!(o.working_dir.as_deref(), Some("/work"));
    assert_eq!(o.env[0].name, "PATH");
    for (bad, why) in [
        ("work", "is not an absolute path"),
        ("/", "is the root"),
        ("/work/../etc", "is not a normalized path"),
        ("/kratix/output", "is under /kratix"),
        ("/proc/self", "is under /proc or /dev"),
        ("/dev", "is under /proc or /dev"),
    ] {
        let e = load(&format!("[\"{bad}\"]")).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "imageOverrides[\"ghcr.io/example/runtime:v1\"].scratch: \"{bad}\" {why}"
            )),
            "{bad}: {e}"
        );
    }
    // `promised pipeline run --image-overrides FILE` refuses them too (exit 2).
    let overrides = tmp.path().join("overrides.yaml");
    std::fs::write(
        &overrides,
        "ghcr.io/example/runtime:v1:\n  command: [run]\n  scratch: [/kratix/x]\n",
    )
    .unwrap();
    let (code, _) = cli(&[
        "promised",
        "pipeline",
        "run",
        "--config",
        &repo(),
        "--promise",
        "app",
        "--image-overrides",
        overrides.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
}
