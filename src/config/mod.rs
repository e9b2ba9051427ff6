//! Loading a config repo: read files ([`source`]), split YAML streams into documents, and
//! classify each document by `apiVersion`/`kind` (kratix-contract.md §1).
//!
//! Guarantees: one bad file or document never hides the others; every problem becomes a
//! [`Diagnostic`] naming the file and document. Documents without `apiVersion`/`kind` are
//! skipped with a debug log (they are often CI or tool config); an unknown Kratix kind is a
//! warning. Resource requests cannot be recognised until the Promises are known, so every
//! document that is not a Kratix kind is kept as a candidate for [`crate::validate`], which
//! decides whether it is a request, a pipeline asset or neither (README "Which YAML is
//! config").

mod doc;
pub mod history;
mod loader;
mod parsed;
pub mod policy;
pub mod source;
pub mod unreachable;
pub mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use doc::{Doc, Lazy};
pub use loader::{Loaded, Loader};
pub use source::{FileFilter, GitRepo, RawFile, Snapshot, Source, SourceError};

use crate::diag::{Code, Diagnostic, Origin};
use crate::model::{
    BucketStateStore, Destination, GitStateStore, HealthRecord, KRATIX_API_VERSION, ObjectRef,
    Promise, ResourceBinding,
};

/// One YAML document of the repo.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// File and index.
    pub origin: Origin,
    /// The parsed document (shared with the parse cache: an unchanged file is not copied).
    pub doc: Doc,
    /// Git blob id of the file it came from ([`RawFile::oid`]).
    pub blob: Option<gix::ObjectId>,
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
    /// The document as written (shared with the parse cache).
    pub raw: Arc<Value>,
    /// Git blob id of the file it came from: with `origin`, it identifies the document's
    /// exact text (the key of [`crate::validate::Admissions`]).
    pub blob: Option<gix::ObjectId>,
}

/// A document of no Kratix kind: a resource request if a Promise serves its kind, else a
/// pipeline asset or nothing ([`crate::validate`], "Which YAML is config").
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// File and document index.
    pub origin: Origin,
    /// Kind, namespace and name (kind `""` for a document with an `apiVersion` and a
    /// `metadata.name` but no `kind`).
    pub id: ObjectRef,
    /// The document (shared with the parse cache; read into a value by [`Candidate::value`]).
    pub doc: Doc,
    /// Git blob id of the file it came from (with `origin`, the key of
    /// [`crate::validate::Admissions`]).
    pub blob: Option<gix::ObjectId>,
}

impl Candidate {
    /// The document's `apiVersion` (always a string: [`classify`] keeps no other candidate).
    pub fn api_version(&self) -> &str {
        self.doc.api_version().unwrap_or_default()
    }

    /// The document as a value ([`Doc::value`]: read from its text when kept as text).
    pub fn value(&self) -> Arc<Value> {
        self.doc.value()
    }
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
    /// `ResourceBinding` objects (README "Promise versions and ResourceBindings").
    pub resource_bindings: Vec<Located<ResourceBinding>>,
    /// `UpgradePlan` objects (README "Rolling out a Promise change").
    pub upgrade_plans: Vec<Located<crate::model::UpgradePlan>>,
    /// Objects of any other `apiVersion`/`kind`: resource requests if a Promise serves them.
    pub candidates: Vec<Candidate>,
    /// `Promise` documents that did not decode (their errors are in `diagnostics`): they
    /// still mark their folder as a Promise folder and the kind their `spec.api` names as
    /// served ([`crate::validate`], "Which YAML is config"). `object` is `Value::Null`.
    pub undecoded_promises: Vec<Located<Value>>,
    /// Problems found while reading and classifying.
    pub diagnostics: Vec<Diagnostic>,
    /// Commit the objects were read from (Git sources).
    pub commit: Option<String>,
    /// Who made that commit, and who signed it when verified (the audit trailers).
    pub provenance: Option<Provenance>,
    /// The repository's history at that commit (Git sources): rebuilds revisions of older
    /// Promise versions ([`history`]).
    pub history: Option<history::History>,
}

