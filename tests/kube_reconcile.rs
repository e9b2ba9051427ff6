//! `promised reconcile` with `runtime: kubernetes`, end to end through kube's real HTTP stack:
//! `KUBECONFIG` points at a fake cluster on 127.0.0.1 (no API server can run here;
//! test-infrastructure.md §3) that "runs" each Job it is given: it reads the input object
//! from the Secret the daemon created, writes what a pipeline would, and answers the pod log
//! with what the real `promised adapter emit-output` prints for it. The output then goes
//! through the daemon's own checks, scheduling and Git state store writer, like the host
//! runtime's.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use base64::Engine as _;
use common::{copy_dir, git, repo_root};
use serde_json::{Value, json};

const NS: &str = "pipelines";

#[derive(Default)]
struct Cluster {
    secrets: BTreeMap<String, Value>,
    jobs: BTreeMap<String, Value>,
    logs: BTreeMap<String, String>,
    /// `<METHOD> <path>` of every call, in order.
    calls: Vec<String>,
    work: PathBuf,
}

/// What the fake pod's pipeline writes for `object` (the input object of the Job).
fn pipeline_output(object: &Value, workflow_type: &str) -> Vec<(String, String)> {
    let name = object["metadata"]["name"].as_str().unwrap();
    match workflow_type {
        "promise" => vec![(
            "redis-operator.yaml".into(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: redis-operator\n".into(),
        )],
        _ => vec![(
            format!("redis-{name}.yaml"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {}\ndata:\n  size: {}\n",
                object["metadata"]["namespace"].as_str().unwrap(),
                object["spec"]["size"].as_str().unwrap()
            ),
        )],
    }
}

/// Runs the Job: the real `promised adapter emit-output` over what the pipeline wrote.
fn run_job(c: &mut Cluster, job: &Value) {
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let pod = &job["spec"]["template"]["spec"];
    let secret = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["secret"]["secretName"].as_str())
        .expect("the input Secret is a volume of the pod");
    let data = c.secrets[secret]["data"]["object.yaml"].as_str().unwrap();
    let object: Value = serde_saphyr::from_str(
        &String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let wtype = job["metadata"]["labels"]["kratix.io/workflow-type"]
        .as_str()
        .unwrap();
    let dir = c.work.join(&name);
    for d in ["output", "metadata"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    for (p, text) in pipeline_output(&object, wtype) {
        std::fs::write(dir.join("output").join(p), text).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(["adapter", "emit-output", "--output"])
        .arg(dir.join("output"))
        .arg("--metadata")
        .arg(dir.join("metadata"))
        .args(["--max-bytes", "1048576"])
        .output()
        .unwrap();
    assert!(out.status.success());
    c.logs.insert(name, String::from_utf8(out.stdout).unwrap());
}

fn answer(c: &mut Cluster, method: &Method, uri: &Uri, body: &[u8]) -> (StatusCode, String) {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("");
    c.calls.push(format!("{method} {path}"));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ok = |v: Value| (StatusCode::OK, v.to_string());
    let core = format!("/api/v1/namespaces/{NS}");
    let batch = format!("/apis/batch/v1/namespaces/{NS}");
    match (method.as_str(), path.as_str()) {
        ("POST", p) if p == format!("{core}/secrets") => {
            let v: Value = serde_json::from_slice(body).unwrap();
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            c.secrets.insert(name, v.clone());
            (StatusCode::CREATED, v.to_string())
        }
        ("POST", p) if p == format!("{batch}/jobs") => {
            let mut v: Value = serde_json::from_slice(body).unwrap();
            v["metadata"]["resourceVersion"] = json!("1");
            v["metadata"]["uid"] = json!("uid-1");
            run_job(c, &v);
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            v["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
            c.jobs.insert(name, v.clone());
            (StatusCode::CREATED, v.to_string())
        }
        ("GET", p) if p.starts_with(&format!("{batch}/jobs/")) => {
            ok(c.jobs[*parts.last().unwrap()].clone())
        }
        ("GET", p) if p == format!("{batch}/jobs") && query.contains("watch=true") => {
            let name = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("fieldSelector=metadata.name%3D"))
                .unwrap();
            (
                StatusCode::OK,
                json!({"type": "MODIFIED", "object": c.jobs[name]}).to_string() + "\n",
            )
        }
        ("GET", p) if p == format!("{core}/pods") => {
            let job = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("labelSelector=job-name%3D"))
                .unwrap();
            ok(
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                "items": [{"metadata": {"name": format!("{job}-pod01"), "namespace": NS,
                    "labels": {"job-name": job}},
                    "status": {"phase": "Succeeded"}}]}),
            )
        }
        ("GET", p) if p.starts_with(&format!("{core}/pods/")) && p.ends_with("/log") => {
            let pod = parts[parts.len() - 2];
            let job = pod.strip_suffix("-pod01").unwrap();
            (StatusCode::OK, c.logs[job].clone())
        }
        ("DELETE", p) if p.starts_with(&format!("{batch}/jobs/")) => {
            let v = c.jobs.remove(*parts.last().unwrap()).unwrap();
            ok(v)
        }
        ("DELETE", p) if p.starts_with(&format!("{core}/secrets/")) => {
            c.secrets.remove(*parts.last().unwrap()).unwrap();
            ok(json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}))
        }
        _ => (
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                   "reason": "NotFound", "message": format!("unexpected call {method} {uri}")})
            .to_string(),
        ),
    }
}

