//! Consumer lint: would Argo CD and Flux accept what a Destination holds?
//!
//! A pure check over one Destination's files (store-relative path → content), run by
//! `promised plan`, by `promised validate --lint-output DIR` and after every pass (findings
//! are warnings in the pass report and in the Destination's status, never failures). The
//! rules come from how the consumers read a directory (`users-and-peers.md` §3):
//!
//! | rule | what | consumer |
//! |---|---|---|
//! | `parse` | a `.yaml`/`.yml` file parses (every document); a `.json` file is one object | Argo CD fails the app on a manifest that does not parse (`repository.go` `getObjsFromYAMLOrJSON`); Flux fails the Kustomization |
//! | `object` | every document has `apiVersion`, `kind` and `metadata.name` | Flux: `missing Resource metadata`; Argo CD: `Object 'Kind' is missing` |
//! | `name` | `metadata.name` is a DNS-1123 subdomain, `metadata.namespace` a DNS-1123 label | the API server refuses the object at apply time |
//! | `cluster-scoped-namespace` | a known cluster-scoped kind carries no namespace ([`crate::model::CLUSTER_SCOPED_KINDS`]) | the API server ignores it; Git and the cluster disagree (a warning by default) |
//! | `duplicate-object` | no two documents on one Destination declare the same (group, kind, namespace, name) | Flux: `already registered id` fails the whole Kustomization; Argo CD: `RepeatedResourceWarning` |
//! | `kustomization` | a directory with a kustomization file lists only paths that exist, lists directories that have a kustomization, and leaves no YAML file of its own unlisted | `kubectl kustomize` fails on a missing path; an unlisted file is never applied |
//! | `file-type` | only `.yaml`, `.yml` and `.json` files | Argo CD and Flux skip anything else silently |
//!
//! Severity per rule is set in the daemon config ([`LintSettings`]); `off` disables a rule.
//! Kustomization files themselves (`kustomization.yaml`, `kustomization.yml`,
//! `Kustomization`) are exempt from `object` and `name`.

mod kustomize;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The names a kustomization file may have (kustomize: `konfig.RecognizedKustomizationFileNames`).
pub const KUSTOMIZATION_FILES: &[&str] =
    &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// One lint rule; its name in the daemon config and in findings is the kebab-case form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The file parses as YAML (or is one JSON object).
    Parse,
    /// Each document has `apiVersion`, `kind` and `metadata.name`.
    Object,
    /// Names are DNS-1123.
    Name,
    /// A cluster-scoped kind carries no namespace.
    ClusterScopedNamespace,
    /// No object is declared twice on one Destination.
    DuplicateObject,
    /// Kustomization files list what exists and what is needed.
    Kustomization,
    /// Only `.yaml`, `.yml` and `.json` files.
    FileType,
}

impl Rule {
    /// Every rule, in the order findings are reported.
    pub const ALL: [Rule; 7] = [
        Rule::Parse,
        Rule::Object,
        Rule::Name,
        Rule::ClusterScopedNamespace,
        Rule::DuplicateObject,
        Rule::Kustomization,
        Rule::FileType,
    ];

