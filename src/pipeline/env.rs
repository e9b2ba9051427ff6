//! `env[].valueFrom` without Kubernetes: what each source means on the process runtime.
//!
//! - **`fieldRef`** reads the pipeline pod Kratix would have created ([`PodMeta`]):
//!   `metadata.namespace` (the Promise's `workflows.config.pipelineNamespace`, else
//!   `kratix-platform-system` for promise workflows and the request's namespace for resource
//!   workflows), `metadata.name` (a deterministic stand-in for the Job's pod name),
//!   `metadata.labels['…']` (Kratix's pod labels, then the Pipeline's own) and
//!   `metadata.annotations['…']` (the Pipeline's annotations). A missing label or annotation is
//!   `""`, as in Kubernetes.
//! - **`secretKeyRef`** reads `<pipelineSecrets.dir>/<name>/<key>`, only for a Secret the
//!   daemon config lists for the Promise in `pipelineSecrets.allow` (kept apart from the state
//!   stores' credentials: the settings refuse a `pipelineSecrets.dir` that is, holds or lies in
//!   `secretsDir`). Values are passed to the container's environment only: never to a
//!   command line, a log, an error or a status.
//! - **`configMapKeyRef`** reads `<pipelineConfigMaps.dir>/<name>/<key>`.
//! - `optional: true`: a missing file leaves the variable unset instead of failing, as in
//!   Kubernetes.
//!
//! Everything else (`resourceFieldRef`, another `fieldPath`, several sources, a malformed
//! name or key) is a config error found by `validate` ([`check_shape`], from
//! [`crate::validate::value_from`]); a Secret the Promise may not read, or a source whose
//! directory is not configured, is one too once the daemon config is known ([`check_access`],
//! [`check_pipeline_env`]). The runner checks both again before a Pipeline's first container
//! starts, so such a Pipeline never runs half-way (`EnvError`'s `config` field).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Action, ObjectIdentity, WorkflowType};
use crate::diag::{Code, Diagnostic, Origin};
use crate::model::{Container, EnvVar, KeySelector, ObjectRef, Pipeline};
use crate::validate::{Rejected, ValidConfig};

pub use crate::validate::value_from::{
    FieldPath, SUPPORTED_FIELD_PATHS, check_shape, parse_field_path,
};

/// Kratix's system namespace: where promise workflows run unless the Promise sets
/// `workflows.config.pipelineNamespace`.
pub const SYSTEM_NAMESPACE: &str = "kratix-platform-system";

/// Where `secretKeyRef` and `configMapKeyRef` read (daemon config `pipelineSecrets` and
/// `pipelineConfigMaps`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvSources {
    /// `pipelineSecrets.dir`: `<dir>/<secret name>/<key>`.
    pub secrets_dir: Option<PathBuf>,
    /// `pipelineSecrets.allow`: Promise name → the Secrets its pipelines may read.
    pub secrets_allow: BTreeMap<String, BTreeSet<String>>,
    /// `pipelineConfigMaps.dir`: `<dir>/<config map name>/<key>`.
    pub config_maps_dir: Option<PathBuf>,
}

/// Why a variable cannot be set. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    /// What is wrong.
    pub reason: String,
    /// A config problem `validate` reports (the Promise or the daemon config must change),
    /// as opposed to a missing or unreadable file on this host.
    pub config: bool,
}

impl EnvError {
    fn config(reason: impl Into<String>) -> Self {
        EnvError {
            reason: reason.into(),
            config: true,
        }
    }
    fn host(reason: impl Into<String>) -> Self {
        EnvError {
            reason: reason.into(),
            config: false,
        }
    }
}

/// Checks what needs the daemon config: a `secretKeyRef` names a Secret `promise` may read
/// (`pipelineSecrets.allow`) and `pipelineSecrets.dir` is set; a `configMapKeyRef` that is
/// not optional has `pipelineConfigMaps.dir` to read from. A Secret outside the allow list
/// is refused even when optional.
pub fn check_access(promise: &str, e: &EnvVar, sources: &EnvSources) -> Result<(), String> {
    let Some(vf) = &e.value_from else {
        return Ok(());
    };
    if let Some(r) = &vf.secret_key_ref {
        let allowed = sources
            .secrets_allow
            .get(promise)
            .is_some_and(|s| s.contains(&r.name));
        if !allowed {
            return Err(format!(
                "valueFrom.secretKeyRef: Secret {:?} is not in the daemon config's pipelineSecrets.allow for Promise {promise:?}",
                r.name
            ));
        }
        if sources.secrets_dir.is_none() {
            return Err(
                "valueFrom.secretKeyRef: the daemon config sets no pipelineSecrets.dir".into(),
            );
        }
    }
    if let Some(r) = &vf.config_map_key_ref
        && sources.config_maps_dir.is_none()
        && r.optional != Some(true)
    {
        return Err(
            "valueFrom.configMapKeyRef: the daemon config sets no pipelineConfigMaps.dir (or mark the reference optional: true)".into(),
        );
    }
    Ok(())
}

