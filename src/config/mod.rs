//! Loading a config repo: read files ([`source`]), split YAML streams into documents, and
//! classify each document by `apiVersion`/`kind` (kratix-contract.md §1).
//!
//! Guarantees: one bad file or document never hides the others; every problem becomes a
//! [`Diagnostic`] naming the file and document. Documents without `apiVersion`/`kind` are
//! skipped with a debug log (they are often CI or tool config); an unknown kind is a warning.
//! Resource requests cannot be recognised until the Promises are known, so every document that
//! is not a Kratix kind is kept as a request candidate for [`crate::validate`].

pub mod source;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use source::{FileFilter, RawFile, Snapshot, Source, SourceError};

use crate::diag::{Code, Diagnostic, Origin};
use crate::model::{
    BucketStateStore, Destination, GitStateStore, HealthRecord, KRATIX_API_VERSION, ObjectRef,
    Promise,
};

/// One YAML document of the repo.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// File and index.
    pub origin: Origin,
    /// The parsed document.
    pub value: Value,
}

/// A typed object with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// File and document index.
    pub origin: Origin,
    /// Kind, namespace and name.
    pub id: ObjectRef,
    /// The typed object.
    pub object: T,
    /// The document as written.
    pub raw: Value,
}

/// Every object of a config repo, classified but not yet cross-checked.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// `Promise` objects.
    pub promises: Vec<Located<Promise>>,
    /// `Destination` objects.
    pub destinations: Vec<Located<Destination>>,
    /// `GitStateStore` objects.
    pub git_state_stores: Vec<Located<GitStateStore>>,
    /// `BucketStateStore` objects.
    pub bucket_state_stores: Vec<Located<BucketStateStore>>,
    /// `HealthRecord` objects.
    pub health_records: Vec<Located<HealthRecord>>,
    /// Objects of any other `apiVersion`/`kind`: resource requests if a Promise serves them.
    pub candidates: Vec<Located<Value>>,
    /// Problems found while reading and classifying.
    pub diagnostics: Vec<Diagnostic>,
    /// Commit the objects were read from (Git sources).
    pub commit: Option<String>,
}

/// Maximum size of one config file; larger files are rejected (protects the daemon against
/// YAML bombs and accidental binaries).
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Splits every file into YAML documents. Files that are not UTF-8 or not valid YAML
/// (syntax errors, duplicate keys) produce one diagnostic each and no documents.
pub fn parse_documents(files: &[RawFile]) -> (Vec<Document>, Vec<Diagnostic>) {
    let mut docs = Vec::new();
    let mut diags = Vec::new();
    for f in files {
        if f.bytes.len() > MAX_FILE_BYTES {
            diags.push(Diagnostic::file_error(
                Code::Read,
                &f.path,
                format!(
                    "file is {} bytes, larger than the {MAX_FILE_BYTES}-byte limit",
                    f.bytes.len()
                ),
            ));
            continue;
        }
        let text = match std::str::from_utf8(&f.bytes) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::file_error(
                    Code::Read,
                    &f.path,
                    format!("not valid UTF-8: {e}"),
                ));
                continue;
            }
        };
        match parse_yaml_stream(text) {
            Ok(values) => {
                for (i, value) in values.into_iter().enumerate() {
                    docs.push(Document {
                        origin: Origin {
                            file: f.path.clone(),
                            document: i,
                        },
                        value,
                    });
                }
            }
            Err(msg) => diags.push(Diagnostic::file_error(Code::Yaml, &f.path, msg)),
        }
    }
    (docs, diags)
}

/// Parses a multi-document YAML stream with serde-saphyr (YAML 1.1 booleans like Kubernetes,
/// merge keys, duplicate keys rejected). Empty documents are dropped. The error is one line:
/// `invalid YAML at line L column C: <reason>`.
pub fn parse_yaml_stream(text: &str) -> Result<Vec<Value>, String> {
    serde_saphyr::from_multiple::<Value>(text).map_err(|e| yaml_error_line(&e))
}

