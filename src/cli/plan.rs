//! `promised plan`: what a reconcile of a config would do, printed for review
//! ([`crate::plan`]). The pass runs on a scratch copy of the state directory with dry-run
//! state stores ([`crate::reconcile::Engine::for_plan`]): nothing is committed, pushed or
//! uploaded, and neither the state directory nor the state stores change.
//!
//! Exit codes (like `terraform plan -detailed-exitcode`): `0` no changes, `1` errors (also
//! when the plan cannot be made), `2` changes.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::DaemonConfigArgs;
use super::output::write_json;
use super::stderr::{eprint_error, eprint_warning};
use crate::config::Source;
use crate::plan::{self, BaseKind, PlanInputs, render};
use crate::reconcile::Engine;
use crate::state::StateDir;
use crate::validate::{self, ValidConfig};

/// Exit status and examples at the end of `promised plan --help`.
pub(super) const PLAN_EXAMPLES: &str = "\
Exit status: 0 no changes, 1 errors (invalid objects, failed pipelines, unreadable state
stores, an error-severity consumer lint finding, or the plan could not be made), 2 changes (files would be added, changed, removed or
restored), like terraform plan -detailed-exitcode.

The base is the state directory when it holds a state (--state-dir, stateDir in the daemon
config), else the state stores' own content and ownership index; with --base REF, a reconcile
of the config at REF is planned first (on the state stores' content, without the state
directory) and the plan shows what --ref changes on top of it. A command line that does not
parse exits 1.
Nothing is committed, pushed or written to the state directory.

Examples:
  promised plan --config testdata/quickstart
  promised plan --config . --ref HEAD --state-dir /var/lib/promised --stat
  promised plan --config https://github.com/acme/platform-config.git --ref pr-42 --output markdown
  promised plan --config . --ref HEAD --base origin/main --output json";

/// Output of `promised plan`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Human-readable text with unified diffs.
    #[default]
    Text,
    /// One JSON document (stable keys, for CI tools).
    Json,
    /// Markdown for a pull-request comment: summary table, collapsible diffs.
    Markdown,
}

/// `promised plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// The config repo: a directory, or a Git repository (URL or path; with --ref).
    #[arg(long, value_name = "DIR|GIT-URL")]
    pub config: String,
    /// Git ref to plan: branch, tag or commit (makes --config a Git repository; default HEAD
    /// for URLs).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Plan against a reconcile of the config at this Git ref (e.g. the target branch of a
    /// pull request) on top of the state stores' content; the state directory is not used.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Daemon config and state directory (read, never written).
    #[command(flatten)]
    pub daemon: DaemonConfigArgs,
    /// Pipelines running at once (overrides concurrency in the daemon config).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Output format.
    #[arg(long, short, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: PlanFormat,
    /// Leave out the diffs: lines added and removed per file only.
    #[arg(long)]
    pub stat: bool,
    /// Markdown output: diffs stop before this many bytes (a line counts those left out).
    #[arg(long, value_name = "BYTES", default_value_t = render::DEFAULT_MARKDOWN_LIMIT)]
    pub max_bytes: usize,
}

/// Whether `dir` holds a state (a snapshot or a journal of a reconcile).
fn has_state(dir: &Path) -> bool {
    dir.join("state.json").is_file() || dir.join("state.journal").is_file()
}

/// Copies the state directory `from` into `to` for a plan: the content-addressed caches
/// (`blobs/`, `images/` and Git object directories, never changed in place) are hard-linked
/// where possible, everything else copied; run directories (`runs/`) are left out.
fn copy_state(from: &Path, to: &Path) -> std::io::Result<()> {
    fn walk(from: &Path, to: &Path, link: bool) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let name = e.file_name();
            let (src, dst) = (e.path(), to.join(&name));
            let ty = e.file_type()?;
            if ty.is_dir() {
                if name == "runs" {
                    continue;
                }
                let link = link || name == "blobs" || name == "images" || name == "objects";
                walk(&src, &dst, link)?;
            } else if ty.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
            } else if ty.is_file() && (!link || std::fs::hard_link(&src, &dst).is_err()) {
                std::fs::copy(&src, &dst)?;
            }
        }
        Ok(())
    }
    walk(from, to, false)
}

