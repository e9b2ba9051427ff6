//! Fuzz targets (issue 23 part 4): property tests of every parser that takes outside input,
//! on stable Rust with proptest. Each target draws structure-aware inputs (valid-ish YAML,
//! JSON, tar built from generated entries, then mutated byte by byte), raw bytes and
//! pathological YAML (alias bombs, deep nesting), and checks that the parser answers with a
//! value or an error: never a panic, never a hang (each case runs on its own thread with a
//! timeout), never more than 256 MiB allocated for one case (a counting global allocator),
//! plus target-specific properties (below).
//!
//! Targets (one `#[test]` each; they run one at a time):
//! - `config_yaml`: `config::parse_documents` → `config::classify` → `validate::validate`
//!   on a config repo (the bad-input corpus's good base) with mutated or added files;
//!   every diagnostic names an input file; an added file of random bytes never keeps the
//!   good request out.
//! - `schema_admission`: `CrdSchema::new` and `admit` on generated `openAPIV3Schema`s and
//!   objects (admit is idempotent, as documented), and the same schema and object through a
//!   Promise and a request in `validate::validate`.
//! - `destination_selectors`, `status_yaml`, `workflow_control`: the readers of
//!   `/kratix/metadata` (`pipeline::metadata`), with the invariants of their results.
//! - `webhook`: `daemon::webhook::verify`, `pushed_ref`, `moves`: a signature made with the
//!   secret verifies, one over a changed body or with another secret does not.
//! - `layer_tar`: `image::apply_layers` on generated layers (plain, gzip, zstd) with
//!   escaping paths, links, whiteouts and devices: nothing outside the root changes.
//!
//! CI (`cargo test --test fuzz`): a few hundred cases per target, fixed seeds. The long form
//! (docs/reliability.md "Fuzzing"): `PROMISED_FUZZ_SECONDS=600 nice -n 10 cargo test --test
//! fuzz -- --nocapture` runs every target for 10 minutes with random seeds; name a target to
//! run only it. A failure prints the minimal input and the seed; it becomes a case in
//! `testdata/bad/` and gets fixed.

mod harness;
mod inputs;
mod tar;

use std::collections::BTreeSet;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};

use harness::fuzz;
use inputs::{edits, key, mutate, text, to_yaml, value, word, yaml_bytes};
use promised::config::{self, RawFile};
use promised::daemon::webhook;
use promised::pipeline::WorkflowType;
use promised::pipeline::metadata;
use promised::schema::CrdSchema;

/// The bad-input corpus's good base: a Promise `app`, a state store and Destination, and the
/// request `app/default/good`.
const BASE: &[(&str, &str)] = &[
    (
        "promises/app/promise.yaml",
        include_str!("../../testdata/bad/_base/promises/app/promise.yaml"),
    ),
    (
        "platform/platform.yaml",
        include_str!("../../testdata/bad/_base/platform/platform.yaml"),
    ),
    (
        "requests/good.yaml",
        include_str!("../../testdata/bad/_base/requests/good.yaml"),
    ),
];

const PATHS: &[&str] = &[
    "requests/bad.yaml",
    "platform/bad.yaml",
    "promises/app/extra.yaml",
    "promises/other/promise.yaml",
    "a/b/c.yml",
    "promised-policy.yaml",
    "x.yaml",
];

fn raw(path: &str, bytes: Vec<u8>) -> RawFile {
    RawFile {
        path: path.to_string(),
        oid: config::source::blob_id(&bytes),
        bytes,
        executable: false,
    }
}

