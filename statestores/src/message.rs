//! Commit messages as an audit trail.
//!
//! Kratix writes a fixed `Update from: <workplacement>` per placement (`kratix-contract.md`
//! §4.2); templating was requested upstream (syntasso/kratix#847). We write one commit per
//! apply with:
//!
//! - a subject from [`CommitMeta::subject_template`], default
//!   `promised: {updated} updated, {deleted} deleted (config {config_short})`;
//! - a body listing the changed placements and the repaired drift, each list cut after
//!   [`BODY_LINES`] lines with a count of the rest (a cold pass over 10,000 requests wrote a
//!   1 MB body nobody reads; the trailers still name every Promise and request);
//! - git trailers: `Promised-Config-Commit: <sha>`, `Promised-Requested-By: <author>` and
//!   `Promised-Signed-By: <principal> <key>` (the config commit's author and verified signer,
//!   when known), one `Promised-Promise: <name>` per distinct
//!   promise, one `Promised-Resource: <promise>/<namespace>/<name>` per request, one
//!   `Promised-Image: <image>@sha256:<hex>` per pipeline image whose output changed, then
//!   the caller's [`CommitMeta::trailers`] (e.g. `Promised-Parent:`, `Promised-Rollout:`).

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::plan::Plan;
use crate::{CommitMeta, DriftKind};

/// Default subject template.
pub const DEFAULT_SUBJECT: &str =
    "promised: {updated} updated, {deleted} deleted (config {config_short})";

/// At most this many names in `{promises}` and `{requests}`; more are counted (`a, b, c +2`).
pub const SUBJECT_NAMES: usize = 3;

/// At most this many lines of changed placements in the body, and as many of restored files;
/// a last line counts the rest (`- … and 9,906 more placements`).
pub const BODY_LINES: usize = 100;

/// `a, b, c` for a subject: the first [`SUBJECT_NAMES`] names, then `+N` for the rest.
fn name_list<T: std::fmt::Display>(names: impl ExactSizeIterator<Item = T>) -> String {
    let total = names.len();
    let mut s = names
        .take(SUBJECT_NAMES)
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if total > SUBJECT_NAMES {
        s.push_str(&format!(" +{}", total - SUBJECT_NAMES));
    }
    s
}

/// The line counting what a body list of `total` `what` left out after [`BODY_LINES`].
fn more(m: &mut String, total: usize, what: &str) {
    if total > BODY_LINES {
        let _ = writeln!(m, "- … and {} more {what}", total - BODY_LINES);
    }
}

