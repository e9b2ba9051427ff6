//! Input generators shared by the targets: JSON-like values with Kubernetes-ish keys and
//! YAML-tricky scalars, their YAML text, byte-level mutations of it, raw bytes, and the
//! pathological YAML a parser must refuse cheaply (alias bombs, deep nesting, long scalars,
//! many documents).

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Number, Value};

/// Keys the config, metadata and schema parsers look at, plus a few odd ones.
pub const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "status",
    "size",
    "replicas",
    "tier",
    "owner",
    "tags",
    "limits",
    "api",
    "workflows",
    "resource",
    "promise",
    "configure",
    "delete",
    "containers",
    "image",
    "command",
    "env",
    "value",
    "valueFrom",
    "destinationSelectors",
    "matchLabels",
    "directory",
    "path",
    "stateStoreRef",
    "url",
    "branch",
    "conditions",
    "type",
    "message",
    "kratix",
    "suspend",
    "retryAfter",
    "ref",
    "versions",
    "served",
    "storage",
    "schema",
    "openAPIV3Schema",
    "properties",
    "items",
    "required",
    "default",
    "<<",
    "",
    "x",
    "a b",
    "é",
    "kratix.io/x",
];

/// Scalars that YAML readers disagree about or that probe a parser's edges.
pub const WORDS: &[&str] = &[
    "",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "~",
    "null",
    "Null",
    "true",
    "True",
    "false",
    "1e3",
    "0x1F",
    "0o17",
    "012",
    "-0",
    ".inf",
    "-.inf",
    ".nan",
    "1_000",
    "12:30:00",
    "2001-12-14",
    "<<",
    "&a",
    "*a",
    "!!str",
    "!!binary",
    "!custom",
    "---",
    "...",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "#",
    "%YAML 1.2",
    "@",
    "`",
    "|",
    ">",
    "\t",
    "\u{feff}",
    "\0",
    "\u{85}",
    "\u{2028}",
    "é",
    "🦀",
    "a\nb",
    "platform.kratix.io/v1alpha1",
    "example.com/v1",
    "Promise",
    "App",
    "Pipeline",
    "Destination",
    "GitStateStore",
    "BucketStateStore",
    "default",
    "good",
    "bad",
    "dev",
    "render",
    "5m",
    "1h30m",
    "-1s",
    "9999999999999h",
    "refs/heads/main",
    "../x",
    "/abs",
    ".",
    "a/b",
    "sha256=00",
    "\\",
    "\\u0000",
];

/// Tokens a mutation inserts: YAML syntax, indentation and document markers.
pub const TOKENS: &[&str] = &[
    ":",
    ": ",
    "-",
    "- ",
    "&a ",
    "*a",
    "&b [*a, *a]",
    "!!str ",
    "!x ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "#",
    "\t",
    "\n",
    "\n  ",
    "\n---\n",
    "\n...\n",
    "<<: *a",
    "? ",
    "|",
    ">-",
    "%TAG ",
    "\u{feff}",
    "\r\n",
    "\0",
    "  ",
    "~",
    "null",
    "yes",
    "9e999",
    "-9223372036854775809",
];

/// A string: a tricky word, a plain identifier, or anything.
pub fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(WORDS).prop_map(str::to_string),
        2 => "[a-z0-9.-]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(40).collect()),
    ]
}

/// A key: a known key, or any word.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => select(KEYS).prop_map(str::to_string), 1 => word()]
}

/// A JSON scalar.
pub fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => (-5i64..10).prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        3 => word().prop_map(Value::String),
    ]
}

/// A JSON value up to 4 levels deep with Kubernetes-ish keys.
pub fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object with Kubernetes-ish keys.
pub fn object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(key(), value(), 0..6).prop_map(|m| m.into_iter().collect())
}

/// YAML text of `v` (serde-saphyr; JSON text when it refuses).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|_| v.to_string())
}

/// One byte-level edit: (position seed, operation, token).
pub type Edit = (usize, u8, &'static str);

/// Up to `n` edits.
pub fn edits(n: usize) -> impl Strategy<Value = Vec<Edit>> {
    vec((any::<usize>(), 0u8..5, select(TOKENS)), 0..=n)
}

/// Applies `edits` to `bytes`: insert a token, delete a few bytes, replace a byte, duplicate
/// a line, or truncate.
pub fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for &(pos, op, token) in edits {
        let at = pos % (bytes.len() + 1);
        match op {
            0 => {
                bytes.splice(at..at, token.bytes());
            }
            1 => {
                let end = (at + 1 + pos % 8).min(bytes.len());
                bytes.drain(at..end);
            }
            2 => {
                if at < bytes.len() {
                    bytes[at] = (pos >> 8) as u8;
                }
            }
            3 => {
                let start = bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |i| at + i + 1);
                let line = bytes[start..end].to_vec();
                bytes.splice(start..start, line);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// Text from bytes for the `&str` parsers.
pub fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `width` copies of an alias at each of `depth` levels: expands to `width^depth` nodes.
pub fn alias_bomb(depth: usize, width: usize, merge: bool) -> String {
    let mut s = String::from("a0: &a0 [\"lol\", \"lol\"]\n");
    for d in 1..depth {
        let refs = vec![format!("*a{}", d - 1); width].join(", ");
        if merge {
            s.push_str(&format!("a{d}: &a{d} {{<<: [{refs}], k{d}: [{refs}]}}\n"));
        } else {
            s.push_str(&format!("a{d}: &a{d} [{refs}]\n"));
        }
    }
    s.push_str(&format!("spec: {{size: *a{}}}\n", depth.saturating_sub(1)));
    s
}

/// `n` levels of nesting: flow sequences, flow maps, block maps or block sequences.
pub fn deep(n: usize, style: u8) -> String {
    match style % 4 {
        0 => format!("{}{}", "[".repeat(n), "]".repeat(n)),
        1 => format!("{}1{}", "{a: ".repeat(n), "}".repeat(n)),
        2 => (0..n.min(600))
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect(),
        _ => (0..n.min(600))
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect(),
    }
}

/// Pathological YAML: alias bombs, deep nesting, a long scalar, many documents, many keys.
pub fn pathological() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (2usize..14, 2usize..12, any::<bool>())
            .prop_map(|(d, w, m)| alias_bomb(d, w, m).into_bytes()),
        (1usize..200_000, any::<u8>()).prop_map(|(n, s)| deep(n, s).into_bytes()),
        (0usize..300_000).prop_map(|n| format!("spec:\n  owner: {}\n", "a".repeat(n)).into_bytes()),
        (0usize..20_000).prop_map(|n| "---\na: 1\n".repeat(n).into_bytes()),
        (0usize..20_000).prop_map(|n| (0..n)
            .map(|i| format!("k{i}: {i}\n"))
            .collect::<String>()
            .into_bytes()),
        (0usize..5_000).prop_map(|n| format!("a: &a [{}]\nb: *a\n", "1,".repeat(n)).into_bytes()),
    ]
}

/// YAML-ish bytes: `structured` text mutated, raw bytes, or pathological YAML.
pub fn yaml_bytes(
    structured: impl Strategy<Value = String> + Clone,
) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => structured.clone().prop_map(String::into_bytes),
        4 => (structured, edits(4)).prop_map(|(t, e)| mutate(t.into_bytes(), &e)),
        1 => vec(any::<u8>(), 0..512),
        1 => (value().prop_map(|v| to_yaml(&v)), edits(3)).prop_map(|(t, e)| mutate(t.into_bytes(), &e)),
        1 => pathological(),
    ]
}
