//! Defaulting of missing fields.
//!
//! Kubernetes: `k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting/algorithm.go`
//! (`Default`, `isNonNullableNull`).

use serde_json::Value;

use super::structural::{AdditionalProperties, Structural};

/// A `null` that must be replaced by the schema's default: the schema is not `nullable`
/// and has a default. Kubernetes: `isNonNullableNull`.
fn is_non_nullable_null(x: &Value, s: Option<&Structural>) -> bool {
    x.is_null() && s.is_some_and(|s| !s.nullable && s.default.is_some())
}

/// Applies defaults from `s` to `x`, in place.
///
/// For objects: every property with a `default` that is missing (or a non-nullable
/// `null`) gets a deep copy of the default; then every key, freshly defaulted ones
/// included, is defaulted recursively against its property schema or the
/// `additionalProperties` schema. For arrays: each item (non-nullable `null` items are
/// first replaced by the items default) is defaulted against `items`. Scalars are left
/// alone.
pub(crate) fn default(x: &mut Value, s: &Structural) {
    match x {
        Value::Object(map) => {
            for (k, prop) in &s.properties {
                let Some(def) = prop.default.as_ref() else {
                    continue;
                };
                let missing = match map.get(k) {
                    None => true,
                    Some(v) => is_non_nullable_null(v, Some(prop)),
                };
                if missing {
                    map.insert(k.clone(), def.clone());
                }
            }
            let add = match s.additional_properties.as_ref() {
                Some(AdditionalProperties::Schema(sub)) => Some(sub.as_ref()),
                _ => None,
            };
            for (k, v) in map.iter_mut() {
                if let Some(prop) = s.properties.get(k) {
                    default(v, prop);
                } else if let Some(add) = add {
                    if is_non_nullable_null(v, Some(add))
                        && let Some(def) = add.default.as_ref()
                    {
                        *v = def.clone();
                    }
                    default(v, add);
                }
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = s.items.as_deref() else {
                return;
            };
            for v in items.iter_mut() {
                if is_non_nullable_null(v, Some(item_schema))
                    && let Some(def) = item_schema.default.as_ref()
                {
                    *v = def.clone();
                }
                default(v, item_schema);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn run(schema: Value, mut obj: Value) -> Value {
        let s = Structural::parse(&schema, "").expect("valid schema");
        default(&mut obj, &s);
        obj
    }

    /// Cases adapted from defaulting/algorithm_test.go `TestDefault`.
    #[test]
    fn table() {
        let cases: Vec<(&str, Value, Value, Value)> = vec![
            ("empty", json!({}), json!({}), json!({})),
            (
                "scalar defaults, existing values win",
                json!({"properties": {"a": {"type": "string", "default": "A"}, "b": {"type": "string", "default": "B"}, "c": {"type": "string"}}}),
                json!({"a": "given"}),
                json!({"a": "given", "b": "B"}),
            ),
            (
                "nested defaults into freshly defaulted object",
                json!({"properties": {"storage": {"type": "object", "default": {},
                    "properties": {"class": {"type": "string", "default": "standard"}, "size": {"type": "integer"}}}}}),
                json!({}),
                json!({"storage": {"class": "standard"}}),
            ),
            (
                "nested defaults two levels deep",
                json!({"properties": {"a": {"type": "object", "default": {"x": 1},
                    "properties": {"x": {"type": "integer"}, "b": {"type": "object", "default": {},
                        "properties": {"c": {"type": "string", "default": "C"}}}}}}}),
                json!({}),
                json!({"a": {"x": 1, "b": {"c": "C"}}}),
            ),
            (
                "nested defaults into existing object",
                json!({"properties": {"a": {"type": "object", "properties": {"b": {"type": "string", "default": "B"}}}}}),
                json!({"a": {}}),
                json!({"a": {"b": "B"}}),
            ),
            (
                "no defaults into missing object without default",
                json!({"properties": {"a": {"type": "object", "properties": {"b": {"type": "string", "default": "B"}}}}}),
                json!({}),
                json!({}),
            ),
            (
                "defaults inside array items",
                json!({"properties": {"l": {"type": "array", "items": {"type": "object",
                    "properties": {"name": {"type": "string"}, "port": {"type": "integer", "default": 80}}}}}}),
                json!({"l": [{"name": "a"}, {"name": "b", "port": 8080}]}),
                json!({"l": [{"name": "a", "port": 80}, {"name": "b", "port": 8080}]}),
            ),
            (
                "defaults inside array default",
                json!({"properties": {"l": {"type": "array", "default": [{}],
                    "items": {"type": "object", "properties": {"port": {"type": "integer", "default": 80}}}}}}),
                json!({}),
                json!({"l": [{"port": 80}]}),
            ),
            (
                "additionalProperties values",
                json!({"properties": {"m": {"type": "object", "additionalProperties": {"type": "object",
                    "properties": {"a": {"type": "string", "default": "A"}}}}}}),
                json!({"m": {"k1": {}, "k2": {"a": "x"}}}),
                json!({"m": {"k1": {"a": "A"}, "k2": {"a": "x"}}}),
            ),
            (
                "additionalProperties null replaced by default",
                json!({"properties": {"m": {"type": "object", "additionalProperties": {"type": "string", "default": "D"}}}}),
                json!({"m": {"k1": null, "k2": "x"}}),
                json!({"m": {"k1": "D", "k2": "x"}}),
            ),
            (
                "null of non-nullable with default is replaced",
                json!({"properties": {"a": {"type": "string", "default": "A"}}}),
                json!({"a": null}),
                json!({"a": "A"}),
            ),
            (
                "null of nullable with default is kept",
                json!({"properties": {"a": {"type": "string", "nullable": true, "default": "A"}}}),
                json!({"a": null}),
                json!({"a": null}),
            ),
            (
                "null of non-nullable without default is left to pruning",
                json!({"properties": {"a": {"type": "string"}}}),
                json!({"a": null}),
                json!({"a": null}),
            ),
            (
                "null array items replaced by items default",
                json!({"properties": {"l": {"type": "array", "items": {"type": "string", "default": "I"}}}}),
                json!({"l": ["x", null]}),
                json!({"l": ["x", "I"]}),
            ),
            (
                "null array items of nullable items kept",
                json!({"properties": {"l": {"type": "array", "items": {"type": "string", "nullable": true, "default": "I"}}}}),
                json!({"l": [null]}),
                json!({"l": [null]}),
            ),
            (
                "int-or-string default",
                json!({"properties": {"port": {"x-kubernetes-int-or-string": true, "default": "http"}}}),
                json!({}),
                json!({"port": "http"}),
            ),
            (
                "preserve-unknown-fields object still defaulted",
                json!({"properties": {"p": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"a": {"type": "integer", "default": 1}}}}}),
                json!({"p": {"free": true}}),
                json!({"p": {"free": true, "a": 1}}),
            ),
            (
                "wrong shape is not defaulted into",
                json!({"properties": {"a": {"type": "object", "properties": {"b": {"default": 1}}}}}),
                json!({"a": "not-an-object"}),
                json!({"a": "not-an-object"}),
            ),
        ];
        for (name, schema, input, want) in cases {
            assert_eq!(run(schema, input), want, "case {name}");
        }
    }
}