/// Who made the config commit a pass applies: its author and, when verification is on, its
/// signer. Becomes the state store commit's `Promised-Requested-By:` and `Promised-Signed-By:`
/// trailers (README "Trust and tenancy").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// `Name <email>` of the config commit's author.
    pub author: String,
    /// `<principal> <key fingerprint>` of its verified signature.
    pub signed_by: Option<String>,
}

/// Maximum size of one config file; larger files are rejected (protects the daemon against
/// YAML bombs and accidental binaries).
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Splits every file into YAML documents. Files that are not UTF-8 or not valid YAML
/// (syntax errors, duplicate keys) produce one diagnostic each and no documents.
pub fn parse_documents(files: &[RawFile]) -> (Vec<Document>, Vec<Diagnostic>) {
    ParseCache::default().parse(files)
}

/// What one file parsed into: its documents, or the one problem that made it unreadable.
type Parsed = Result<Vec<Doc>, (Code, String)>;

/// Parsed files by Git blob id, so a file whose content did not change is not parsed again
/// (the daemon reads a 10,000-request repo on every pass). Holds only the blobs of the last
/// [`ParseCache::parse`] call.
#[derive(Debug, Default)]
pub struct ParseCache {
    parsed: HashMap<gix::ObjectId, Arc<Parsed>>,
    /// What [`ParseCache::write_record`] would write changed since it last ran.
    changed: bool,
}

impl ParseCache {
    /// True when the content with this blob id is cached (its bytes need not be read).
    pub fn has(&self, oid: &gix::ObjectId) -> bool {
        self.parsed.contains_key(oid)
    }

    /// Like [`parse_documents`], reusing earlier results by blob id; a file with empty
    /// `bytes` must be cached (see [`RawFile::bytes`]). Afterwards the cache holds exactly
    /// the blobs of `files`.
    pub fn parse(&mut self, files: &[RawFile]) -> (Vec<Document>, Vec<Diagnostic>) {
        let mut docs = Vec::new();
        let mut diags = Vec::new();
        let mut next = HashMap::with_capacity(files.len());
        for f in files {
            let parsed = match self.parsed.get(&f.oid) {
                Some(p) => p.clone(),
                None => {
                    let p = Arc::new(parse_file(f));
                    self.changed |= parsed::recordable(&p);
                    p
                }
            };
            match &*parsed {
                Ok(values) => {
                    for (i, doc) in values.iter().enumerate() {
                        docs.push(Document {
                            origin: Origin {
                                file: f.path.clone(),
                                document: i,
                            },
                            doc: doc.clone(),
                            blob: Some(f.oid),
                        });
                    }
                }
                Err((code, msg)) => diags.push(Diagnostic::file_error(*code, &f.path, msg)),
            }
            next.insert(f.oid, parsed);
        }
        self.changed |= self
            .parsed
            .iter()
            .any(|(oid, p)| !next.contains_key(oid) && parsed::recordable(p));
        self.parsed = next;
        (docs, diags)
    }
}

fn parse_file(f: &RawFile) -> Parsed {
    if f.bytes.len() > MAX_FILE_BYTES {
        return Err((
            Code::Read,
            format!(
                "file is {} bytes, larger than the {MAX_FILE_BYTES}-byte limit",
                f.bytes.len()
            ),
        ));
    }
    let text =
        std::str::from_utf8(&f.bytes).map_err(|e| (Code::Read, format!("not valid UTF-8: {e}")))?;
    parse_yaml_stream(text)
        .map(|docs| {
            // Collected in place, the list would keep the parser's room for several 32-byte
            // values (about 280 bytes a file, 2.8 MB of the cache at 10,000 files).
            let mut docs: Vec<Doc> = docs.into_iter().map(Doc::new).collect();
            docs.shrink_to_fit();
            docs
        })
        .map_err(|msg| (Code::Yaml, msg))
}

/// Parses a multi-document YAML stream with serde-saphyr (YAML 1.1 booleans like Kubernetes,
/// merge keys, duplicate keys rejected). Empty documents are dropped. The error is one line:
/// `invalid YAML at line L column C: <reason>`.
pub fn parse_yaml_stream(text: &str) -> Result<Vec<Value>, String> {
    let docs = serde_saphyr::from_multiple::<Value>(text).map_err(|e| yaml_error_line(&e))?;
    if text.contains('!') {
        refuse_tags(text)?;
    }
    Ok(docs)
}

