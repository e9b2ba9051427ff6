//! Validation: Kubernetes OpenAPI v3 schema → Draft 4 JSON Schema, and
//! `jsonschema::ValidationError` → [`FieldError`].
//!
//! Kubernetes: `k8s.io/apiextensions-apiserver/pkg/apiserver/validation/validation.go`
//! (`ConvertJSONSchemaPropsWithPostProcess`: `nullable`, `x-kubernetes-int-or-string`) and
//! kube-openapi's Draft 4 based validator.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, JsonType, ValidationError, Validator};
use serde_json::{Map, Value, json};

use super::FieldError;
use super::SchemaError;
use super::structural::{as_schema_object, join, kind};

/// Longest `metadata.name` Kratix accepts for a resource of a Promise CRD
/// (Kratix injects `maxLength: 63` into every Promise CRD's `metadata.name`).
pub(crate) const MAX_NAME_LEN: u64 = 63;

/// Keywords whose value is copied unchanged into the Draft 4 schema.
const PLAIN_KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "required",
];

/// Keywords whose value is a single schema.
const SCHEMA_KEYWORDS: &[&str] = &["not", "additionalItems"];

/// Keywords whose value is an array of schemas.
const SCHEMA_ARRAY_KEYWORDS: &[&str] = &["allOf", "anyOf", "oneOf"];

/// Keywords whose value is an object of schemas.
const SCHEMA_MAP_KEYWORDS: &[&str] = &["properties", "patternProperties"];

