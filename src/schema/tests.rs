//! Tests of the public API: error messages, real Kratix schemas, idempotence.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn schema(s: Value) -> CrdSchema {
    CrdSchema::new(&s).expect("valid schema")
}

fn fe(path: &str, message: &str) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

/// `openAPIV3Schema` of kratix-marketplace `redis/promise.yaml` (v1alpha1).
fn redis() -> Value {
    json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "size": {"type": "string", "default": "small", "pattern": "^(small|large)$",
                 "description": "Size of this Redis deployment."}
    }}}})
}

/// `openAPIV3Schema` of kratix-marketplace `runtime/promise.yaml` (v1alpha1).
fn runtime() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["image"], "properties": {
            "applicationEnv": {"type": "array", "description": "The env vars to expose to the application",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            "image": {"type": "string"},
            "lifecycle": {"type": "string", "default": "dev", "enum": ["prod", "dev", "staging", "testing"]},
            "replicas": {"type": "integer", "default": 1},
            "servicePort": {"type": "integer", "default": 80}
        }},
        "status": {"type": "object", "properties": {"url": {"type": "string"}}}
    }})
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default"})
}

#[test]
fn redis_defaults_size() {
    let s = schema(redis());
    let mut obj = json!({"apiVersion": "marketplace.kratix.io/v1alpha1", "kind": "redis",
        "metadata": meta("example"), "spec": {}});
    assert_eq!(s.admit(&mut obj), vec![]);
    assert_eq!(obj["spec"], json!({"size": "small"}));
    assert_eq!(obj["kind"], json!("redis"));
}

#[test]
fn redis_pattern_error() {
    let s = schema(redis());
    let mut obj = json!({"metadata": meta("example"), "spec": {"size": "medium"}});
    assert_eq!(
        s.admit(&mut obj),
        vec![fe("spec.size", "\"medium\" does not match ^(small|large)$")]
    );
}

#[test]
fn redis_from_shared_file_if_present() {
    let path = std::path::Path::new("/work/shared/realworld/kratix-marketplace/redis/promise.yaml");
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let Ok(promise) = serde_saphyr::from_str::<Value>(&text) else {
        return;
    };
    let Some(versions) = promise
        .pointer("/spec/api/spec/versions")
        .and_then(Value::as_array)
    else {
        return;
    };
    for v in versions {
        let Some(open_api) = v.pointer("/schema/openAPIV3Schema") else {
            continue;
        };
        let s = CrdSchema::new(open_api).expect("marketplace schema compiles");
        let mut obj = json!({"metadata": meta("x"), "spec": {}});
        assert_eq!(s.admit(&mut obj), vec![]);
        assert_eq!(obj["spec"], json!({"size": "small"}));
    }
}

#[test]
fn runtime_defaults_and_errors() {
    let s = schema(runtime());
    let mut obj = json!({"metadata": meta("app"), "spec": {"image": "nginx",
        "applicationEnv": [{"name": "A", "value": "1", "extra": {"x": 1}}], "unknown": true}});
    assert_eq!(s.admit(&mut obj), vec![]);
    assert_eq!(
        obj["spec"],
        json!({"image": "nginx", "lifecycle": "dev", "replicas": 1, "servicePort": 80,
            "applicationEnv": [{"name": "A", "value": "1", "extra": {"x": 1}}]})
    );

    let mut bad = json!({"metadata": meta("app"), "spec": {"lifecycle": "prodd", "replicas": "3"}});
    assert_eq!(
        s.admit(&mut bad),
        vec![
            fe("spec.image", "required field is missing"),
            fe(
                "spec.lifecycle",
                "\"prodd\" is not one of: prod, dev, staging, testing"
            ),
            fe("spec.replicas", "expected integer, found string \"3\""),
        ]
    );
}