/// The checks of `env[].valueFrom` that need the daemon config: a `secretKeyRef` must name a
/// Secret `pipelineSecrets.allow` lists for the Promise, and each source's directory must be
/// configured. A Promise that fails is rejected like any invalid Promise (its configure
/// workflows do not run and its requests are rejected with it; what it applied before is
/// kept), with one diagnostic per variable. `validate` cannot do this (it has no daemon
/// config); `promised reconcile`, `promised run` and `promised validate --daemon-config` call
/// it right after.
pub fn check_pipeline_env(cfg: &mut ValidConfig, sources: &EnvSources) {
    let mut bad: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
    for p in &cfg.promises {
        let name = p.name().to_string();
        let wf = &p.promise.object.spec.workflows;
        for (ty, actions) in [("resource", &wf.resource), ("promise", &wf.promise)] {
            for (action, list) in [
                ("configure", &actions.configure),
                ("delete", &actions.delete),
            ] {
                for (i, pl) in list.iter().enumerate() {
                    let at = format!("spec.workflows.{ty}.{action}[{i}]");
                    for (ci, c) in pl.spec.containers.iter().enumerate() {
                        let errs = check_container_access(
                            &p.promise.origin,
                            Some(&p.promise.id),
                            &at,
                            ci,
                            &pl.metadata.name,
                            c,
                            (&name, sources),
                        );
                        if !errs.is_empty() {
                            bad.entry(name.clone()).or_default().extend(errs);
                        }
                    }
                }
            }
        }
    }
    if bad.is_empty() {
        return;
    }
    let mut kept = Vec::with_capacity(cfg.promises.len());
    for p in std::mem::take(&mut cfg.promises) {
        let Some(errs) = bad.remove(p.name()) else {
            kept.push(p);
            continue;
        };
        cfg.rejected.push(Rejected {
            origin: p.promise.origin.clone(),
            id: p.promise.id.clone(),
            reasons: errs.iter().map(|e| e.message.clone()).collect(),
            promise: None,
        });
        cfg.diagnostics.extend(errs);
        // Its requests go with it, worded as for any other invalid Promise.
        let (gone, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut cfg.requests)
            .into_iter()
            .partition(|r| r.promise == p.name());
        cfg.requests = stay;
        for r in gone {
            let api_version = r
                .object()
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let d = r.origin.diag(
                Code::UnservedKind,
                Some(&r.id),
                "kind",
                format!(
                    "{api_version} {} is served by Promise {}, which is invalid",
                    r.id.kind,
                    p.name()
                ),
            );
            cfg.rejected.push(Rejected {
                origin: r.origin.clone(),
                id: r.id.clone(),
                reasons: vec![d.message.clone()],
                promise: Some(p.name().to_string()),
            });
            cfg.diagnostics.push(d);
        }
    }
    cfg.promises = kept;
    cfg.diagnostics.sort_by(|a, b| {
        (&a.file, a.document, &a.field, &a.message)
            .cmp(&(&b.file, b.document, &b.field, &b.message))
    });
    cfg.diagnostics.dedup();
}

/// The `env` of container `ci` of the Pipeline at `at` (a `spec.workflows…[i]` path) that
/// the daemon config `sources` does not allow for `promise`: Secrets the Promise may not read
/// and sources that are not configured ([`check_access`]). Messages name the pipeline,
/// container and variable; the diagnostic names the Promise.
fn check_container_access(
    o: &Origin,
    id: Option<&ObjectRef>,
    at: &str,
    ci: usize,
    pipeline: &str,
    c: &Container,
    (promise, sources): (&str, &EnvSources),
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let who = format!("pipeline {pipeline:?} container {:?}", c.name);
    for (ei, e) in c.env.iter().enumerate() {
        if e.value_from.is_none() {
            continue;
        }
        if let Err(m) = check_access(promise, e, sources) {
            out.push(o.diag(
                Code::InvalidPipeline,
                id,
                format!("{at}.spec.containers[{ci}].env[{ei}].valueFrom"),
                format!("{who} env {:?}: {m}", e.name),
            ));
        }
    }
    out
}