/// A Kratix-ish document: a known apiVersion/kind with random metadata and spec.
fn kratix_doc() -> impl Strategy<Value = String> {
    let kinds = select(
        &[
            ("platform.kratix.io/v1alpha1", "Promise"),
            ("platform.kratix.io/v1alpha1", "Destination"),
            ("platform.kratix.io/v1alpha1", "GitStateStore"),
            ("platform.kratix.io/v1alpha1", "BucketStateStore"),
            ("platform.kratix.io/v1alpha1", "HealthRecord"),
            ("platform.kratix.io/v1alpha1", "ResourceBinding"),
            ("platform.kratix.io/v1alpha1", "UpgradePlan"),
            ("platform.kratix.io/v1alpha1", "Work"),
            ("example.com/v1", "App"),
            ("example.com/v2", "App"),
            ("v1", "ConfigMap"),
        ][..],
    );
    (kinds, word(), inputs::object(), value()).prop_map(|((api, kind), name, spec, extra)| {
        to_yaml(&json!({
            "apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec, "extra": extra,
        }))
    })
}

/// (base files, each maybe mutated; added files).
type Repo = (
    Vec<(usize, Vec<inputs::Edit>)>,
    Vec<(String, Vec<u8>, bool)>,
);

fn repo() -> impl Strategy<Value = Repo> {
    let structured =
        prop_oneof![kratix_doc(), select(BASE).prop_map(|(_, t)| t.to_string())].boxed();
    (
        vec((0..BASE.len(), edits(3)), 0..3),
        vec(
            (
                select(PATHS).prop_map(str::to_string),
                yaml_bytes(structured),
                any::<bool>(),
            ),
            0..3,
        ),
    )
}

fn check_config((mutations, added): Repo) -> Result<(), String> {
    let mut files: Vec<RawFile> = BASE
        .iter()
        .enumerate()
        .map(|(i, (p, t))| {
            let bytes = mutations
                .iter()
                .filter(|(m, _)| *m == i)
                .fold(t.as_bytes().to_vec(), |b, (_, e)| mutate(b, e));
            raw(p, bytes)
        })
        .collect();
    let base_intact = mutations.iter().all(|(_, e)| e.is_empty());
    let only_random = added.iter().all(|(_, _, random)| *random);
    for (n, (p, bytes, random)) in added.into_iter().enumerate() {
        // A "random" added file is raw bytes that are not YAML of a mapping document.
        let bytes = if random {
            [&b"\x00"[..], &bytes].concat()
        } else {
            bytes
        };
        files.push(raw(&format!("{n}/{p}"), bytes));
    }
    let paths: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let (docs, mut diags) = config::parse_documents(&files);
    let mut objects = config::classify(docs);
    objects.diagnostics.append(&mut diags);
    let cfg = promised::validate::validate(objects);
    for d in &cfg.diagnostics {
        let _ = d.to_string();
        if !d.file.is_empty() && !paths.contains(d.file.as_str()) {
            return Err(format!(
                "diagnostic names a file that is not in the repo: {d}"
            ));
        }
    }
    for r in &cfg.requests {
        let _ = promised::validate::to_yaml(&r.object());
    }
    if base_intact && only_random && !cfg.requests.iter().any(|r| r.id.name == "good") {
        return Err(format!(
            "a file of random bytes kept app/default/good out: {:#?}",
            cfg.diagnostics
        ));
    }
    Ok(())
}

#[test]
fn config_yaml() {
    fuzz("config_yaml", 200, repo(), check_config);
}

const PATTERNS: &[&str] = &[
    "^[a-z]+$",
    "(a+)+$",
    "(a|aa)+$",
    "^(\\w+\\s?)*$",
    "[",
    "\\",
    "(?=a)a",
    "\\p{L}+",
    "a{1000}{1000}",
    ".*.*.*=.*",
    "(?<n>a)\\k<n>",
    "^$",
    "(?i)abc",
    "\\d{2,}",
    "[^]]",
];