/// Refuses YAML tags other than the core schema's (`!!str`, `!!int`, …) and the YAML 1.1 types
/// Kubernetes reads (`!!binary`, `!!timestamp`, `!!merge`): serde-saphyr would drop a tag such
/// as `!!python/object:os.system` or `!Ref` silently and keep the bare value, which is not what
/// the author meant. Error: `invalid YAML at line L column C: tag … is not allowed …`.
fn refuse_tags(text: &str) -> Result<(), String> {
    for item in granit_parser::Parser::new_from_str(text) {
        let Ok((event, span)) = item else {
            return Ok(()); // serde-saphyr parsed it; nothing more to say
        };
        let Some(tag) = event.tag() else {
            continue;
        };
        let yaml11 = tag.handle() == "tag:yaml.org,2002:"
            && matches!(tag.suffix(), "binary" | "timestamp" | "merge");
        if !tag.is_yaml_core_schema() && !yaml11 {
            let written = if tag.handle() == "tag:yaml.org,2002:" {
                format!("!!{}", tag.suffix())
            } else {
                format!("{}{}", tag.handle(), tag.suffix())
            };
            return Err(format!(
                "invalid YAML at line {} column {}: tag {written} is not allowed (Kratix and Kubernetes YAML has no custom tags)",
                span.start.line(),
                span.start.col() + 1
            ));
        }
    }
    Ok(())
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
    cache_dir: Option<&Path>,
) -> Result<Objects, SourceError> {
    let mut loader = Loader::new(
        source.clone(),
        filter,
        cache_dir.map(Path::to_path_buf),
        None,
    )?;
    Ok(loader.load()?.objects)
}

/// Like [`load`], and also makes the Promise folders available on disk for pipelines (they
/// are mounted at `/promise`): a directory source is used in place; for a Git source the
/// folder of every Promise is exported under `checkout_parent/<commit>`. Returns the objects
/// and the root those folders are under. A remote is fetched within `network`.
pub fn load_with_root(
    source: &Source,
    filter: &FileFilter,
    cache_dir: Option<&Path>,
    checkout_parent: &Path,
    network: &statestores::NetworkTimeouts,
) -> Result<(Objects, PathBuf), SourceError> {
    let mut loader = Loader::new(
        source.clone(),
        filter,
        cache_dir.map(Path::to_path_buf),
        Some(checkout_parent.to_path_buf()),
    )?
    .with_network(*network);
    let loaded = loader.load()?;
    Ok((loaded.objects, loaded.root))
}

/// Config files that did not load, from a load's diagnostics: path → why (bad YAML, not
/// UTF-8, too large, unreadable). Their objects are kept at their last good version
/// ([`crate::reconcile::held`]).
pub fn unloadable_files(diagnostics: &[Diagnostic]) -> std::collections::BTreeMap<&str, &str> {
    diagnostics
        .iter()
        .filter(|d| {
            d.is_error()
                && d.document.is_none()
                && d.object.is_none()
                && matches!(d.code, Code::Read | Code::Yaml)
        })
        .map(|d| (d.file.as_str(), d.message.as_str()))
        .collect()
}

