//! [`Text`]: a status string held once however many statuses hold the same value.
//!
//! At 10,000 requests most of a status's strings repeat: condition types and reasons come
//! from a short list, messages mostly name the Promise, and the times of one pass fall in a
//! few seconds. As `String`s they were about 1 KB per request (docs/benchmarks.md, "Memory",
//! sixth round). A `Text` is a shared `Arc<str>` looked up in a process-wide table when it is
//! made, so equal values share one allocation; values no status holds any more are dropped
//! from the table as it grows (it is swept when it has doubled since the last sweep, so a
//! long-running daemon's table stays proportional to what its statuses hold).

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// A shared, immutable status string (see the module docs); serialised as a plain string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(Arc<str>);

/// The values made so far ([`super::intern::Table`]).
static TABLE: LazyLock<Mutex<super::intern::Table<str>>> = LazyLock::new(Mutex::default);

/// The table's value equal to `s`, or `make()` entered in it.
fn intern(s: &str, make: impl FnOnce() -> Arc<str>) -> Arc<str> {
    TABLE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .intern(s, make)
}

impl Text {
    /// The shared value equal to `s`.
    pub fn new(s: &str) -> Self {
        Text(intern(s, || Arc::from(s)))
    }

    /// Makes this value the shared one: the table's equal value, or this one entered in the
    /// table. For values read back unshared (see [`Deserialize`]).
    pub fn share(&mut self) {
        let own = self.0.clone();
        self.0 = intern(&own, || own.clone());
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `true` for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for Text {
    fn default() -> Self {
        Text::new("")
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::new(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text::new(&s)
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Text::new(s)
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.0.to_string()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        **self == *other.0
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Read back unshared, without the table: a whole `promised reconcile` reads 10,000 statuses
/// and would pay a lookup per string (13 ms of a no-op at 10,000 requests) for memory it gives
/// back when it exits. The daemon shares what it loaded once ([`Text::share`], through
/// `Engine::with_shared_status_texts`).
impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

/// Copies the deserialiser's string once, into the `Arc` (serde's `Cow<str>` or `String`
/// would copy it a second time).
struct TextVisitor;

impl serde::de::Visitor<'_> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(Text(Arc::from(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal values share one allocation (made, or read from JSON and then shared); a value no `Text` holds any
    /// more leaves the table at the next sweep, so the table does not grow without bound.
    #[test]
    fn equal_values_share_and_unused_ones_go() {
        let a = Text::new("PipelinesExecutedSuccessfully");
        let mut b: Text = serde_json::from_str("\"PipelinesExecutedSuccessfully\"").expect("json");
        assert!(!Arc::ptr_eq(&a.0, &b.0), "read back unshared");
        b.share();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert!(Arc::ptr_eq(
            &a.0,
            &Text::new("PipelinesExecutedSuccessfully").0
        ));
        assert_eq!(
            serde_json::to_string(&b).expect("json"),
            "\"PipelinesExecutedSuccessfully\""
        );
        assert_eq!(a, "PipelinesExecutedSuccessfully");
        let gone = "text-test: a value nothing keeps";
        drop(Text::new(gone));
        let before = TABLE.lock().expect("table").sweep_at();
        for i in 0..before + 1 {
            drop(Text::new(&format!("text-test: {i}")));
        }
        // Every interleaving with other threads sweeps at least once after the drop: the loop
        // alone adds more values than the threshold it started with.
        let t = TABLE.lock().expect("table");
        assert!(!t.set.contains(gone));
        assert!(t.set.contains("PipelinesExecutedSuccessfully"));
    }
}