/// A structural-ish `openAPIV3Schema` node.
fn schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        (
            proptest::option::of(select(PATTERNS)),
            proptest::option::of(0u64..20),
            proptest::option::of(vec(word(), 0..4)),
            proptest::option::of(inputs::scalar())
        )
            .prop_map(|(p, max, en, def)| {
                let mut m = Map::new();
                m.insert("type".into(), "string".into());
                if let Some(p) = p {
                    m.insert("pattern".into(), p.into());
                }
                if let Some(x) = max {
                    m.insert("maxLength".into(), x.into());
                }
                if let Some(e) = en {
                    m.insert("enum".into(), e.into());
                }
                if let Some(d) = def {
                    m.insert("default".into(), d);
                }
                Value::Object(m)
            }),
        (
            select(&["integer", "number"][..]),
            proptest::option::of(-5i64..5),
            proptest::option::of(-5i64..50),
            proptest::option::of(inputs::scalar())
        )
            .prop_map(|(t, min, max, def)| {
                let mut m = Map::new();
                m.insert("type".into(), t.into());
                if let Some(x) = min {
                    m.insert("minimum".into(), x.into());
                }
                if let Some(x) = max {
                    m.insert("maximum".into(), x.into());
                }
                if let Some(d) = def {
                    m.insert("default".into(), d);
                }
                Value::Object(m)
            }),
        Just(json!({"type": "boolean", "default": true})),
        Just(json!({"x-kubernetes-int-or-string": true})),
        Just(json!({"x-kubernetes-preserve-unknown-fields": true})),
        Just(json!({})),
        (key(), value()).prop_map(|(k, v)| json!({ k: v })),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            (
                btree_map(key(), inner.clone(), 0..5),
                vec(key(), 0..3),
                proptest::option::of(prop_oneof![
                    any::<bool>().prop_map(Value::Bool),
                    inner.clone()
                ]),
                any::<bool>(),
                proptest::option::of(value())
            )
                .prop_map(|(props, req, ap, preserve, def)| {
                    let mut m = Map::new();
                    m.insert("type".into(), "object".into());
                    m.insert(
                        "properties".into(),
                        Value::Object(props.into_iter().collect()),
                    );
                    m.insert("required".into(), req.into());
                    if let Some(a) = ap {
                        m.insert("additionalProperties".into(), a);
                    }
                    if preserve {
                        m.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
                    }
                    if let Some(d) = def {
                        m.insert("default".into(), d);
                    }
                    Value::Object(m)
                }),
            (
                inner.clone(),
                proptest::option::of(0u64..4),
                proptest::option::of(select(&["set", "map", "atomic"][..])),
                any::<bool>()
            )
                .prop_map(|(items, max, lt, unique)| {
                    let mut m = Map::new();
                    m.insert("type".into(), "array".into());
                    m.insert("items".into(), items);
                    if let Some(x) = max {
                        m.insert("maxItems".into(), x.into());
                    }
                    if let Some(t) = lt {
                        m.insert("x-kubernetes-list-type".into(), t.into());
                        m.insert("x-kubernetes-list-map-keys".into(), json!(["name"]));
                    }
                    if unique {
                        m.insert("uniqueItems".into(), true.into());
                    }
                    Value::Object(m)
                }),
            (
                select(&["allOf", "anyOf", "oneOf"][..]),
                vec(inner.clone(), 0..3)
            )
                .prop_map(|(k, v)| json!({ k: v })),
            inner.clone().prop_map(|n| json!({"not": n})),
            (inner, any::<bool>()).prop_map(|(mut n, nullable)| {
                if let Value::Object(m) = &mut n {
                    m.insert("nullable".into(), nullable.into());
                }
                n
            }),
        ]
    })
}