#[test]
fn runtime_from_shared_file_if_present() {
    let path =
        std::path::Path::new("/work/shared/realworld/kratix-marketplace/runtime/promise.yaml");
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let Ok(promise) = serde_saphyr::from_str::<Value>(&text) else {
        return;
    };
    let Some(open_api) = promise.pointer("/spec/api/spec/versions/0/schema/openAPIV3Schema") else {
        return;
    };
    let s = CrdSchema::new(open_api).expect("marketplace schema compiles");
    let mut obj = json!({"metadata": meta("x"), "spec": {}});
    assert_eq!(
        s.admit(&mut obj),
        vec![fe("spec.image", "required field is missing")]
    );
    assert_eq!(obj["spec"]["lifecycle"], json!("dev"));
}

#[test]
fn type_errors() {
    let s = schema(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "s": {"type": "string"}, "b": {"type": "boolean"}, "n": {"type": "number"},
            "o": {"type": "object"}, "l": {"type": "array", "items": {"type": "string"}}
        }}}}),
    );
    let errs = s.validate(
        &json!({"spec": {"s": 3, "b": "yes", "n": null, "o": [1], "l": ["a", 2.5, {"k": 1}]}}),
    );
    assert_eq!(
        errs,
        vec![
            fe("spec.b", "expected boolean, found string \"yes\""),
            fe("spec.l[1]", "expected string, found number 2.5"),
            fe("spec.l[2]", "expected string, found object"),
            fe("spec.n", "expected number, found null"),
            fe("spec.o", "expected object, found array"),
            fe("spec.s", "expected string, found integer 3"),
        ]
    );
    assert_eq!(
        s.validate(&json!("nope")),
        vec![fe("", "expected object, found string \"nope\"")]
    );
}

#[test]
fn numeric_and_length_errors() {
    let s = schema(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "min": {"type": "integer", "minimum": 1},
            "max": {"type": "integer", "maximum": 10},
            "xmin": {"type": "integer", "minimum": 1, "exclusiveMinimum": true},
            "xmax": {"type": "integer", "maximum": 10, "exclusiveMaximum": true},
            "mult": {"type": "integer", "multipleOf": 5},
            "short": {"type": "string", "minLength": 3},
            "long": {"type": "string", "maxLength": 2},
            "few": {"type": "array", "minItems": 2, "items": {"type": "string"}},
            "many": {"type": "array", "maxItems": 1, "items": {"type": "string"}},
            "props": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
            "uniq": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
            "closed": {"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}}
        }}}}),
    );
    let errs = s.validate(&json!({"spec": {
        "min": 0, "max": 11, "xmin": 1, "xmax": 10, "mult": 7,
        "short": "ab", "long": "abc", "few": ["a"], "many": ["a", "b"], "props": {},
        "uniq": ["a", "a"], "closed": {"a": "x", "b": "y", "c.d": "z"}
    }}));
    assert_eq!(
        errs,
        vec![
            fe("spec.closed.b", "unknown field is not allowed here"),
            fe("spec.closed[\"c.d\"]", "unknown field is not allowed here"),
            fe("spec.few", "list has 1 item, expected at least 2 items"),
            fe(
                "spec.long",
                "\"abc\" is 3 characters long, expected at most 2 characters"
            ),
            fe("spec.many", "list has 2 items, expected at most 1 item"),
            fe("spec.max", "11 is greater than the maximum 10"),
            fe("spec.min", "0 is less than the minimum 1"),
            fe("spec.mult", "7 is not a multiple of 5"),
            fe(
                "spec.props",
                "object has 0 fields, expected at least 1 field"
            ),
            fe(
                "spec.short",
                "\"ab\" is 2 characters long, expected at least 3 characters"
            ),
            fe(
                "spec.uniq",
                "list has duplicate items, expected unique items"
            ),
            fe("spec.xmax", "10 must be less than 10"),
            fe("spec.xmin", "1 must be greater than 1"),
        ]
    );
}

