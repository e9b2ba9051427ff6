//! The Kubernetes Job runtime at the HTTP level (no API server can run here): a fake API
//! answers the exact calls of one Pipeline Job, and every call is checked, in order, against
//! what the runtime must send (method, path, query, body) and against the Role's list
//! (`cluster::access::JOB_RUNTIME`). The output container's log is made by the real
//! `promised adapter emit-output` on a real directory, so encoder and decoder meet here.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use promised::cluster::{KubernetesSettings, access};
use promised::model::Pipeline;
use promised::pipeline::kubernetes::KubeRuntime;
use promised::pipeline::{
    Action, Error, ObjectIdentity, Outcome, RunnerConfig, Runtime, WorkflowInput, WorkflowType,
    run_workflow,
};
use serde_json::{Value, json};

const NS: &str = "pipelines";

/// One call the fake API saw.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

impl Call {
    /// `(group, resource, verb)` of the call, as RBAC sees it.
    fn access(&self) -> (String, String, String) {
        let parts: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        let (group, rest) = match parts[0] {
            "api" => ("".to_string(), &parts[2..]),
            _ => (parts[1].to_string(), &parts[3..]),
        };
        // rest: namespaces/<ns>/<resource>[/<name>[/<sub>]]
        let resource = match rest.len() {
            5 => format!("{}/{}", rest[2], rest[4]),
            _ => rest[2].to_string(),
        };
        let verb = match (self.method.as_str(), rest.len()) {
            ("POST", _) => "create",
            ("DELETE", _) => "delete",
            ("GET", 3) if self.query.get("watch").map(String::as_str) == Some("true") => "watch",
            ("GET", 3) => "list",
            ("GET", _) => "get",
            (m, _) => panic!("unexpected method {m}"),
        };
        (group, resource, verb.to_string())
    }

    fn short(&self) -> String {
        let (g, r, v) = self.access();
        format!("{v} {g}/{r}")
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// What the fake answers: status and body (JSON, or text for logs).
type Answer = (u16, String);

fn json_answer(code: u16, v: Value) -> Answer {
    (code, v.to_string())
}

fn status(code: u16, reason: &str, message: &str) -> Answer {
    json_answer(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// A Job's JSON with `conditions` (none while it runs).
fn job_json(created: &Value, conditions: Value) -> Value {
    let mut j = created.clone();
    j["metadata"]["resourceVersion"] = json!("7");
    j["metadata"]["uid"] = json!("u-1");
    if conditions != Value::Null {
        j["status"] = json!({"conditions": conditions});
    }
    j
}

fn pod_list(job: &str, phase: &str, statuses: Value) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"},
        "items": [{"metadata": {"name": format!("{job}-abcde"), "namespace": NS,
            "creationTimestamp": "2025-01-01T00:00:00Z", "labels": {"job-name": job}},
            "status": {"phase": phase, "initContainerStatuses": statuses}}]})
}

/// Serves `answer` on a `tower_test` mock until the client is dropped; returns the client and
/// the calls seen.
fn fake_api(
    mut answer: impl FnMut(&Call) -> Answer + Send + 'static,
) -> (kube::Client, tokio::task::JoinHandle<Vec<Call>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut calls = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let query = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let call = Call {
                method,
                path,
                query,
                body,
            };
            let (code, text) = answer(&call);
            calls.push(call);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(text.into_bytes()))
                    .unwrap(),
            );
        }
        calls
    });
    (kube::Client::new(svc, NS), task)
}

/// Runs `promised adapter emit-output` on a directory holding `files` in output and
/// `meta` in metadata; returns its stdout (what the container's log holds).
fn emitted(files: &[(&str, &str)], meta: &[(&str, &str)], cap: u64) -> String {
    let tmp = tempfile::tempdir().unwrap();
    for (dir, list) in [("output", files), ("metadata", meta)] {
        std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
        for (p, text) in list {
            let f = tmp.path().join(dir).join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, text).unwrap();
        }
    }
    adapter_emit(tmp.path(), cap)
}