/// Converts a Kubernetes `openAPIV3Schema` (sub-)schema into a Draft 4 JSON Schema.
///
/// - `nullable: true` adds `"null"` to `type` (and `null` to `enum`); logical junctors
///   (`allOf`/`anyOf`/`oneOf`/`not`) are skipped for `null`, as kube-openapi only runs
///   the type and enum checks on `null`.
/// - `x-kubernetes-int-or-string: true` becomes `type: ["integer", "string"]` (equivalent
///   to `anyOf: [{type: integer}, {type: string}]`, with clearer errors); an `anyOf` made
///   only of `{type: integer}` / `{type: string}` branches is then dropped as redundant.
/// - Other `x-kubernetes-*` keys, `nullable`, `default`, `format`, `description`,
///   `title`, `example`, `externalDocs`, `$schema`, `id`, `$ref` and `definitions` are
///   dropped. Formats are not checked (Kubernetes' format checkers differ from
///   JSON Schema's; a false rejection would be worse than a missed one).
///
/// # Errors
/// [`SchemaError::InvalidSchema`] when a (sub-)schema is not an object, naming its path.
pub(crate) fn to_draft4(schema: &Value, path: &str) -> Result<Value, SchemaError> {
    let obj = as_schema_object(schema, path)?;
    let nullable = matches!(obj.get("nullable"), Some(Value::Bool(true)));
    let int_or_string = matches!(
        obj.get("x-kubernetes-int-or-string"),
        Some(Value::Bool(true))
    );
    let mut out = Map::new();

    for &k in PLAIN_KEYWORDS {
        if let Some(v) = obj.get(k) {
            out.insert(k.to_owned(), v.clone());
        }
    }
    for &k in SCHEMA_KEYWORDS {
        if let Some(v) = obj.get(k) {
            out.insert(k.to_owned(), to_draft4(v, &join(path, k))?);
        }
    }
    for &k in SCHEMA_ARRAY_KEYWORDS {
        if let Some(v) = obj.get(k) {
            let Value::Array(list) = v else {
                return Err(invalid(&join(path, k), "expected an array of schemas", v));
            };
            let mut converted = Vec::with_capacity(list.len());
            for (i, sub) in list.iter().enumerate() {
                converted.push(to_draft4(sub, &format!("{}[{i}]", join(path, k)))?);
            }
            out.insert(k.to_owned(), Value::Array(converted));
        }
    }
    for &k in SCHEMA_MAP_KEYWORDS {
        if let Some(v) = obj.get(k) {
            let Value::Object(map) = v else {
                return Err(invalid(&join(path, k), "expected an object of schemas", v));
            };
            let mut converted = Map::new();
            for (name, sub) in map {
                converted.insert(name.clone(), to_draft4(sub, &join(&join(path, k), name))?);
            }
            out.insert(k.to_owned(), Value::Object(converted));
        }
    }
    match obj.get("additionalProperties") {
        None => {}
        Some(Value::Bool(b)) => {
            out.insert("additionalProperties".to_owned(), Value::Bool(*b));
        }
        Some(sub) => {
            let p = join(path, "additionalProperties");
            out.insert("additionalProperties".to_owned(), to_draft4(sub, &p)?);
        }
    }
    match obj.get("items") {
        None => {}
        Some(Value::Array(list)) => {
            let mut converted = Vec::with_capacity(list.len());
            for (i, sub) in list.iter().enumerate() {
                converted.push(to_draft4(sub, &format!("{}[{i}]", join(path, "items")))?);
            }
            out.insert("items".to_owned(), Value::Array(converted));
        }
        Some(sub) => {
            out.insert("items".to_owned(), to_draft4(sub, &join(path, "items"))?);
        }
    }
    if let Some(Value::Object(deps)) = obj.get("dependencies") {
        let mut converted = Map::new();
        for (name, dep) in deps {
            let v = match dep {
                Value::Array(_) => dep.clone(),
                sub => to_draft4(sub, &join(&join(path, "dependencies"), name))?,
            };
            converted.insert(name.clone(), v);
        }
        out.insert("dependencies".to_owned(), Value::Object(converted));
    }

    if int_or_string {
        out.insert("type".to_owned(), json!(["integer", "string"]));
        let redundant = match out.get("anyOf") {
            Some(Value::Array(branches)) => branches.iter().all(is_plain_int_or_string_branch),
            _ => false,
        };
        if redundant {
            out.remove("anyOf");
        }
    }
    if nullable {
        match out.get_mut("type") {
            Some(Value::String(t)) => {
                let t = std::mem::take(t);
                out.insert("type".to_owned(), json!([t, "null"]));
            }
            Some(Value::Array(types)) if !types.iter().any(|t| t == "null") => {
                types.push(json!("null"));
            }
            _ => {}
        }
        if let Some(Value::Array(options)) = out.get_mut("enum")
            && !options.iter().any(Value::is_null)
        {
            options.push(Value::Null);
        }
        let junctors: Map<String, Value> = ["allOf", "anyOf", "oneOf", "not"]
            .iter()
            .filter_map(|&k| out.remove(k).map(|v| (k.to_owned(), v)))
            .collect();
        if !junctors.is_empty() {
            out.insert(
                "anyOf".to_owned(),
                json!([{"type": "null"}, Value::Object(junctors)]),
            );
        }
    }
    Ok(Value::Object(out))
}

fn is_plain_int_or_string_branch(branch: &Value) -> bool {
    match branch {
        Value::Object(b) => {
            b.len() == 1 && matches!(b.get("type"), Some(t) if t == "integer" || t == "string")
        }
        _ => false,
    }
}

fn invalid(path: &str, what: &str, found: &Value) -> SchemaError {
    SchemaError::InvalidSchema {
        path: path.to_owned(),
        message: format!("{what}, found {}", kind(found)),
    }
}