#[test]
fn metadata_name_length() {
    let s = schema(redis());
    let name64 = "a".repeat(64);
    let errs = s.validate(&json!({"metadata": {"name": name64}, "spec": {}}));
    assert_eq!(
        errs,
        vec![fe(
            "metadata.name",
            &format!("\"{name64}\" is 64 characters long, expected at most 63 characters")
        )]
    );
    assert_eq!(
        s.validate(&json!({"metadata": {"name": "a".repeat(63)}, "spec": {}})),
        vec![]
    );
    assert_eq!(
        s.validate(&json!({"metadata": {"name": ""}})),
        vec![fe(
            "metadata.name",
            "\"\" is 0 characters long, expected at least 1 character"
        )]
    );
    // The CRD's own rule and the injected one give one error, not two.
    let s = schema(
        json!({"type": "object", "properties": {"metadata": {"type": "object",
        "properties": {"name": {"type": "string", "maxLength": 63}}}}}),
    );
    assert_eq!(
        s.validate(&json!({"metadata": {"name": "b".repeat(64)}}))
            .len(),
        1
    );
}

#[test]
fn nullable() {
    let s = schema(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "plain": {"type": "string"},
            "null_ok": {"type": "string", "nullable": true},
            "enum_null": {"type": "string", "nullable": true, "enum": ["a", "b"]},
            "with_default": {"type": "string", "default": "d"},
            "list": {"type": "array", "items": {"type": "string"}}
        }}}}),
    );
    // validate alone sees the raw null.
    assert_eq!(
        s.validate(&json!({"spec": {"plain": null}})),
        vec![fe("spec.plain", "expected string, found null")]
    );
    assert_eq!(
        s.validate(&json!({"spec": {"null_ok": null, "enum_null": null}})),
        vec![]
    );
    assert_eq!(
        s.validate(&json!({"spec": {"enum_null": "c"}})),
        vec![fe("spec.enum_null", "\"c\" is not one of: a, b, null")]
    );
    // admit prunes non-nullable nulls, defaults nulls that have a default, keeps
    // nullable nulls; null array items cannot be pruned and are reported.
    let mut obj = json!({"spec": {"plain": null, "null_ok": null, "with_default": null, "list": ["x", null]}});
    assert_eq!(
        s.admit(&mut obj),
        vec![fe("spec.list[1]", "expected string, found null")]
    );
    assert_eq!(
        obj,
        json!({"spec": {"null_ok": null, "with_default": "d", "list": ["x", null]}})
    );
}

#[test]
fn int_or_string() {
    let s = schema(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "bare": {"x-kubernetes-int-or-string": true, "maximum": 10, "pattern": "^[a-z]+$"},
            "maybe": {"x-kubernetes-int-or-string": true, "nullable": true}
        }}}}),
    );
    assert_eq!(
        s.validate(&json!({"spec": {"port": 80, "bare": "http", "maybe": null}})),
        vec![]
    );
    assert_eq!(
        s.validate(&json!({"spec": {"port": "http", "bare": 3}})),
        vec![]
    );
    assert_eq!(
        s.validate(&json!({"spec": {"port": true, "bare": 11, "maybe": [1]}})),
        vec![
            fe("spec.bare", "11 is greater than the maximum 10"),
            fe(
                "spec.maybe",
                "expected integer, string or null, found array"
            ),
            fe(
                "spec.port",
                "expected integer or string, found boolean true"
            ),
        ]
    );
    assert_eq!(
        s.validate(&json!({"spec": {"bare": "HTTP"}})),
        vec![fe("spec.bare", "\"HTTP\" does not match ^[a-z]+$")]
    );
}

#[test]
fn any_of_alternatives_are_explained() {
    let s = schema(json!({"type": "object", "properties": {"v": {"anyOf": [
        {"type": "string", "maxLength": 2}, {"type": "integer"}
    ]}}}));
    assert_eq!(
        s.validate(&json!({"v": "abc"})),
        vec![fe(
            "v",
            "string \"abc\" matches none of the allowed alternatives: \
             [1] \"abc\" is 3 characters long, expected at most 2 characters; \
             [2] expected integer, found string \"abc\""
        )]
    );
}