/// Classifies documents by `apiVersion`/`kind`.
pub fn classify(docs: Vec<Document>) -> Objects {
    let mut out = Objects::default();
    for doc in docs {
        let Document { origin, doc, blob } = doc;
        let value = match doc {
            Doc::Lazy(l) => {
                let id = object_ref(&l.api_version, &l.kind, &l.name, l.namespace.as_deref());
                out.candidates.push(Candidate {
                    origin,
                    id,
                    doc: Doc::Lazy(l),
                    blob,
                });
                continue;
            }
            Doc::Value(value) => value,
        };
        let Value::Object(map) = &*value else {
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
            // A document with an `apiVersion` and a `metadata.name` but no `kind` may be a
            // resource request that lost its kind: kept as a candidate of kind "", which
            // validation reports when a Promise serves its API group (and skips otherwise).
            (Some(Value::String(a)), None)
                if value
                    .pointer("/metadata/name")
                    .is_some_and(Value::is_string) =>
            {
                (a.clone(), String::new())
            }
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
        let meta = value.get("metadata");
        let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
        let id = object_ref(
            &api_version,
            &kind,
            field("name").unwrap_or_default(),
            field("namespace"),
        );
        if kind == crate::model::UPGRADE_PLAN_KIND
            && (api_version == KRATIX_API_VERSION || api_version == crate::model::SKE_API_VERSION)
        {
            push_typed(
                &mut out.upgrade_plans,
                &mut out.diagnostics,
                origin,
                id,
                value,
                blob,
            );
            continue;
        }
        if api_version == KRATIX_API_VERSION {
            match kind.as_str() {
                "Promise" => {
                    let before = out.promises.len();
                    let (o, i, v) = (origin.clone(), id.clone(), value.clone());
                    push_typed(&mut out.promises, &mut out.diagnostics, o, i, v, blob);
                    if out.promises.len() == before {
                        out.undecoded_promises.push(Located {
                            origin,
                            id,
                            object: Value::Null,
                            raw: value,
                            blob,
                        });
                    }
                }
                "Destination" => push_typed(
                    &mut out.destinations,
                    &mut out.diagnostics,
                    origin,
                    id,
                    value,
                    blob,
                ),
                "GitStateStore" => push_typed(
                    &mut out.git_state_stores,
                    &mut out.diagnostics,
                    origin,
                    id,
                    value,
                    blob,
                ),
                "BucketStateStore" => push_typed(
                    &mut out.bucket_state_stores,
                    &mut out.diagnostics,
                    origin,
                    id,
                    value,
                    blob,
                ),
                "HealthRecord" => push_typed(
                    &mut out.health_records,
                    &mut out.diagnostics,
                    origin,
                    id,
                    value,
                    blob,
                ),
                "ResourceBinding" => push_typed(
                    &mut out.resource_bindings,
                    &mut out.diagnostics,
                    origin,
                    id,
                    value,
                    blob,
                ),
                "PromiseRelease" | "PromiseRevision" | "Work" | "WorkPlacement" | "DryRun" => {
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
        out.candidates.push(Candidate {
            origin,
            id,
            doc: Doc::Value(value),
            blob,
        });
    }
    out
}

/// Kind, namespace and name of a document from its `metadata.name` and
/// `metadata.namespace` (read leniently: a missing name is empty). A cluster-scoped kind
/// ([`crate::model::is_cluster_scoped`]) has no namespace, whatever `metadata.namespace`
/// says.
fn object_ref(api_version: &str, kind: &str, name: &str, namespace: Option<&str>) -> ObjectRef {
    ObjectRef {
        kind: kind.to_string(),
        namespace: namespace
            .filter(|_| !crate::model::is_cluster_scoped(api_version, kind))
            .map(str::to_string),
        name: name.to_string(),
    }
}

/// Deserialises `value` as `T`, recording every failure with its field path.
fn push_typed<T: DeserializeOwned>(
    into: &mut Vec<Located<T>>,
    diags: &mut Vec<Diagnostic>,
    origin: Origin,
    id: ObjectRef,
    value: Arc<Value>,
    blob: Option<gix::ObjectId>,
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
            blob,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with `text`, named by its blob id (also for `config::parsed`'s tests).
    pub(super) fn file(path: &str, text: &str) -> RawFile {
        RawFile {
            path: path.into(),
            bytes: text.as_bytes().to_vec(),
            executable: false,
            oid: source::blob_id(text.as_bytes()),
        }
    }

    #[test]
    fn parse_cache_reuses_unchanged_blobs_and_forgets_the_rest() {
        let a = file("a.yaml", "apiVersion: v1\nkind: A\nmetadata: {name: a}\n");
        let b = file("b.yaml", "x: [unclosed\n");
        let mut cache = ParseCache::default();
        let (docs, diags) = cache.parse(&[a.clone(), b.clone()]);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].blob, Some(a.oid));
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(cache.has(&a.oid) && cache.has(&b.oid));
        // A cached blob is not read again: its bytes may be left out.
        let lazy = RawFile {
            bytes: Vec::new(),
            path: "moved/a.yaml".into(),
            ..a.clone()
        };
        let (again, diags) = cache.parse(&[lazy]);
        assert!(diags.is_empty());
        assert_eq!(again[0].doc, docs[0].doc);
        assert_eq!(again[0].origin.file, "moved/a.yaml");
        assert!(!cache.has(&b.oid), "blobs no longer present are dropped");
    }
}
