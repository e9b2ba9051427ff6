//! Parsing the files a Pipeline leaves in `/kratix/metadata`, and the status merge.
//!
//! Pure functions, no I/O (kratix-contract.md §2.5–§2.7):
//! - [`parse_destination_selectors`]: `destination-selectors.yaml` (hyphen; Kratix:
//!   `work-creator/lib/work_creator.go:ParseDestinationSelectors`).
//! - [`parse_status`] and [`merge_status`]: `status.yaml` (Kratix: `work-creator/cmd/update_status.go`,
//!   `work-creator/lib/status_updater.go`).
//! - [`parse_workflow_control`]: `workflow-control.yaml` (Kratix: `work-creator/lib/workflow_control.go`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Error, WorkflowType};

/// One entry of `destination-selectors.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationSelector {
    /// Top-level directory of `/kratix/output` the entry applies to, after `filepath.Clean`;
    /// `None` for the root (default) group (`""` and `"."` in the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// Labels a Destination must carry; never empty.
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSelector {
    #[serde(default)]
    directory: Option<String>,
    #[serde(default)]
    match_labels: Option<BTreeMap<String, String>>,
}

/// Parses `text` as YAML, then as `T`: a syntax error is `invalid YAML: …`, well-formed YAML
/// of another shape is `expected <expected>: <what serde found>`.
fn parse_shape<T: serde::de::DeserializeOwned>(text: &str, expected: &str) -> Result<T, String> {
    let value: serde_json::Value = serde_saphyr::from_str(text)
        .map_err(|e| format!("invalid YAML: {}", first_line(&e.to_string())))?;
    serde_json::from_value(value).map_err(|e| format!("expected {expected}: {e}"))
}

/// Go's `filepath.Clean` for `/`-separated relative paths: drops empty and `.` segments and
/// resolves `..` where possible; `""` becomes `"."`.
pub fn clean_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(l) if *l != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Parses `destination-selectors.yaml` and checks it against the output's top-level
/// directories (`output_dirs`: names of the directories directly under `/kratix/output`).
///
/// Errors ([`Error::InvalidSelectors`]), as Kratix's work-writer: invalid YAML (including
/// non-string label values), an entry with empty or missing `matchLabels`, a duplicate
/// directory (two root entries count), a nested (`a/b`), absolute or `..` directory, and a
/// directory missing from the output. An empty file means no selectors.
pub fn parse_destination_selectors(
    text: &str,
    output_dirs: &BTreeSet<String>,
) -> Result<Vec<DestinationSelector>, Error> {
    let bad = |reason: String| Error::InvalidSelectors { reason };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: Option<Vec<RawSelector>> = parse_shape(
        text,
        "a list of entries `- matchLabels: {label: value}` with an optional `directory: <name>`",
    )
    .map_err(bad)?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, r) in raw.unwrap_or_default().into_iter().enumerate() {
        let labels = r.match_labels.unwrap_or_default();
        if labels.is_empty() {
            return Err(bad(format!("entry {i}: matchLabels must not be empty")));
        }
        let dir = clean_path(r.directory.as_deref().unwrap_or(""));
        if !seen.insert(dir.clone()) {
            let shown = if dir == "." {
                "the root directory"
            } else {
                &dir
            };
            return Err(bad(format!("entry {i}: duplicate directory: {shown}")));
        }
        let directory = if dir == "." {
            None
        } else {
            if dir.contains('/') || dir == ".." {
                return Err(bad(format!(
                    "entry {i}: directory {dir:?} must be a top-level directory of /kratix/output (no nested, absolute or '..' paths)"
                )));
            }
            if !output_dirs.contains(&dir) {
                return Err(bad(format!(
                    "entry {i}: directory {dir:?} does not exist in /kratix/output"
                )));
            }
            Some(dir)
        };
        out.push(DestinationSelector {
            directory,
            match_labels: labels,
        });
    }
    Ok(out)
}

/// Parses `status.yaml`: any YAML map, or an empty file (no status). A top-level `kratix`
/// key, a non-map document or invalid YAML is [`Error::InvalidStatus`].
pub fn parse_status(text: &str) -> Result<Option<Map<String, Value>>, Error> {
    let bad = |reason: String| Error::InvalidStatus { reason };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let v: Value = serde_saphyr::from_str(text)
        .map_err(|e| bad(format!("invalid YAML: {}", first_line(&e.to_string()))))?;
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => {
            if m.contains_key("kratix") {
                return Err(bad(
                    "the top-level key `kratix` is reserved for Kratix and may not be set".into(),
                ));
            }
            Ok(Some(m))
        }
        other => Err(bad(format!(
            "expected a map, found {}",
            crate::model::type_name_of(&other)
        ))),
    }
}