#[test]
fn errors_sorted_and_deduplicated() {
    let s = schema(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "required": ["b", "a"],
        "allOf": [{"required": ["a"]}],
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}}}),
    );
    assert_eq!(
        s.validate(&json!({"spec": {}})),
        vec![
            fe("spec.a", "required field is missing"),
            fe("spec.b", "required field is missing"),
        ]
    );
}

#[test]
fn invalid_schemas() {
    let err = CrdSchema::new(&json!("string")).expect_err("not an object");
    assert_eq!(
        err.to_string(),
        "invalid openAPIV3Schema at <root>: expected a schema object, found string"
    );
    let err =
        CrdSchema::new(&json!({"properties": {"spec": {"items": 3}}})).expect_err("bad items");
    assert!(
        matches!(&err, SchemaError::InvalidSchema { path, .. } if path == "properties.spec.items"),
        "{err}"
    );
    let err = CrdSchema::new(&json!({"properties": {"a": {"type": "string", "pattern": "("}}}))
        .expect_err("bad regex");
    assert_eq!(
        err.to_string(),
        "invalid openAPIV3Schema at properties.a.pattern: \"(\" is not a valid regex"
    );
    let err =
        CrdSchema::new(&json!({"properties": {"a": {"type": "strang"}}})).expect_err("bad type");
    assert_eq!(
        err.to_string(),
        "invalid openAPIV3Schema at properties.a.type: string \"strang\" matches none of the \
         allowed alternatives: [1] \"strang\" is not one of: array, boolean, integer, null, \
         number, object, string; [2] expected array, found string \"strang\""
    );
}

#[test]
fn field_error_display_and_serialize() {
    let e = fe("spec.size", "bad");
    assert_eq!(e.to_string(), "spec.size: bad");
    assert_eq!(fe("", "bad").to_string(), "bad");
    assert_eq!(
        serde_json::to_value(&e).expect("serializes"),
        json!({"path": "spec.size", "message": "bad"})
    );
}

#[test]
fn embedded_resource_admission() {
    let s = schema(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                "x-kubernetes-preserve-unknown-fields": true},
            "strict": {"type": "object", "x-kubernetes-embedded-resource": true,
                "properties": {"data": {"type": "object", "additionalProperties": {"type": "string"}}}}
        }}}}),
    );
    let mut obj = json!({"spec": {
        "template": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}},
        "strict": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y"}, "data": {"k": "v"}, "junk": 1}
    }});
    assert_eq!(s.admit(&mut obj), vec![]);
    assert_eq!(
        obj["spec"]["strict"],
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y"}, "data": {"k": "v"}})
    );
    assert_eq!(obj["spec"]["template"]["data"], json!({"a": "b"}));
}

#[test]
fn list_types() {
    let s = schema(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name", "protocol"],
                "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "protocol": {"type": "string", "default": "TCP"},
                    "port": {"type": "integer"}}}},
            "atomic": {"type": "array", "x-kubernetes-list-type": "atomic", "items": {"type": "string"}}
        }}}}),
    );
    let mut obj = json!({"spec": {
        "tags": ["a", "b", "a"],
        "ports": [{"name": "http", "port": 80}, {"name": "http", "protocol": "UDP", "port": 81},
                  {"name": "http", "protocol": "TCP", "port": 82}],
        "atomic": ["x", "x"]
    }});
    assert_eq!(
        s.admit(&mut obj),
        vec![
            fe(
                "spec.ports[2]",
                "duplicate entry with name=\"http\", protocol=\"TCP\", already at index 0 of this list (x-kubernetes-list-type: map requires unique keys)"
            ),
            fe(
                "spec.tags[2]",
                "duplicate value \"a\", already at index 0 of this list (x-kubernetes-list-type: set requires unique items)"
            ),
        ]
    );
}