    /// The kebab-case name (`duplicate-object`).
    pub fn name(self) -> &'static str {
        match self {
            Rule::Parse => "parse",
            Rule::Object => "object",
            Rule::Name => "name",
            Rule::ClusterScopedNamespace => "cluster-scoped-namespace",
            Rule::DuplicateObject => "duplicate-object",
            Rule::Kustomization => "kustomization",
            Rule::FileType => "file-type",
        }
    }

    /// Default severity: `warning` for `file-type` (a Destination may hold files for people
    /// or other tools) and `cluster-scoped-namespace` (the API server ignores the namespace;
    /// the marketplace's redis operator has one), `error` for the rest (the consumer fails or
    /// applies the wrong thing).
    pub fn default_severity(self) -> Severity {
        match self {
            Rule::FileType | Rule::ClusterScopedNamespace => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// How much a finding of a rule matters. In YAML, `off`, `warning` or `error`; an unquoted
/// `off` (which YAML 1.1, like Kubernetes, reads as `false`) is accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "SeverityInput")]
pub enum Severity {
    /// The rule is not checked.
    Off,
    /// Reported; `promised plan` and `validate --lint-output` still succeed.
    Warning,
    /// Reported; `promised plan` and `validate --lint-output` exit 1.
    Error,
}

/// What the daemon config may say for a severity.
#[derive(Deserialize)]
#[serde(untagged)]
enum SeverityInput {
    Bool(bool),
    Name(String),
}

impl TryFrom<SeverityInput> for Severity {
    type Error = String;
    fn try_from(v: SeverityInput) -> Result<Self, String> {
        match v {
            SeverityInput::Bool(false) => Ok(Severity::Off),
            SeverityInput::Name(s) if s == "off" => Ok(Severity::Off),
            SeverityInput::Name(s) if s == "warning" => Ok(Severity::Warning),
            SeverityInput::Name(s) if s == "error" => Ok(Severity::Error),
            SeverityInput::Bool(true) => Err("expected off, warning or error, found true".into()),
            SeverityInput::Name(s) => Err(format!("expected off, warning or error, found {s:?}")),
        }
    }
}

/// `lint:` in the daemon config.
///
/// ```yaml
/// lint:
///   rules: {file-type: off, duplicate-object: warning}
///   skipDestinations: [terraform]   # Destinations whose consumer is not Argo CD or Flux
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LintSettings {
    /// Severity per rule; rules not listed keep [`Rule::default_severity`].
    pub rules: BTreeMap<Rule, Severity>,
    /// Destinations not linted (for example a Terraform or Backstage Destination).
    pub skip_destinations: Vec<String>,
}

impl LintSettings {
    /// The severity of `rule`.
    pub fn severity(&self, rule: Rule) -> Severity {
        self.rules
            .get(&rule)
            .copied()
            .unwrap_or_else(|| rule.default_severity())
    }

    /// Whether Destination `name` is linted.
    pub fn lints(&self, destination: &str) -> bool {
        !self.skip_destinations.iter().any(|d| d == destination)
    }
}

/// One problem a consumer would have with a Destination's files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The rule that found it.
    pub rule: Rule,
    /// Its severity under the settings in use.
    pub severity: Severity,
    /// The Destination.
    pub destination: String,
    /// The file (store-relative path).
    pub file: String,
    /// The object, `<kind>/<name>` or `<kind>/<namespace>/<name>`, when the finding is about
    /// one document; `document N` (1-based) when it has no usable identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// What is wrong and what the consumer does about it.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Off => "off",
        };
        write!(f, "{sev}[{}]: {}", self.rule.name(), self.file)?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        write!(f, ": {} (Destination {})", self.message, self.destination)
    }
}

/// One Kubernetes object found in a file.
struct Obj<'a> {
    file: &'a str,
    group: &'a str,
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
}

