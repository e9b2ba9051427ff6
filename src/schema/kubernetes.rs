//! Validation rules of the apiserver that JSON Schema cannot express, checked by walking
//! the structural schema.
//!
//! - `x-kubernetes-list-type: set`: items must be unique; `x-kubernetes-list-type: map`:
//!   the tuple of `x-kubernetes-list-map-keys` values must be unique.
//!   Kubernetes: `k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype/validation.go`.
//! - `x-kubernetes-embedded-resource: true` (below the root): `apiVersion` and `kind` must
//!   be non-empty strings.
//!   Kubernetes: `.../apiserver/schema/objectmeta/validation.go` (`validateEmbeddedResource`).

use serde_json::Value;

use super::FieldError;
use super::structural::{AdditionalProperties, Structural, kind};
use super::validate::push_key;

/// Checks `obj` (a resource root) against the Kubernetes-only rules of `root`,
/// appending to `out`.
pub(crate) fn check_root(obj: &Value, root: &Structural, out: &mut Vec<FieldError>) {
    check(obj, root, "", true, out);
}

fn check(x: &Value, s: &Structural, path: &str, root: bool, out: &mut Vec<FieldError>) {
    match x {
        Value::Object(map) => {
            if s.embedded_resource && !root {
                for field in ["apiVersion", "kind"] {
                    let message = match map.get(field) {
                        None => Some("required field is missing".to_owned()),
                        Some(Value::String(v)) if v.is_empty() => {
                            Some("must not be empty".to_owned())
                        }
                        Some(Value::String(_)) => None,
                        Some(other) => Some(format!("expected string, found {}", kind(other))),
                    };
                    if let Some(message) = message {
                        out.push(FieldError {
                            path: push_key(path, field),
                            message,
                        });
                    }
                }
            }
            for (k, v) in map {
                let sub = match s.properties.get(k) {
                    Some(p) => Some(p),
                    None => match s.additional_properties.as_ref() {
                        Some(AdditionalProperties::Schema(sub)) => Some(sub.as_ref()),
                        _ => None,
                    },
                };
                if let Some(sub) = sub {
                    check(v, sub, &push_key(path, k), false, out);
                }
            }
        }
        Value::Array(items) => {
            match s.list_type.as_deref() {
                Some("set") => check_set(items, path, out),
                Some("map") => check_map(items, &s.list_map_keys, path, out),
                _ => {}
            }
            if let Some(item_schema) = s.items.as_deref() {
                for (i, v) in items.iter().enumerate() {
                    check(v, item_schema, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

fn check_set(items: &[Value], path: &str, out: &mut Vec<FieldError>) {
    for (i, v) in items.iter().enumerate() {
        if let Some(first) = items[..i].iter().position(|w| w == v) {
            out.push(FieldError {
                path: format!("{path}[{i}]"),
                message: format!(
                    "duplicate value {v}, already at index {first} of this list \
                     (x-kubernetes-list-type: set requires unique items)"
                ),
            });
        }
    }
}

fn check_map(items: &[Value], keys: &[String], path: &str, out: &mut Vec<FieldError>) {
    let key_of = |v: &Value| -> Option<Vec<Option<Value>>> {
        let obj = v.as_object()?;
        Some(keys.iter().map(|k| obj.get(k).cloned()).collect())
    };
    let tuples: Vec<Option<Vec<Option<Value>>>> = items.iter().map(key_of).collect();
    for (i, t) in tuples.iter().enumerate() {
        let Some(t) = t else { continue };
        if let Some(first) = tuples[..i].iter().position(|u| u.as_ref() == Some(t)) {
            let shown = keys
                .iter()
                .zip(t)
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => format!("{k} unset"),
                })
                .collect::<Vec<_>>()
                .join(", ");
            out.push(FieldError {
                path: format!("{path}[{i}]"),
                message: format!(
                    "duplicate entry with {shown}, already at index {first} of this list \
                     (x-kubernetes-list-type: map requires unique keys)"
                ),
            });
        }
    }
}