fn check_schema((spec_schema, spec): (Value, Value)) -> Result<(), String> {
    let root = json!({"type": "object", "properties": {"spec": spec_schema}});
    let request = json!({
        "apiVersion": "example.com/v1", "kind": "App",
        "metadata": {"name": "good", "namespace": "default"}, "spec": spec,
    });
    if let Ok(s) = CrdSchema::new(&root) {
        let mut once = request.clone();
        let errors = s.admit(&mut once);
        let mut twice = once.clone();
        let again = s.admit(&mut twice);
        if twice != once || again != errors {
            return Err(format!(
                "admit is not idempotent:\nonce {once:#}\n{errors:?}\ntwice {twice:#}\n{again:?}"
            ));
        }
        for e in &errors {
            let _ = e.to_string();
        }
    }
    // The same through a Promise and a request, as the daemon reads them.
    let mut promise: Value = serde_saphyr::from_str(BASE[0].1).map_err(|e| e.to_string())?;
    promise["spec"]["api"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = root;
    let files = vec![
        raw(
            "promises/app/promise.yaml",
            promise.to_string().into_bytes(),
        ),
        raw("platform/platform.yaml", BASE[1].1.as_bytes().to_vec()),
        raw("requests/good.yaml", to_yaml(&request).into_bytes()),
    ];
    let (docs, diags) = config::parse_documents(&files);
    if let Some(d) = diags.first() {
        return Err(format!("generated files do not parse: {d}"));
    }
    let cfg = promised::validate::validate(config::classify(docs));
    for d in &cfg.diagnostics {
        let _ = d.to_string();
    }
    Ok(())
}

#[test]
fn schema_admission() {
    fuzz("schema_admission", 200, (schema(), value()), check_schema);
}

fn selectors_text() -> impl Strategy<Value = String> {
    let dir = select(
        &[
            ".", "", "a", "b", "x", "a/b", "../x", "/abs", "./a/", "a/..", "..", "b//",
        ][..],
    );
    vec(
        (
            proptest::option::of(dir),
            proptest::option::of(btree_map(word(), inputs::scalar(), 0..3)),
        ),
        0..4,
    )
    .prop_map(|entries| {
        let list: Vec<Value> = entries
            .into_iter()
            .map(|(d, l)| {
                let mut m = Map::new();
                if let Some(d) = d {
                    m.insert("directory".into(), d.into());
                }
                if let Some(l) = l {
                    m.insert("matchLabels".into(), Value::Object(l.into_iter().collect()));
                }
                Value::Object(m)
            })
            .collect();
        to_yaml(&Value::Array(list))
    })
}

fn check_selectors((bytes, dirs): (Vec<u8>, BTreeSet<String>)) -> Result<(), String> {
    match metadata::parse_destination_selectors(&text(bytes), &dirs) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(list) => {
            let mut seen = BTreeSet::new();
            for s in &list {
                if s.match_labels.is_empty() {
                    return Err(format!(
                        "an entry with empty matchLabels was accepted: {list:?}"
                    ));
                }
                if !seen.insert(s.directory.clone()) {
                    return Err(format!("a duplicate directory was accepted: {list:?}"));
                }
                if let Some(d) = &s.directory
                    && !dirs.contains(d)
                {
                    return Err(format!("directory {d:?} is not in the output: {list:?}"));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn destination_selectors() {
    let dirs = proptest::collection::btree_set(
        select(&["a", "b", "x", "..", ""][..]).prop_map(str::to_string),
        0..4,
    );
    fuzz(
        "destination_selectors",
        300,
        (yaml_bytes(selectors_text().boxed()), dirs),
        check_selectors,
    );
}

fn status_text() -> impl Strategy<Value = String> {
    (
        inputs::object(),
        vec(
            btree_map(
                select(&["type", "status", "message", "reason"][..]).prop_map(str::to_string),
                inputs::scalar(),
                0..4,
            ),
            0..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(mut m, conditions, kratix)| {
            m.insert(
                "conditions".into(),
                conditions
                    .into_iter()
                    .map(|c| Value::Object(c.into_iter().collect()))
                    .collect(),
            );
            if kratix {
                m.insert("kratix".into(), json!({"workflows": {}}));
            }
            to_yaml(&Value::Object(m))
        })
}

fn check_status(
    (bytes, existing, promise): (Vec<u8>, Map<String, Value>, bool),
) -> Result<(), String> {
    match metadata::parse_status(&text(bytes)) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(None) => {}
        Ok(Some(incoming)) => {
            if incoming.contains_key("kratix") {
                return Err(format!(
                    "a status with a kratix key was accepted: {incoming:?}"
                ));
            }
            let ty = if promise {
                WorkflowType::Promise
            } else {
                WorkflowType::Resource
            };
            let merged = metadata::merge_status(&existing, &incoming, ty);
            if !promise && incoming.keys().any(|k| !merged.contains_key(k)) {
                return Err(format!(
                    "merge lost an incoming key: {incoming:?} → {merged:?}"
                ));
            }
            if existing.keys().any(|k| !merged.contains_key(k)) {
                return Err(format!(
                    "merge lost an existing key: {existing:?} → {merged:?}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn status_yaml() {
    fuzz(
        "status_yaml",
        300,
        (
            yaml_bytes(status_text().boxed()),
            inputs::object(),
            any::<bool>(),
        ),
        check_status,
    );
}

const DURATIONS: &[&str] = &[
    "5m",
    "1h30m",
    "-1s",
    "0",
    "",
    " ",
    "1.5h",
    "1µs",
    "1us",
    "300ms",
    "2562047h47m16.854775807s",
    "2562048h",
    "9999999999999999999h",
    "+5m",
    ".5s",
    "1.s",
    "h",
    "5",
    "5mm",
    "1e9h",
    "-0",
    "0.000000001ns",
    "1ns",
    "18446744073709551616ns",
    "1h-1m",
    "999999999999m",
];

fn control_text() -> impl Strategy<Value = String> {
    (
        proptest::option::of(prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            inputs::scalar()
        ]),
        proptest::option::of(
            prop_oneof![3 => select(DURATIONS).prop_map(Value::from), 1 => inputs::scalar()],
        ),
        proptest::option::of(inputs::scalar()),
    )
        .prop_map(|(s, r, m)| {
            let mut map = Map::new();
            if let Some(s) = s {
                map.insert("suspend".into(), s);
            }
            if let Some(r) = r {
                map.insert("retryAfter".into(), r);
            }
            if let Some(m) = m {
                map.insert("message".into(), m);
            }
            to_yaml(&Value::Object(map))
        })
}

fn check_control(bytes: Vec<u8>) -> Result<(), String> {
    match metadata::parse_workflow_control(&text(bytes)) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(c) => {
            let _ = format!("{c:?}");
        }
    }
    Ok(())
}

#[test]
fn workflow_control() {
    fuzz(
        "workflow_control",
        300,
        yaml_bytes(control_text().boxed()),
        check_control,
    );
}

/// (secret, body, header name, header value, followed ref, a byte to flip).
type Delivery = (Vec<u8>, Vec<u8>, &'static str, String, String, usize);

fn delivery() -> impl Strategy<Value = Delivery> {
    let body = prop_oneof![
        vec(any::<u8>(), 0..1024),
        (word(), value()).prop_map(|(r, v)| json!({"ref": r, "after": v}).to_string().into_bytes()),
        yaml_bytes(word().boxed()),
    ];
    (
        vec(any::<u8>(), 1..64),
        body,
        select(
            &[
                "x-hub-signature-256",
                "x-gitea-signature",
                "x-gitlab-token",
                "x-other",
            ][..],
        ),
        prop_oneof![word(), "sha256=[0-9a-f]{0,70}", "[0-9a-fA-F ]{0,70}"],
        prop_oneof![Just("HEAD".to_string()), Just("main".to_string()), word()],
        any::<usize>(),
    )
}

fn verify_with(
    secret: &[u8],
    body: &[u8],
    name: &str,
    v: &str,
) -> Result<(), webhook::WebhookError> {
    webhook::verify(Some(secret), body, |n| (n == name).then_some(v))
}

fn check_webhook((secret, body, header, value, followed, flip): Delivery) -> Result<(), String> {
    let h = |name: &str| (name == header).then_some(value.as_str());
    let _ = webhook::verify(Some(&secret), &body, h);
    if webhook::verify(None, &body, h).is_err() {
        return Err("with no secret every call is accepted".into());
    }
    let sig = webhook::sign(&secret, &body);
    let github = format!("sha256={sig}");
    let ok = |name: &str, v: &str| verify_with(&secret, &body, name, v);
    if ok("x-hub-signature-256", &github).is_err() || ok("x-gitea-signature", &sig).is_err() {
        return Err("a signature made with the secret does not verify".into());
    }
    if let Ok(token) = std::str::from_utf8(&secret)
        && ok("x-gitlab-token", token).is_err()
    {
        return Err("the GitLab token equal to the secret does not verify".into());
    }
    let mut other = secret.clone();
    other[flip % secret.len()] ^= 1;
    if webhook::verify(Some(&other), &body, |n| {
        (n == "x-hub-signature-256").then_some(github.as_str())
    })
    .is_ok()
    {
        return Err("a signature made with another secret verifies".into());
    }
    if !body.is_empty() {
        let mut changed = body.clone();
        changed[flip % body.len()] ^= 0x20;
        if webhook::verify(Some(&secret), &changed, |n| {
            (n == "x-hub-signature-256").then_some(github.as_str())
        })
        .is_ok()
        {
            return Err("a signature over another body verifies".into());
        }
    }
    // An empty secret would let anyone sign: it refuses every call.
    if webhook::verify(Some(b""), &body, |n| (n == "x-gitlab-token").then_some("")).is_ok() {
        return Err("an empty secret accepted an empty token".into());
    }
    let pushed = webhook::pushed_ref(&body);
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&body)
        && let Some(Value::String(r)) = m.get("ref")
        && pushed.as_deref() != Some(r.as_str())
    {
        return Err(format!("pushed_ref missed {r:?}"));
    }
    if let Some(p) = pushed
        && (!webhook::moves(&p, &p) || !webhook::moves("HEAD", &p))
    {
        return Err(format!("a push to {p:?} does not move its own ref"));
    }
    let _ = webhook::moves(&followed, &value);
    Ok(())
}

#[test]
fn webhook_deliveries() {
    fuzz("webhook", 500, delivery(), check_webhook);
}

/// The pathological inputs at their largest, each once, through every YAML reader: an alias
/// bomb of 11^13 nodes and 200,000 levels of nesting are refused (an error, no panic, no
/// stack overflow, bounded memory and time, as every fuzz case). The alias bomb is the most
/// expensive input of all: serde-saphyr's budget (250,000 nodes) refuses it after about
/// 100 MiB and, in a debug build, a few seconds per reader.
#[test]
fn pathological_yaml_is_refused() {
    let cases: Vec<(&str, String, bool)> = vec![
        ("alias bomb 11^13", inputs::alias_bomb(13, 11, false), true),
        (
            "alias bomb 11^13 with merge keys",
            inputs::alias_bomb(13, 11, true),
            true,
        ),
        (
            "200,000 nested flow sequences",
            inputs::deep(200_000, 0),
            true,
        ),
        ("200,000 nested flow maps", inputs::deep(200_000, 1), true),
        ("600 nested block maps", inputs::deep(600, 2), false),
        ("600 nested block sequences", inputs::deep(600, 3), false),
    ];
    for (name, text, must_fail) in cases {
        harness::once(name, (text, must_fail), |(text, must_fail)| {
            let config = config::parse_yaml_stream(&text);
            if must_fail && config.is_ok() {
                return Err("the config reader accepted it".into());
            }
            // The selectors and workflow-control readers share one YAML path: one of them.
            let selectors = metadata::parse_destination_selectors(&text, &BTreeSet::new());
            let status = metadata::parse_status(&text);
            if must_fail && (selectors.is_ok() || status.is_ok()) {
                return Err("a /kratix/metadata reader accepted it".into());
            }
            Ok(())
        });
    }
}
