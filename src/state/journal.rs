//! One line of `state.journal`, built in memory only while it stays small.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde::Serialize;

use super::ObjectRecord;

/// Longest journal line built in memory, in bytes (4 MiB, about 1,400 changed requests).
/// A pass that changes more writes a whole snapshot instead, streamed to its file: the
/// daemon's cold pass of 10,000 requests built a 33 MB line only to find it longer than the
/// snapshot (docs/benchmarks.md, "Memory", fourth round).
pub(super) const LINE_MAX: u64 = 4 << 20;

/// `entry` as one journal line (compact JSON and `\n`), or `None` when the line would be
/// longer than `limit` bytes; no more than `limit` bytes are held either way.
pub(super) fn line(entry: &impl Serialize, limit: u64) -> Option<Vec<u8>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut w = Bounded {
        buf: Vec::new(),
        limit,
    };
    // An error is the limit (a record always serialises).
    serde_json::to_writer(&mut w, entry).ok()?;
    w.write_all(b"\n").ok()?;
    Some(w.buf)
}

/// The records of `map` named by `keys`, `None` for a key whose record is gone.
pub(super) fn pick<'a>(
    map: &'a super::Records,
    keys: &BTreeSet<String>,
) -> BTreeMap<String, Option<&'a ObjectRecord>> {
    keys.iter()
        .map(|k| (k.clone(), map.get(k).map(|r| &**r)))
        .collect()
}

/// A `Vec` that refuses to grow past `limit` bytes.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
}

impl Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + bytes.len() > self.limit {
            return Err(std::io::Error::other("journal line longer than its limit"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_built_up_to_its_limit_and_refused_past_it() {
        let entry = serde_json::json!({"requests": {"a/default/x": null}});
        let exact = format!("{entry}\n").into_bytes();
        let n = exact.len() as u64;
        assert_eq!(line(&entry, n).as_deref(), Some(&exact[..]), "fits exactly");
        assert_eq!(
            line(&entry, n - 1),
            None,
            "one byte short, newline included"
        );
        assert_eq!(line(&entry, 0), None);
    }
}