impl Obj<'_> {
    fn label(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// What linting one file finds whatever else its Destination holds: its own problems (rules
/// `parse`, `file-type`, `object`, `name`, `cluster-scoped-namespace`, each as `(rule, object,
/// message)`) and the `(group, kind, namespace, name)` of its objects (for `duplicate-object`).
/// A kustomization file has none: its rule reads it with the directory.
#[derive(Debug, Default)]
struct FileFacts {
    problems: Vec<(Rule, Option<String>, String)>,
    objects: Vec<Identity>,
}

/// An object's `(group, kind, namespace, name)` as one string and where its first three
/// parts end: one allocation of about 30 bytes where four `String`s took 96 bytes and three
/// allocations (at 10,000 files 3.7 MB of the daemon's heap with the list's spare room;
/// docs/benchmarks.md, "Memory", seventh round).
#[derive(Debug)]
struct Identity {
    text: Box<str>,
    ends: [u32; 3],
}

impl Identity {
    fn new(parts: [&str; 4]) -> Identity {
        let text: String = parts.concat();
        let mut ends = [0u32; 3];
        let mut at = 0;
        for (end, part) in ends.iter_mut().zip(parts) {
            at += part.len();
            *end = u32::try_from(at).unwrap_or(u32::MAX);
        }
        Identity {
            text: text.into_boxed_str(),
            ends,
        }
    }

    /// `[group, kind, namespace, name]`.
    fn parts(&self) -> [&str; 4] {
        let [a, b, c] = self.ends.map(|e| e as usize);
        let t = &*self.text;
        [&t[..a], &t[a..b], &t[b..c], &t[c..]]
    }
}

/// Per-file lint results kept between lints of one Destination, by path and content id, so
/// linting it again after a write reads and parses only the files that changed (at 10,000
/// requests this was 100 ms of every pass that wrote). Entries the last lint did not use are
/// dropped. Keep one per Destination.
#[derive(Debug, Default)]
pub struct LintCache {
    /// Path → the content id linted, the lint it was last used in, and the file's facts.
    files: std::collections::HashMap<String, (String, u64, FileFacts), foldhash::fast::RandomState>,
    round: u64,
}

/// Lints one Destination's files: `files` maps store-relative paths to their content.
/// Returns findings sorted by file, then rule; rules set to `off` produce none. A Destination
/// in `skipDestinations` gets none.
pub fn lint_destination(
    destination: &str,
    files: &BTreeMap<String, Vec<u8>>,
    settings: &LintSettings,
) -> Vec<Finding> {
    let ids: BTreeMap<&str, &str> = files.keys().map(|p| (p.as_str(), p.as_str())).collect();
    lint_destination_with(
        destination,
        &ids,
        |path| files.get(path).cloned(),
        &mut LintCache::default(),
        settings,
    )
}

/// [`lint_destination`] over `files` (store-relative path → content id, e.g. its sha256),
/// reading a file's content with `blob(content id)` only when `cache` has no facts for that
/// path and id. A file whose content cannot be read (`None`) is left out, as if absent.
pub fn lint_destination_with(
    destination: &str,
    files: &BTreeMap<&str, &str>,
    blob: impl Fn(&str) -> Option<Vec<u8>>,
    cache: &mut LintCache,
    settings: &LintSettings,
) -> Vec<Finding> {
    if !settings.lints(destination) {
        return Vec::new();
    }
    cache.round += 1;
    let round = cache.round;
    let mut present: Vec<&str> = Vec::with_capacity(files.len());
    // Kustomization files are read every time: their rule reads them with the directory.
    let mut kustomizations: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (path, id) in files {
        let base = path.rsplit('/').next().unwrap_or(path);
        match cache.files.get_mut(*path) {
            Some((linted, used, _)) if linted == id => *used = round,
            _ if KUSTOMIZATION_FILES.contains(&base) => {
                let Some(content) = blob(id) else { continue };
                kustomizations.insert(path, content);
            }
            _ => {
                let Some(content) = blob(id) else { continue };
                let facts = file_facts(path, &content);
                cache
                    .files
                    .insert(path.to_string(), (id.to_string(), round, facts));
            }
        }
        present.push(path);
    }
    cache.files.retain(|_, (_, used, _)| *used == round);
    let mut out = Vec::new();
    let mut push = |rule: Rule, file: &str, object: Option<String>, message: String| {
        let severity = settings.severity(rule);
        if severity != Severity::Off {
            out.push(Finding {
                rule,
                severity,
                destination: destination.to_string(),
                file: file.to_string(),
                object,
                message,
            });
        }
    };
    let mut objects: Vec<Obj<'_>> = Vec::with_capacity(present.len());
    for path in &present {
        let Some((_, _, facts)) = cache.files.get(*path) else {
            continue; // a kustomization file
        };
        for (rule, object, message) in &facts.problems {
            push(*rule, path, object.clone(), message.clone());
        }
        objects.extend(facts.objects.iter().map(|id| {
            let [group, kind, namespace, name] = id.parts();
            Obj {
                file: path,
                group,
                kind,
                namespace,
                name,
            }
        }));
    }
    duplicates(&objects, &mut push);
    if !kustomizations.is_empty() {
        let paths: BTreeMap<&str, ()> = present.iter().map(|p| (*p, ())).collect();
        for (file, message) in kustomize::check(&paths, |path| kustomizations.get(path).cloned()) {
            push(Rule::Kustomization, &file, None, message);
        }
    }
    out.sort();
    out
}

/// Lints one file on its own (see [`FileFacts`]); `path` decides how it is read.
fn file_facts(path: &str, content: &[u8]) -> FileFacts {
    let mut facts = file_facts_unshrunk(path, content);
    // Kept until the file changes: without the room pushes left.
    facts.problems.shrink_to_fit();
    facts.objects.shrink_to_fit();
    facts
}

fn file_facts_unshrunk(path: &str, content: &[u8]) -> FileFacts {
    let mut facts = FileFacts::default();
    let mut push = |rule: Rule, object: Option<String>, message: String| {
        facts.problems.push((rule, object, message));
    };
    let base = path.rsplit('/').next().unwrap_or(path);
    let ext = base.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    let docs = match ext {
        "yaml" | "yml" => match parse_yaml(content) {
            Ok(d) => d,
            Err(e) => {
                push(Rule::Parse, None, e);
                return facts;
            }
        },
        "json" => match serde_json::from_slice::<Value>(content) {
            Ok(v @ Value::Object(_)) => vec![v],
            Ok(_) => {
                push(
                    Rule::Parse,
                    None,
                    "a .json file must hold exactly one object (Argo CD: \"Only single objects are allowed in JSON files\")".into(),
                );
                return facts;
            }
            Err(e) => {
                push(Rule::Parse, None, format!("invalid JSON: {e}"));
                return facts;
            }
        },
        _ => {
            push(
                Rule::FileType,
                None,
                "not a .yaml, .yml or .json file: Argo CD and Flux skip it".into(),
            );
            return facts;
        }
    };
    for (i, doc) in docs.iter().enumerate() {
        for d in expand_list(doc) {
            match identity(d) {
                Err(missing) => push(
                    Rule::Object,
                    Some(format!("document {}", i + 1)),
                    format!(
                        "missing {missing}: not a Kubernetes object (Flux: \"missing Resource metadata\"; Argo CD fails the app)"
                    ),
                ),
                Ok((group, kind, namespace, name)) => {
                    let obj = Obj {
                        file: path,
                        group: &group,
                        kind: &kind,
                        namespace: &namespace,
                        name: &name,
                    };
                    check_names(&obj, &mut |rule, _, object, message| {
                        push(rule, object, message)
                    });
                    facts
                        .objects
                        .push(Identity::new([&group, &kind, &namespace, &name]));
                }
            }
        }
    }
    facts
}

/// Every document of a YAML stream; empty and comment-only documents are dropped (as modern
/// kustomize and Argo CD do).
fn parse_yaml(content: &[u8]) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(content).map_err(|_| "not UTF-8 text".to_string())?;
    let docs = crate::config::parse_yaml_stream(text)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// A `kind: List` (or `…List`) with `items` stands for its items, as `kubectl apply` reads it.
fn expand_list(doc: &Value) -> Vec<&Value> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    match doc.get("items").and_then(Value::as_array) {
        Some(items) if kind.ends_with("List") => items.iter().collect(),
        _ => vec![doc],
    }
}

