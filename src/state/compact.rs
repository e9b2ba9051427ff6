//! [`CompactValue`]: a JSON document kept as its compact text, read into a `Value` on each
//! use. A resource request of a few hundred bytes of JSON takes 2–3 KB as a
//! `serde_json::Value` (each map a B-tree node of eleven slots): at 10,000 requests the
//! admitted objects were 27 MB of the daemon's peak (docs/benchmarks.md, "Memory", fourth
//! round).

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::StoredDocument;

/// Nesting deeper than this stays a `Value`: `serde_json` refuses to read back text nested
/// more than 128 levels.
const MAX_TEXT_DEPTH: usize = 100;

/// A JSON document: its compact text (shared by clones), or the `Value` itself when the text
/// would not read back exactly (a floating-point number, which `serde_json` reads back to
/// within one unit in the last place, or nesting past 100 levels). Equality, `Debug`
/// and serialization are those of the value.
#[derive(Clone)]
pub enum CompactValue {
    /// The usual case.
    Text(Arc<RawValue>),
    /// A document whose text would not read back exactly.
    Value(Arc<Value>),
}

impl CompactValue {
    /// `v`, as text when it reads back exactly.
    pub fn new(v: Value) -> CompactValue {
        if textual(&v, 0)
            && let Ok(text) = serde_json::value::to_raw_value(&v)
        {
            return CompactValue::Text(Arc::from(text));
        }
        CompactValue::Value(Arc::new(v))
    }

    /// True when kept as text.
    pub fn is_text(&self) -> bool {
        matches!(self, CompactValue::Text(_))
    }

    /// The value, parsed from the text on each call. Errors: none for a value made by
    /// [`CompactValue::new`] (it keeps text only when the text reads back).
    pub fn try_value(&self) -> Result<Arc<Value>, serde_json::Error> {
        match self {
            CompactValue::Text(t) => serde_json::from_str(t.get()).map(Arc::new),
            CompactValue::Value(v) => Ok(v.clone()),
        }
    }

    /// The value, parsed from the text on each call (a few microseconds for a request).
    /// Text that does not read back (not made by [`CompactValue::new`], so only a bug) is
    /// `null`, logged as an error.
    pub fn value(&self) -> Arc<Value> {
        self.try_value().unwrap_or_else(|e| {
            tracing::error!(error = %e, "a compact document does not read back");
            Arc::new(Value::Null)
        })
    }

    /// The text as JSON, when kept as text.
    pub fn text(&self) -> Option<&RawValue> {
        match self {
            CompactValue::Text(t) => Some(t),
            CompactValue::Value(_) => None,
        }
    }
}

impl From<&CompactValue> for StoredDocument {
    /// A record's document: the same text (shared, not copied: 1.9 MB at 10,000 requests),
    /// parsed when the record is read.
    fn from(c: &CompactValue) -> StoredDocument {
        match c {
            CompactValue::Text(t) => StoredDocument::from_text(t.clone()),
            CompactValue::Value(v) => v.clone().into(),
        }
    }
}

impl PartialEq for CompactValue {
    fn eq(&self, other: &CompactValue) -> bool {
        match (self, other) {
            (CompactValue::Text(a), CompactValue::Text(b)) if a.get() == b.get() => true,
            _ => self.value() == other.value(),
        }
    }
}

impl std::fmt::Debug for CompactValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(f)
    }
}

impl Serialize for CompactValue {
    /// As the value (read from the text): a `RawValue` is only understood by `serde_json`'s
    /// own serializer, and this may go to YAML.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

/// Whether `v` (at nesting `depth`) reads back exactly from its JSON text: it holds no
/// floating-point number and is nested at most [`MAX_TEXT_DEPTH`] levels.
fn textual(v: &Value, depth: usize) -> bool {
    match v {
        Value::Number(n) => !n.is_f64(),
        Value::Array(a) => depth < MAX_TEXT_DEPTH && a.iter().all(|x| textual(x, depth + 1)),
        Value::Object(m) => depth < MAX_TEXT_DEPTH && m.values().all(|x| textual(x, depth + 1)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_value_is_kept_as_text_unless_its_text_would_not_read_back_exactly() {
        let request = json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"big": u64::MAX, "neg": -3, "s": "x\ty", "list": [true, null]}});
        let c = CompactValue::new(request.clone());
        assert!(c.is_text());
        assert_eq!(*c.value(), request);
        assert_eq!(
            c,
            CompactValue::Value(Arc::new(request.clone())),
            "equal by value"
        );
        assert_eq!(serde_json::to_value(&c).unwrap(), request);
        let record = StoredDocument::from(&c);
        assert_eq!(**record, request, "a record of the same text");
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            c.text().unwrap().get(),
            "written back as the same text"
        );

        let float = json!({"spec": {"ratio": 0.30000000000000004}});
        let c = CompactValue::new(float.clone());
        assert!(!c.is_text(), "a float stays a value");
        assert_eq!(*c.value(), float);

        let mut deep = Value::from(1);
        for _ in 0..120 {
            deep = Value::Array(vec![deep]);
        }
        let c = CompactValue::new(deep.clone());
        assert!(
            !c.is_text(),
            "nesting past serde_json's reader stays a value"
        );
        assert_eq!(*c.value(), deep);
    }
}
