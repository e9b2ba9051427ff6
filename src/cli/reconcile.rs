//! `promised reconcile`: one reconcile pass over a config repo (directory or Git ref): run
//! the workflows, place their output on Destinations, commit to the state stores, and print
//! what happened with `look:` commands that show each state store's history.
//!
//! Exit codes: `0` everything reconciled, `1` some object or store failed (everything else
//! still committed), `2` the pass could not run.

use std::io::Write;
use std::path::Path;

use clap::Args;

use super::DaemonConfigArgs;
use super::output::{OutputFormat, write_json};
use super::stderr::{eprint_diagnostic, eprint_error, eprint_warning};
use crate::config::{self, Source};
use crate::reconcile::{Engine, ObjectAction, PassReport};
use crate::state::StateDir;
use crate::validate;

/// Exit status and examples at the end of `promised reconcile --help`.
pub(super) const RECONCILE_EXAMPLES: &str = "\
Exit status: 0 everything reconciled, 1 some object failed (the rest was still committed), 2
the pass could not run.

Examples:
  promised reconcile --config testdata/quickstart
  promised reconcile --config https://github.com/acme/platform-config.git --ref main --daemon-config /etc/promised/promised.yaml
  promised reconcile --config . --state-dir /var/lib/promised --output json";

/// `promised reconcile`.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// The config repo: a directory, or a Git repository (URL or path; with --ref).
    #[arg(long, value_name = "DIR|GIT-URL")]
    pub config: String,
    /// Git ref to reconcile: branch, tag or commit (makes --config a Git repository; default
    /// HEAD for URLs).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Daemon config and state directory.
    #[command(flatten)]
    pub daemon: DaemonConfigArgs,
    /// Pipelines running at once (overrides concurrency in the daemon config).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Output format.
    #[arg(long, short, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: OutputFormat,
}