/// Merges a Pipeline's `status.yaml` into the object's status, as Kratix's status-writer does
/// (kratix-contract.md §2.6, `status_updater.go:mergeRecursive`, which despite its name is
/// shallow):
/// - each incoming top-level key replaces the existing value wholesale (no deep merge);
/// - `conditions` (a list of objects) is merged by `type`: an incoming condition replaces the
///   existing one of the same type in place, new types are appended;
/// - existing keys absent from `incoming` are kept;
/// - promise workflows keep only `message` from `incoming` (the Promise status schema prunes
///   the rest).
///
/// The `kratix` key is rejected earlier, by [`parse_status`].
pub fn merge_status(
    existing: &Map<String, Value>,
    incoming: &Map<String, Value>,
    workflow_type: WorkflowType,
) -> Map<String, Value> {
    let mut out = existing.clone();
    for (k, v) in incoming {
        if workflow_type == WorkflowType::Promise && k != "message" {
            continue;
        }
        if k == "conditions"
            && let (Some(Value::Array(old)), Value::Array(new)) = (existing.get(k), v)
        {
            let mut merged = old.clone();
            for c in new {
                let ty = c.get("type");
                match merged
                    .iter_mut()
                    .find(|o| ty.is_some() && o.get("type") == ty)
                {
                    Some(slot) => *slot = c.clone(),
                    None => merged.push(c.clone()),
                }
            }
            out.insert(k.clone(), Value::Array(merged));
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    out
}

/// `workflow-control.yaml` (kratix-contract.md §2.7). Unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowControl {
    /// `suspend: true`.
    pub suspend: bool,
    /// `retryAfter` (Go duration such as `5m`); takes precedence over `suspend`.
    pub retry_after: Option<Duration>,
    /// `message` (`""` when absent).
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawControl {
    #[serde(default)]
    suspend: Option<bool>,
    #[serde(default)]
    retry_after: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Parses `workflow-control.yaml`. An empty file means "continue". Invalid YAML, a
/// non-boolean `suspend` or an unparsable `retryAfter` is [`Error::InvalidWorkflowControl`].
pub fn parse_workflow_control(text: &str) -> Result<WorkflowControl, Error> {
    let bad = |reason: String| Error::InvalidWorkflowControl { reason };
    if text.trim().is_empty() {
        return Ok(WorkflowControl::default());
    }
    let raw: Option<RawControl> = parse_shape(
        text,
        "a map with `suspend: true|false`, `retryAfter: <duration>` and `message: <text>`",
    )
    .map_err(bad)?;
    let Some(raw) = raw else {
        return Ok(WorkflowControl::default());
    };
    let retry_after = match raw.retry_after.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(
            crate::validate::parse_go_duration(s)
                .map_err(|e| bad(format!("retryAfter {s:?}: {e}")))?,
        ),
    };
    Ok(WorkflowControl {
        suspend: raw.suspend.unwrap_or(false),
        retry_after,
        message: raw.message.unwrap_or_default(),
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dirs(d: &[&str]) -> BTreeSet<String> {
        d.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn clean_matches_go() {
        for (i, o) in [
            ("", "."),
            (".", "."),
            ("baz/", "baz"),
            ("./baz", "baz"),
            ("a/b", "a/b"),
            ("a/../b", "b"),
            ("../x", "../x"),
            ("/x/", "/x"),
        ] {
            assert_eq!(clean_path(i), o, "{i}");
        }
    }

    #[test]
    fn selectors_ok_cases() {
        let out = dirs(&["backstage", "baz"]);
        let s = parse_destination_selectors(
            "- matchLabels: {environment: dev}\n- directory: backstage\n  matchLabels:\n    environment: backstage\n- directory: baz/\n  matchLabels: {a: b}\n",
            &out,
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].directory, None);
        assert_eq!(s[1].directory.as_deref(), Some("backstage"));
        assert_eq!(s[2].directory.as_deref(), Some("baz"));
        assert_eq!(s[0].match_labels["environment"], "dev");
        // Kafka's `echo """..."""` form: leading blank line.
        let s = parse_destination_selectors(
            "\n- directory: backstage\n  matchLabels:\n    environment: backstage\n",
            &out,
        )
        .unwrap();
        assert_eq!(s.len(), 1);
        assert!(parse_destination_selectors("", &out).unwrap().is_empty());
        assert!(
            parse_destination_selectors("- directory: .\n  matchLabels: {a: b}\n", &out).unwrap()
                [0]
            .directory
            .is_none()
        );
    }

    #[test]
    fn selectors_error_cases() {
        let out = dirs(&["a", "backstage"]);
        let cases = [
            ("- matchLabels: [unclosed\n", "invalid YAML"),
            ("- matchLabels: {a: {b: c}}\n", "expected a list of entries"),
            ("- directory: a\n", "matchLabels must not be empty"),
            ("- matchLabels: {}\n", "matchLabels must not be empty"),
            (
                "- matchLabels: {a: b}\n- directory: \"\"\n  matchLabels: {c: d}\n",
                "duplicate directory: the root directory",
            ),
            (
                "- directory: a\n  matchLabels: {a: b}\n- directory: a/\n  matchLabels: {c: d}\n",
                "duplicate directory: a",
            ),
            ("- directory: a/b\n  matchLabels: {a: b}\n", "top-level"),
            ("- directory: ../a\n  matchLabels: {a: b}\n", "top-level"),
            (
                "- directory: missing\n  matchLabels: {a: b}\n",
                "does not exist",
            ),
            ("matchLabels: {a: b}\n", "expected a list of entries"),
        ];
        for (text, want) in cases {
            match parse_destination_selectors(text, &out) {
                Err(Error::InvalidSelectors { reason }) => {
                    assert!(reason.contains(want), "{text:?}: {reason}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn status_parse_cases() {
        assert_eq!(parse_status("").unwrap(), None);
        assert_eq!(parse_status("a: 1\n").unwrap().unwrap()["a"], json!(1));
        for (t, want) in [
            ("kratix: {x: 1}\n", "reserved"),
            ("- a\n", "expected a map"),
            ("a: [\n", "invalid YAML"),
        ] {
            match parse_status(t) {
                Err(Error::InvalidStatus { reason }) => assert!(reason.contains(want), "{reason}"),
                other => panic!("{t}: {other:?}"),
            }
        }
    }

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn merge_table() {
        let cases = [
            // Shallow: a nested map is replaced wholesale.
            (
                json!({"iam": {"a": 1, "b": 2}, "keep": true}),
                json!({"iam": {"c": 3}}),
                WorkflowType::Resource,
                json!({"iam": {"c": 3}, "keep": true}),
            ),
            // New keys added; scalars overwritten.
            (
                json!({"message": "old"}),
                json!({"message": "new", "url": "http://x"}),
                WorkflowType::Resource,
                json!({"message": "new", "url": "http://x"}),
            ),
            // Conditions merged by type, incoming wins, new types appended.
            (
                json!({"conditions": [{"type": "A", "status": "False"}, {"type": "B", "status": "True"}]}),
                json!({"conditions": [{"type": "A", "status": "True"}, {"type": "C", "status": "True"}]}),
                WorkflowType::Resource,
                json!({"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "True"}, {"type": "C", "status": "True"}]}),
            ),
            // No existing conditions: taken as is.
            (
                json!({}),
                json!({"conditions": [{"type": "A"}]}),
                WorkflowType::Resource,
                json!({"conditions": [{"type": "A"}]}),
            ),
            // Promise workflows keep only `message`.
            (
                json!({"x": 1}),
                json!({"message": "hi", "url": "u", "conditions": []}),
                WorkflowType::Promise,
                json!({"x": 1, "message": "hi"}),
            ),
        ];
        for (old, new, ty, want) in cases {
            assert_eq!(
                Value::Object(merge_status(&m(old.clone()), &m(new.clone()), ty)),
                want,
                "{old} + {new}"
            );
        }
    }

    #[test]
    fn workflow_control_cases() {
        assert_eq!(
            parse_workflow_control("").unwrap(),
            WorkflowControl::default()
        );
        let c = parse_workflow_control("suspend: true\nmessage: wait\nmaxAttempts: 3\n").unwrap();
        assert!(c.suspend);
        assert_eq!(c.message, "wait");
        let c = parse_workflow_control("retryAfter: 5m\nsuspend: true\n").unwrap();
        assert_eq!(c.retry_after, Some(Duration::from_secs(300)));
        assert!(matches!(
            parse_workflow_control("retryAfter: soon\n"),
            Err(Error::InvalidWorkflowControl { .. })
        ));
        assert!(matches!(
            parse_workflow_control("suspend: [1]\n"),
            Err(Error::InvalidWorkflowControl { .. })
        ));
    }
}