/// `(group, kind, namespace, name)` of a document, or the first missing field.
fn identity(doc: &Value) -> Result<(String, String, String, String), &'static str> {
    fn s(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|s| !s.is_empty())
    }
    let Some(api_version) = s(doc.get("apiVersion")) else {
        return Err("apiVersion");
    };
    let Some(kind) = s(doc.get("kind")) else {
        return Err("kind");
    };
    let meta = doc.get("metadata");
    let Some(name) = s(meta.and_then(|m| m.get("name"))) else {
        return Err("metadata.name");
    };
    let namespace = s(meta.and_then(|m| m.get("namespace"))).unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    Ok((
        group.to_string(),
        kind.to_string(),
        namespace.to_string(),
        name.to_string(),
    ))
}

fn check_names(o: &Obj<'_>, push: &mut impl FnMut(Rule, &str, Option<String>, String)) {
    if !crate::model::is_dns_subdomain(o.name) {
        push(
            Rule::Name,
            o.file,
            Some(o.label()),
            format!(
                "metadata.name {:?} is not a DNS-1123 subdomain (lower-case alphanumerics, '-' and '.', at most 253 characters): the API server refuses it",
                o.name
            ),
        );
    }
    if !o.namespace.is_empty() && !crate::model::is_dns_label(o.namespace) {
        push(
            Rule::Name,
            o.file,
            Some(o.label()),
            format!(
                "metadata.namespace {:?} is not a DNS-1123 label: the API server refuses it",
                o.namespace
            ),
        );
    }
    let api_version = if o.group.is_empty() {
        "v1".to_string()
    } else {
        format!("{}/v1", o.group)
    };
    if !o.namespace.is_empty() && crate::model::is_cluster_scoped(&api_version, o.kind) {
        push(
            Rule::ClusterScopedNamespace,
            o.file,
            Some(o.label()),
            format!(
                "{} is cluster-scoped but has metadata.namespace {:?}: the API server ignores it, so Git and the cluster disagree; remove it",
                o.kind, o.namespace
            ),
        );
    }
}

fn duplicates(objects: &[Obj<'_>], push: &mut impl FnMut(Rule, &str, Option<String>, String)) {
    // Hash maps: at 10,000 files the ordered maps' string comparisons were most of a lint.
    let mut seen: std::collections::HashMap<_, &str, foldhash::fast::RandomState> =
        Default::default();
    let mut reported: std::collections::HashSet<_, foldhash::fast::RandomState> =
        Default::default();
    for o in objects {
        let key = (o.group, o.kind, o.namespace, o.name);
        match seen.get(&key) {
            Some(first) if reported.insert((key, o.file)) => push(
                Rule::DuplicateObject,
                o.file,
                Some(o.label()),
                format!(
                    "also declared in {first}: Flux fails the whole Kustomization (\"already registered id\"), Argo CD reports RepeatedResourceWarning"
                ),
            ),
            Some(_) => {}
            None => {
                seen.insert(key, o.file);
            }
        }
    }
}

#[cfg(test)]
mod tests;