fn adapter_emit(dir: &Path, cap: u64) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(["adapter", "emit-output", "--output"])
        .arg(dir.join("output"))
        .arg("--metadata")
        .arg(dir.join("metadata"))
        .args(["--max-bytes", &cap.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pipelines() -> Vec<Pipeline> {
    ["first", "second"]
        .iter()
        .map(|n| {
            serde_json::from_value(json!({
                "apiVersion": "platform.kratix.io/v1alpha1", "kind": "Pipeline",
                "metadata": {"name": n},
                "spec": {"containers": [{"name": "build", "image": "ghcr.io/acme/build:1",
                    "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}
            }))
            .unwrap()
        })
        .collect()
}

const OBJECT: &str = "apiVersion: marketplace.kratix.io/v1alpha1\nkind: redis\nmetadata:\n  name: example\n  namespace: default\nspec:\n  size: small\n";

fn input(pipelines: &[Pipeline], action: Action) -> WorkflowInput<'_> {
    WorkflowInput {
        workflow_type: WorkflowType::Resource,
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
        promise_hash: "0123456789abcdef0123456789abcdef".into(),
    }
}

fn runner(tmp: &Path, client: Option<kube::Client>, cap: u64) -> RunnerConfig {
    let settings = KubernetesSettings {
        adapter_image: "ghcr.io/promised-dev/promised:test".into(),
        ..Default::default()
    };
    RunnerConfig {
        work_dir: tmp.join("runs"),
        timeout: Duration::from_secs(120),
        output_cap_bytes: cap,
        runtime: Runtime::Kubernetes,
        kubernetes: client.map(|c| KubeRuntime::with_client(settings, c)),
        ..Default::default()
    }
}

/// The fake's behaviour for one Job: how it ends and what the pod's containers say.
#[derive(Clone)]
struct Script {
    /// `Job` create answer: 201, or 409 (exists: adopt), or an error.
    create_job: u16,
    create_secret: u16,
    /// Condition of the Job when watched: `Complete`, `Failed`.
    end: Value,
    phase: &'static str,
    statuses: Value,
    /// The output container's log.
    log: String,
    /// Log of the failed container.
    tail: String,
}

fn complete(log: String) -> Script {
    Script {
        create_job: 201,
        create_secret: 201,
        end: json!([{"type": "Complete", "status": "True"}]),
        phase: "Succeeded",
        statuses: json!([
            {"name": "reader", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0}}},
            {"name": "build", "image": "ghcr.io/acme/build:1",
             "imageID": "ghcr.io/acme/build@sha256:1111111111111111111111111111111111111111111111111111111111111111",
             "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}]),
        log,
        tail: String::new(),
    }
}

/// An answerer following `scripts`, one per Job in creation order; created objects are
/// echoed back.
fn answerer(scripts: Vec<Script>) -> impl FnMut(&Call) -> Answer + Send + 'static {
    let mut jobs: Vec<Value> = Vec::new();
    let mut current = 0usize;
    move |c: &Call| {
        let (_, resource, verb) = c.access();
        let name = |c: &Call| c.path.rsplit('/').next().unwrap().to_string();
        let idx = current.min(scripts.len() - 1);
        let s = &scripts[idx];
        match (verb.as_str(), resource.as_str()) {
            ("create", "secrets") => match s.create_secret {
                201 => json_answer(201, c.body.clone()),
                409 => status(409, "AlreadyExists", "secrets already exists"),
                code => status(
                    code,
                    "Forbidden",
                    "secrets is forbidden: User cannot create resource",
                ),
            },
            ("create", "jobs") => {
                jobs.push(c.body.clone());
                match s.create_job {
                    201 => json_answer(201, c.body.clone()),
                    409 => status(409, "AlreadyExists", "jobs.batch already exists"),
                    403 => status(
                        403,
                        "Forbidden",
                        "jobs.batch is forbidden: User \"system:serviceaccount:x:promised\" cannot create resource \"jobs\"",
                    ),
                    code => status(code, "InternalError", "etcdserver: request timed out"),
                }
            }
            ("get", "jobs") => json_answer(200, job_json(jobs.last().unwrap(), Value::Null)),
            ("watch", "jobs") => {
                let j = job_json(jobs.last().unwrap(), s.end.clone());
                (
                    200,
                    json!({"type": "MODIFIED", "object": j}).to_string() + "\n",
                )
            }
            ("list", "pods") => {
                let job = c.query["labelSelector"]
                    .trim_start_matches("job-name=")
                    .to_string();
                json_answer(200, pod_list(&job, s.phase, s.statuses.clone()))
            }
            ("get", "pods/log") => {
                if c.query.get("container").map(String::as_str) == Some("promised-output") {
                    (200, s.log.clone())
                } else {
                    (200, s.tail.clone())
                }
            }
            ("delete", "jobs") => {
                current += 1;
                json_answer(200, job_json(jobs.last().unwrap(), Value::Null))
            }
            ("delete", "secrets") => json_answer(
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}, "details": {"name": name(c)}}),
            ),
            other => panic!("unexpected call {other:?}: {c:?}"),
        }
    }
}

fn assert_allowed(calls: &[Call]) {
    for c in calls {
        let (g, r, v) = c.access();
        assert!(
            access::allows(access::JOB_RUNTIME, &g, &r, &v),
            "{v} {g}/{r} is not in JOB_RUNTIME: {c:?}"
        );
    }
}

/// The happy path, through run_workflow: two Pipelines, each: create Secret, create Job,
/// get, watch to Complete, list pods, read the output container's log, delete Job (in the
/// background), delete Secret. The second Pipeline's object.yaml carries the first one's
/// status; the output and status come back; image digests are recorded.
#[tokio::test]
async fn a_workflow_runs_one_job_per_pipeline_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let first = emitted(
        &[("dev/a.yaml", "kind: A\n")],
        &[("status.yaml", "stage: one\n")],
        1 << 20,
    );
    let second = emitted(
        &[("dev/b.yaml", "kind: B\n"), (".keep", "")],
        &[
            ("status.yaml", "stage: two\n"),
            (
                "destination-selectors.yaml",
                "- directory: dev\n  matchLabels:\n    env: dev\n",
            ),
        ],
        1 << 20,
    );
    let (client, calls) = fake_api(answerer(vec![complete(first), complete(second)]));
    let ps = pipelines();
    let cfg = runner(tmp.path(), Some(client), 1 << 20);
    let result = run_workflow(&cfg, &input(&ps, Action::Configure)).await;
    drop(cfg);
    let calls = calls.await.unwrap();
    assert!(result.succeeded(), "{:?}", result.error());
    assert_eq!(result.pipelines.len(), 2);
    let second = &result.pipelines[1];
    let paths: Vec<&str> = second.outputs.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, [".keep", "dev/b.yaml"]);
    assert_eq!(second.selectors.len(), 1);
    assert_eq!(result.merged_status["stage"], "two");
    assert_eq!(
        result.pipelines[0].images[0].digest,
        "sha256:1111111111111111111111111111111111111111111111111111111111111111"
    );
    assert_eq!(result.pipelines[0].images[0].image, "ghcr.io/acme/build:1");

    let seen: Vec<String> = calls.iter().map(Call::short).collect();
    let one = [
        "create /secrets",
        "create batch/jobs",
        "get batch/jobs",
        "watch batch/jobs",
        "list /pods",
        "get /pods/log",
        "delete batch/jobs",
        "delete /secrets",
    ];
    assert_eq!(seen, [one, one].concat());
    assert_allowed(&calls);

    let secret = &calls[0];
    assert_eq!(secret.method, "POST");
    assert_eq!(secret.path, format!("/api/v1/namespaces/{NS}/secrets"));
    let name = secret.body["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(name.starts_with("kratix-redis-example-first-"), "{name}");
    use base64::Engine as _;
    let object = base64::engine::general_purpose::STANDARD
        .decode(secret.body["data"]["object.yaml"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(object).unwrap(), OBJECT);
    let job = &calls[1];
    assert_eq!(job.path, format!("/apis/batch/v1/namespaces/{NS}/jobs"));
    assert_eq!(job.body["metadata"]["name"], name.as_str());
    let pod = &job.body["spec"]["template"]["spec"];
    assert_eq!(
        pod["initContainers"][1]["env"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        &json!({"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
    );
    assert_eq!(
        calls[2].path,
        format!("/apis/batch/v1/namespaces/{NS}/jobs/{name}")
    );
    assert_eq!(
        calls[3].path,
        format!("/apis/batch/v1/namespaces/{NS}/jobs")
    );
    assert_eq!(
        calls[3].query["fieldSelector"],
        format!("metadata.name={name}")
    );
    assert_eq!(calls[3].query["resourceVersion"], "7");
    assert_eq!(calls[4].query["labelSelector"], format!("job-name={name}"));
    assert_eq!(
        calls[5].path,
        format!("/api/v1/namespaces/{NS}/pods/{name}-abcde/log")
    );
    assert_eq!(calls[5].query["container"], "promised-output");
    assert_eq!(
        calls[5].query["limitBytes"],
        (2u64 * (1 << 20) + (1 << 20)).to_string()
    );
    assert_eq!(
        calls[6].path,
        format!("/apis/batch/v1/namespaces/{NS}/jobs/{name}")
    );
    assert_eq!(calls[6].body["propagationPolicy"], "Background");
    assert_eq!(
        calls[7].path,
        format!("/api/v1/namespaces/{NS}/secrets/{name}")
    );

    // The second Pipeline sees the first one's status in object.yaml.
    let object = base64::engine::general_purpose::STANDARD
        .decode(calls[8].body["data"]["object.yaml"].as_str().unwrap())
        .unwrap();
    assert!(String::from_utf8(object).unwrap().contains("stage: one"));
}

/// A failed Job: the failed container's log tail is in the error at once, with the Job's
/// reason, the container and its exit code; the Job and Secret are still deleted.
#[tokio::test]
async fn a_failed_job_reports_the_container_and_its_log_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = complete(String::new());
    s.end = json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit"}]);
    s.phase = "Failed";
    s.statuses[1]["state"] = json!({"terminated": {"exitCode": 3, "reason": "Error"}});
    s.tail = "step 1\nboom: no such table\n".into();
    let (client, calls) = fake_api(answerer(vec![s]));
    let ps = pipelines();
    let cfg = runner(tmp.path(), Some(client), 1 << 20);
    let result = run_workflow(&cfg, &input(&ps, Action::Configure)).await;
    drop(cfg);
    let calls = calls.await.unwrap();
    assert_eq!(result.pipelines.len(), 1, "stops at the failed Pipeline");
    match result.error().unwrap() {
        Error::JobFailed {
            pipeline,
            container,
            exit_code,
            reason,
            log_tail,
            job,
        } => {
            assert_eq!(pipeline, "first");
            assert!(job.starts_with("kratix-redis-example-first-"));
            assert_eq!(container.as_deref(), Some("build"));
            assert_eq!(*exit_code, Some(3));
            assert_eq!(reason, "BackoffLimitExceeded: Error");
            assert!(log_tail.contains("boom: no such table"));
        }
        other => panic!("{other:?}"),
    }
    let text = result.error().unwrap().to_string();
    assert!(text.contains("container \"build\" exit code 3"), "{text}");
    let log = calls.iter().find(|c| c.short() == "get /pods/log").unwrap();
    assert_eq!(log.query["container"], "build");
    assert_eq!(log.query["tailLines"], "20");
    let seen: Vec<String> = calls.iter().map(Call::short).collect();
    assert_eq!(
        &seen[seen.len() - 2..],
        ["delete batch/jobs", "delete /secrets"]
    );
    assert_allowed(&calls);
}

/// `DeadlineExceeded` is a timeout naming the limit (`activeDeadlineSeconds`).
#[tokio::test]
async fn a_job_past_its_deadline_is_a_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = complete(String::new());
    s.end = json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline"}]);
    s.phase = "Failed";
    s.statuses[1]["state"] = json!({"running": {}});
    let (client, calls) = fake_api(answerer(vec![s]));
    let ps = pipelines();
    let cfg = runner(tmp.path(), Some(client), 1 << 20);
    let result = run_workflow(&cfg, &input(&ps, Action::Configure)).await;
    drop(cfg);
    assert_allowed(&calls.await.unwrap());
    match result.error().unwrap() {
        Error::JobTimeout { after, .. } => assert_eq!(*after, Duration::from_secs(120)),
        other => panic!("{other:?}"),
    }
}

/// Output over the cap: the emitter refuses it with the host runtime's check, and the error
/// names the cap (a log cut at `limitBytes` is tested with the decoder's unit tests).
#[tokio::test]
async fn oversized_output_names_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let refused = emitted(&[("big.yaml", &"x".repeat(5000))], &[], 1000);
    let (client, calls) = fake_api(answerer(vec![complete(refused)]));
    let ps = pipelines();
    let cfg = runner(tmp.path(), Some(client), 1000);
    let result = run_workflow(&cfg, &input(&ps, Action::Configure)).await;
    drop(cfg);
    assert_allowed(&calls.await.unwrap());
    let e = result.error().unwrap();
    assert_eq!(
        *e,
        Error::OutputTooLarge {
            bytes: 5000,
            cap: 1000
        }
    );
    assert!(e.to_string().contains("cap 1000 bytes"), "{e}");
}

/// A restarted daemon finds its Job still running (409 on create): it is adopted and watched,
/// not created again; a 409 on the Secret is fine.
#[tokio::test]
async fn a_restart_adopts_the_running_job() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = complete(emitted(&[("a.yaml", "a: 1\n")], &[], 1 << 20));
    s.create_job = 409;
    s.create_secret = 409;
    let (client, calls) = fake_api(answerer(vec![s]));
    let ps = pipelines()[..1].to_vec();
    let cfg = runner(tmp.path(), Some(client), 1 << 20);
    let result = run_workflow(&cfg, &input(&ps, Action::Configure)).await;
    drop(cfg);
    let calls = calls.await.unwrap();
    assert!(result.succeeded(), "{:?}", result.error());
    assert_eq!(result.pipelines[0].outputs[0].path, "a.yaml");
    let creates = calls.iter().filter(|c| c.method == "POST").count();
    assert_eq!(
        creates, 2,
        "one Secret create, one Job create, nothing again"
    );
    assert_eq!(calls[2].short(), "get batch/jobs");
    assert_allowed(&calls);
}

