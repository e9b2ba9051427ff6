//! Pruning of unknown fields and of non-nullable nulls.
//!
//! Kubernetes: `k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning/algorithm.go`
//! (`Prune`, `prune`, `skipPrune`) and
//! `.../schema/defaulting/prunenulls.go` (`PruneNonNullableNullsWithoutDefaults`).

use serde_json::Value;

use super::structural::{AdditionalProperties, Structural};

/// Keys of an embedded resource (and of the resource root) that pruning leaves alone.
/// Kubernetes: `metaFields` in pruning/algorithm.go.
const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn is_meta_field(k: &str) -> bool {
    META_FIELDS.contains(&k)
}

/// The schema a value is pruned against: a structural node, "no schema" (everything
/// inside objects is unknown), or "anything" (`additionalProperties: true`, kept as is).
#[derive(Clone, Copy)]
enum Node<'a> {
    Schema(&'a Structural),
    Nothing,
    Anything,
}

fn additional(s: &Structural) -> Option<Node<'_>> {
    s.additional_properties.as_ref().map(|a| match a {
        AdditionalProperties::Schema(sub) => Node::Schema(sub),
        AdditionalProperties::Any => Node::Anything,
    })
}

/// Prunes `obj`, a resource root, against `root`.
///
/// Like `pruning.Prune(obj, s, isResourceRoot=true)`: the root is treated as an embedded
/// resource, so root `apiVersion`, `kind` and `metadata` are never pruned (nor is anything
/// inside root `metadata`).
pub(crate) fn prune_root(obj: &mut Value, root: &Structural) {
    if root.preserve_unknown_fields {
        skip_prune(obj, Node::Schema(root), true);
    } else {
        prune(obj, Node::Schema(root), true);
    }
}

/// Kubernetes: `prune` in pruning/algorithm.go. `root` marks the resource root, which is
/// treated as an embedded resource (its `apiVersion`, `kind`, `metadata` are kept).
fn prune(x: &mut Value, s: Node<'_>, root: bool) {
    let s = match s {
        Node::Anything => return,
        Node::Schema(s) if s.preserve_unknown_fields => {
            skip_prune(x, Node::Schema(s), false);
            return;
        }
        other => other,
    };
    match x {
        Value::Object(map) => {
            let Node::Schema(s) = s else {
                map.clear();
                return;
            };
            let embedded = root || s.embedded_resource;
            map.retain(|k, v| {
                if embedded && is_meta_field(k) {
                    return true;
                }
                if let Some(prop) = s.properties.get(k) {
                    prune(v, Node::Schema(prop), false);
                    true
                } else if let Some(add) = additional(s) {
                    prune(v, add, false);
                    true
                } else {
                    false
                }
            });
        }
        Value::Array(items) => {
            let item_schema = match s {
                Node::Schema(s) => s.items.as_deref().map_or(Node::Nothing, Node::Schema),
                other => other,
            };
            for v in items {
                prune(v, item_schema, false);
            }
        }
        _ => {}
    }
}