/// Builds the Draft 4 validator for a converted root schema, adding the Kratix
/// `metadata.name` rule (a string of 1 to [`MAX_NAME_LEN`] characters, when present).
///
/// # Errors
/// [`SchemaError::InvalidSchema`] when `jsonschema` rejects the converted schema (e.g.
/// an invalid `pattern` regex or a wrongly-typed keyword), with the failing location.
pub(crate) fn compile(draft4_root: Value) -> Result<Validator, SchemaError> {
    let wrapped = json!({
        "allOf": [
            draft4_root,
            {"properties": {"metadata": {"properties": {"name": {
                "type": "string", "minLength": 1, "maxLength": MAX_NAME_LEN
            }}}}}
        ]
    });
    jsonschema::options()
        .with_draft(Draft::Draft4)
        .should_validate_formats(false)
        .build(&wrapped)
        .map_err(|e| {
            // For a schema rejected by the meta-schema, the instance is the schema itself.
            let loc = pointer_to_dotted_schema_path(e.instance_path().as_str());
            // Drop the `allOf.0` wrapper this function added.
            let loc = loc
                .strip_prefix("allOf[0]")
                .map(|s| s.trim_start_matches('.').to_owned())
                .unwrap_or(loc);
            // Describe meta-schema violations like instance errors; anything else
            // (e.g. an unresolvable reference) keeps the crate's sentence.
            let mut mapped = Vec::new();
            map_error(&e, &wrapped, &mut mapped);
            let message = match mapped.as_slice() {
                [one] => one.message.clone(),
                _ => e.to_string(),
            };
            SchemaError::InvalidSchema { path: loc, message }
        })
}

fn pointer_to_dotted_schema_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = unescape(seg);
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            out = join(&out, &seg);
        }
    }
    out
}

/// Runs `validator` on `obj` and maps every error to [`FieldError`]s (unsorted).
pub(crate) fn validate(validator: &Validator, obj: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    for err in validator.iter_errors(obj) {
        map_error(&err, obj, &mut out);
    }
    out
}

/// Maps one `jsonschema` error onto one or more [`FieldError`]s (several for
/// `additionalProperties: false` with several unknown keys).
fn map_error(err: &ValidationError<'_>, root: &Value, out: &mut Vec<FieldError>) {
    let path = field_path(root, err.instance_path().as_str());
    let instance: &Value = err.instance();
    let message = match err.kind() {
        ValidationErrorKind::Required { property } => {
            let name = match property {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push(FieldError {
                path: push_key(&path, &name),
                message: "required field is missing".to_owned(),
            });
            return;
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                out.push(FieldError {
                    path: push_key(&path, name),
                    message: "unknown field is not allowed here".to_owned(),
                });
            }
            return;
        }
        ValidationErrorKind::Type { kind: k } => {
            // kube-openapi accepts a float with an integral value (`1.0`) as an integer
            // (`swag.IsFloat64AJSONInteger`); Draft 4 does not.
            let allows_integer = match k {
                TypeKind::Single(t) => *t == JsonType::Integer,
                TypeKind::Multiple(set) => set.contains(JsonType::Integer),
            };
            if allows_integer && is_integral_float(instance) {
                return;
            }
            let expected = match k {
                TypeKind::Single(t) => t.as_str().to_owned(),
                TypeKind::Multiple(set) => {
                    // `null` last: "integer, string or null".
                    let mut names: Vec<&str> = set.iter().map(|t| t.as_str()).collect();
                    names.sort_by_key(|n| *n == "null");
                    or_list(&names)
                }
            };
            format!("expected {expected}, found {}", describe(instance))
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("{} does not match {pattern}", show(instance))
        }
        ValidationErrorKind::Enum { options } => {
            let listed = match options.as_ref() {
                Value::Array(opts) => opts.iter().map(plain).collect::<Vec<_>>().join(", "),
                other => plain(other),
            };
            format!("{} is not one of: {listed}", show(instance))
        }
        ValidationErrorKind::Constant { expected_value } => {
            format!(
                "{} is not the required value {}",
                show(instance),
                plain(expected_value)
            )
        }
        ValidationErrorKind::Minimum { limit } => {
            format!("{} is less than the minimum {limit}", show(instance))
        }
        ValidationErrorKind::Maximum { limit } => {
            format!("{} is greater than the maximum {limit}", show(instance))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            format!("{} must be greater than {limit}", show(instance))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            format!("{} must be less than {limit}", show(instance))
        }
        ValidationErrorKind::MultipleOf { multiple_of } => {
            format!("{} is not a multiple of {multiple_of}", show(instance))
        }
        ValidationErrorKind::MinLength { limit } => format!(
            "{} is {} long, expected at least {}",
            show(instance),
            count(str_len(instance), "character"),
            count_limit(*limit, "character"),
        ),
        ValidationErrorKind::MaxLength { limit } => format!(
            "{} is {} long, expected at most {}",
            show(instance),
            count(str_len(instance), "character"),
            count_limit(*limit, "character"),
        ),
        ValidationErrorKind::MinItems { limit } => format!(
            "list has {}, expected at least {}",
            count(arr_len(instance), "item"),
            count_limit(*limit, "item"),
        ),
        ValidationErrorKind::MaxItems { limit } => format!(
            "list has {}, expected at most {}",
            count(arr_len(instance), "item"),
            count_limit(*limit, "item"),
        ),
        ValidationErrorKind::MinProperties { limit } => format!(
            "object has {}, expected at least {}",
            count(obj_len(instance), "field"),
            count_limit(*limit, "field"),
        ),
        ValidationErrorKind::MaxProperties { limit } => format!(
            "object has {}, expected at most {}",
            count(obj_len(instance), "field"),
            count_limit(*limit, "field"),
        ),
        ValidationErrorKind::UniqueItems => {
            "list has duplicate items, expected unique items".into()
        }
        ValidationErrorKind::AdditionalItems { limit } => format!(
            "list has {}, expected at most {}",
            count(arr_len(instance), "item"),
            count_limit(*limit as u64, "item"),
        ),
        ValidationErrorKind::AnyOf { context } => format!(
            "{} matches none of the allowed alternatives{}",
            describe(instance),
            alternatives(context, root, &path),
        ),
        ValidationErrorKind::OneOfNotValid { context } => format!(
            "{} matches none of the oneOf alternatives, expected exactly one{}",
            describe(instance),
            alternatives(context, root, &path),
        ),
        ValidationErrorKind::OneOfMultipleValid { .. } => format!(
            "{} matches more than one of the oneOf alternatives, expected exactly one",
            describe(instance)
        ),
        ValidationErrorKind::Not { schema } => {
            format!("{} must not match the schema {schema}", describe(instance))
        }
        ValidationErrorKind::FalseSchema => "no value is allowed here".into(),
        ValidationErrorKind::Format { format } => {
            format!("{} is not a valid {format}", show(instance))
        }
        // Keywords Kubernetes schemas cannot contain, or engine failures: the crate's
        // own sentence is the best available.
        _ => err.to_string(),
    };
    out.push(FieldError { path, message });
}

