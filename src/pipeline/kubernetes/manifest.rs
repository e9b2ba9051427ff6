//! The objects of one Pipeline run on the Kubernetes Job runtime, built without I/O
//! ([`job_objects`]): the input Secret holding `object.yaml`, and the Job whose pod is the one
//! Kratix builds (Kratix: `api/v1alpha1/pipeline_factory.go`, `pipelineJob`), with promised's
//! own `reader` and output containers in place of Kratix's `reader`, `work-writer` and
//! `status-writer`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, LocalObjectReference, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::super::{Action, Error, WorkflowInput, WorkflowType, contract};
use crate::model::Pipeline;

/// Name of the init container that copies `object.yaml` from the input Secret (Kratix's
/// `reader`).
pub const READER: &str = "reader";
/// Name of the main container that writes the output archive to its log
/// ([`super::transfer`]).
pub const OUTPUT_CONTAINER: &str = "promised-output";
/// The key of the input Secret that holds `object.yaml`.
pub const INPUT_KEY: &str = "object.yaml";
/// Where the reader sees the input Secret.
pub const INPUT_SECRET_MOUNT: &str = "/promised/input";
/// Label Kratix sets on every pipeline Job and pod (`kratix.io/promise-name`, …): prefix.
const KRATIX: &str = "kratix.io/";

/// What the builder needs besides the workflow and the Pipeline: from the daemon config's
/// `kubernetes:` ([`crate::cluster::KubernetesSettings`]), `pipelineTimeout` and
/// `maxOutputBytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    /// Namespace of the Job and its input Secret.
    pub namespace: String,
    /// Image of the reader and output containers (holds the `promised` binary).
    pub adapter_image: String,
    /// Pull Secret for the adapter image, listed first in `imagePullSecrets`.
    pub adapter_pull_secret: Option<String>,
    /// `ttlSecondsAfterFinished` (whole seconds).
    pub job_ttl: Duration,
    /// `activeDeadlineSeconds` (whole seconds, at least 1).
    pub timeout: Duration,
    /// The output size cap in bytes, given to the output container.
    pub output_cap_bytes: u64,
}

/// The objects of one Pipeline run: create `secret`, then `job`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobObjects {
    /// The Job's (and the Secret's) name ([`job_name`]).
    pub name: String,
    /// The input Secret: `data["object.yaml"]` is the object as the Pipeline sees it.
    pub secret: Secret,
    /// The Job.
    pub job: Job,
}

