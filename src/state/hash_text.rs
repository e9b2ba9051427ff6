//! [`HashText`]: a hash kept by every record and admitted request (input, spec, placement
//! context), stored as its 32 bytes when it is a sha256 in hex.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A hash as text, e.g. a request's input hash: 64 lower-case hex digits (sha256), empty for
/// none, or any other text (written by tests, or by a later version).
///
/// A sha256 is kept as its 32 bytes, not as a 64-byte string on the heap: five such hashes per
/// request were 10,000 allocations each at 10,000 requests, about 4 MB in all
/// (docs/benchmarks.md, "Memory", eighth round). It reads, compares, prints and serialises as
/// the text it was made from.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct HashText(Repr);

#[derive(Clone, Default, PartialEq, Eq, Hash)]
enum Repr {
    #[default]
    Empty,
    Sha256([u8; 32]),
    Other(Box<str>),
}

impl HashText {
    /// `true` for the empty text (no hash: e.g. "run again").
    pub fn is_empty(&self) -> bool {
        matches!(self.0, Repr::Empty)
    }

    /// The sha256 of `bytes` (what [`super::sha256_hex`] writes, without the text).
    pub fn sha256_of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        HashText(Repr::Sha256(sha2::Sha256::digest(bytes).into()))
    }

    /// Makes it empty.
    pub fn clear(&mut self) {
        self.0 = Repr::Empty;
    }

    /// The 32 bytes of a sha256 in lower-case hex, `None` for any other text. One pass, no
    /// table: a whole-process no-op at 10,000 requests reads 30,000 of these, and the `hex`
    /// crate's check-then-decode cost it 7 ms.
    fn sha256_bytes(text: &str) -> Option<[u8; 32]> {
        const fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(out)
    }
}

impl From<&str> for HashText {
    fn from(text: &str) -> Self {
        HashText(if text.is_empty() {
            Repr::Empty
        } else if let Some(b) = Self::sha256_bytes(text) {
            Repr::Sha256(b)
        } else {
            Repr::Other(text.into())
        })
    }
}

impl From<String> for HashText {
    fn from(text: String) -> Self {
        text.as_str().into()
    }
}

impl From<&String> for HashText {
    fn from(text: &String) -> Self {
        text.as_str().into()
    }
}

impl PartialEq<str> for HashText {
    fn eq(&self, other: &str) -> bool {
        match &self.0 {
            Repr::Empty => other.is_empty(),
            Repr::Sha256(b) => {
                let mut hex = [0u8; 64];
                hex::encode_to_slice(b, &mut hex).is_ok() && hex == other.as_bytes()
            }
            Repr::Other(s) => **s == *other,
        }
    }
}

impl PartialEq<&str> for HashText {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<String> for HashText {
    fn eq(&self, other: &String) -> bool {
        *self == *other.as_str()
    }
}

impl fmt::Display for HashText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Empty => Ok(()),
            Repr::Sha256(b) => {
                let mut buf = [0u8; 64];
                hex::encode_to_slice(b, &mut buf).map_err(|_| fmt::Error)?;
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
            Repr::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for HashText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

impl Serialize for HashText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HashText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(<std::borrow::Cow<'de, str>>::deserialize(d)?
            .as_ref()
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "95b5f694b5f69ffe911f345edeec0ad6579a7ebda54a85dacfbeb9dd7b412524";

    #[test]
    fn a_sha256_is_kept_as_bytes_and_reads_back_as_written() {
        for text in ["", SHA, "h2", &SHA.to_uppercase(), &SHA[..63]] {
            let h = HashText::from(text);
            assert_eq!(h.to_string(), text);
            assert_eq!(h, text);
            assert_eq!(h.is_empty(), text.is_empty());
            let json = serde_json::to_string(&h).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<HashText>(&json).unwrap(), h);
        }
        assert!(matches!(HashText::from(SHA).0, Repr::Sha256(_)));
        assert!(matches!(
            HashText::from(SHA.to_uppercase()).0,
            Repr::Other(_)
        ));
        assert!(std::mem::size_of::<HashText>() <= 40);
        assert_eq!(
            HashText::sha256_of(b"x"),
            *crate::state::sha256_hex(b"x").as_str()
        );
        // Read from a document that lends its strings, and from one that cannot (escapes).
        let doc = format!(r#"["{SHA}", "h\u0032"]"#);
        let read: Vec<HashText> = serde_json::from_str(&doc).unwrap();
        assert_eq!(read, [HashText::from(SHA), HashText::from("h2")]);
    }

    #[test]
    fn equal_only_to_the_same_text() {
        let h = HashText::from(SHA);
        assert_ne!(h, *SHA.to_uppercase());
        assert_ne!(h, "");
        assert_ne!(h, HashText::from("h2"));
        assert_ne!(HashText::default(), "h2");
        let mut c = h.clone();
        c.clear();
        assert!(c.is_empty() && c != h);
        assert_eq!(c, "");
    }
}
