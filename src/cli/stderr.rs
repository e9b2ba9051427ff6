//! How the subcommands report on stderr: `error: …` and `warning: …` lines, or with
//! `--log-format json` one JSON object per line shaped like the daemon's log events, so that
//! every stderr line parses. Results go to stdout ([`super::output`]), never here.

use crate::diag::Diagnostic;

/// Set once the binary has installed a JSON log subscriber (`--log-format json`).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`eprint_error`], [`eprint_warning`] and [`eprint_diagnostic`] write one JSON object
/// per line, shaped like the log events (`--log-format json`), so that every stderr line parses.
pub fn set_json_logs(on: bool) {
    JSON_LOGS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// One line on stderr: `<level>: <message>`, or with JSON logs a JSON object like a log event
/// (`timestamp`, `level`, `fields` with `message` and `extra`, `target`). Written whatever the
/// log filter: a command's errors are never filtered away.
fn eprint_line(level: &str, message: &str, extra: serde_json::Map<String, serde_json::Value>) {
    if !JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{level}: {message}");
        return;
    }
    let mut fields = serde_json::Map::new();
    fields.insert("message".into(), message.into());
    fields.extend(extra);
    let line = serde_json::json!({
        "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "level": if level == "error" { "ERROR" } else { "WARN" },
        "fields": fields,
        "target": "promised",
    });
    eprintln!("{line}");
}

/// Reports why a command failed on stderr (see [`set_json_logs`]).
pub fn eprint_error(message: impl std::fmt::Display) {
    eprint_line("error", &message.to_string(), Default::default());
}

/// Reports a warning on stderr (see [`set_json_logs`]).
pub fn eprint_warning(message: impl std::fmt::Display) {
    eprint_line("warning", &message.to_string(), Default::default());
}

/// Reports a config diagnostic on stderr: `error: <diagnostic>` (or `warning: …`), or with JSON
/// logs the fields of the daemon's `invalid config object` log line (README "Logs").
pub fn eprint_diagnostic(d: &Diagnostic) {
    let level = if d.is_error() { "error" } else { "warning" };
    if !JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{level}: {d}");
        return;
    }
    let mut f = serde_json::Map::new();
    f.insert("file".into(), d.file.clone().into());
    if let Some(n) = d.document {
        f.insert("document".into(), n.into());
    }
    if let Some(o) = &d.object {
        f.insert("kind".into(), o.kind.clone().into());
        if let Some(ns) = &o.namespace {
            f.insert("namespace".into(), ns.clone().into());
        }
        f.insert("object_name".into(), o.name.clone().into());
    }
    if let Some(field) = &d.field {
        f.insert("field".into(), field.clone().into());
    }
    f.insert("error".into(), d.message.clone().into());
    let message = if d.is_error() {
        "invalid config object"
    } else {
        "config warning"
    };
    eprint_line(level, message, f);
}