/// The metadata of the pod Kratix would run a Pipeline in (`pipeline_factory.go`), which
/// `fieldRef` reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
}

impl PodMeta {
    /// The pod of `pipeline` in this workflow.
    ///
    /// - namespace: `pipeline_namespace` when set, else [`SYSTEM_NAMESPACE`] (promise
    ///   workflows) or the request's namespace (resource workflows);
    /// - name: Kratix names the Job `kratix-<promise>[-<request>[-<request namespace>]]-<pipeline>`
    ///   (the namespace only with `pipelineNamespace`), cut to 56 characters, plus a random
    ///   suffix, and its pod gets another; promised uses that base, cut the same way, plus
    ///   `-` and the first 5 hex digits of the sha256 of namespace, base, workflow type and
    ///   action: the same on every run of the same Pipeline for the same object;
    /// - labels: `kratix.io/promise-name`, `kratix.io/workflow-type`,
    ///   `kratix.io/workflow-action`, `kratix.io/pipeline-name`,
    ///   `app.kubernetes.io/managed-by: Kratix`, for resource workflows
    ///   `kratix.io/resource-name` (and `kratix.io/resource-namespace` with
    ///   `pipelineNamespace`), then the Pipeline's own labels (which win). Kratix's
    ///   `kratix.io/hash` is not set;
    /// - annotations: the Pipeline's.
    pub fn new(
        workflow_type: WorkflowType,
        action: Action,
        promise: &str,
        object: &ObjectIdentity,
        pipeline_namespace: Option<&str>,
        pipeline: &Pipeline,
    ) -> PodMeta {
        let pns = pipeline_namespace.filter(|n| !n.is_empty());
        let resource = workflow_type == WorkflowType::Resource;
        let namespace = match (pns, resource) {
            (Some(n), _) => n.to_string(),
            (None, true) => object.namespace.clone(),
            (None, false) => SYSTEM_NAMESPACE.to_string(),
        };
        let pname = &pipeline.metadata.name;
        let mut base = format!("kratix-{promise}");
        if resource {
            base.push('-');
            base.push_str(&object.name);
            if pns.is_some() {
                base.push('-');
                base.push_str(&object.namespace);
            }
        }
        base.push('-');
        base.push_str(pname);
        let digest = hex::encode(Sha256::digest(
            format!(
                "{namespace}/{base}/{}/{}",
                workflow_type.as_str(),
                action.as_str()
            )
            .as_bytes(),
        ));
        let mut short: String = base.chars().take(56).collect();
        while short.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
            short.pop();
        }
        let name = format!("{short}-{}", &digest[..5]);
        let mut labels = BTreeMap::new();
        let mut add = |k: &str, v: &str| {
            labels.insert(k.to_string(), v.to_string());
        };
        add("kratix.io/promise-name", promise);
        add("kratix.io/workflow-type", workflow_type.as_str());
        add("kratix.io/workflow-action", action.as_str());
        add("kratix.io/pipeline-name", pname);
        add("app.kubernetes.io/managed-by", "Kratix");
        if resource {
            add("kratix.io/resource-name", &object.name);
            if pns.is_some() {
                add("kratix.io/resource-namespace", &object.namespace);
            }
        }
        labels.extend(pipeline.metadata.labels.clone());
        PodMeta {
            namespace,
            name,
            labels,
            annotations: pipeline.metadata.annotations.clone(),
        }
    }
}

/// The value of `e` for a container of `promise`'s pipeline running in `pod`: `Ok(None)`
/// leaves the variable unset (an `optional` Secret or ConfigMap key that does not exist).
/// `e.value` when there is no `valueFrom`.
pub fn resolve(
    promise: &str,
    e: &EnvVar,
    pod: &PodMeta,
    sources: &EnvSources,
) -> Result<Option<String>, EnvError> {
    let Some(vf) = &e.value_from else {
        return Ok(Some(e.value.clone().unwrap_or_default()));
    };
    check_shape(e).map_err(EnvError::config)?;
    check_access(promise, e, sources).map_err(EnvError::config)?;
    if let Some(f) = &vf.field_ref {
        let v = match parse_field_path(&f.field_path).map_err(EnvError::config)? {
            FieldPath::Namespace => pod.namespace.clone(),
            FieldPath::Name => pod.name.clone(),
            FieldPath::Label(k) => pod.labels.get(&k).cloned().unwrap_or_default(),
            FieldPath::Annotation(k) => pod.annotations.get(&k).cloned().unwrap_or_default(),
        };
        return Ok(Some(v));
    }
    if let Some(r) = &vf.secret_key_ref {
        return read_key("Secret", sources.secrets_dir.as_ref(), r);
    }
    if let Some(r) = &vf.config_map_key_ref {
        return read_key("ConfigMap", sources.config_maps_dir.as_ref(), r);
    }
    Err(EnvError::config("valueFrom sets no source"))
}

