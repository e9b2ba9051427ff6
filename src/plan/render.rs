//! Printing a [`Plan`]: unified diffs (`diff`, with the `similar` crate), plain text for a
//! terminal ([`text`]) and Markdown for a pull-request comment ([`markdown`]: a summary
//! table, the runs and blast radius, and each diff in a collapsible `<details>` block, cut
//! past a size limit with a count of what was left out).

use std::fmt::Write as _;

use similar::TextDiff;

use super::{BaseKind, FilePlan, Plan, Reason};
use crate::reconcile::{FileChangeKind, PlannedFile};

/// Lines of context around each change in a unified diff.
pub const CONTEXT_LINES: usize = 3;

/// Default size limit of the Markdown output in bytes: GitHub refuses comments over 65,536
/// characters, so diffs stop before this and a count says how many were left out.
pub const DEFAULT_MARKDOWN_LIMIT: usize = 60_000;

/// A diff longer than this many lines is cut (the rest counted) in Markdown.
const MAX_DIFF_LINES: usize = 400;

/// The unified diff of a planned file (`a/<path>` → `b/<path>`, `/dev/null` for an added or
/// removed file) with its lines added and removed. The diff is `None` with `stat` or when
/// either side is not UTF-8 (binary); the counts are 0 for binary content.
pub(super) fn diff(f: &PlannedFile, stat: bool) -> (Option<String>, usize, usize) {
    let side = |c: &Option<Vec<u8>>| match c {
        None => Some(String::new()),
        Some(b) => String::from_utf8(b.clone()).ok(),
    };
    let (Some(old), Some(new)) = (side(&f.before), side(&f.after)) else {
        return (None, 0, 0);
    };
    if f.change == FileChangeKind::Restored && f.after.is_none() {
        return (None, 0, 0); // indexed content not in the blob cache
    }
    // Myers diff is quadratic in the worst case: a huge rewritten file gets a coarser diff
    // after this long rather than stalling the plan.
    let d = TextDiff::configure()
        .timeout(std::time::Duration::from_secs(2))
        .diff_lines(&old, &new);
    let (mut added, mut removed) = (0, 0);
    for op in d.ops() {
        for change in d.iter_changes(op) {
            match change.tag() {
                similar::ChangeTag::Insert => added += 1,
                similar::ChangeTag::Delete => removed += 1,
                similar::ChangeTag::Equal => {}
            }
        }
    }
    if stat {
        return (None, added, removed);
    }
    let a = if f.before.is_some() {
        format!("a/{}", f.path)
    } else {
        "/dev/null".into()
    };
    let b = if f.after.is_some() {
        format!("b/{}", f.path)
    } else {
        "/dev/null".into()
    };
    let text = d
        .unified_diff()
        .context_radius(CONTEXT_LINES)
        .missing_newline_hint(true)
        .header(&a, &b)
        .to_string();
    (Some(text), added, removed)
}

fn change_word(c: FileChangeKind) -> &'static str {
    match c {
        FileChangeKind::Added => "added",
        FileChangeKind::Changed => "changed",
        FileChangeKind::Removed => "removed",
        FileChangeKind::Restored => "restored",
    }
}

fn base_line(p: &Plan) -> String {
    match p.base {
        BaseKind::StateDir => format!("against the state directory {}", p.base_detail),
        BaseKind::StateStores => "against the state stores' content (no state directory)".into(),
        BaseKind::ConfigRef => format!("against the config at {}", p.base_detail),
    }
}

fn headline(p: &Plan) -> String {
    let s = &p.summary;
    format!(
        "{} to add, {} to change, {} to remove{}; {} to run, {} to delete; {} pending; {} errors",
        s.added,
        s.changed,
        s.removed,
        if s.restored > 0 {
            format!(", {} to restore", s.restored)
        } else {
            String::new()
        },
        s.runs,
        s.deletes,
        s.pending,
        s.errors
    )
}

/// The runs worth reading: all but those that only run to compare their output with the
/// state stores (no state directory) and change no file; those are counted.
fn shown_runs(p: &Plan) -> (Vec<&super::Run>, usize) {
    let changed: std::collections::BTreeSet<&str> = p
        .stores
        .iter()
        .flat_map(|s| s.destinations.iter())
        .flat_map(|d| d.files.iter())
        .map(|f| f.object.as_str())
        .collect();
    let (shown, quiet): (Vec<&super::Run>, Vec<&super::Run>) = p.runs.iter().partition(|r| {
        r.reason != Reason::NotRecorded || r.failed || changed.contains(r.object.as_str())
    });
    (shown, quiet.len())
}