/// Runs one pass. Exit code 0 when everything reconciled, 1 when some object or store failed
/// (everything else still committed), 2 when the pass could not run.
pub fn reconcile_cmd(a: &ReconcileArgs, out: &mut dyn Write) -> i32 {
    let mut extra = serde_json::Map::new();
    if let Some(c) = a.concurrency {
        extra.insert("concurrency".into(), c.into());
    }
    let settings = match a.daemon.settings(extra) {
        Ok(s) => s,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    let source = super::source_of(&a.config, a.reference.as_deref());
    let filter = settings.file_filter();
    let dir = match StateDir::open(&settings.state_dir) {
        Ok(d) => d,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    // The config and the state directory load side by side (each takes about a third of a
    // no-op pass at 10,000 requests; docs/benchmarks.md, "Sixth round"), and the config is
    // validated on its thread too unless some file did not load (then the state's last good
    // versions of its objects go back in first; `reconcile::held`).
    let runner = settings.runner();
    let options = settings.validate_options();
    let env_sources = settings.env_sources();
    let engine_settings = settings.clone();
    // Image references found valid before are not checked again (`image::checked`).
    let references = dir.root().join("config-cache").join("references.json");
    let (loaded, (opened, state_s)) = std::thread::scope(|s| {
        let opening = s.spawn(move || {
            let t_state = std::time::Instant::now();
            let opened = Engine::new(engine_settings, runner);
            (opened, t_state.elapsed().as_secs_f64())
        });
        let t_load = std::time::Instant::now();
        crate::image::read_checked_references(&references);
        let loaded = load(&source, &filter, &settings, &dir).map(|(objects, root, refused)| {
            let load_s = t_load.elapsed().as_secs_f64();
            let pending = if config::unloadable_files(&objects.diagnostics).is_empty() {
                Pending::Validated(validated(objects, &options, &env_sources))
            } else {
                Pending::Unloadable(objects)
            };
            (pending, root, refused, load_s)
        });
        let opened = opening
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (loaded, opened)
    });
    let (pending, root, refused, load_s) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    if let Some(r) = &refused {
        eprint_warning(format_args!(
            "{r}: not applied; the last applied commit stays in force"
        ));
    }
    let mut engine = match opened {
        Ok(e) => e,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    let (cfg, validate_s) = match pending {
        Pending::Validated(v) => v,
        Pending::Unloadable(mut objects) => {
            // A file that does not load keeps its objects' last good versions (never prunes).
            engine.restore_unloadable(&mut objects);
            validated(objects, &options, &env_sources)
        }
    };
    if let Err(e) = crate::image::write_checked_references(&references) {
        eprint_warning(format_args!(
            "recording the checked image references in {}: {e}",
            references.display()
        ));
    }
    for d in &cfg.diagnostics {
        eprint_diagnostic(d);
    }
    let Some(rt) = super::runtime() else {
        return 2;
    };
    let report = match rt.block_on(engine.reconcile(&cfg, &root)) {
        Ok(r) => r,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    // The same phases as the daemon's `pass phases` line, plus the state directory's load.
    tracing::debug!(
        load_s,
        state_s,
        validate_s,
        reconcile_s = report.duration.as_secs_f64(),
        "pass phases"
    );
    let res = match a.output {
        OutputFormat::Json => write_json(out, &report),
        OutputFormat::Text => write_report(&report, &cfg, engine.state_dir(), &source, out),
    };
    if let Err(e) = res {
        eprint_error(format_args!("writing output: {e}"));
        return 2;
    }
    // Some object invalid or failed, or the newest config commit refused: 1, although
    // everything else was committed.
    let code = if report.has_failures() || cfg.has_errors() || refused.is_some() {
        1
    } else {
        0
    };
    // The process ends next: freeing every record and document one by one would take a
    // tenth of a no-op pass at 10,000 requests (docs/benchmarks.md, "Seventh round"). The
    // engine itself is dropped, so the state directory's lock goes as before.
    engine.forget_state();
    drop(engine);
    std::mem::forget((cfg, report));
    code
}

/// The config of a pass, validated now or once the state's last good versions of the objects
/// of files that did not load are back in.
enum Pending {
    /// Validated, and how long that took in seconds.
    Validated((validate::ValidConfig, f64)),
    /// Some file did not load.
    Unloadable(config::Objects),
}

/// Validates `objects` and checks the pipelines' environment sources; returns the config and
/// how long that took in seconds.
fn validated(
    objects: config::Objects,
    options: &validate::Options,
    env_sources: &crate::pipeline::env::EnvSources,
) -> (validate::ValidConfig, f64) {
    let started = std::time::Instant::now();
    let mut cfg = validate::validate_with_options(objects, &mut Default::default(), options);
    crate::pipeline::env::check_pipeline_env(&mut cfg, env_sources);
    (cfg, started.elapsed().as_secs_f64())
}

/// Loads the config for one pass: with `verify:`, through a verifying loader whose last
/// applied commit is the state directory's (a refused head falls back to it, and the
/// refusal is recorded for `promised status`). Returns the objects, the root of their
/// Promise folders and the refusal, if any.
pub(super) fn load(
    source: &Source,
    filter: &config::FileFilter,
    settings: &crate::settings::Settings,
    dir: &StateDir,
) -> Result<
    (
        config::Objects,
        std::path::PathBuf,
        Option<config::verify::Refused>,
    ),
    String,
> {
    let mut loader = config::Loader::new(
        source.clone(),
        filter,
        Some(dir.root().join("config-cache")),
        Some(dir.root().join("config-checkouts")),
    )
    .map_err(|e| e.to_string())?
    .with_network(settings.network.timeouts())
    .with_parse_record(dir.root().join("config-cache").join("parsed.json"));
    if let Some(v) = &settings.verify {
        let last = dir.load().ok().and_then(|s| s.config_commit);
        let verifier = config::verify::Verifier::for_source(source, v, dir.root())?;
        loader = loader.with_verifier(verifier, last);
    }
    let loaded = loader.load();
    let refused = loader.refused().cloned();
    if settings.verify.is_some()
        && let Err(e) = config::verify::save_refusal(dir.root(), refused.as_ref())
    {
        eprint_warning(format_args!("recording the refused config commit: {e}"));
    }
    let loaded = loaded.map_err(|e| e.to_string())?;
    Ok((loaded.objects, loaded.root, refused))
}

fn write_report(
    r: &PassReport,
    cfg: &validate::ValidConfig,
    state_dir: &Path,
    source: &Source,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "reconciled {source}{}",
        r.config_commit
            .as_deref()
            .map(|c| format!(" (commit {})", &c[..c.len().min(12)]))
            .unwrap_or_default()
    )?;
    let width = r
        .objects
        .iter()
        .map(|o| o.key.len())
        .max()
        .unwrap_or(10)
        .max(10);
    for o in &r.objects {
        let action = match o.action {
            _ if o.failed => "FAILED",
            ObjectAction::Ran => "ran",
            ObjectAction::Unchanged => "unchanged",
            ObjectAction::Waiting => "waiting",
            ObjectAction::Deleted => "deleted",
            ObjectAction::Failed => "FAILED",
        };
        let dests = if o.destinations.is_empty() {
            "-".to_string()
        } else {
            o.destinations.join(",")
        };
        // One row per object; the rest of a multi-line message (a failed pipeline's stderr
        // tail) indented below it, shown once.
        let mut lines = o.message.lines();
        writeln!(
            out,
            "  {:<width$}  {:<9}  {:<10}  {:<14}  {} files  {}",
            o.key,
            action,
            o.state,
            dests,
            o.files,
            lines.next().unwrap_or_default()
        )?;
        for l in lines {
            writeln!(out, "      | {l}")?;
        }
    }
    if r.unchanged_not_listed > 0 {
        writeln!(
            out,
            "  … and {} more requests unchanged (`promised status` lists every object)",
            r.unchanged_not_listed
        )?;
    }
    for rej in &cfg.rejected {
        if rej.promise.is_some() && rej.id.kind != "Promise" {
            continue; // a request: shown above as FAILED with "Invalid: …"
        }
        writeln!(
            out,
            "  {:<width$}  {:<9}  {}",
            format!("{} ({})", rej.id, rej.origin),
            "INVALID",
            rej.reasons.join("; ")
        )?;
    }
    for s in &r.stores {
        match (&s.error, &s.commit) {
            (Some(e), _) => writeln!(out, "state store {}: FAILED: {e}", s.store)?,
            (None, Some(c)) => writeln!(
                out,
                "state store {}: commit {} ({} written, {} deleted, {} unchanged{})",
                s.store,
                &c[..c.len().min(12)],
                s.written,
                s.deleted,
                s.unchanged,
                if s.drift.is_empty() {
                    String::new()
                } else {
                    format!(", {} drifted files restored", s.drift.len())
                }
            )?,
            (None, None) => writeln!(out, "state store {}: no change", s.store)?,
        }
    }
    // `r.logs` (stderr tails) are in the objects' messages above; `--output json` has both.
    for w in &r.warnings {
        writeln!(out, "warning: {w}")?;
    }
    for f in &r.lint {
        writeln!(out, "lint: {f}")?;
    }
    writeln!(
        out,
        "{} pipelines run in {:.2}s",
        r.pipelines_run,
        r.duration.as_secs_f64()
    )?;
    for s in &cfg.git_state_stores {
        let spec = &s.object.spec;
        writeln!(
            out,
            "look: {}",
            look_git(&s.id.name, &spec.url, &spec.branch, state_dir)
        )?;
    }
    for s in &cfg.bucket_state_stores {
        writeln!(out, "look: {}", look_bucket(&s.object.spec))?;
    }
    writeln!(
        out,
        "status: promised status --state-dir {}",
        state_dir.display()
    )?;
    Ok(())
}

/// A shell command that shows the history of the Git state store `name`: `git --git-dir
/// <repo> log --stat <branch>` on the repository itself for a local store (a relative path is
/// in the state directory), on promised's clone of a remote store (its
/// `refs/remotes/origin/<branch>`, as last pushed or fetched) when there is one, else a
/// `git clone` of the remote first. Never shows credentials.
fn look_git(name: &str, url: &str, branch: &str, state_dir: &Path) -> String {
    // `StateDir::stores_dir`, where the engine opens state stores.
    let stores = state_dir.join("stores");
    let Some(clone) = statestores::git::clone_path(name, url, branch, &stores) else {
        let path = match url.strip_prefix("file://") {
            Some(p) => Path::new(p).to_path_buf(),
            None => state_dir.join(url),
        };
        return format!(
            "git --git-dir {} log --stat {}",
            sh_quote(&path.display().to_string()),
            sh_quote(branch)
        );
    };
    let shown = statestores::git::config::redact_url(url);
    let tracking = format!("refs/remotes/origin/{branch}");
    let cloned = gix::open(&clone)
        .ok()
        .is_some_and(|r| r.find_reference(tracking.as_str()).is_ok());
    if cloned {
        return format!(
            "git --git-dir {} log --stat {}  # promised's clone of {shown}",
            sh_quote(&clone.display().to_string()),
            sh_quote(&tracking)
        );
    }
    let dir = format!(
        "{}-state.git",
        name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
    );
    format!(
        "git clone -q --bare --branch {b} {u} {dir} && git --git-dir {dir} log --stat {b}",
        b = sh_quote(branch),
        u = sh_quote(&shown)
    )
}

/// A shell command that lists a BucketStateStore's objects with the AWS CLI (its own
/// credentials).
fn look_bucket(spec: &crate::model::BucketStateStoreSpec) -> String {
    let path = spec.path.trim_matches('/');
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    format!(
        "aws s3 ls --recursive {} --endpoint-url {}",
        sh_quote(&format!("s3://{}/{prefix}", spec.bucket_name)),
        sh_quote(&format!(
            "{}://{}",
            if spec.insecure { "http" } else { "https" },
            spec.endpoint
        ))
    )
}

/// `s` as one shell word: unchanged when it has no special characters, else single-quoted.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:@+=,%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without promised's clone of a remote store, `look:` clones it first; credentials in
    /// the URL are never shown; odd characters are quoted for the shell.
    #[test]
    fn look_commands() {
        let state = Path::new("/var/lib/promised");
        assert_eq!(
            look_git(
                "remote",
                "https://user:s3cret@git.example.com/org/state.git",
                "main",
                state
            ),
            "git clone -q --bare --branch main https://git.example.com/org/state.git remote-state.git && git --git-dir remote-state.git log --stat main"
        );
        assert_eq!(
            look_git("local", "quickstart-state.git", "main", state),
            "git --git-dir /var/lib/promised/quickstart-state.git log --stat main"
        );
        assert_eq!(
            look_git("local", "file:///srv/my state.git", "main", state),
            "git --git-dir '/srv/my state.git' log --stat main"
        );
        let spec: crate::model::BucketStateStoreSpec = serde_json::from_value(
            serde_json::json!({"bucketName": "b", "endpoint": "minio:9000", "path": "platform/", "insecure": true}),
        )
        .unwrap();
        assert_eq!(
            look_bucket(&spec),
            "aws s3 ls --recursive s3://b/platform/ --endpoint-url http://minio:9000"
        );
    }
}
