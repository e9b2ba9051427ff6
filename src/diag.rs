//! Diagnostics: every error and warning names the file, the document index, the object and the
//! field, and says what was expected.
//!
//! Display form (one line):
//! `requests/redis-a.yaml[0] redis default/a: spec.size: "medium" does not match ^(small|large)$`.
//! Parts that are unknown are left out (a YAML syntax error has no object yet).

use std::fmt;

use serde::Serialize;

use crate::model::ObjectRef;

/// How bad a diagnostic is. Errors make `promised validate` exit 1; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object (or file) cannot be used.
    Error,
    /// Worth a look; nothing is rejected.
    Warning,
}

/// What went wrong, as a stable machine-readable code (serialised in kebab-case in
/// `--output json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Code {
    /// The file could not be read (I/O, not UTF-8, Git object missing).
    Read,
    /// YAML syntax error, duplicate key, or a YAML budget exceeded.
    Yaml,
    /// A document that is not a mapping, or lacks `apiVersion`/`kind` types.
    NotAnObject,
    /// An object of a kind promised does not know; skipped.
    UnknownKind,
    /// A Kratix kind promised knows but does not support (e.g. `PromiseRelease`); skipped.
    UnsupportedKind,
    /// A field of a Kratix object has the wrong type, value or is missing.
    InvalidField,
    /// A workflow Pipeline is malformed (unknown field, wrong kind, bad name).
    InvalidPipeline,
    /// `spec.api` is not a usable CRD, or its schema cannot be compiled.
    InvalidApi,
    /// The Promise API is not `Namespaced` (Kratix webhook rule).
    ClusterScopedApi,
    /// Two objects with the same kind, namespace and name.
    DuplicateIdentity,
    /// Two Promises serve the same group and kind.
    DuplicateApi,
    /// A Destination references a state store that does not exist.
    MissingStateStore,
    /// Two Destinations share a `path` on one state store.
    DuplicateDestinationPath,
    /// `<promise>-<type>-<action>-<pipeline>` is longer than 60 characters.
    PipelineNameTooLong,
    /// Two Pipelines with the same name in one workflow.
    DuplicatePipelineName,
    /// A `requiredPromises` entry names a Promise that is not in the repo.
    MissingRequiredPromise,
    /// Promises whose `requiredPromises` form a cycle (none could ever become available).
    RequiredPromiseCycle,
    /// A resource request whose version its Promise does not serve or whose Promise is
    /// invalid; or a document outside every Promise folder whose kind no Promise serves (a
    /// warning unless `unservedKinds: error`).
    UnservedKind,
    /// A resource request that fails its Promise's schema.
    InvalidRequest,
    /// The tenancy policy refuses the object (`promised-policy.yaml`), or the policy itself
    /// does not load.
    PolicyDenied,
}

/// One error or warning about the config repo.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Machine-readable category.
    pub code: Code,
    /// Repository-relative file path (`/`-separated).
    pub file: String,
    /// Zero-based index of the document in the file's YAML stream (empty documents are not
    /// counted), when the problem is inside one document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// The object concerned, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// Dotted field path such as `spec.size` or `spec.workflows.resource.configure[0].metadata.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What was found and what was expected.
    pub message: String,
}

impl Diagnostic {
    /// An error about a whole file.
    pub fn file_error(code: Code, file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            file: file.into(),
            document: None,
            object: None,
            field: None,
            message: message.into(),
        }
    }

    /// Sets the severity to warning.
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(i) = self.document {
            write!(f, "[{i}]")?;
        }
        if let Some(o) = &self.object {
            write!(f, " {o}")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field
            && !field.is_empty()
        {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Where an object came from: file and document index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Origin {
    /// Repository-relative path.
    pub file: String,
    /// Zero-based document index within the file.
    pub document: usize,
}

impl Origin {
    /// A diagnostic located at this document, about `object`.
    pub fn diag(
        &self,
        code: Code,
        object: Option<&ObjectRef>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let field = field.into();
        Diagnostic {
            severity: Severity::Error,
            code,
            file: self.file.clone(),
            document: Some(self.document),
            object: object.cloned(),
            field: (!field.is_empty()).then_some(field),
            message: message.into(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.file, self.document)
    }
}
