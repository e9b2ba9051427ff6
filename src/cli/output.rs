//! Output formats of the subcommands, in one place: the `--output` choices ([`OutputFormat`]
//! for reports, [`StatusFormat`] for `promised status`) and the rendering they share: pretty
//! JSON, YAML, and the status table.
//!
//! Each subcommand's text report (what `promised validate` or `promised reconcile` prints by
//! default) stays beside the subcommand; this module has what more than one of them uses.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;

use crate::state::State;
use crate::status::StatusRow;

/// Output format of a subcommand's report (`--output` of `validate`, `reconcile` and
/// `pipeline run`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document (stable keys, for CI tools).
    Json,
}

/// Output of `promised status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// One line per object.
    #[default]
    Table,
    /// The full status as JSON.
    Json,
    /// The full status as YAML.
    Yaml,
}

/// Output of the `promised images` subcommands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    /// One line per image.
    #[default]
    Table,
    /// JSON (stable keys, for scripts).
    Json,
    /// YAML.
    Yaml,
}

/// A byte count for people: `512 B`, `1.5 KiB`, `20.0 MiB`, `3.2 GiB` (powers of 1024, one
/// decimal).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Writes `value` as one pretty-printed JSON document and a newline. Errors are those of
/// `out`, or serialisation errors wrapped as [`std::io::Error`].
pub fn write_json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
    writeln!(out)
}

/// Writes `value` as a YAML document (the daemon's YAML style, [`crate::validate::to_yaml`]).
pub fn write_yaml<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> std::io::Result<()> {
    let v = serde_json::to_value(value).map_err(std::io::Error::other)?;
    out.write_all(crate::validate::to_yaml(&v).as_bytes())
}

/// Writes every object's status in the chosen format (the daemon's `/api/v1/status` serves the
/// JSON form).
pub fn write_status(
    state: &State,
    format: StatusFormat,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    write_rows(&state.status_rows(), format, out)
}

/// Writes status rows in the chosen format: a table with one line per object (objects held
/// because their config file does not load first), or all of every row as JSON or YAML.
pub fn write_rows(
    rows: &[StatusRow],
    format: StatusFormat,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match format {
        StatusFormat::Json => write_json(out, rows),
        StatusFormat::Yaml => write_yaml(out, rows),
        StatusFormat::Table => write_table(rows, out),
    }
}

/// The status table: `OBJECT  RECONCILED  DESTINATIONS  COMMIT  HEALTH  VERSION  MESSAGE`, one
/// line per row (HEALTH: `status.healthStatus.state`, `-` without one; VERSION: [`version`]).
fn write_table(rows: &[StatusRow], out: &mut dyn Write) -> std::io::Result<()> {
    // Objects held because their config file does not load come first: a person must fix
    // that file (`reconcile::held`).
    let held = |r: &&StatusRow| {
        r.status
            .condition(crate::status::cond::RECONCILED)
            .is_some_and(|c| c.reason == crate::reconcile::held::REASON)
    };
    let rows: Vec<&StatusRow> = rows
        .iter()
        .filter(held)
        .chain(rows.iter().filter(|r| !held(r)))
        .collect();
    let rows = tree(&rows);
    let width = rows
        .iter()
        .map(|(_, k)| k.chars().count())
        .max()
        .unwrap_or(10)
        .max(10);
    writeln!(
        out,
        "{:<width$}  {:<11}  {:<16}  {:<9}  {:<9}  {:<14}  MESSAGE",
        "OBJECT", "RECONCILED", "DESTINATIONS", "COMMIT", "HEALTH", "VERSION"
    )?;
    for (r, key) in rows {
        let mut dests: Vec<&str> = r
            .status
            .destinations
            .iter()
            .map(|d| d.destination.as_str())
            .collect();
        dests.dedup();
        let commit = r
            .status
            .commits
            .values()
            .next()
            .map(|c| &c[..c.len().min(9)])
            .unwrap_or("-");
        writeln!(
            out,
            "{:<width$}  {:<11}  {:<16}  {:<9}  {:<9}  {:<14}  {}",
            key,
            r.status.summary(),
            if dests.is_empty() {
                "-".to_string()
            } else {
                dests.join(",")
            },
            commit,
            r.status
                .health_status
                .as_ref()
                .map_or("-", |h| h.state.as_str()),
            version(&r.status),
            first_line(&r.status.message)
        )?;
    }
    Ok(())
}