/// 403 names the verb and resource to grant; 500 names the call; nothing is left watching.
#[tokio::test]
async fn api_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    for (code, want) in [
        (
            403,
            "needs the verb \"create\" on \"jobs.batch\" in namespace \"pipelines\"",
        ),
        (500, "etcdserver: request timed out (500)"),
    ] {
        let mut s = complete(String::new());
        s.create_job = code;
        let (client, calls) = fake_api(answerer(vec![s]));
        let ps = pipelines();
        let cfg = runner(tmp.path(), Some(client), 1 << 20);
        let result = run_workflow(&cfg, &input(&ps, Action::Configure)).await;
        drop(cfg);
        assert_allowed(&calls.await.unwrap());
        let e = result.error().unwrap();
        let text = e.to_string();
        assert!(
            matches!(e, Error::KubeApi { code: Some(c), .. } if *c == code),
            "{e:?}"
        );
        assert!(text.contains(want), "{text}");
        assert!(
            text.contains("create Job \"kratix-redis-example-first-"),
            "{text}"
        );
        assert!(
            text.contains("Promise \"redis\" pipeline \"first\""),
            "{text}"
        );
    }
    let mut s = complete(String::new());
    s.create_secret = 403;
    let (client, calls) = fake_api(answerer(vec![s]));
    let ps = pipelines();
    let cfg = runner(tmp.path(), Some(client), 1 << 20);
    let result = run_workflow(&cfg, &input(&ps, Action::Configure)).await;
    drop(cfg);
    assert_eq!(calls.await.unwrap().len(), 1);
    assert!(result.error().unwrap().to_string().contains("\"secrets\""));
}