/// The line that counts the runs [`shown_runs`] leaves out.
fn quiet_line(n: usize) -> String {
    format!(
        "… and {n} more that run only to compare their output with the state stores (no state directory): no file changes"
    )
}

fn run_line(r: &super::Run) -> String {
    let mut why = r.reason.describe().to_string();
    if let Some(p) = &r.pipeline {
        let _ = write!(why, ", delete pipeline {p}");
    }
    if r.failed {
        why.push_str(", FAILED");
    }
    why
}

/// The plan for a terminal: per state store and Destination each file with its change and
/// diff (or `+added -removed` counts with `stat`), then runs, blast radius, pending objects,
/// errors and warnings, and a summary line.
pub fn text(p: &Plan, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "plan for {}{} {}",
        p.config,
        p.config_commit
            .as_deref()
            .map(|c| format!(" (commit {})", &c[..c.len().min(12)]))
            .unwrap_or_default(),
        base_line(p)
    )?;
    for s in &p.stores {
        if let Some(e) = &s.error {
            writeln!(out, "state store {}: ERROR: {e}", s.store)?;
        }
        for d in &s.destinations {
            writeln!(
                out,
                "state store {}, Destination {}:",
                s.store, d.destination
            )?;
            for f in &d.files {
                writeln!(
                    out,
                    "  {:<8}  {}  (+{} -{}, {})",
                    change_word(f.change),
                    f.path,
                    f.lines_added,
                    f.lines_removed,
                    f.object
                )?;
            }
            for f in &d.files {
                if let Some(diff) = &f.diff {
                    write!(out, "{diff}")?;
                }
            }
        }
    }
    let (runs, quiet) = shown_runs(p);
    if !p.runs.is_empty() {
        writeln!(out, "runs:")?;
        for r in runs {
            writeln!(out, "  {:<9}  {}  ({})", r.workflow, r.object, run_line(r))?;
        }
        if quiet > 0 {
            writeln!(out, "  {}", quiet_line(quiet))?;
        }
    }
    for b in &p.blast_radius {
        writeln!(
            out,
            "blast radius of Promise {} ({}): {} requests{}{}, {} files on {}",
            b.promise,
            b.reason.describe(),
            b.requests.len(),
            if b.requests.is_empty() { "" } else { ": " },
            b.requests.join(", "),
            b.files,
            if b.destinations.is_empty() {
                "no Destination".to_string()
            } else {
                b.destinations.join(", ")
            }
        )?;
    }
    for q in &p.pending {
        writeln!(out, "pending: {}: {}", q.object, q.message)?;
    }
    for e in &p.errors {
        writeln!(out, "error: {e}")?;
    }
    for w in &p.warnings {
        writeln!(out, "warning: {w}")?;
    }
    for f in &p.lint {
        writeln!(out, "lint: {f}")?;
    }
    writeln!(out, "{}", headline(p))
}

/// Escapes `|`, `<` and newlines for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('\n', " ")
}