/// Loads and validates the config at `source` for the plan's engine, as `promised reconcile`
/// does (verifier, held files, pipeline environment). Returns the config and its root.
fn load_config(
    source: &Source,
    settings: &crate::settings::Settings,
    dir: &StateDir,
    engine: &Engine,
) -> Result<(ValidConfig, PathBuf), String> {
    let (mut objects, root, refused) =
        super::reconcile::load(source, &settings.file_filter(), settings, dir)?;
    if let Some(r) = &refused {
        eprint_warning(format_args!(
            "{r}: not applied; the plan is of the last applied commit"
        ));
    }
    engine.restore_unloadable(&mut objects);
    let mut cfg = validate::validate_with_options(
        objects,
        &mut Default::default(),
        &settings.validate_options(),
    );
    crate::pipeline::env::check_pipeline_env(&mut cfg, &settings.env_sources());
    Ok((cfg, root))
}

/// Makes the plan and prints it; returns the exit code (0 no changes, 1 errors, 2 changes).
pub fn plan_cmd(a: &PlanArgs, out: &mut dyn Write) -> i32 {
    match make_plan(a) {
        Ok(p) => {
            let res = match a.output {
                PlanFormat::Json => write_json(out, &p),
                PlanFormat::Text => render::text(&p, out),
                PlanFormat::Markdown => out.write_all(render::markdown(&p, a.max_bytes).as_bytes()),
            };
            if let Err(e) = res {
                eprint_error(format_args!("writing output: {e}"));
                return 1;
            }
            p.exit_code()
        }
        Err(e) => {
            eprint_error(e);
            1
        }
    }
}

/// The plan of `a`: a scratch state directory, a plan engine, one pass (two with `--base`).
fn make_plan(a: &PlanArgs) -> Result<plan::Plan, String> {
    let mut extra = serde_json::Map::new();
    if let Some(c) = a.concurrency {
        extra.insert("concurrency".into(), c.into());
    }
    let mut settings = a.daemon.settings(extra)?;
    let real = settings.state_dir.clone();
    let scratch = tempfile::Builder::new()
        .prefix("promised-plan-")
        .tempdir()
        .map_err(|e| format!("scratch directory: {e}"))?;
    let state_dir = scratch.path().join("state");
    let (base, base_detail) = match &a.base {
        Some(r) => (BaseKind::ConfigRef, r.clone()),
        None if has_state(&real) => (BaseKind::StateDir, real.display().to_string()),
        None => (BaseKind::StateStores, String::new()),
    };
    // Also without a state (only state store clones, or a local store at a relative path):
    // the engine rebuilds its records from the stores' ownership indexes, as a reconcile
    // would.
    if a.base.is_none() && real.is_dir() {
        copy_state(&real, &state_dir)
            .map_err(|e| format!("copying the state directory {}: {e}", real.display()))?;
    }
    settings.state_dir = state_dir;
    let mut runner = settings.runner();
    if real.exists() {
        runner
            .hidden
            .push(crate::pipeline::sandbox::Hidden::of(&real));
    }
    let dir = StateDir::open(&settings.state_dir).map_err(|e| e.to_string())?;
    let mut engine = Engine::for_plan(settings.clone(), runner).map_err(|e| e.to_string())?;
    let rt = super::runtime().ok_or("no async runtime")?;
    if let Some(r) = &a.base {
        let source = super::source_of(&a.config, Some(r));
        let (cfg, root) = load_config(&source, &settings, &dir, &engine)?;
        rt.block_on(engine.reconcile(&cfg, &root))
            .map_err(|e| format!("planning the base {r}: {e}"))?;
        engine.take_planned_files();
    }
    let source = super::source_of(&a.config, a.reference.as_deref());
    let (cfg, root) = load_config(&source, &settings, &dir, &engine)?;
    let before = engine.state().clone();
    let report = rt
        .block_on(engine.reconcile(&cfg, &root))
        .map_err(|e| e.to_string())?;
    let files = engine.take_planned_files();
    let config = match &a.reference {
        Some(r) => format!("{} at {r}", a.config),
        None => a.config.clone(),
    };
    // The consumer lint on what each Destination would hold after the plan.
    let mut lint = Vec::new();
    for (destination, files) in rt.block_on(engine.planned_destination_files()) {
        let files = files.into_iter().map(|f| (f.path, f.content)).collect();
        lint.extend(crate::lint::lint_destination(
            &destination,
            &files,
            &settings.lint,
        ));
    }
    let mut plan = plan::build(PlanInputs {
        config,
        base,
        base_detail,
        cfg: &cfg,
        report: &report,
        before: &before,
        after: engine.state(),
        files,
        stat: a.stat,
    });
    plan.lint = lint;
    Ok(plan)
}
