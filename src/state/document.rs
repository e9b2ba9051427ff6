//! [`StoredDocument`]: the last admitted object of a record, kept as the JSON text `state.json` holds
//! until something reads it. A new process reads every record, and a request's document is
//! needed only by its delete pipeline and when its file stops loading: parsing all of them
//! was a fifth of loading `state.json` at 10,000 requests, and their maps held about 1 KB a
//! request (docs/benchmarks.md, "No-op", seventh round).

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON document parsed on first use ([`StoredDocument::get`], or through `Deref`). Made from a
/// value ([`From`]) it is that value; read from JSON it is the text until then. Equality,
/// `Debug` and serialization are those of the value.
#[derive(Clone, Default)]
pub struct StoredDocument {
    /// The JSON text, while not parsed (and after, when parsed through `&self`); shared with
    /// the admission it came from ([`From<&CompactValue>`](super::CompactValue)).
    raw: Option<Arc<RawValue>>,
    /// The value, once parsed or when made from one.
    value: OnceLock<Arc<Value>>,
}

impl StoredDocument {
    /// A document of JSON text, parsed on first use.
    pub fn from_text(raw: Arc<RawValue>) -> StoredDocument {
        StoredDocument {
            raw: Some(raw),
            value: OnceLock::new(),
        }
    }

    /// The value: the text parsed on the first call. Text that is not JSON (it was checked
    /// as JSON when read, so only a bug) reads as `null`, logged as an error.
    pub fn get(&self) -> &Arc<Value> {
        self.value.get_or_init(|| {
            let Some(raw) = &self.raw else {
                return Arc::new(Value::Null);
            };
            serde_json::from_str(raw.get()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "a document of the state directory does not parse");
                Arc::new(Value::Null)
            })
        })
    }
}

impl std::ops::Deref for StoredDocument {
    type Target = Arc<Value>;

    fn deref(&self) -> &Arc<Value> {
        self.get()
    }
}

impl From<Arc<Value>> for StoredDocument {
    fn from(v: Arc<Value>) -> StoredDocument {
        StoredDocument {
            raw: None,
            value: OnceLock::from(v),
        }
    }
}

impl From<Value> for StoredDocument {
    fn from(v: Value) -> StoredDocument {
        Arc::new(v).into()
    }
}

impl PartialEq for StoredDocument {
    fn eq(&self, other: &StoredDocument) -> bool {
        self.get() == other.get()
    }
}

impl std::fmt::Debug for StoredDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl Serialize for StoredDocument {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.value.get(), &self.raw) {
            (None, Some(raw)) => raw.serialize(s),
            _ => self.get().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for StoredDocument {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StoredDocument, D::Error> {
        Ok(StoredDocument::from_text(
            Box::<RawValue>::deserialize(d)?.into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_read_from_json_is_its_value_and_writes_back_the_same() {
        // Keys in order, as `state.json` writes them (a parsed value writes them sorted).
        let text = r#"{"kind":"alpha","spec":{"list":[true,null,"x"],"n":1}}"#;
        let read: StoredDocument = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&read).unwrap(), text, "unparsed");
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(**read, value);
        assert_eq!(read, StoredDocument::from(Arc::new(value.clone())));
        assert_eq!(serde_json::to_string(&read).unwrap(), text, "parsed");
        assert!(!StoredDocument::default().get().is_object());
        assert!(StoredDocument::default().is_null());
        let clone = read.clone();
        assert_eq!(clone.get()["spec"]["n"], 1);
        // Through a `Value` (not text), as `serde_json::from_value` reads a record.
        let via_value: StoredDocument = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(**via_value, value);
    }
}
