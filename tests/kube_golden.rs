//! Golden Job manifests: the Job promised's Kubernetes runtime builds for the marketplace
//! redis Promise's promise and resource workflows, compared field by field with the Job
//! Kratix builds for the same Pipeline (`testdata/kubernetes/kratix-jobs/`, written from
//! Kratix's `api/v1alpha1/pipeline_factory.go`). The differences allowed here are the ones
//! README "Kubernetes Job runtime" lists; everything a pipeline container sees is equal.

use std::path::Path;
use std::time::Duration;

use promised::pipeline::kubernetes::{JobSettings, job_objects};
use promised::pipeline::{Action, WorkflowInput};
use serde_json::{Value, json};

const ADAPTER: &str = "registry.example/promised:test";

fn settings() -> JobSettings {
    JobSettings {
        namespace: "promised".into(),
        adapter_image: ADAPTER.into(),
        adapter_pull_secret: None,
        job_ttl: Duration::from_secs(3600),
        timeout: Duration::from_secs(600),
        output_cap_bytes: 50 * 1024 * 1024,
    }
}

fn kratix_job(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/kubernetes/kratix-jobs")
        .join(name);
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Kratix's containers, which promised replaces with its own (`reader`, `promised-output`)
/// or leaves to the daemon (`work-writer`, `status-writer`).
const KRATIX_OWN: [&str; 3] = ["reader", "work-writer", "status-writer"];

fn user_containers(pod: &Value, skip: &dyn Fn(&Value) -> bool) -> Vec<Value> {
    pod["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod["containers"].as_array().into_iter().flatten())
        .filter(|c| !skip(c))
        .cloned()
        .collect()
}

/// Every field Kratix sets on a user container, equal in promised's (a missing field and a
/// null or empty one are the same to Kubernetes).
fn same_field(kratix: &Value, ours: &Value, field: &str, what: &str) {
    let norm = |v: &Value| match v {
        Value::Null => Value::Null,
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        v => v.clone(),
    };
    assert_eq!(
        norm(&ours[field]),
        norm(&kratix[field]),
        "{what}: field {field} differs"
    );
}

fn compare(kratix: &Value, ours: &Value, what: &str) {
    // Job and pod labels: every Kratix label with its value (`app.kubernetes.io/managed-by:
    // Kratix` included, as the process runtime's `fieldRef` reports it).
    for (meta, kmeta) in [
        (&ours["metadata"], &kratix["metadata"]),
        (
            &ours["spec"]["template"]["metadata"],
            &kratix["spec"]["template"]["metadata"],
        ),
    ] {
        for (k, v) in kmeta["labels"].as_object().unwrap() {
            assert_eq!(&meta["labels"][k], v, "{what}: label {k}");
        }
    }
    for (k, v) in kratix["metadata"]["annotations"].as_object().unwrap() {
        assert_eq!(
            &ours["metadata"]["annotations"][k], v,
            "{what}: annotation {k}"
        );
    }
    same_field(&kratix["spec"], &ours["spec"], "backoffLimit", what);
    let (kpod, opod) = (
        &kratix["spec"]["template"]["spec"],
        &ours["spec"]["template"]["spec"],
    );
    for f in [
        "restartPolicy",
        "imagePullSecrets",
        "nodeSelector",
        "tolerations",
    ] {
        same_field(kpod, opod, f, what);
    }
    // Kratix's three contract volumes, by name and source.
    for v in kpod["volumes"].as_array().unwrap() {
        if v["name"] == "promise-scheduling" {
            continue;
        }
        let ov = opod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == v["name"])
            .unwrap_or_else(|| panic!("{what}: volume {} missing", v["name"]));
        assert_eq!(ov, v, "{what}: volume {}", v["name"]);
    }
    // The Pipeline's containers: in the same order, every field equal.
    let k = user_containers(kpod, &|c| KRATIX_OWN.contains(&c["name"].as_str().unwrap()));
    let o = user_containers(opod, &|c| c["image"] == ADAPTER);
    assert_eq!(k.len(), o.len(), "{what}: number of pipeline containers");
    assert!(!k.is_empty());
    for (kc, oc) in k.iter().zip(&o) {
        for f in [
            "name",
            "image",
            "command",
            "args",
            "env",
            "envFrom",
            "volumeMounts",
            "imagePullPolicy",
            "securityContext",
            "resources",
            "workingDir",
        ] {
            same_field(kc, oc, f, &format!("{what}: container {}", kc["name"]));
        }
    }
    // The pipeline containers run as init containers after the input reader, and one
    // main container collects the output (Kratix: work-writer + status-writer).
    let inits = opod["initContainers"].as_array().unwrap();
    assert_eq!(inits[0]["name"], "reader");
    assert_eq!(inits[0]["image"], ADAPTER);
    assert_eq!(
        &inits[1..],
        &o[..],
        "{what}: pipeline containers are init containers"
    );
    let mains = opod["containers"].as_array().unwrap();
    assert_eq!(mains.len(), 1);
    assert_eq!(mains[0]["image"], ADAPTER);
    // promised's containers carry Kratix's own security context.
    for c in [&inits[0], &mains[0]] {
        assert_eq!(
            c["securityContext"], kpod["initContainers"][0]["securityContext"],
            "{what}: {}",
            c["name"]
        );
    }
    // Name: Kratix's shape, a 5-character suffix (deterministic here, random in Kratix).
    let kname = kratix["metadata"]["name"].as_str().unwrap();
    let oname = ours["metadata"]["name"].as_str().unwrap();
    let prefix = kname.strip_suffix("xxxxx").unwrap();
    assert!(oname.starts_with(prefix), "{what}: {oname} vs {kname}");
    assert_eq!(oname.len(), kname.len(), "{what}: {oname}");
    // Documented differences: every Job in the daemon's namespace, the namespace's
    // ServiceAccount unless the Pipeline names one, a deadline and a TTL.
    assert_eq!(ours["metadata"]["namespace"], "promised");
    assert_eq!(opod["serviceAccountName"], Value::Null);
    assert_eq!(ours["spec"]["activeDeadlineSeconds"], json!(600));
    assert_eq!(ours["spec"]["ttlSecondsAfterFinished"], json!(3600));
}

fn redis() -> promised::validate::ValidConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/kubernetes/redis");
    let objects = promised::config::load(
        &promised::config::Source::Dir(dir),
        &promised::config::FileFilter::default(),
        None,
    )
    .unwrap();
    promised::validate::validate(objects)
}

