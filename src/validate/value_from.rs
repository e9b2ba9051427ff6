//! The checks of `env[].valueFrom` and `envFrom` that need no daemon config: what the process
//! runtime can resolve at all (see `crate::pipeline::env` for what each source means there).
//!
//! A `valueFrom` must set exactly one of `fieldRef` (with a supported `fieldPath`, see
//! [`SUPPORTED_FIELD_PATHS`]), `secretKeyRef` or `configMapKeyRef`, no non-empty `value`
//! beside it, and valid names and keys; `resourceFieldRef` and `envFrom` have no meaning
//! outside Kubernetes. A Promise that breaks one of these is invalid ([`check_shape`], run for
//! every container during Promise validation). The checks that need the daemon config (which
//! Secrets a Promise may read, which source directories exist) are
//! `crate::pipeline::env::check_access` and `crate::pipeline::env::check_pipeline_env`.

use crate::diag::{Code, Diagnostic, Origin};
use crate::model::{Container, EnvVar, EnvVarSource, KeySelector, ObjectRef};

/// The `fieldRef.fieldPath`s promised resolves.
pub const SUPPORTED_FIELD_PATHS: &str =
    "metadata.namespace, metadata.name, metadata.labels['<key>'], metadata.annotations['<key>']";

/// A supported `fieldRef.fieldPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldPath {
    /// `metadata.namespace`.
    Namespace,
    /// `metadata.name`.
    Name,
    /// `metadata.labels['<key>']`.
    Label(String),
    /// `metadata.annotations['<key>']`.
    Annotation(String),
}

/// Parses a `fieldPath`; the error says what is supported.
pub fn parse_field_path(path: &str) -> Result<FieldPath, String> {
    match path {
        "metadata.namespace" => return Ok(FieldPath::Namespace),
        "metadata.name" => return Ok(FieldPath::Name),
        _ => {}
    }
    for (prefix, label) in [("metadata.labels", true), ("metadata.annotations", false)] {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let Some(key) = rest
            .strip_prefix("['")
            .and_then(|r| r.strip_suffix("']"))
            .or_else(|| rest.strip_prefix("[\"").and_then(|r| r.strip_suffix("\"]")))
        else {
            return Err(format!(
                "fieldPath {path:?}: expected {prefix}['<key>'] (a whole map cannot be an environment variable)"
            ));
        };
        super::check_label(key, "").map_err(|m| format!("fieldPath {path:?}: {m}"))?;
        return Ok(if label {
            FieldPath::Label(key.to_string())
        } else {
            FieldPath::Annotation(key.to_string())
        });
    }
    Err(format!(
        "fieldPath {path:?} has no meaning outside Kubernetes; promised supports {SUPPORTED_FIELD_PATHS}"
    ))
}

/// Checks what `validate` can check without the daemon config: exactly one supported source,
/// no `value` beside it, a supported `fieldPath`, valid names and keys.
pub fn check_shape(e: &EnvVar) -> Result<(), String> {
    let Some(vf) = &e.value_from else {
        return Ok(());
    };
    if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
        return Err("valueFrom may not be given with a non-empty value".into());
    }
    let EnvVarSource {
        field_ref,
        resource_field_ref,
        config_map_key_ref,
        secret_key_ref,
    } = vf;
    let n = [
        field_ref.is_some(),
        resource_field_ref.is_some(),
        config_map_key_ref.is_some(),
        secret_key_ref.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if n == 0 {
        return Err("valueFrom must set one of fieldRef, secretKeyRef or configMapKeyRef".into());
    }
    if n > 1 {
        return Err("valueFrom may set only one of fieldRef, secretKeyRef, configMapKeyRef and resourceFieldRef".into());
    }
    if resource_field_ref.is_some() {
        return Err("valueFrom.resourceFieldRef (container resource limits) has no meaning outside Kubernetes: pipelines run as host processes; set a literal value instead".into());
    }
    if let Some(f) = field_ref {
        if let Some(v) = f
            .api_version
            .as_deref()
            .filter(|v| !v.is_empty() && *v != "v1")
        {
            return Err(format!(
                "valueFrom.fieldRef.apiVersion {v:?}: only \"v1\" is supported"
            ));
        }
        parse_field_path(&f.field_path).map_err(|m| format!("valueFrom.fieldRef: {m}"))?;
    }
    for (what, r) in [
        ("secretKeyRef", secret_key_ref),
        ("configMapKeyRef", config_map_key_ref),
    ] {
        if let Some(r) = r {
            check_key_ref(r).map_err(|m| format!("valueFrom.{what}: {m}"))?;
        }
    }
    Ok(())
}