/// Builds the input Secret and the Job of Pipeline `p` of the workflow `input`, for the
/// object `object_yaml` (the workflow's `object.yaml` with the status of the Pipelines before
/// it). Pure: no I/O, same inputs, same objects.
///
/// The pod (Kratix: `pipeline_factory.go`):
/// - init container `reader` (adapter image): `promised adapter read-input` copies
///   `/promised/input/object.yaml` (the Secret, volume `promised-input`) to
///   `/kratix/input/object.yaml` (emptyDir `shared-input`);
/// - init containers: the Pipeline's containers in order, each with the `KRATIX_*` variables
///   then its own `env` (`valueFrom` passed through, Kubernetes resolves it) and `envFrom`,
///   mounts `/kratix/input` (read-only), `/kratix/output`, `/kratix/metadata` then its own,
///   its `securityContext` and `imagePullPolicy` as written, Kratix's default `resources`
///   (requests cpu 100m, memory and ephemeral-storage 128Mi; limits 200m, 256Mi, 256Mi)
///   when it has none;
/// - container `promised-output` (adapter image): `promised adapter emit-output` writes the
///   output archive to its log (`--skip-output` for delete workflows).
///
/// promised's containers have Kratix's own securityContext (no privilege escalation, all
/// capabilities dropped, non-root, RuntimeDefault seccomp) and default resources. The pod
/// template gets the Kratix labels (`kratix.io/promise-name`, `kratix.io/workflow-type`,
/// `kratix.io/workflow-action`, `kratix.io/pipeline-name`, `kratix.io/resource-name` and,
/// with a `pipelineNamespace`, `kratix.io/resource-namespace`, `kratix.io/hash`), with
/// `app.kubernetes.io/managed-by: Kratix` (as Kratix, and as the process runtime's `fieldRef` sees it) and then the Pipeline's labels (which win), and
/// the Pipeline's annotations; `spec.volumes` (after the three emptyDirs, before
/// `promised-input`), `imagePullSecrets`, `nodeSelector`, `tolerations`, `restartPolicy`
/// (default `OnFailure`) and `rbac.serviceAccount` (`serviceAccountName`). The Job has the
/// same labels, Kratix's `kratix.io/job-resource-*` annotations, `jobOptions.backoffLimit`,
/// `activeDeadlineSeconds` and `ttlSecondsAfterFinished`.
///
/// Errors: [`Error::JobSpec`] when a Pipeline field does not decode into its Kubernetes type,
/// [`Error::EnvFromUnsupported`] never (Kubernetes resolves `envFrom`).
pub fn job_objects(
    input: &WorkflowInput<'_>,
    p: &Pipeline,
    object_yaml: &str,
    settings: &JobSettings,
) -> Result<JobObjects, Error> {
    let pname = p.metadata.name.as_str();
    let spec_err = |field: &str, e: serde_json::Error| Error::JobSpec {
        promise: input.promise_name.clone(),
        pipeline: pname.into(),
        field: field.into(),
        reason: e.to_string(),
    };
    fn decode<T: DeserializeOwned + Default>(v: &Option<Value>) -> Result<T, serde_json::Error> {
        match v {
            None | Some(Value::Null) => Ok(T::default()),
            Some(v) => serde_json::from_value(v.clone()),
        }
    }
    let spec = &p.spec;
    let user_volumes: Vec<Volume> =
        decode(&spec.volumes).map_err(|e| spec_err("spec.volumes", e))?;
    let pull_secrets: Vec<LocalObjectReference> =
        decode(&spec.image_pull_secrets).map_err(|e| spec_err("spec.imagePullSecrets", e))?;
    let node_selector: BTreeMap<String, String> =
        decode(&spec.node_selector).map_err(|e| spec_err("spec.nodeSelector", e))?;
    let tolerations: Vec<Toleration> =
        decode(&spec.tolerations).map_err(|e| spec_err("spec.tolerations", e))?;
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct JobOptions {
        backoff_limit: Option<i32>,
    }
    let job_options: JobOptions =
        decode(&spec.job_options).map_err(|e| spec_err("spec.jobOptions", e))?;
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Rbac {
        service_account: Option<String>,
    }
    let rbac: Rbac = decode(&spec.rbac).map_err(|e| spec_err("spec.rbac", e))?;

    let kratix_env: Vec<EnvVar> = contract::kratix_env(
        input.workflow_type,
        input.action,
        &input.promise_name,
        pname,
        &input.object,
        &input.crd_plural,
    )
    .into_iter()
    .map(|(name, value)| EnvVar {
        name,
        value: Some(value),
        value_from: None,
    })
    .collect();
    let default_mounts = [
        mount("/kratix/input", "shared-input", true),
        mount("/kratix/output", "shared-output", false),
        mount("/kratix/metadata", "shared-metadata", false),
    ];
    let mut init = vec![Container {
        name: READER.into(),
        image: Some(settings.adapter_image.clone()),
        command: Some(vec!["promised".into()]),
        args: Some(
            [
                "adapter",
                "read-input",
                "--from",
                &format!("{INPUT_SECRET_MOUNT}/{INPUT_KEY}"),
                "--to",
                "/kratix/input/object.yaml",
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(kratix_env.clone()),
        volume_mounts: Some(vec![
            mount("/kratix/input", "shared-input", false),
            mount(INPUT_SECRET_MOUNT, "promised-input", true),
        ]),
        security_context: Some(kratix_security_context()),
        resources: Some(default_resources()),
        ..Default::default()
    }];
    for (i, c) in spec.containers.iter().enumerate() {
        let field = |f: &str| format!("spec.containers[{i}].{f}");
        let own_env: Vec<EnvVar> = serde_json::to_value(&c.env)
            .and_then(serde_json::from_value)
            .map_err(|e| spec_err(&field("env"), e))?;
        let own_mounts: Vec<VolumeMount> =
            decode(&c.volume_mounts).map_err(|e| spec_err(&field("volumeMounts"), e))?;
        let resources: Option<ResourceRequirements> =
            decode(&c.resources).map_err(|e| spec_err(&field("resources"), e))?;
        let security_context: Option<SecurityContext> =
            decode(&c.security_context).map_err(|e| spec_err(&field("securityContext"), e))?;
        let pull_policy: Option<String> =
            decode(&c.image_pull_policy).map_err(|e| spec_err(&field("imagePullPolicy"), e))?;
        let env_from = decode(&c.env_from).map_err(|e| spec_err(&field("envFrom"), e))?;
        init.push(Container {
            name: c.name.clone(),
            image: Some(c.image.clone()),
            command: c.command.clone(),
            args: c.args.clone(),
            working_dir: c.working_dir.clone(),
            env: Some(kratix_env.iter().cloned().chain(own_env).collect()),
            env_from,
            volume_mounts: Some(default_mounts.iter().cloned().chain(own_mounts).collect()),
            image_pull_policy: pull_policy.filter(|s| !s.is_empty()),
            security_context,
            resources: Some(resources.unwrap_or_else(default_resources)),
            ..Default::default()
        });
    }
    let mut emit_args: Vec<String> = [
        "adapter",
        "emit-output",
        "--output",
        "/kratix/output",
        "--metadata",
        "/kratix/metadata",
        "--max-bytes",
    ]
    .map(String::from)
    .to_vec();
    emit_args.push(settings.output_cap_bytes.to_string());
    if input.action == Action::Delete {
        emit_args.push("--skip-output".into());
    }
    let main = Container {
        name: OUTPUT_CONTAINER.into(),
        image: Some(settings.adapter_image.clone()),
        command: Some(vec!["promised".into()]),
        args: Some(emit_args),
        volume_mounts: Some(vec![
            mount("/kratix/output", "shared-output", true),
            mount("/kratix/metadata", "shared-metadata", true),
        ]),
        security_context: Some(kratix_security_context()),
        resources: Some(default_resources()),
        ..Default::default()
    };
    let empty_dir = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let mut volumes = vec![
        empty_dir("shared-input"),
        empty_dir("shared-output"),
        empty_dir("shared-metadata"),
    ];
    volumes.extend(user_volumes);
    // The Secret's name is filled in below, once the name is known.
    volumes.push(Volume {
        name: "promised-input".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(String::new()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let image_pull_secrets: Vec<LocalObjectReference> = settings
        .adapter_pull_secret
        .iter()
        .map(|n| LocalObjectReference { name: n.clone() })
        .chain(pull_secrets)
        .collect();

    let labels = labels(input, p, object_yaml);
    let pod_annotations =
        (!p.metadata.annotations.is_empty()).then(|| p.metadata.annotations.clone());
    let mut job = Job {
        metadata: ObjectMeta {
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(job_annotations(input)),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: job_options.backoff_limit,
            active_deadline_seconds: Some(settings.timeout.as_secs().max(1) as i64),
            ttl_seconds_after_finished: Some(settings.job_ttl.as_secs().min(i32::MAX as u64) as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: pod_annotations,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some(
                        spec.restart_policy
                            .clone()
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(|| "OnFailure".into()),
                    ),
                    service_account_name: rbac.service_account.filter(|s| !s.is_empty()),
                    init_containers: Some(init),
                    containers: vec![main],
                    image_pull_secrets: (!image_pull_secrets.is_empty())
                        .then_some(image_pull_secrets),
                    volumes: Some(volumes),
                    node_selector: (!node_selector.is_empty()).then_some(node_selector),
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    let mut secret = Secret {
        metadata: ObjectMeta {
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            INPUT_KEY.to_string(),
            ByteString(object_yaml.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    // The name's suffix is a hash of everything the objects hold (object.yaml, the Pipeline,
    // the namespace, the adapter image, the limits), so a restarted daemon finds the Job it
    // started for the same inputs.
    let digest = {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&job).unwrap_or_default());
        h.update([0]);
        h.update(serde_json::to_vec(&secret).unwrap_or_default());
        hex::encode(h.finalize())
    };
    let name = job_name(input, p, &digest[..5]);
    job.metadata.name = Some(name.clone());
    secret.metadata.name = Some(name.clone());
    if let Some(v) = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|s| s.volumes.as_mut())
        .and_then(|v| v.last_mut())
        .and_then(|v| v.secret.as_mut())
    {
        v.secret_name = Some(name.clone());
    }
    Ok(JobObjects { name, secret, job })
}

/// Kratix's Job name (`pipeline_factory.go:pipelineJobName`, `objectutil.GenerateObjectName`):
/// `kratix-<promise>[-<request>[-<request namespace> with a pipelineNamespace]]-<pipeline>`,
/// cut to 56 characters when longer than 57, then `-` and a 5-character `suffix` (Kratix: 5
/// random characters; promised: from a hash of the inputs). promised also lower-cases it,
/// turns characters outside `[a-z0-9.-]` into `-` and strips non-alphanumerics at the cut, so
/// the name is always a valid DNS-1123 name of at most 62 characters.
pub fn job_name(input: &WorkflowInput<'_>, p: &Pipeline, suffix: &str) -> String {
    let mut name = format!("kratix-{}", input.promise_name);
    if input.workflow_type == WorkflowType::Resource {
        name = format!("{name}-{}", input.object.name);
        if input.pipeline_namespace.is_some() {
            name = format!("{name}-{}", input.object.namespace);
        }
    }
    name = format!("{name}-{}", p.metadata.name);
    let mut name: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.len() > 57 {
        name.truncate(56);
    }
    let name = name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{name}-{suffix}")
}

/// Kratix's labels of a pipeline Job and its pod (`pipeline_factory.go:pipelineJobLabels`),
/// with `app.kubernetes.io/managed-by: Kratix` (as the process runtime's `fieldRef` sees it), then the Pipeline's own labels.
fn labels(input: &WorkflowInput<'_>, p: &Pipeline, object_yaml: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        l.insert(format!("{KRATIX}{k}"), v.to_string());
    };
    set("promise-name", &input.promise_name);
    set("workflow-type", input.workflow_type.as_str());
    set("workflow-action", input.action.as_str());
    set("pipeline-name", &p.metadata.name);
    let hash = match input.workflow_type {
        WorkflowType::Promise => input.promise_hash.clone(),
        WorkflowType::Resource => {
            set("resource-name", &input.object.name);
            if input.pipeline_namespace.is_some() {
                set("resource-namespace", &input.object.namespace);
            }
            let object = crate::config::parse_yaml_stream(object_yaml)
                .ok()
                .and_then(|d| d.into_iter().next())
                .unwrap_or(Value::Null);
            let rr = kratix_spec_hash(&object);
            hex::encode(<md5::Md5 as md5::Digest>::digest(
                format!("{}-{rr}", input.promise_hash).as_bytes(),
            ))
        }
    };
    set("hash", &hash);
    l.insert("app.kubernetes.io/managed-by".into(), "Kratix".into());
    l.extend(p.metadata.labels.clone());
    l
}

/// Kratix's annotations of a pipeline Job (`pipeline_factory.go:pipelineJobAnnotations`): the
/// object's namespace, name, kind and apiVersion.
fn job_annotations(input: &WorkflowInput<'_>) -> BTreeMap<String, String> {
    let o = &input.object;
    let api_version = if o.group.is_empty() {
        o.version.clone()
    } else {
        format!("{}/{}", o.group, o.version)
    };
    BTreeMap::from([
        (
            format!("{KRATIX}job-resource-namespace"),
            o.namespace.clone(),
        ),
        (format!("{KRATIX}job-resource-name"), o.name.clone()),
        (format!("{KRATIX}job-resource-kind"), o.kind.clone()),
        (format!("{KRATIX}job-resource-api-version"), api_version),
    ])
}

/// Kratix's `hash.ComputeHashForResource`: the hex md5 of the object's `spec` as Go's
/// `json.Marshal` writes it (keys sorted, no spaces, `<`, `>`, `&`, U+2028 and U+2029
/// escaped); `null` when there is no `spec`.
pub fn kratix_spec_hash(object: &Value) -> String {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let mut out = String::new();
    go_json(spec, &mut out);
    hex::encode(<md5::Md5 as md5::Digest>::digest(out.as_bytes()))
}

fn go_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(&Value::String(k.clone()), out);
                out.push(':');
                go_json(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(x, out);
            }
            out.push(']');
        }
        Value::String(s) => {
            let json = Value::String(s.clone()).to_string();
            out.push_str(
                &json
                    .replace('<', "\\u003c")
                    .replace('>', "\\u003e")
                    .replace('&', "\\u0026")
                    .replace('\u{2028}', "\\u2028")
                    .replace('\u{2029}', "\\u2029"),
            );
        }
        other => out.push_str(&other.to_string()),
    }
}

fn mount(path: &str, name: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        mount_path: path.into(),
        name: name.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// Kratix's `kratixSecurityContext`, used for its own containers.
fn kratix_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        privileged: Some(false),
        ..Default::default()
    }
}

/// Kratix's `DefaultResourceRequirements`.
fn default_resources() -> ResourceRequirements {
    let list = |cpu: &str, mem: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(mem.into())),
            ("ephemeral-storage".to_string(), Quantity(mem.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(list("100m", "128Mi")),
        limits: Some(list("200m", "256Mi")),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::ObjectIdentity;
    use super::*;
    use serde_json::json;

    fn pipeline(name: &str) -> Pipeline {
        serde_json::from_value(json!({
            "apiVersion": "platform.kratix.io/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": name, "labels": {"team": "a"}, "annotations": {"note": "x"}},
            "spec": {
                "containers": [{
                    "name": "build", "image": "ghcr.io/acme/build:1",
                    "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                    "securityContext": {"runAsUser": 1000},
                }],
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "imagePullSecrets": [{"name": "regcred"}],
                "jobOptions": {"backoffLimit": 2},
                "rbac": {"serviceAccount": "builder"},
                "tolerations": [{"key": "k", "operator": "Exists"}],
            }
        }))
        .unwrap()
    }

    fn input<'a>(pipelines: &'a [Pipeline], object: &str) -> WorkflowInput<'a> {
        WorkflowInput {
            workflow_type: WorkflowType::Resource,
            action: Action::Configure,
            promise_name: "redis".into(),
            crd_plural: "redis".into(),
            object: ObjectIdentity {
                kind: "redis".into(),
                group: "marketplace.kratix.io".into(),
                version: "v1alpha1".into(),
                name: object.into(),
                namespace: "default".into(),
            },
            object_yaml: String::new(),
            promise_dir: None,
            pipeline_namespace: None,
            pipelines,
            existing_status: Default::default(),
            runtime_annotation: None,
            promise_hash: "0123".into(),
        }
    }

    fn settings() -> JobSettings {
        JobSettings {
            namespace: "promised".into(),
            adapter_image: "ghcr.io/promised-dev/promised:1".into(),
            adapter_pull_secret: None,
            job_ttl: Duration::from_secs(3600),
            timeout: Duration::from_secs(600),
            output_cap_bytes: 1000,
        }
    }

    /// Go's `json.Marshal` of the spec: sorted keys, HTML characters escaped.
    #[test]
    fn kratix_hash_is_md5_of_go_json() {
        let obj = json!({"spec": {"z": [1, true, null], "a": "<b>"}});
        assert_eq!(kratix_spec_hash(&obj), "b13ef07487891c72feb34b0247a06a56");
        assert_eq!(
            kratix_spec_hash(&json!({})),
            "37a6259cc0c1dae299a7866489dff0bd"
        );
    }

    /// Kratix's shape, a suffix from the inputs: same inputs same name, other inputs another;
    /// always a DNS-1123 name of at most 63 characters.
    #[test]
    fn job_name_is_kratix_shaped_and_deterministic() {
        let ps = [pipeline("configure")];
        let i = input(&ps, "example");
        let a = job_objects(&i, &ps[0], "a: 1\n", &settings()).unwrap();
        let b = job_objects(&i, &ps[0], "a: 1\n", &settings()).unwrap();
        let c = job_objects(&i, &ps[0], "a: 2\n", &settings()).unwrap();
        assert_eq!(a, b);
        assert!(
            a.name.starts_with("kratix-redis-example-configure-"),
            "{}",
            a.name
        );
        assert_eq!(a.name.len(), "kratix-redis-example-configure-".len() + 5);
        assert_ne!(a.name, c.name);
        let long = "x".repeat(40) + ".Y_z";
        let i = input(&ps, &long);
        let n = job_objects(&i, &ps[0], "", &settings()).unwrap().name;
        assert!(n.len() <= 63, "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'),
            "{n}"
        );
        assert!(n.starts_with("kratix-redis-xxxx"), "{n}");
    }

    /// The pod Kratix builds, with promised's reader and output containers.
    #[test]
    fn pod_layout_labels_and_options() {
        let ps = [pipeline("configure")];
        let i = input(&ps, "example");
        let o = job_objects(&i, &ps[0], "kind: redis\n", &settings()).unwrap();
        let job = serde_json::to_value(&o.job).unwrap();
        let labels = &job["metadata"]["labels"];
        assert_eq!(labels["kratix.io/promise-name"], "redis");
        assert_eq!(labels["kratix.io/resource-name"], "example");
        assert_eq!(labels["kratix.io/pipeline-name"], "configure");
        assert_eq!(labels["kratix.io/workflow-type"], "resource");
        assert_eq!(labels["kratix.io/workflow-action"], "configure");
        assert_eq!(labels["team"], "a");
        assert_eq!(labels["kratix.io/hash"].as_str().unwrap().len(), 32);
        let spec = &job["spec"];
        assert_eq!(spec["backoffLimit"], 2);
        assert_eq!(spec["activeDeadlineSeconds"], 600);
        assert_eq!(spec["ttlSecondsAfterFinished"], 3600);
        let pod = &spec["template"];
        assert_eq!(pod["metadata"]["labels"], *labels);
        assert_eq!(pod["metadata"]["annotations"]["note"], "x");
        let pod = &pod["spec"];
        assert_eq!(pod["restartPolicy"], "OnFailure");
        assert_eq!(pod["serviceAccountName"], "builder");
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
        let names: Vec<&str> = pod["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["reader", "build"]);
        assert_eq!(pod["containers"][0]["name"], OUTPUT_CONTAINER);
        let build = &pod["initContainers"][1];
        let env = build["env"].as_array().unwrap();
        assert_eq!(env[0]["name"], "KRATIX_WORKFLOW_ACTION");
        assert_eq!(
            env.last().unwrap(),
            &json!({"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
        );
        let mounts: Vec<&str> = build["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(
            mounts,
            [
                "/kratix/input",
                "/kratix/output",
                "/kratix/metadata",
                "/cache"
            ]
        );
        assert_eq!(build["volumeMounts"][0]["readOnly"], true);
        assert_eq!(build["securityContext"], json!({"runAsUser": 1000}));
        assert_eq!(build["resources"]["limits"]["cpu"], "200m");
        assert_eq!(
            pod["containers"][0]["securityContext"]["runAsNonRoot"],
            true
        );
        let vols: Vec<&str> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            vols,
            [
                "shared-input",
                "shared-output",
                "shared-metadata",
                "cache",
                "promised-input"
            ]
        );
        assert_eq!(pod["volumes"][4]["secret"]["secretName"], o.name.as_str());
        let secret = serde_json::to_value(&o.secret).unwrap();
        assert_eq!(secret["metadata"]["name"], o.name.as_str());
        // base64 of "kind: redis\n"
        assert_eq!(secret["data"]["object.yaml"], "a2luZDogcmVkaXMK");
    }
}