/// Render the full commit message for `plan`.
pub fn render(meta: &CommitMeta, plan: &Plan<'_>) -> String {
    let (config, config_short) = match (&meta.config_commit, &meta.config_label) {
        // `<sha>` or `<sha>+dirty` (a directory that is a Git work tree with local changes).
        (Some(c), _) => {
            let (sha, dirty) = c.split_once('+').map_or((c.as_str(), ""), |(s, d)| (s, d));
            let short: String = sha.chars().take(7).collect();
            let short = if dirty.is_empty() {
                short
            } else {
                format!("{short}+{dirty}")
            };
            (c.as_str(), short)
        }
        (None, Some(label)) => (label.as_str(), label.clone()),
        (None, None) => ("unknown", "unknown".to_string()),
    };
    let promises: BTreeSet<&str> = plan
        .changed
        .values()
        .map(|c| c.owner.promise.as_str())
        // Files that no Promise produced (Destination canaries, aggregates) have no promise.
        .filter(|p| !p.is_empty())
        .collect();
    // (Promise, `namespace/name`): written `<promise>/<namespace>/<name>`.
    let resources: BTreeSet<(&str, &str)> = plan
        .changed
        .values()
        .filter_map(|c| Some((c.owner.promise.as_str(), c.owner.resource.as_deref()?)))
        .collect();
    let restored = plan.drift.len();
    let subject = meta
        .subject_template
        .as_deref()
        .unwrap_or(DEFAULT_SUBJECT)
        .replace("{updated}", &plan.written.to_string())
        .replace("{deleted}", &plan.deleted.to_string())
        .replace("{unchanged}", &plan.unchanged.to_string())
        .replace("{restored}", &restored.to_string())
        .replace("{placements}", &plan.changed.len().to_string())
        .replace("{promise_count}", &promises.len().to_string())
        .replace("{request_count}", &resources.len().to_string())
        .replace("{promises}", &name_list(promises.iter().copied()))
        .replace(
            "{requests}",
            &name_list(resources.iter().map(|(p, r)| format!("{p}/{r}"))),
        )
        .replace("{config_short}", &config_short)
        .replace("{config}", config);
    // A subject is one line.
    let subject = subject
        .lines()
        .next()
        .unwrap_or("promised")
        .trim()
        .to_owned();

    let mut m = String::new();
    m.push_str(&subject);
    m.push_str("\n\n");
    for c in plan.changed.values().take(BODY_LINES) {
        let verb = if c.removed { "removed" } else { "updated" };
        let _ = writeln!(
            m,
            "- {verb} {} ({} written, {} deleted)",
            c.owner.key, c.written, c.deleted
        );
    }
    more(&mut m, plan.changed.len(), "placements");
    for d in plan.drift.iter().take(BODY_LINES) {
        let what = match d.kind {
            DriftKind::Modified => "modified",
            DriftKind::Deleted => "deleted",
        };
        let _ = writeln!(
            m,
            "- restored {} ({what} outside promised; owner {})",
            d.path, d.owner.key
        );
    }
    more(&mut m, plan.drift.len(), "restored files");
    if let Some(note) = &meta.note {
        m.push('\n');
        m.push_str(note.trim_end());
        m.push('\n');
    }
    m.push('\n');

    if let Some(cc) = &meta.config_commit {
        let _ = writeln!(m, "Promised-Config-Commit: {cc}");
    }
    // One line each: a trailer value never spans lines.
    let one_line = |s: &str| s.lines().next().unwrap_or("").trim().to_string();
    if let Some(a) = meta
        .requested_by
        .as_deref()
        .filter(|a| !a.trim().is_empty())
    {
        let _ = writeln!(m, "Promised-Requested-By: {}", one_line(a));
    }
    if let Some(s) = meta.signed_by.as_deref().filter(|s| !s.trim().is_empty()) {
        let _ = writeln!(m, "Promised-Signed-By: {}", one_line(s));
    }
    for p in promises {
        let _ = writeln!(m, "Promised-Promise: {p}");
    }
    for (p, r) in resources {
        let _ = writeln!(m, "Promised-Resource: {p}/{r}");
    }
    let images: BTreeSet<&str> = meta.images.iter().map(String::as_str).collect();
    for i in images {
        let _ = writeln!(m, "Promised-Image: {i}");
    }
    let trailers: BTreeSet<&str> = meta.trailers.iter().map(String::as_str).collect();
    for t in trailers {
        let _ = writeln!(m, "{}", t.replace('\n', " "));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Owner;
    use crate::plan::OwnerChange;

    #[test]
    fn extra_trailers_come_last_sorted_and_once() {
        let plan = Plan::default();
        let meta = CommitMeta {
            config_commit: Some("abc".into()),
            trailers: vec![
                "Promised-Rollout: b group=rest".into(),
                "Promised-Rollout: a group=canary".into(),
                "Promised-Rollout: b group=rest".into(),
            ],
            ..Default::default()
        };
        let m = render(&meta, &plan);
        assert!(
            m.ends_with(
                "Promised-Config-Commit: abc\nPromised-Rollout: a group=canary\nPromised-Rollout: b group=rest\n"
            ),
            "{m}"
        );
    }

    #[test]
    fn subject_body_and_trailers() {
        let mut plan = Plan {
            written: 3,
            deleted: 1,
            ..Default::default()
        };
        plan.changed.insert(
            "k".into(),
            OwnerChange {
                owner: Owner {
                    key: "k".into(),
                    destination: "d".into(),
                    promise: "redis".into(),
                    resource: Some("default/example".into()),
                    pipeline: None,
                }
                .into(),
                written: 3,
                deleted: 1,
                removed: false,
            },
        );
        let meta = CommitMeta {
            config_commit: Some("1a2b3c4d5e".into()),
            ..Default::default()
        };
        let m = render(&meta, &plan);
        assert!(m.starts_with("promised: 3 updated, 1 deleted (config 1a2b3c4)\n\n- updated k (3 written, 1 deleted)\n"));
        assert!(m.ends_with(
            "\nPromised-Config-Commit: 1a2b3c4d5e\nPromised-Promise: redis\nPromised-Resource: redis/default/example\n"
        ));
        let custom = CommitMeta {
            subject_template: Some("deploy {config}: {placements} placements".into()),
            ..meta
        };
        assert!(render(&custom, &plan).starts_with("deploy 1a2b3c4d5e: 1 placements\n"));
        let dirty = CommitMeta {
            config_commit: Some("1a2b3c4d5e+dirty".into()),
            ..Default::default()
        };
        let m = render(&dirty, &plan);
        assert!(
            m.starts_with("promised: 3 updated, 1 deleted (config 1a2b3c4+dirty)\n"),
            "{m}"
        );
        assert!(
            m.contains("Promised-Config-Commit: 1a2b3c4d5e+dirty\n"),
            "{m}"
        );
        let dir = CommitMeta {
            config_label: Some("directory /srv/platform".into()),
            ..Default::default()
        };
        let m = render(&dir, &plan);
        assert!(
            m.starts_with("promised: 3 updated, 1 deleted (config directory /srv/platform)\n"),
            "{m}"
        );
        assert!(!m.contains("Promised-Config-Commit"), "{m}");
        let extra = CommitMeta {
            trailers: vec![
                "Promised-Parent: db/default/a-db -> app/default/a".into(),
                "Promised-Parent: cache/default/a-cache -> app/default/a".into(),
            ],
            ..Default::default()
        };
        let m = render(&extra, &plan);
        assert!(
            m.ends_with("Promised-Resource: redis/default/example\nPromised-Parent: cache/default/a-cache -> app/default/a\nPromised-Parent: db/default/a-db -> app/default/a\n"),
            "{m}"
        );
    }

    #[test]
    fn subject_names_promises_and_requests_with_a_count_past_three() {
        let mut plan = Plan::default();
        for (i, (promise, req)) in [
            ("redis", "default/a"),
            ("redis", "default/b"),
            ("redis", "team/c"),
            ("namespace", "default/d"),
            ("namespace", "default/e"),
        ]
        .into_iter()
        .enumerate()
        {
            plan.changed.insert(
                format!("k{i}"),
                OwnerChange {
                    owner: Owner {
                        key: format!("k{i}"),
                        destination: "d".into(),
                        promise: promise.into(),
                        resource: Some(req.into()),
                        pipeline: None,
                    }
                    .into(),
                    written: 1,
                    deleted: 0,
                    removed: false,
                },
            );
        }
        let meta = CommitMeta {
            subject_template: Some(
                "{promise_count} promises ({promises}), {request_count} requests: {requests}"
                    .into(),
            ),
            ..Default::default()
        };
        let m = render(&meta, &plan);
        assert!(
            m.starts_with("2 promises (namespace, redis), 5 requests: namespace/default/d, namespace/default/e, redis/default/a +2\n"),
            "{m}"
        );
    }

    #[test]
    fn requester_and_signer_trailers_are_one_line_each() {
        let plan = Plan::default();
        let meta = CommitMeta {
            config_commit: Some("1a2b3c4d5e".into()),
            requested_by: Some("Alice <alice@example.com>\nInjected: x".into()),
            signed_by: Some("alice@example.com SHA256:abc".into()),
            ..Default::default()
        };
        let m = render(&meta, &plan);
        assert!(
            m.contains("Promised-Config-Commit: 1a2b3c4d5e\nPromised-Requested-By: Alice <alice@example.com>\nPromised-Signed-By: alice@example.com SHA256:abc\n"),
            "{m}"
        );
        assert!(!m.contains("Injected"), "{m}");
        let none = render(&CommitMeta::default(), &plan);
        assert!(
            !none.contains("Requested-By") && !none.contains("Signed-By"),
            "{none}"
        );
    }

    #[test]
    fn a_long_body_is_cut_with_a_count_and_every_request_keeps_its_trailer() {
        let mut plan = Plan::default();
        let n = BODY_LINES + 5;
        for i in 0..n {
            plan.changed.insert(
                format!("k{i:04}"),
                OwnerChange {
                    owner: Owner {
                        key: format!("k{i:04}"),
                        destination: "d".into(),
                        promise: "redis".into(),
                        resource: Some(format!("default/r{i:04}")),
                        pipeline: None,
                    }
                    .into(),
                    written: 1,
                    deleted: 0,
                    removed: false,
                },
            );
        }
        for i in 0..BODY_LINES + 2 {
            plan.drift.push(crate::Drift {
                path: format!("d/x{i:04}.yaml"),
                owner: Owner::clone(&plan.changed["k0000"].owner),
                kind: DriftKind::Deleted,
            });
        }
        let m = render(&CommitMeta::default(), &plan);
        let lines: Vec<&str> = m.lines().collect();
        let updated = lines.iter().filter(|l| l.starts_with("- updated ")).count();
        let restored = lines
            .iter()
            .filter(|l| l.starts_with("- restored "))
            .count();
        assert_eq!((updated, restored), (BODY_LINES, BODY_LINES), "{m}");
        assert_eq!(lines[2], "- updated k0000 (1 written, 0 deleted)");
        assert_eq!(lines[2 + BODY_LINES], "- … and 5 more placements");
        assert_eq!(lines[3 + 2 * BODY_LINES], "- … and 2 more restored files");
        let requests: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("Promised-Resource: "))
            .collect();
        assert_eq!(requests.len(), n);
        assert_eq!(requests[n - 1], format!("redis/default/r{:04}", n - 1));
        // At or under the limit nothing is cut.
        plan.changed.retain(|k, _| k.as_str() < "k0100");
        plan.drift.truncate(BODY_LINES);
        let m = render(&CommitMeta::default(), &plan);
        assert!(!m.contains(" more "), "{m}");
    }
}