/// A code fence longer than any run of backticks in `s`.
fn fence(s: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

/// One file's `<details>` block, its diff cut at [`MAX_DIFF_LINES`].
fn details(f: &FilePlan) -> String {
    let mut s = format!(
        "<details><summary><code>{}</code> {} (+{} −{})</summary>\n\n",
        f.path.replace('<', "&lt;"),
        change_word(f.change),
        f.lines_added,
        f.lines_removed
    );
    match &f.diff {
        None => s.push_str("Binary content or `--stat`: no diff.\n"),
        Some(d) => {
            let lines: Vec<&str> = d.lines().collect();
            let shown = lines.len().min(MAX_DIFF_LINES);
            let mut body = lines[..shown].join("\n");
            body.push('\n');
            let fence = fence(&body);
            let _ = write!(s, "{fence}diff\n{body}{fence}\n");
            if lines.len() > shown {
                let _ = writeln!(s, "\n… {} more lines not shown.", lines.len() - shown);
            }
        }
    }
    s.push_str("\n</details>\n\n");
    s
}

/// The plan as a pull-request comment: heading, a summary table per state store and
/// Destination, the runs with their reasons, the blast radius, pending objects, errors,
/// warnings, and each file's diff in a `<details>` block. Diffs stop before the output reaches `limit`
/// bytes; a line counts those left out.
pub fn markdown(p: &Plan, limit: usize) -> String {
    let mut s = String::new();
    let s_ = &p.summary;
    let status = if !p.errors.is_empty() {
        "errors"
    } else if p.has_changes() {
        "changes"
    } else {
        "no changes"
    };
    let _ = writeln!(s, "### promised plan: {status}\n");
    let _ = writeln!(
        s,
        "Config `{}`{} {}.\n",
        p.config,
        p.config_commit
            .as_deref()
            .map(|c| format!(" at `{}`", &c[..c.len().min(12)]))
            .unwrap_or_default(),
        base_line(p)
    );
    let _ = writeln!(s, "**{}**\n", headline(p));
    if p.has_changes() {
        s.push_str("| State store | Destination | Added | Changed | Removed | Restored |\n");
        s.push_str("|---|---|---:|---:|---:|---:|\n");
        for st in &p.stores {
            for d in &st.destinations {
                let n = |k| d.files.iter().filter(|f| f.change == k).count();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    cell(&st.store),
                    cell(&d.destination),
                    n(FileChangeKind::Added),
                    n(FileChangeKind::Changed),
                    n(FileChangeKind::Removed),
                    n(FileChangeKind::Restored)
                );
            }
        }
        let _ = writeln!(
            s,
            "| **Total** | | **{}** | **{}** | **{}** | **{}** |\n",
            s_.added, s_.changed, s_.removed, s_.restored
        );
    }
    let (runs, quiet) = shown_runs(p);
    if !runs.is_empty() {
        s.push_str("| Object | Workflow | Why | Destinations |\n|---|---|---|---|\n");
        for r in runs {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} |",
                cell(&r.object),
                r.workflow,
                cell(&run_line(r)),
                cell(&r.destinations.join(", "))
            );
        }
        s.push('\n');
    }
    if quiet > 0 {
        let _ = writeln!(s, "{}\n", quiet_line(quiet));
    }
    if !p.blast_radius.is_empty() {
        s.push_str("**Blast radius**\n\n");
        for b in &p.blast_radius {
            let _ = writeln!(
                s,
                "- Promise `{}` ({}): {} requests, {} files on {}",
                b.promise,
                b.reason.describe(),
                b.requests.len(),
                b.files,
                if b.destinations.is_empty() {
                    "no Destination".to_string()
                } else {
                    b.destinations.join(", ")
                }
            );
        }
        s.push('\n');
    }
    if !p.pending.is_empty() {
        s.push_str("**Pending or unschedulable**\n\n");
        for q in &p.pending {
            let _ = writeln!(s, "- `{}`: {}", q.object, cell(&q.message));
        }
        s.push('\n');
    }
    if !p.errors.is_empty() {
        s.push_str("**Errors**\n\n");
        for e in &p.errors {
            let _ = writeln!(s, "- {}", cell(e));
        }
        s.push('\n');
    }
    if !p.warnings.is_empty() {
        s.push_str("**Warnings**\n\n");
        for w in &p.warnings {
            let _ = writeln!(s, "- {}", cell(w));
        }
        s.push('\n');
    }
    if !p.lint.is_empty() {
        s.push_str("**Consumer lint** (how Argo CD and Flux will read the output)\n\n");
        for f in &p.lint {
            let _ = writeln!(s, "- {}", cell(&f.to_string()));
        }
        s.push('\n');
    }
    let files: Vec<&FilePlan> = p
        .stores
        .iter()
        .flat_map(|st| st.destinations.iter())
        .flat_map(|d| d.files.iter())
        .collect();
    let mut left_out = 0;
    for (i, f) in files.iter().enumerate() {
        let block = details(f);
        // Room for the line that counts what is left out.
        if s.len() + block.len() + 120 > limit {
            left_out = files.len() - i;
            break;
        }
        s.push_str(&block);
    }
    if left_out > 0 {
        let _ = writeln!(
            s,
            "… {left_out} more of {} files not shown (size limit); `promised plan` prints every diff.",
            files.len()
        );
    }
    s
}

/// [`Reason::describe`] is what people read; tests pin a few.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_outgrow_backticks() {
        assert_eq!(fence("a"), "```");
        assert_eq!(fence("x ```` y"), "`````");
        assert_eq!(Reason::SpecChanged.describe(), "spec changed");
    }
}