/// Turns a serde-saphyr error (which may carry a multi-line source snippet) into one line.
fn yaml_error_line(e: &serde_saphyr::Error) -> String {
    let full = e.to_string();
    let mut first = full.lines().next().unwrap_or("invalid YAML").trim();
    first = first.strip_prefix("error: ").unwrap_or(first);
    let first = first
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(first)
        .to_string();
    let loc = e
        .location()
        .map(|l| format!(" at line {} column {}", l.line(), l.column()))
        .unwrap_or_default();
    if first.contains("line ") {
        format!("invalid YAML: {first}")
    } else {
        format!("invalid YAML{loc}: {first}")
    }
}

/// Reads `source` and classifies its objects. Fails only when the source itself is unreadable.
pub fn load(
    source: &Source,
    filter: &FileFilter,
    cache_dir: Option<&std::path::Path>,
) -> Result<Objects, SourceError> {
    let snap = source::read(source, filter, cache_dir)?;
    let (docs, diags) = parse_documents(&snap.files);
    let mut objects = classify(docs);
    objects.diagnostics.splice(0..0, diags);
    objects.commit = snap.commit;
    Ok(objects)
}

/// Like [`load`], and also makes the whole repo available on disk for pipelines (Promise
/// folders are mounted at `/promise`): a directory source is used in place; a Git source's
/// commit is exported under `checkout_parent/<commit>`. Returns the objects and that root.
pub fn load_with_root(
    source: &Source,
    filter: &FileFilter,
    cache_dir: Option<&std::path::Path>,
    checkout_parent: &std::path::Path,
) -> Result<(Objects, std::path::PathBuf), SourceError> {
    match source {
        Source::Dir(d) => Ok((load(source, filter, cache_dir)?, d.clone())),
        Source::Git { url, .. } => {
            let everything = FileFilter {
                include: vec!["**".into()],
                exclude: filter.exclude.clone(),
            };
            let snap = source::read(source, &everything, cache_dir)?;
            let commit = snap.commit.clone().unwrap_or_else(|| "unknown".into());
            let root = checkout_parent.join(&commit);
            if !root.is_dir() {
                let tmp = checkout_parent.join(format!(".{commit}.tmp"));
                source::export(&snap.files, &tmp)
                    .and_then(|_| std::fs::rename(&tmp, &root))
                    .map_err(|e| SourceError::GitRepo {
                        url: statestores::git::config::redact_url(url),
                        message: format!("exporting the commit to {}: {e}", root.display()),
                    })?;
            }
            let compiled = filter.compile()?;
            let files: Vec<RawFile> = snap
                .files
                .into_iter()
                .filter(|f| compiled.matches(&f.path))
                .collect();
            let (docs, diags) = parse_documents(&files);
            let mut objects = classify(docs);
            objects.diagnostics.splice(0..0, diags);
            objects.commit = snap.commit;
            Ok((objects, root))
        }
    }
}