/// Kubernetes: `skipPrune` in pruning/algorithm.go: keep unknown keys at this level but
/// prune inside known properties and additionalProperties values.
fn skip_prune(x: &mut Value, s: Node<'_>, root: bool) {
    let Node::Schema(s) = s else {
        return;
    };
    match x {
        Value::Object(map) => {
            let embedded = root || s.embedded_resource;
            for (k, v) in map.iter_mut() {
                if embedded && is_meta_field(k) {
                    continue;
                }
                if let Some(prop) = s.properties.get(k) {
                    prune(v, Node::Schema(prop), false);
                } else if let Some(add) = additional(s) {
                    prune(v, add, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = s.items.as_deref() {
                for v in items {
                    skip_prune(v, Node::Schema(item), false);
                }
            }
        }
        _ => {}
    }
}

/// Removes object keys whose value is `null` when their schema is not `nullable` and has
/// no `default` (those with a default are replaced by the default during defaulting).
///
/// Kubernetes: `PruneNonNullableNullsWithoutDefaults` in defaulting/prunenulls.go. Array
/// items are never removed. At the resource root, `apiVersion`, `kind` and `metadata`
/// are left alone.
pub(crate) fn prune_nulls_root(obj: &mut Value, root: &Structural) {
    prune_nulls(obj, Some(root), true);
}

fn schema_for_field<'a>(s: Option<&'a Structural>, k: &str) -> Option<&'a Structural> {
    let s = s?;
    if let Some(p) = s.properties.get(k) {
        return Some(p);
    }
    match s.additional_properties.as_ref() {
        Some(AdditionalProperties::Schema(sub)) => Some(sub),
        _ => None,
    }
}

fn is_non_nullable_non_defaultable_null(x: &Value, s: Option<&Structural>) -> bool {
    x.is_null() && s.is_some_and(|s| !s.nullable && s.default.is_none())
}

fn prune_nulls(x: &mut Value, s: Option<&Structural>, root: bool) {
    match x {
        Value::Object(map) => {
            map.retain(|k, v| {
                if root && is_meta_field(k) {
                    return true;
                }
                let schema = schema_for_field(s, k);
                if is_non_nullable_non_defaultable_null(v, schema) {
                    false
                } else {
                    prune_nulls(v, schema, false);
                    true
                }
            });
        }
        Value::Array(items) => {
            let schema = s.and_then(|s| s.items.as_deref());
            for v in items {
                prune_nulls(v, schema, false);
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
        prune_root(&mut obj, &s);
        obj
    }

    /// Cases adapted from pruning/algorithm_test.go `TestPrune`.
    #[test]
    fn table() {
        let cases: Vec<(&str, Value, Value, Value)> = vec![
            ("empty", json!({}), json!({}), json!({})),
            (
                "scalars and unknown fields at root",
                json!({"type": "object", "properties": {"a": {"type": "string"}}}),
                json!({"a": "x", "b": 1, "apiVersion": "v", "kind": "K", "metadata": {"name": "n", "x": 1}}),
                json!({"a": "x", "apiVersion": "v", "kind": "K", "metadata": {"name": "n", "x": 1}}),
            ),
            (
                "nested objects, unknown removed at every level",
                json!({"properties": {"a": {"properties": {"b": {"properties": {"c": {}}}}}}}),
                json!({"a": {"b": {"c": {"x": 1}, "d": 2}, "e": 3}, "f": 4}),
                json!({"a": {"b": {"c": {}}}}),
            ),
            (
                "scalars under no schema are kept, maps emptied",
                json!({"properties": {"a": {"type": "array", "items": {}}}}),
                json!({"a": [1, "x", {"y": 1}, [ {"z": 2} ]]}),
                json!({"a": [1, "x", {}, [{}]]}),
            ),
            (
                "arrays of objects",
                json!({"properties": {"l": {"type": "array", "items": {"type": "object", "properties": {"a": {}}}}}}),
                json!({"l": [{"a": 1, "b": 2}, {"c": 3}]}),
                json!({"l": [{"a": 1}, {}]}),
            ),
            (
                "additionalProperties schema",
                json!({"properties": {"m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"a": {}}}}}}),
                json!({"m": {"k1": {"a": 1, "b": 2}, "k2": {"c": 3}}}),
                json!({"m": {"k1": {"a": 1}, "k2": {}}}),
            ),
            (
                "additionalProperties true keeps everything",
                json!({"properties": {"m": {"type": "object", "additionalProperties": true}}}),
                json!({"m": {"k": {"deep": {"x": 1}}}}),
                json!({"m": {"k": {"deep": {"x": 1}}}}),
            ),
            (
                "preserve-unknown-fields keeps unknown, prunes inside known",
                json!({"properties": {"p": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"known": {"type": "object", "properties": {"a": {}}}}}}}),
                json!({"p": {"unknown": {"x": 1}, "known": {"a": 1, "b": 2}}}),
                json!({"p": {"unknown": {"x": 1}, "known": {"a": 1}}}),
            ),
            (
                "preserve-unknown-fields at root",
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"spec": {"type": "object", "properties": {"a": {}}}}}),
                json!({"spec": {"a": 1, "b": 2}, "other": {"x": 1}}),
                json!({"spec": {"a": 1}, "other": {"x": 1}}),
            ),
            (
                "preserve-unknown-fields on array items",
                json!({"properties": {"env": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}),
                json!({"env": [{"name": "A", "value": "1"}, {"anything": {"nested": true}}]}),
                json!({"env": [{"name": "A", "value": "1"}, {"anything": {"nested": true}}]}),
            ),
            (
                "embedded resource keeps apiVersion/kind/metadata",
                json!({"properties": {"e": {"type": "object", "x-kubernetes-embedded-resource": true,
                    "properties": {"spec": {"type": "object", "properties": {"a": {}}}}}}}),
                json!({"e": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"a": 1, "b": 2}, "status": {}}}),
                json!({"e": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"a": 1}}}),
            ),
            (
                "non-embedded object prunes apiVersion/kind/metadata",
                json!({"properties": {"e": {"type": "object", "properties": {"spec": {}}}}}),
                json!({"e": {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}}}),
                json!({"e": {"spec": {}}}),
            ),
            (
                "root metadata untouched even when described",
                json!({"properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string"}}}}}),
                json!({"metadata": {"name": "a", "labels": {"x": "y"}}}),
                json!({"metadata": {"name": "a", "labels": {"x": "y"}}}),
            ),
            (
                "int-or-string scalar kept",
                json!({"properties": {"port": {"x-kubernetes-int-or-string": true}}}),
                json!({"port": "http", "x": 1}),
                json!({"port": "http"}),
            ),
        ];
        for (name, schema, input, want) in cases {
            assert_eq!(run(schema, input), want, "case {name}");
        }
    }

    /// Cases adapted from defaulting/prunenulls_test.go.
    #[test]
    fn prunes_non_nullable_nulls_without_defaults() {
        let s = Structural::parse(
            &json!({"properties": {
                "a": {"type": "string"},
                "b": {"type": "string", "nullable": true},
                "c": {"type": "string", "default": "x"},
                "m": {"type": "object", "additionalProperties": {"type": "string"}},
                "l": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "string"}}}},
                "u": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }}),
            "",
        )
        .expect("valid schema");
        let mut obj = json!({
            "a": null, "b": null, "c": null,
            "m": {"k": null}, "l": [null, {"x": null}],
            "u": {"free": null},
            "metadata": null
        });
        prune_nulls_root(&mut obj, &s);
        assert_eq!(
            obj,
            json!({"b": null, "c": null, "m": {}, "l": [null, {}], "u": {"free": null}, "metadata": null})
        );
    }
}