#[test]
fn embedded_resource_needs_api_version_and_kind() {
    let s = schema(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "objects": {"type": "array", "items": {"type": "object",
                "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}}
        }}}}),
    );
    let errs = s.validate(&json!({"spec": {"objects": [
        {"apiVersion": "v1", "kind": "ConfigMap"},
        {"kind": ""},
        {"apiVersion": 1, "kind": "Secret"}
    ]}}));
    assert_eq!(
        errs,
        vec![
            fe("spec.objects[1].apiVersion", "required field is missing"),
            fe("spec.objects[1].kind", "must not be empty"),
            fe(
                "spec.objects[2].apiVersion",
                "expected string, found integer"
            ),
        ]
    );
}

// ---------------------------------------------------------------------------
// Property test: admission is idempotent.

/// Schemas exercised by the property test.
fn property_schemas() -> Vec<CrdSchema> {
    vec![
        schema(runtime()),
        schema(redis()),
        schema(
            json!({"type": "object", "properties": {"spec": {"type": "object", "default": {}, "properties": {
                "storage": {"type": "object", "default": {"extra": {"junk": 1}},
                    "properties": {"class": {"type": "string", "default": "standard"},
                                   "size": {"type": "integer", "nullable": true, "default": 5}}},
                "list": {"type": "array", "items": {"type": "object", "default": {"name": "x"},
                    "properties": {"name": {"type": "string"}, "port": {"type": "integer", "default": 80}}}},
                "map": {"type": "object", "additionalProperties": {"type": "object",
                    "properties": {"a": {"type": "string", "default": "A"}, "b": {"type": "string"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"known": {"type": "object", "properties": {"k": {"type": "string", "default": "K"}}}}},
                "port": {"x-kubernetes-int-or-string": true, "default": "http"},
                "nul": {"type": "string", "nullable": true}
            }}}}),
        ),
    ]
}

const KEYS: &[&str] = &[
    "spec",
    "metadata",
    "name",
    "image",
    "lifecycle",
    "replicas",
    "applicationEnv",
    "size",
    "storage",
    "class",
    "list",
    "map",
    "free",
    "known",
    "k",
    "a",
    "b",
    "port",
    "nul",
    "extra",
    "unknown",
    "junk",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..100).prop_map(|n| json!(n)),
        "[a-z]{0,6}".prop_map(Value::String),
        Just(json!("small")),
        Just(json!("prod")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..6).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// A resource-like root: usually an object with a `spec`, sometimes anything.
fn arb_resource() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => arb_json(),
        4 => (arb_json(), arb_json()).prop_map(|(spec, rest)| {
            let mut root = match rest {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            root.insert("spec".to_owned(), spec);
            Value::Object(root)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn admission_is_idempotent(obj in arb_resource()) {
        for s in property_schemas() {
            let mut once = obj.clone();
            let errs_once = s.admit(&mut once);
            let mut twice = once.clone();
            let errs_twice = s.admit(&mut twice);
            prop_assert_eq!(&once, &twice);
            prop_assert_eq!(&errs_once, &errs_twice);

            let mut again = once.clone();
            s.apply_defaults(&mut again);
            s.prune(&mut again);
            prop_assert_eq!(&once, &again);
            let mut again = once.clone();
            s.prune(&mut again);
            s.apply_defaults(&mut again);
            prop_assert_eq!(&once, &again);
        }
    }
}

#[test]
fn integral_float_is_an_integer() {
    // kube-openapi accepts `1.0` where an integer is expected.
    let s = schema(json!({"type": "object", "properties": {"r": {"type": "integer"}}}));
    let v: Value = serde_saphyr::from_str("r: 1.0\n").expect("yaml");
    assert_eq!(v, json!({"r": 1.0}));
    assert_eq!(s.validate(&v), vec![]);
    assert_eq!(
        s.validate(&json!({"r": 1.5})),
        vec![fe("r", "expected integer, found number 1.5")]
    );
}