/// `: [1] msg; [2] field: msg` listing why each alternative failed, or empty. Paths
/// are shown relative to `outer`, the path of the value the alternatives apply to.
fn alternatives(context: &[Vec<ValidationError<'static>>], root: &Value, outer: &str) -> String {
    let mut parts = Vec::new();
    for (i, branch) in context.iter().enumerate() {
        let mut mapped = Vec::new();
        for e in branch {
            map_error(e, root, &mut mapped);
        }
        mapped.sort();
        mapped.dedup();
        let text = mapped
            .iter()
            .map(|f| match f.path.strip_prefix(outer) {
                Some("") => f.message.clone(),
                Some(rest) if rest.starts_with('.') || rest.starts_with('[') => {
                    format!("{}: {}", rest.trim_start_matches('.'), f.message)
                }
                _ => format!("{}: {}", f.path, f.message),
            })
            .collect::<Vec<_>>()
            .join(", ");
        if !text.is_empty() {
            parts.push(format!("[{}] {text}", i + 1));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

/// A JSON number stored as a float whose value is a whole number within ±2^53.
fn is_integral_float(v: &Value) -> bool {
    const MAX_SAFE: f64 = 9_007_199_254_740_992.0;
    match v {
        Value::Number(n) if n.is_f64() => n
            .as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.abs() <= MAX_SAFE),
        _ => false,
    }
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn count(n: usize, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn count_limit(n: u64, unit: &str) -> String {
    count(usize::try_from(n).unwrap_or(usize::MAX), unit)
}

fn str_len(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn arr_len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

fn obj_len(v: &Value) -> usize {
    v.as_object().map_or(0, Map::len)
}

/// Longest rendering of a value inside a message before it is shortened.
const SHOW_MAX: usize = 100;

/// The value as JSON, shortened when long: `"medium"`, `3`, `{…}`.
fn show(v: &Value) -> String {
    let s = match v {
        Value::Array(a) if !a.is_empty() => return format!("[…{}]", count(a.len(), "item")),
        Value::Object(o) if !o.is_empty() => return format!("{{…{}}}", count(o.len(), "field")),
        other => other.to_string(),
    };
    if s.chars().count() > SHOW_MAX {
        let cut: String = s.chars().take(SHOW_MAX).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// The value with its type: `integer 3`, `string "x"`, `null`, `object`, `array`.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Array(_) => "array".to_owned(),
        Value::Object(_) => "object".to_owned(),
        other => format!("{} {}", kind(other), show(other)),
    }
}

/// Strings without quotes, everything else as JSON (for enum option lists).
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

/// Turns the JSON pointer of an instance location into a dotted field path, walking
/// `root` to tell array indexes (`[0]`) from object keys that look like numbers.
pub(crate) fn field_path(root: &Value, pointer: &str) -> String {
    let mut out = String::new();
    let mut cur = Some(root);
    if pointer.is_empty() {
        return out;
    }
    for seg in pointer.split('/').skip(1) {
        let key = unescape(seg);
        match cur {
            Some(Value::Array(items)) if key.parse::<usize>().is_ok() => {
                let i = key.parse::<usize>().unwrap_or(0);
                out.push_str(&format!("[{i}]"));
                cur = items.get(i);
            }
            Some(Value::Object(map)) => {
                cur = map.get(&key);
                out = push_key(&out, &key);
            }
            _ => {
                cur = None;
                out = push_key(&out, &key);
            }
        }
    }
    out
}

/// Appends an object key to a field path: `.key`, or `["key"]` when the key contains
/// characters that would make the dotted path ambiguous (`.`, `[`, `]`, `"`) or is empty.
pub(crate) fn push_key(path: &str, key: &str) -> String {
    let needs_brackets = key.is_empty() || key.contains(['.', '[', ']', '"']);
    if needs_brackets {
        format!("{path}[{}]", Value::String(key.to_owned()))
    } else if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths() {
        let root =
            json!({"spec": {"containers": [{"image": 1}], "labels": {"a.b/c": "x", "0": 1}}});
        assert_eq!(field_path(&root, ""), "");
        assert_eq!(
            field_path(&root, "/spec/containers/0/image"),
            "spec.containers[0].image"
        );
        assert_eq!(
            field_path(&root, "/spec/labels/a.b~1c"),
            "spec.labels[\"a.b/c\"]"
        );
        assert_eq!(field_path(&root, "/spec/labels/0"), "spec.labels.0");
        assert_eq!(push_key("", "spec"), "spec");
        assert_eq!(push_key("spec", ""), "spec[\"\"]");
    }

    #[test]
    fn or_lists() {
        assert_eq!(or_list(&["a"]), "a");
        assert_eq!(or_list(&["a", "b"]), "a or b");
        assert_eq!(or_list(&["a", "b", "c"]), "a, b or c");
    }

    #[test]
    fn converts_nullable_and_int_or_string() {
        let got = to_draft4(
            &json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                "a": {"type": "string", "nullable": true, "enum": ["x"], "default": "x"},
                "p": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "q": {"x-kubernetes-int-or-string": true, "nullable": true}
            }}),
            "",
        )
        .expect("valid schema");
        assert_eq!(
            got,
            json!({"type": "object", "properties": {
                "a": {"type": ["string", "null"], "enum": ["x", null]},
                "p": {"type": ["integer", "string"]},
                "q": {"type": ["integer", "string", "null"]}
            }})
        );
    }
}