/// Reads `<dir>/<name>/<key>`. Errors name the file, never its content.
fn read_key(
    what: &str,
    dir: Option<&PathBuf>,
    r: &KeySelector,
) -> Result<Option<String>, EnvError> {
    let optional = r.optional == Some(true);
    let Some(dir) = dir else {
        // check_access allows this only for an optional ConfigMap key.
        return Ok(None);
    };
    let path = dir.join(&r.name).join(&r.key);
    let missing = || {
        EnvError::host(format!(
            "{what} {:?} key {:?} does not exist ({}); create it or mark the reference optional: true",
            r.name,
            r.key,
            path.display()
        ))
    };
    match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(v) if !v.contains('\0') => Ok(Some(v)),
            _ => Err(EnvError::host(format!(
                "{what} {:?} key {:?} ({}) is not UTF-8 text without NUL bytes, which an environment variable cannot hold",
                r.name,
                r.key,
                path.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if optional {
                Ok(None)
            } else {
                Err(missing())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Err(missing()),
        Err(e) => Err(EnvError::host(format!(
            "{what} {:?} key {:?}: cannot read {}: {}",
            r.name,
            r.key,
            path.display(),
            e.kind()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EnvVarSource, PipelineMeta};

    fn var(vf: EnvVarSource) -> EnvVar {
        EnvVar {
            name: "V".into(),
            value: None,
            value_from: Some(vf),
        }
    }

    fn secret(name: &str, key: &str, optional: bool) -> EnvVar {
        var(EnvVarSource {
            secret_key_ref: Some(KeySelector {
                name: name.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        })
    }

    #[test]
    fn access_needs_the_allow_list() {
        let mut s = EnvSources::default();
        let e = secret("db", "password", true);
        assert!(
            check_access("app", &e, &s)
                .unwrap_err()
                .contains("pipelineSecrets.allow")
        );
        s.secrets_allow
            .insert("app".into(), ["db".to_string()].into());
        assert!(check_access("app", &e, &s).unwrap_err().contains("dir"));
        s.secrets_dir = Some("/nowhere".into());
        check_access("app", &e, &s).unwrap();
        assert!(check_access("other", &e, &s).is_err());
    }

    #[test]
    fn pod_metadata() {
        let p = Pipeline {
            metadata: PipelineMeta {
                name: "configure".into(),
                labels: [("team".to_string(), "a".to_string())].into(),
                ..Default::default()
            },
            ..serde_json::from_value(serde_json::json!({"metadata": {}, "spec": {}})).unwrap()
        };
        let obj = ObjectIdentity {
            name: "example".into(),
            namespace: "team-a".into(),
            ..Default::default()
        };
        let r = PodMeta::new(
            WorkflowType::Resource,
            Action::Configure,
            "redis",
            &obj,
            None,
            &p,
        );
        assert_eq!(r.namespace, "team-a");
        assert!(r.name.starts_with("kratix-redis-example-configure-"));
        assert_eq!(r.labels["kratix.io/resource-name"], "example");
        assert_eq!(r.labels["team"], "a");
        assert!(!r.labels.contains_key("kratix.io/resource-namespace"));
        let again = PodMeta::new(
            WorkflowType::Resource,
            Action::Configure,
            "redis",
            &obj,
            None,
            &p,
        );
        assert_eq!(r, again, "deterministic");
        let pr = PodMeta::new(
            WorkflowType::Promise,
            Action::Configure,
            "redis",
            &obj,
            None,
            &p,
        );
        assert_eq!(pr.namespace, SYSTEM_NAMESPACE);
        assert!(!pr.labels.contains_key("kratix.io/resource-name"));
        let ns = PodMeta::new(
            WorkflowType::Resource,
            Action::Delete,
            "redis",
            &obj,
            Some("pipelines"),
            &p,
        );
        assert_eq!(ns.namespace, "pipelines");
        assert_eq!(ns.labels["kratix.io/resource-namespace"], "team-a");
        assert!(
            ns.name
                .starts_with("kratix-redis-example-team-a-configure-")
        );
        let long = ObjectIdentity {
            name: "a".repeat(80),
            ..obj
        };
        let l = PodMeta::new(
            WorkflowType::Resource,
            Action::Configure,
            "redis",
            &long,
            None,
            &p,
        );
        assert_eq!(l.name.len(), 56 + 6);
    }
}