/// Serves the fake cluster on 127.0.0.1 from a thread of its own; returns its address.
fn serve(cluster: Arc<Mutex<Cluster>>) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
                let cluster = cluster.clone();
                async move {
                    let (code, text) = answer(&mut cluster.lock().unwrap(), &method, &uri, &body);
                    (
                        code,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        text,
                    )
                }
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn write_config(dir: &Path) {
    copy_dir(&repo_root().join("testdata/kubernetes/redis"), dir);
    std::fs::write(
        dir.join("platform.yaml"),
        "apiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: dev\n  labels: {environment: dev}\nspec:\n  path: clusters/dev\n  stateStoreRef: {kind: GitStateStore, name: local}\n---\napiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: local\nspec:\n  url: state.git\n  branch: main\n",
    )
    .unwrap();
}

#[test]
fn reconcile_runs_pipelines_as_jobs_and_writes_their_output_to_the_state_store() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Arc::new(Mutex::new(Cluster {
        work: tmp.path().join("pods"),
        ..Cluster::default()
    }));
    let addr = serve(cluster.clone());
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{addr}\"}}\nusers:\n- name: u\n  user: {{token: not-a-secret}}\ncontexts:\n- name: c\n  context: {{cluster: fake, user: u, namespace: {NS}}}\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    let config = tmp.path().join("config");
    write_config(&config);
    let daemon = tmp.path().join("promised.yaml");
    std::fs::write(
        &daemon,
        format!("runtime: kubernetes\nkubernetes:\n  namespace: {NS}\n  adapterImage: registry.example/promised:test\n"),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(["reconcile", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .arg("--daemon-config")
        .arg(&daemon)
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("2 pipelines run"), "{stdout}");

    // The Jobs' output is in the state store at Kratix's paths, as the fake pods wrote it.
    let store = state.join("state.git");
    let files = git(&store, &["ls-tree", "-r", "--name-only", "main"]);
    let instance = files
        .lines()
        .find(|f| {
            f.starts_with("clusters/dev/resources/default/redis/example/instance-configure/")
                && f.ends_with("/redis-example.yaml")
        })
        .unwrap_or_else(|| panic!("no resource output: {files}"));
    assert!(
        files.lines().any(
            |f| f.starts_with("clusters/dev/dependencies/redis/promise-configure/")
                && f.ends_with("/redis-operator.yaml")
        ),
        "{files}"
    );
    let content = git(&store, &["show", &format!("main:{instance}")]);
    assert!(content.contains("size: small"), "{content}");

    // Every Job and input Secret was cleaned up once read; the calls were the runtime's.
    let c = cluster.lock().unwrap();
    assert!(c.jobs.is_empty() && c.secrets.is_empty(), "{:?}", c.calls);
    let creates = c
        .calls
        .iter()
        .filter(|k| k.starts_with("POST ") && k.ends_with("/jobs"))
        .count();
    assert_eq!(creates, 2, "{:#?}", c.calls);
    assert!(
        !c.calls.iter().any(|k| k.contains("not-a-secret")),
        "{:#?}",
        c.calls
    );
    assert!(!stdout.contains("not-a-secret") && !stderr.contains("not-a-secret"));
}