fn check_key_ref(r: &KeySelector) -> Result<(), String> {
    let dns = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    if !dns(&r.name) {
        return Err(format!(
            "name {:?} must be a DNS subdomain (lowercase letters, digits, '-' and '.')",
            r.name
        ));
    }
    let key_ok = !r.key.is_empty()
        && r.key.len() <= 253
        && r.key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && r.key != "."
        && !r.key.starts_with("..");
    if !key_ok {
        return Err(format!(
            "key {:?} must consist of letters, digits, '-', '_' or '.', and not be '.' or start with '..'",
            r.key
        ));
    }
    Ok(())
}

/// The `env` of container `ci` of the Pipeline at `at` (a `spec.workflows…[i]` path) that
/// cannot work without Kubernetes: `envFrom` (needs Kubernetes objects) and every `valueFrom`
/// the process runtime cannot resolve ([`check_shape`]). Messages name the pipeline,
/// container and variable; the diagnostic names the Promise. The checks that need the daemon
/// config are `crate::pipeline::env::check_pipeline_env`.
pub(super) fn check_container_env(
    o: &Origin,
    id: Option<&ObjectRef>,
    at: &str,
    ci: usize,
    pipeline: &str,
    c: &Container,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let who = format!("pipeline {pipeline:?} container {:?}", c.name);
    if c.env_from.is_some() {
        out.push(o.diag(
            Code::InvalidPipeline,
            id,
            format!("{at}.spec.containers[{ci}].envFrom"),
            format!("{who}: envFrom needs Kubernetes Secrets and ConfigMaps, which the process runtime does not have; list the variables in env (valueFrom supports fieldRef, secretKeyRef and configMapKeyRef)"),
        ));
    }
    for (ei, e) in c.env.iter().enumerate() {
        if e.value_from.is_none() {
            continue;
        }
        if let Err(m) = check_shape(e) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectFieldSelector;

    fn var(vf: EnvVarSource) -> EnvVar {
        EnvVar {
            name: "V".into(),
            value: None,
            value_from: Some(vf),
        }
    }

    fn field(path: &str) -> EnvVar {
        var(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        })
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
    fn shapes() {
        for ok in [
            "metadata.namespace",
            "metadata.name",
            "metadata.labels['kratix.io/promise-name']",
            "metadata.annotations['a']",
        ] {
            check_shape(&field(ok)).unwrap();
        }
        for bad in [
            "spec.nodeName",
            "status.podIP",
            "metadata.uid",
            "metadata.labels",
            "metadata.labels['a b']",
        ] {
            assert!(check_shape(&field(bad)).is_err(), "{bad}");
        }
        let rf = var(EnvVarSource {
            resource_field_ref: Some(serde_json::json!({"resource": "limits.cpu"})),
            ..Default::default()
        });
        assert!(check_shape(&rf).unwrap_err().contains("resourceFieldRef"));
        assert!(check_shape(&var(EnvVarSource::default())).is_err());
        assert!(check_shape(&secret("../x", "k", false)).is_err());
        assert!(check_shape(&secret("x", "../k", false)).is_err());
        assert!(check_shape(&secret("x", "..data", false)).is_err());
        check_shape(&secret("x.y", "tls.crt", false)).unwrap();
    }
}