/// No API: every Pipeline on the runtime fails with a clear error; the annotation
/// `promised.dev/runtime: process` still runs on the host, an unknown value is named.
#[tokio::test]
async fn without_an_api_the_pipeline_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let ps = pipelines();
    let cfg = runner(tmp.path(), None, 1 << 20);
    let result = run_workflow(&cfg, &input(&ps, Action::Configure)).await;
    let e = result.error().unwrap();
    assert!(matches!(e, Error::KubeUnavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("no API to talk to"), "{e}");

    let mut i = input(&ps, Action::Configure);
    i.runtime_annotation = Some("cluster".into());
    let e = run_workflow(&cfg, &i).await.error().unwrap().to_string();
    assert_eq!(
        e,
        "Promise \"redis\": annotation \"promised.dev/runtime\" is \"cluster\"; use \"process\" or \"kubernetes\""
    );
    i.runtime_annotation = Some("process".into());
    let r = run_workflow(&cfg, &i).await;
    assert!(
        !matches!(r.error(), Some(Error::KubeUnavailable { .. })),
        "{:?}",
        r.error()
    );
    assert!(matches!(r.pipelines[0].outcome, Outcome::Failed { .. }));
}

/// Delete workflows: the output container skips the output (`--skip-output`), and the Job
/// runs only the first Pipeline.
#[tokio::test]
async fn delete_workflows_emit_metadata_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("output")).unwrap();
    std::fs::create_dir_all(dir.path().join("metadata")).unwrap();
    std::fs::write(dir.path().join("metadata/status.yaml"), "gone: true\n").unwrap();
    let log = adapter_emit(dir.path(), 1 << 20);
    let (client, calls) = fake_api(answerer(vec![complete(log)]));
    let ps = pipelines();
    let cfg = runner(tmp.path(), Some(client), 1 << 20);
    let result = run_workflow(&cfg, &input(&ps, Action::Delete)).await;
    drop(cfg);
    let calls = calls.await.unwrap();
    assert!(result.succeeded(), "{:?}", result.error());
    assert_eq!(result.pipelines.len(), 1);
    assert_eq!(result.merged_status["gone"], true);
    let args = &calls[1].body["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args.as_array().unwrap().last().unwrap(), "--skip-output");
    assert_eq!(
        calls[1].body["metadata"]["labels"]["kratix.io/workflow-action"],
        "delete"
    );
}

/// `promised validate` names the Promise and the annotation when `promised.dev/runtime` is
/// neither `process` nor `kubernetes`.
#[test]
fn validate_rejects_an_unknown_runtime_annotation() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/quickstart");
    for e in walkdir::WalkDir::new(&root) {
        let e = e.unwrap();
        let to = tmp.path().join(e.path().strip_prefix(&root).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    let promise = tmp.path().join("promises/redis/promise.yaml");
    let text = std::fs::read_to_string(&promise).unwrap().replacen(
        "  name: redis\n",
        "  name: redis\n  annotations:\n    promised.dev/runtime: cluster\n",
        1,
    );
    std::fs::write(&promise, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
        .arg("validate")
        .arg(tmp.path())
        .output()
        .unwrap();
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("promised.dev/runtime"), "{all}");
    assert!(all.contains("\"cluster\" is not a runtime"), "{all}");
    assert!(all.contains("redis"), "{all}");
}