#[test]
fn redis_resource_configure_job_matches_kratix() {
    let valid = redis();
    let promise = valid.promise("redis").expect("redis promise is valid");
    let request = valid
        .requests
        .first()
        .expect("the redis request is admitted");
    let input = WorkflowInput::for_request(promise, request, Action::Configure);
    let objs = job_objects(&input, &input.pipelines[0], &input.object_yaml, &settings()).unwrap();
    let ours = serde_json::to_value(&objs.job).unwrap();
    compare(
        &kratix_job("redis-resource-configure.yaml"),
        &ours,
        "resource configure",
    );
    // The input Secret carries object.yaml for the reader, named like the Job.
    assert_eq!(
        objs.secret.metadata.name.as_deref(),
        Some(objs.name.as_str())
    );
    let data = objs.secret.data.as_ref().unwrap();
    let object: Value =
        serde_saphyr::from_str(std::str::from_utf8(&data["object.yaml"].0).unwrap()).unwrap();
    assert_eq!(object["metadata"]["name"], "example");
    assert_eq!(object["spec"]["size"], "small");
}

#[test]
fn redis_promise_configure_job_matches_kratix() {
    let valid = redis();
    let promise = valid.promise("redis").expect("redis promise is valid");
    let input = WorkflowInput::for_promise(promise, Action::Configure);
    let objs = job_objects(&input, &input.pipelines[0], &input.object_yaml, &settings()).unwrap();
    let ours = serde_json::to_value(&objs.job).unwrap();
    compare(
        &kratix_job("redis-promise-configure.yaml"),
        &ours,
        "promise configure",
    );
}

/// The same inputs give the same Job name (a restarted daemon finds the Job it started);
/// another request spec gives another.
#[test]
fn job_names_are_deterministic() {
    let valid = redis();
    let promise = valid.promise("redis").unwrap();
    let request = valid.requests.first().unwrap();
    let input = WorkflowInput::for_request(promise, request, Action::Configure);
    let a = job_objects(&input, &input.pipelines[0], &input.object_yaml, &settings()).unwrap();
    let b = job_objects(&input, &input.pipelines[0], &input.object_yaml, &settings()).unwrap();
    assert_eq!(a.name, b.name);
    assert_eq!(a.job, b.job);
    let mut other = (**request).clone();
    let mut object = (*other.object()).clone();
    object["spec"]["size"] = json!("large");
    other.object = promised::state::CompactValue::new(object);
    let input2 = WorkflowInput::for_request(promise, &other, Action::Configure);
    let c = job_objects(
        &input2,
        &input2.pipelines[0],
        &input2.object_yaml,
        &settings(),
    )
    .unwrap();
    assert_ne!(a.name, c.name);
    assert!(c.name.len() <= 63);
}