/// Classifies documents by `apiVersion`/`kind`.
pub fn classify(docs: Vec<Document>) -> Objects {
    let mut out = Objects::default();
    for doc in docs {
        let Document { origin, value } = doc;
        let Value::Object(map) = &value else {
            out.diagnostics.push(origin.diag(
                Code::NotAnObject,
                None,
                "",
                format!(
                    "expected a mapping with apiVersion and kind, found {}",
                    crate::model::type_name_of(&value)
                ),
            ));
            continue;
        };
        let api_version = map.get("apiVersion");
        let kind = map.get("kind");
        let (api_version, kind) = match (api_version, kind) {
            (None, _) | (_, None) => {
                tracing::debug!(file = %origin, "skipping document without apiVersion/kind");
                continue;
            }
            (Some(Value::String(a)), Some(Value::String(k))) => (a.clone(), k.clone()),
            (Some(a), Some(k)) => {
                let (field, v) = if a.is_string() {
                    ("kind", k)
                } else {
                    ("apiVersion", a)
                };
                out.diagnostics.push(origin.diag(
                    Code::NotAnObject,
                    None,
                    field,
                    format!("expected string, found {}", crate::model::type_name_of(v)),
                ));
                continue;
            }
        };
        let id = object_ref(&kind, &value);
        if api_version == KRATIX_API_VERSION {
            match kind.as_str() {
                "Promise" => push_typed(&mut out.promises, &mut out.diagnostics, origin, id, value),
                "Destination" => push_typed(
                    &mut out.destinations,
                    &mut out.diagnostics,
                    origin,
                    id,
                    value,
                ),
                "GitStateStore" => push_typed(
                    &mut out.git_state_stores,
                    &mut out.diagnostics,
                    origin,
                    id,
                    value,
                ),
                "BucketStateStore" => push_typed(
                    &mut out.bucket_state_stores,
                    &mut out.diagnostics,
                    origin,
                    id,
                    value,
                ),
                "HealthRecord" => push_typed(
                    &mut out.health_records,
                    &mut out.diagnostics,
                    origin,
                    id,
                    value,
                ),
                "PromiseRelease" | "PromiseRevision" | "ResourceBinding" | "Work"
                | "WorkPlacement" | "DryRun" => {
                    out.diagnostics.push(
                        origin
                            .diag(
                                Code::UnsupportedKind,
                                Some(&id),
                                "",
                                format!("{KRATIX_API_VERSION} {kind} is not supported by promised; the object is skipped"),
                            )
                            .warning(),
                    );
                }
                _ => out.diagnostics.push(
                    origin
                        .diag(
                            Code::UnknownKind,
                            Some(&id),
                            "kind",
                            format!("unknown Kratix kind {kind:?}; the object is skipped"),
                        )
                        .warning(),
                ),
            }
            continue;
        }
        out.candidates.push(Located {
            origin,
            id,
            object: value.clone(),
            raw: value,
        });
    }
    out
}

/// Kind, namespace and name of a document, leniently (missing parts are empty).
fn object_ref(kind: &str, value: &Value) -> ObjectRef {
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    ObjectRef {
        kind: kind.to_string(),
        namespace,
        name,
    }
}

/// Deserialises `value` as `T`, recording every failure with its field path.
fn push_typed<T: DeserializeOwned>(
    into: &mut Vec<Located<T>>,
    diags: &mut Vec<Diagnostic>,
    origin: Origin,
    id: ObjectRef,
    value: Value,
) {
    if id.name.is_empty() {
        diags.push(origin.diag(
            Code::InvalidField,
            Some(&id),
            "metadata.name",
            "required field is missing",
        ));
        return;
    }
    match from_value::<T>(&value) {
        Ok(object) => into.push(Located {
            origin,
            id,
            object,
            raw: value,
        }),
        Err((path, msg)) => diags.push(origin.diag(Code::InvalidField, Some(&id), path, msg)),
    }
}

/// Deserialises a JSON value as `T`; the error is `(field path, message)` with the path in
/// dotted form (`spec.stateStoreRef.kind`).
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = dotted_path(e.path());
        let inner = e.into_inner().to_string();
        // serde reports "missing field `x`" at the parent; point at the field itself.
        if let Some(rest) = inner.strip_prefix("missing field `") {
            let field = rest.trim_end_matches('`');
            let full = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            return (full, "required field is missing".to_string());
        }
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            // The path already ends with the unknown key.
            let field = rest.split('`').next().unwrap_or_default();
            let known: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
            let hint = closest(field, &known)
                .map(|k| format!("; did you mean {k:?}?"))
                .unwrap_or_default();
            return (path, format!("unknown field {field:?}{hint}"));
        }
        if let Some(rest) = inner.strip_prefix("invalid type: ")
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            return (path, format!("expected {expected}, found {found}"));
        }
        (path, inner)
    })
}

/// The known name closest to `field` (edit distance at most 2), for "did you mean" hints.
fn closest<'a>(field: &str, known: &[&'a str]) -> Option<&'a str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                cur.push(
                    (prev[j] + usize::from(ca != *cb))
                        .min(prev[j + 1] + 1)
                        .min(cur[j] + 1),
                );
            }
            prev = cur;
        }
        prev[b.len()]
    }
    known
        .iter()
        .map(|k| (dist(field, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Renders a serde path as `a.b[0].c`.
fn dotted_path(p: &serde_path_to_error::Path) -> String {
    let mut s = String::new();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => s.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    s
}
