//! The structural part of a CRD schema: the tree that pruning and defaulting walk.
//!
//! Kubernetes: `k8s.io/apiextensions-apiserver/pkg/apiserver/schema/structural.go`
//! (`Structural`, `Generic`, `Extensions`). Only the parts that pruning and defaulting
//! need are kept; value validations (pattern, enum, ...) are left to the JSON Schema
//! validator built in `validate.rs`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::SchemaError;

/// What a schema says about object keys that are not listed under `properties`.
///
/// Kubernetes: `StructuralOrBool` for `additionalProperties` in structural.go.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AdditionalProperties {
    /// `additionalProperties: <schema>`: every unknown key's value follows this schema.
    Schema(Box<Structural>),
    /// `additionalProperties: true`: unknown keys are kept as they are, unpruned.
    Any,
}

/// One node of a structural schema.
///
/// Built by [`Structural::parse`] from one (sub-)schema of an `openAPIV3Schema`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Structural {
    /// `properties`: the known keys of an object and their schemas.
    pub(crate) properties: BTreeMap<String, Structural>,
    /// `additionalProperties`; `None` when absent or `false` (unknown keys are pruned).
    pub(crate) additional_properties: Option<AdditionalProperties>,
    /// `items` when it is a single schema (the only form structural schemas allow).
    pub(crate) items: Option<Box<Structural>>,
    /// `nullable: true`.
    pub(crate) nullable: bool,
    /// `default`, unless absent or `null` (a `null` default means "no default",
    /// as `Default.Object == nil` in the apiserver).
    pub(crate) default: Option<Value>,
    /// `x-kubernetes-preserve-unknown-fields: true`.
    pub(crate) preserve_unknown_fields: bool,
    /// `x-kubernetes-embedded-resource: true`.
    pub(crate) embedded_resource: bool,
    /// `x-kubernetes-list-type` (`atomic`, `set` or `map`).
    pub(crate) list_type: Option<String>,
    /// `x-kubernetes-list-map-keys`, for `x-kubernetes-list-type: map`.
    pub(crate) list_map_keys: Vec<String>,
}

impl Structural {
    /// Parses `schema` (a JSON object) into a structural node.
    ///
    /// `path` is the location of `schema` inside the `openAPIV3Schema`, used in errors,
    /// e.g. `properties.spec.properties.size`.
    ///
    /// # Errors
    /// [`SchemaError::InvalidSchema`] when `schema`, or a nested schema under
    /// `properties`, `additionalProperties` or `items`, is not a JSON object (or a boolean
    /// for `additionalProperties`), or when `properties` is not an object.
    pub(crate) fn parse(schema: &Value, path: &str) -> Result<Self, SchemaError> {
        let obj = as_schema_object(schema, path)?;
        let mut out = Structural {
            nullable: flag(obj, "nullable"),
            default: obj.get("default").filter(|v| !v.is_null()).cloned(),
            preserve_unknown_fields: flag(obj, "x-kubernetes-preserve-unknown-fields"),
            embedded_resource: flag(obj, "x-kubernetes-embedded-resource"),
            list_type: obj
                .get("x-kubernetes-list-type")
                .and_then(Value::as_str)
                .map(str::to_owned),
            list_map_keys: obj
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            ..Structural::default()
        };
        if let Some(props) = obj.get("properties") {
            let props_path = join(path, "properties");
            let Value::Object(props) = props else {
                return Err(SchemaError::InvalidSchema {
                    path: props_path,
                    message: format!("expected an object of schemas, found {}", kind(props)),
                });
            };
            for (name, sub) in props {
                let sub_path = join(&props_path, name);
                out.properties
                    .insert(name.clone(), Structural::parse(sub, &sub_path)?);
            }
        }
        match obj.get("additionalProperties") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => out.additional_properties = Some(AdditionalProperties::Any),
            Some(sub) => {
                let sub_path = join(path, "additionalProperties");
                out.additional_properties = Some(AdditionalProperties::Schema(Box::new(
                    Structural::parse(sub, &sub_path)?,
                )));
            }
        }
        match obj.get("items") {
            // Tuple-style `items: [...]` is not structural; treat it as "no item schema".
            None | Some(Value::Array(_)) => {}
            Some(sub) => {
                let sub_path = join(path, "items");
                out.items = Some(Box::new(Structural::parse(sub, &sub_path)?));
            }
        }
        Ok(out)
    }
}

/// Returns the object behind `schema`, or an [`SchemaError::InvalidSchema`] naming `path`.
pub(crate) fn as_schema_object<'a>(
    schema: &'a Value,
    path: &str,
) -> Result<&'a Map<String, Value>, SchemaError> {
    match schema {
        Value::Object(obj) => Ok(obj),
        other => Err(SchemaError::InvalidSchema {
            path: path.to_owned(),
            message: format!("expected a schema object, found {}", kind(other)),
        }),
    }
}

fn flag(obj: &Map<String, Value>, key: &str) -> bool {
    matches!(obj.get(key), Some(Value::Bool(true)))
}

/// Joins a dotted schema path.
pub(crate) fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_owned()
    } else {
        format!("{path}.{segment}")
    }
}

/// The JSON type name of `v`, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    crate::model::type_name_of(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_nested_tree() {
        let s = Structural::parse(
            &json!({
                "type": "object",
                "properties": {
                    "a": {"type": "string", "default": "x", "nullable": true},
                    "m": {"type": "object", "additionalProperties": {"type": "integer", "default": 1}},
                    "t": {"type": "object", "additionalProperties": true},
                    "l": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    "e": {"type": "object", "x-kubernetes-embedded-resource": true, "default": null}
                }
            }),
            "",
        )
        .expect("valid schema");
        assert_eq!(s.properties["a"].default, Some(json!("x")));
        assert!(s.properties["a"].nullable);
        assert!(matches!(
            s.properties["m"].additional_properties,
            Some(AdditionalProperties::Schema(_))
        ));
        assert_eq!(
            s.properties["t"].additional_properties,
            Some(AdditionalProperties::Any)
        );
        let items = s.properties["l"].items.as_ref().expect("items parsed");
        assert!(items.preserve_unknown_fields);
        assert!(s.properties["e"].embedded_resource);
        assert_eq!(s.properties["e"].default, None);
    }

    #[test]
    fn rejects_non_object_subschema_with_path() {
        let err = Structural::parse(
            &json!({"properties": {"spec": {"properties": {"size": "string"}}}}),
            "",
        )
        .expect_err("must fail");
        match err {
            SchemaError::InvalidSchema { path, message } => {
                assert_eq!(path, "properties.spec.properties.size");
                assert_eq!(message, "expected a schema object, found string");
            }
        }
    }
}
