//! The Kratix pipeline contract's inputs: the `KRATIX_*` environment and the per-Pipeline
//! directories (kratix-contract.md §2.2–§2.4; Kratix: `api/v1alpha1/pipeline_factory.go`).

use std::path::{Path, PathBuf};

use super::{Action, Error, ObjectIdentity, WorkflowType};
use crate::model::Container;

/// The `KRATIX_*` variables every user container gets, in Kratix's order
/// (`pipeline_factory.go:defaultEnvVars`). `KRATIX_DRY_RUN` is never set (no dry runs yet).
pub fn kratix_env(
    workflow_type: WorkflowType,
    action: Action,
    promise_name: &str,
    pipeline_name: &str,
    object: &ObjectIdentity,
    crd_plural: &str,
) -> Vec<(String, String)> {
    let (kind, group, version, name, ns, plural, cluster) = match workflow_type {
        WorkflowType::Promise => (
            "Promise",
            crate::model::KRATIX_GROUP,
            "v1alpha1",
            promise_name,
            "",
            "promises",
            "true",
        ),
        WorkflowType::Resource => (
            object.kind.as_str(),
            object.group.as_str(),
            object.version.as_str(),
            object.name.as_str(),
            object.namespace.as_str(),
            crd_plural,
            "false",
        ),
    };
    [
        ("KRATIX_WORKFLOW_ACTION", action.as_str()),
        ("KRATIX_WORKFLOW_TYPE", workflow_type.as_str()),
        ("KRATIX_PROMISE_NAME", promise_name),
        ("KRATIX_PIPELINE_NAME", pipeline_name),
        ("KRATIX_OBJECT_KIND", kind),
        ("KRATIX_OBJECT_GROUP", group),
        ("KRATIX_OBJECT_VERSION", version),
        ("KRATIX_OBJECT_NAME", name),
        ("KRATIX_OBJECT_NAMESPACE", ns),
        ("KRATIX_CRD_PLURAL", plural),
        ("KRATIX_CLUSTER_SCOPED", cluster),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A container's own `env`, appended after the `KRATIX_*` variables (later duplicates win,
/// as in Kubernetes), with every `valueFrom` resolved ([`super::env::resolve`]; an optional
/// key that does not exist leaves its variable out). `envFrom` needs Kubernetes objects and is
/// rejected.
pub fn container_env(
    promise: &str,
    pipeline: &str,
    c: &Container,
    pod: &super::env::PodMeta,
    sources: &super::env::EnvSources,
) -> Result<Vec<(String, String)>, Error> {
    if c.env_from.is_some() {
        return Err(Error::EnvFromUnsupported {
            pipeline: pipeline.into(),
            container: c.name.clone(),
        });
    }
    let mut out = Vec::new();
    for e in &c.env {
        match super::env::resolve(promise, e, pod, sources) {
            Ok(Some(v)) => out.push((e.name.clone(), v)),
            Ok(None) => {}
            Err(err) => {
                return Err(Error::EnvValueFrom {
                    promise: promise.into(),
                    pipeline: pipeline.into(),
                    container: c.name.clone(),
                    variable: e.name.clone(),
                    reason: err.reason,
                    config: err.config,
                });
            }
        }
    }
    Ok(out)
}

/// The fresh host directories of one Pipeline run: `input` (holds `object.yaml`), `output`,
/// `metadata`. Removed when dropped.
#[derive(Debug)]
pub struct PipelineDirs {
    tmp: tempfile::TempDir,
}

impl PipelineDirs {
    /// Creates the directories under `work_dir` and writes `input/object.yaml`.
    pub fn create(work_dir: &Path, object_yaml: &str) -> Result<Self, Error> {
        let io = |context: &str| {
            let context = context.to_string();
            move |e: std::io::Error| Error::Io {
                context,
                message: e.to_string(),
            }
        };
        // Inside this process's own directory, which the next start removes if this process
        // is killed (`rundir`). A private (0700) directory with a random name: safe in a
        // shared directory such as /dev/shm.
        let proc_dir = super::rundir::process_dir(work_dir)?;
        let tmp = tempfile::Builder::new()
            .prefix("promised-run-")
            .tempdir_in(&proc_dir)
            .map_err(io("creating the run directory"))?;
        for d in ["input", "output", "metadata"] {
            std::fs::create_dir(tmp.path().join(d)).map_err(io("creating /kratix dirs"))?;
        }
        std::fs::write(tmp.path().join("input/object.yaml"), object_yaml)
            .map_err(io("writing object.yaml"))?;
        Ok(PipelineDirs { tmp })
    }

    /// The run directory holding `input`, `output` and `metadata` (the working directory
    /// of `sandbox: none` containers without `workingDir`).
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }
    /// Host directory behind `/kratix/input`.
    pub fn input(&self) -> PathBuf {
        self.tmp.path().join("input")
    }
    /// Host directory behind `/kratix/output`.
    pub fn output(&self) -> PathBuf {
        self.tmp.path().join("output")
    }
    /// Host directory behind `/kratix/metadata`.
    pub fn metadata(&self) -> PathBuf {
        self.tmp.path().join("metadata")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EnvVar;

    #[test]
    fn env_tables() {
        let obj = ObjectIdentity {
            kind: "redis".into(),
            group: "marketplace.kratix.io".into(),
            version: "v1alpha1".into(),
            name: "example".into(),
            namespace: "default".into(),
        };
        let r = kratix_env(
            WorkflowType::Resource,
            Action::Configure,
            "redis",
            "p",
            &obj,
            "redises",
        );
        let get = |v: &[(String, String)], k: &str| {
            v.iter()
                .find(|(a, _)| a == k)
                .map(|(_, b)| b.clone())
                .unwrap()
        };
        assert_eq!(r[0].0, "KRATIX_WORKFLOW_ACTION");
        assert_eq!(get(&r, "KRATIX_OBJECT_KIND"), "redis");
        assert_eq!(get(&r, "KRATIX_CRD_PLURAL"), "redises");
        assert_eq!(get(&r, "KRATIX_CLUSTER_SCOPED"), "false");
        let p = kratix_env(
            WorkflowType::Promise,
            Action::Delete,
            "redis",
            "p",
            &obj,
            "redises",
        );
        assert_eq!(get(&p, "KRATIX_OBJECT_KIND"), "Promise");
        assert_eq!(get(&p, "KRATIX_OBJECT_NAME"), "redis");
        assert_eq!(get(&p, "KRATIX_OBJECT_NAMESPACE"), "");
        assert_eq!(get(&p, "KRATIX_CRD_PLURAL"), "promises");
        assert_eq!(get(&p, "KRATIX_WORKFLOW_ACTION"), "delete");
        assert!(!p.iter().any(|(k, _)| k == "KRATIX_DRY_RUN"));
    }

    #[test]
    fn value_from_resolved_or_rejected() {
        use crate::model::{EnvVarSource, KeySelector};
        let pod = super::super::env::PodMeta {
            namespace: "team-a".into(),
            ..Default::default()
        };
        let sources = super::super::env::EnvSources::default();
        let mut c = Container {
            name: "c".into(),
            env: vec![EnvVar {
                name: "A".into(),
                value: None,
                value_from: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            container_env("pr", "p", &c, &pod, &sources).unwrap(),
            [("A".into(), String::new())]
        );
        c.env[0].value_from = Some(EnvVarSource {
            secret_key_ref: Some(KeySelector {
                name: "s".into(),
                key: "k".into(),
                optional: None,
            }),
            ..Default::default()
        });
        let e = container_env("pr", "p", &c, &pod, &sources).unwrap_err();
        assert!(e.is_config(), "{e}");
        let text = e.to_string();
        for part in ["\"pr\"", "\"p\"", "\"c\"", "\"A\"", "pipelineSecrets.allow"] {
            assert!(text.contains(part), "{text}");
        }
        c.env.clear();
        c.env_from = Some(serde_json::json!([]));
        assert!(matches!(
            container_env("pr", "p", &c, &pod, &sources),
            Err(Error::EnvFromUnsupported { .. })
        ));
    }
}