/// The rows in table order with the key each is shown as: a compound Promise's children
/// (`status.parent`, README "Compound Promises") right under their parent, indented two
/// spaces per level with `└─ `; everything else keeps its place. A child whose parent is not
/// among `rows` stays where it is, unindented.
fn tree<'r>(rows: &[&'r StatusRow]) -> Vec<(&'r StatusRow, String)> {
    use std::collections::BTreeMap;
    let keys: std::collections::HashSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&'r StatusRow>> = BTreeMap::new();
    let mut roots = Vec::new();
    for r in rows {
        match r
            .status
            .parent
            .as_deref()
            .filter(|p| keys.contains(p) && *p != r.key)
        {
            Some(p) => children.entry(p).or_default().push(r),
            None => roots.push(*r),
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut stack: Vec<(&'r StatusRow, usize)> = roots.into_iter().rev().map(|r| (r, 0)).collect();
    while let Some((r, depth)) = stack.pop() {
        // A parent chain that loops back never shows a row twice.
        if out
            .iter()
            .any(|(o, _): &(&StatusRow, String)| std::ptr::eq(*o, r))
            || depth > rows.len()
        {
            continue;
        }
        let key = match depth {
            0 => r.key.clone(),
            d => format!("{}└─ {}", "  ".repeat(d), r.key),
        };
        out.push((r, key));
        for c in children.get(r.key.as_str()).into_iter().flatten().rev() {
            stack.push((c, depth + 1));
        }
    }
    // Rows only reachable through a parent chain that loops: shown as they are.
    for r in rows {
        if !out.iter().any(|(o, _)| std::ptr::eq(*o, *r)) {
            out.push((r, r.key.clone()));
        }
    }
    out
}

/// A request's `status.promiseVersion` (`-` without one), `pinned` when its binding names a
/// version, and `!<version>` after a failed upgrade to that version: `v1 pinned`, `v1 !v2`.
fn version(s: &crate::status::ObjectStatus) -> String {
    let mut v = s.promise_version.as_deref().unwrap_or("-").to_string();
    if s.resource_binding_version
        .as_deref()
        .is_some_and(|b| b != crate::model::LATEST_VERSION)
    {
        v.push_str(" pinned");
    }
    if let Some(f) = &s.failed_version {
        v.push_str(&format!(" !{f}"));
    }
    v
}

/// The first line of a status message: the status table keeps one row per object (the whole
/// message is in `--output json|yaml`).
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, tree};
    use crate::model::ObjectRef;
    use crate::status::{ObjectStatus, StatusRow};

    fn row(key: &str, parent: Option<&str>) -> StatusRow {
        let id = ObjectRef {
            kind: "app".into(),
            namespace: Some("default".into()),
            name: key.into(),
        };
        let mut status = ObjectStatus::new(id, "p");
        status.parent = parent.map(str::to_string);
        StatusRow {
            key: key.into(),
            status,
        }
    }

    #[test]
    fn children_are_drawn_under_their_parent() {
        let rows = [
            row("a-db", Some("app")),
            row("app", None),
            row("a-db-cache", Some("a-db")),
            row("orphan", Some("gone")),
            row("x", Some("y")),
            row("y", Some("x")),
        ];
        let refs: Vec<&StatusRow> = rows.iter().collect();
        let shown: Vec<String> = tree(&refs).into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            shown,
            [
                "app",
                "  └─ a-db",
                "    └─ a-db-cache",
                "orphan",
                // A parent chain that loops is shown as it is, never twice.
                "x",
                "y",
            ]
        );
    }

    #[test]
    fn human_bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 << 20), "20.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
