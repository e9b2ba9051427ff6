//! [`Doc`]: a config document as the parse cache keeps it between passes. A document of a
//! Kratix kind stays a `serde_json::Value` (every pass reads it). Any other document (a
//! resource request, a pipeline asset, or neither) is kept as what classification reads of
//! it (`apiVersion`, `kind`, `metadata.name`, `metadata.namespace`) and its compact JSON
//! text, read into a value only when its admission must be redone: about 450 bytes a request
//! against 2.3 KB as a value, 19 MB of the daemon's memory at 10,000 requests
//! (docs/benchmarks.md, "Memory", fifth round).

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::model::{KRATIX_API_VERSION, SKE_API_VERSION, UPGRADE_PLAN_KIND};
use crate::state::CompactValue;

/// One document of a config file. Clones share it. Equality and `Debug` are the value's.
#[derive(Clone)]
pub enum Doc {
    /// Kratix kinds, documents without a string `apiVersion` and `kind`, and documents whose
    /// text would not read back exactly (a float, nesting past 100 levels).
    Value(Arc<Value>),
    /// Every other document.
    Lazy(Arc<Lazy>),
}

/// What classification reads of a document of no Kratix kind, and its text.
pub struct Lazy {
    /// `apiVersion`.
    pub api_version: Box<str>,
    /// `kind`.
    pub kind: Box<str>,
    /// `metadata.name`; empty when missing or not a string.
    pub name: Box<str>,
    /// `metadata.namespace` when a string.
    pub namespace: Option<Box<str>>,
    /// The document as compact JSON.
    text: Arc<RawValue>,
}

impl Doc {
    /// `v` as the parse cache keeps it (see the module).
    pub fn new(v: Value) -> Doc {
        let head = match Head::of(&v) {
            Some(h) if !h.is_kratix() => h.owned(),
            _ => return Doc::Value(Arc::new(v)),
        };
        match CompactValue::new(v) {
            CompactValue::Text(text) => Doc::lazy(head, text),
            CompactValue::Value(v) => Doc::Value(v),
        }
    }

    fn lazy((api_version, kind, name, namespace): OwnedHead, text: Arc<RawValue>) -> Doc {
        Doc::Lazy(Arc::new(Lazy {
            api_version,
            kind,
            name,
            namespace,
            text,
        }))
    }

    /// The document as a value: shared for [`Doc::Value`], read from the text (a few
    /// microseconds for a request) for [`Doc::Lazy`]. A text that does not read back (only a
    /// bug: it was written from a value) is `null`, logged as an error.
    pub fn value(&self) -> Arc<Value> {
        match self {
            Doc::Value(v) => v.clone(),
            Doc::Lazy(l) => CompactValue::Text(l.text.clone()).value(),
        }
    }

    /// The document's `apiVersion` when a string.
    pub fn api_version(&self) -> Option<&str> {
        match self {
            Doc::Value(v) => v.get("apiVersion").and_then(Value::as_str),
            Doc::Lazy(l) => Some(&l.api_version),
        }
    }

    /// The document's `kind` when a string.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Doc::Value(v) => v.get("kind").and_then(Value::as_str),
            Doc::Lazy(l) => Some(&l.kind),
        }
    }
}

impl From<Arc<Value>> for Doc {
    fn from(v: Arc<Value>) -> Doc {
        Doc::Value(v)
    }
}

/// Serialises as the document (a [`Doc::Lazy`] as its text, not read again).
impl serde::Serialize for Doc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Doc::Value(v) => v.serialize(s),
            Doc::Lazy(l) => l.text.serialize(s),
        }
    }
}

impl PartialEq for Doc {
    fn eq(&self, other: &Doc) -> bool {
        match (self, other) {
            (Doc::Value(a), Doc::Value(b)) => a == b,
            (Doc::Lazy(a), Doc::Lazy(b)) => a.text.get() == b.text.get(),
            _ => self.value() == other.value(),
        }
    }
}

impl fmt::Debug for Doc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value().fmt(f)
    }
}

/// `apiVersion`, `kind`, name and namespace of a [`Lazy`].
type OwnedHead = (Box<str>, Box<str>, Box<str>, Option<Box<str>>);

/// The classification head of a mapping with a string `apiVersion` and `kind`.
struct Head<'a> {
    api_version: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
}

impl<'a> Head<'a> {
    fn of(v: &'a Value) -> Option<Head<'a>> {
        let meta = v.get("metadata");
        Some(Head {
            api_version: v.get("apiVersion")?.as_str()?,
            kind: v.get("kind")?.as_str()?,
            name: meta
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default(),
            namespace: meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str),
        })
    }

    fn owned(&self) -> OwnedHead {
        (
            self.api_version.into(),
            self.kind.into(),
            self.name.into(),
            self.namespace.map(Into::into),
        )
    }

    /// Kinds `config::classify` decodes (read on every pass, so kept as values).
    fn is_kratix(&self) -> bool {
        self.api_version == KRATIX_API_VERSION
            || (self.kind == UPGRADE_PLAN_KIND && self.api_version == SKE_API_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lazy(d: &Doc) -> &Lazy {
        match d {
            Doc::Lazy(l) => l,
            Doc::Value(v) => panic!("kept as a value: {v}"),
        }
    }

    #[test]
    fn requests_are_kept_as_text_and_read_back_exactly() {
        let v = json!({
            "apiVersion": "marketplace.kratix.io/v1alpha1",
            "kind": "redis",
            "metadata": {"name": "db", "namespace": "team-a", "labels": {"x": "1"}},
            "spec": {"size": "small", "replicas": 3, "big": u64::MAX, "neg": -4, "on": true, "list": [null, "ü"]}
        });
        let d = Doc::new(v.clone());
        let l = lazy(&d);
        assert_eq!(
            (&*l.api_version, &*l.kind, &*l.name, l.namespace.as_deref()),
            (
                "marketplace.kratix.io/v1alpha1",
                "redis",
                "db",
                Some("team-a")
            )
        );
        assert_eq!(*d.value(), v);
        assert_eq!(
            (d.api_version(), d.kind()),
            (Some("marketplace.kratix.io/v1alpha1"), Some("redis"))
        );
        // What the parse cache's record writes is the document.
        assert_eq!(serde_json::to_value(&d).unwrap(), v);
    }

    #[test]
    fn kratix_kinds_floats_and_documents_without_a_kind_stay_values() {
        let kept_as_values = [
            json!({"apiVersion": "platform.kratix.io/v1alpha1", "kind": "Promise", "metadata": {"name": "p"}}),
            json!({"apiVersion": "platform.syntasso.io/v1alpha1", "kind": "UpgradePlan", "metadata": {"name": "u"}}),
            json!({"apiVersion": "example.com/v1", "metadata": {"name": "no-kind"}}),
            json!({"apiVersion": "example.com/v1", "kind": 3}),
            json!(["not", "a", "mapping"]),
        ];
        for v in kept_as_values {
            let d = Doc::new(v.clone());
            assert!(matches!(d, Doc::Value(_)), "{v}");
            assert_eq!(*d.value(), v);
        }
        // A float would not read back exactly from text.
        let float =
            json!({"apiVersion": "example.com/v1", "kind": "redis", "spec": {"ratio": 0.1}});
        assert!(matches!(Doc::new(float), Doc::Value(_)));
        // A name or namespace that is not a string is read as missing, as for a value.
        let d = Doc::new(
            json!({"apiVersion": "a/v1", "kind": "k", "metadata": {"name": 7, "namespace": ["x"]}}),
        );
        assert_eq!((&*lazy(&d).name, lazy(&d).namespace.as_deref()), ("", None));
    }
}
