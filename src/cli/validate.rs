//! `promised validate`: reads a config repo (directory or Git ref) and checks it the way a
//! reconcile pass would, without running anything: schemas, cross-object rules, every request
//! against its Promise, and with `--daemon-config` what needs the daemon config.
//!
//! Exit codes: `0` valid, `1` the config has errors (or warnings, with `--deny-warnings`), `2`
//! the config repo could not be read. `--lint-output DIR` lints rendered output instead
//! ([`crate::lint`]), with the same exit codes.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::output::{OutputFormat, write_json};
use super::stderr::eprint_error;
use crate::config::{self, FileFilter, Source};
use crate::diag::{Diagnostic, Severity};
use crate::validate::{self, ValidConfig};

/// Exit status and examples at the end of `promised validate --help`.
pub(super) const VALIDATE_EXAMPLES: &str = "\
Exit status: 0 valid, 1 the config has errors (or warnings, with --deny-warnings), 2 the config
repo could not be read.

Examples:
  promised validate testdata/quickstart
  promised validate . --exclude 'ci/**' --deny-warnings
  promised validate --git https://github.com/acme/platform-config.git --ref main --output json
  promised validate . --daemon-config /etc/promised/promised.yaml --verbose
  promised validate --lint-output state/clusters/dev";

/// Where the config repo is and which files are read.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Config repo directory.
    #[arg(value_name = "DIR", conflicts_with = "git")]
    pub dir: Option<PathBuf>,
    /// Read the config repo from a Git repository (local path or URL) instead of a directory.
    #[arg(long, value_name = "URL")]
    pub git: Option<String>,
    /// Git ref to read with --git (branch, tag or commit).
    #[arg(
        long = "ref",
        value_name = "REF",
        default_value = "HEAD",
        requires = "git"
    )]
    pub reference: String,
    /// Only read files matching these globs (repeatable; default **/*.yaml and **/*.yml).
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip files matching these globs (repeatable; default .git/**), e.g. a folder of
    /// Kubernetes YAML that is not config: --exclude 'ci/**'.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
}

impl SourceArgs {
    /// The source and file filter these flags describe. Errors when neither DIR nor --git is given.
    pub fn resolve(&self) -> Result<(Source, FileFilter), String> {
        self.resolve_with(FileFilter::default())
    }

    /// Like [`SourceArgs::resolve`], on top of `filter` (the daemon config's
    /// `include`/`exclude`): `--include` replaces its includes, `--exclude` adds excludes.
    pub fn resolve_with(&self, base: FileFilter) -> Result<(Source, FileFilter), String> {
        let source = match (&self.dir, &self.git) {
            (Some(d), None) => Source::Dir(d.clone()),
            (None, Some(url)) => Source::Git {
                url: url.clone(),
                reference: self.reference.clone(),
            },
            _ => return Err("give a config directory or --git URL".into()),
        };
        let mut filter = base;
        if !self.include.is_empty() {
            filter.include = self.include.clone();
        }
        filter.exclude.extend(self.exclude.iter().cloned());
        Ok((source, filter))
    }
}

/// `promised validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The config repo.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output format.
    #[arg(long, short, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: OutputFormat,
    /// Treat warnings as errors.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Also list every pipeline asset (YAML in a Promise folder that is not config).
    #[arg(long, short)]
    pub verbose: bool,
    /// The daemon config (promised.yaml): its include, exclude and unservedKinds apply, and
    /// what needs it is checked too: the Secrets each Promise's env[].valueFrom may read
    /// (pipelineSecrets.allow) and that each source is configured.
    #[arg(long, value_name = "FILE", env = "PROMISED_CONFIG")]
    pub daemon_config: Option<PathBuf>,
    /// Instead of a config repo, lint rendered output as Argo CD and Flux would read it: each
    /// DIR is one Destination's directory (a checkout of a state store path). Rules and their
    /// severity: README "Consumer lint" (the daemon config's lint section applies). Exit 1 on an
    /// error-severity finding (or any finding with --deny-warnings). Repeatable.
    #[arg(long, value_name = "DIR")]
    pub lint_output: Vec<PathBuf>,
}

/// Loads and validates the config repo a [`SourceArgs`] points at.
pub fn load_valid(source: &SourceArgs) -> Result<ValidConfig, String> {
    let (src, filter) = source.resolve()?;
    let objects = config::load(&src, &filter, None).map_err(|e| e.to_string())?;
    Ok(validate::validate(objects))
}

/// Loads and validates what `promised validate` is asked to: the daemon config (defaults →
/// `--daemon-config` file → `PROMISED_*`) gives `include`, `exclude` and `unservedKinds`,
/// the flags add to them.
fn load_valid_for(a: &ValidateArgs) -> Result<ValidConfig, String> {
    let settings = crate::settings::Settings::load(a.daemon_config.as_deref(), Default::default())
        .map_err(|e| e.to_string())?;
    let (src, filter) = a.source.resolve_with(settings.file_filter())?;
    let objects = config::load(&src, &filter, None).map_err(|e| e.to_string())?;
    Ok(validate::validate_with_options(
        objects,
        &mut Default::default(),
        &settings.validate_options(),
    ))
}

#[derive(Serialize)]
struct ValidateReport<'a> {
    valid: bool,
    commit: Option<&'a str>,
    errors: usize,
    warnings: usize,
    promises: Vec<&'a str>,
    requests: Vec<RequestLine<'a>>,
    destinations: Vec<&'a str>,
    state_stores: Vec<String>,
    /// Pipeline assets: YAML in a Promise folder that is not config.
    assets: Vec<AssetLine<'a>>,
    diagnostics: &'a [Diagnostic],
    /// Whether a tenancy policy is in force (README "Trust and tenancy").
    tenancy: String,
    #[serde(skip)]
    verbose: bool,
}

#[derive(Serialize)]
struct AssetLine<'a> {
    promise: &'a str,
    file: &'a str,
    document: usize,
    api_version: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    name: &'a str,
    #[serde(skip)]
    label: String,
}

#[derive(Serialize)]
struct RequestLine<'a> {
    promise: &'a str,
    namespace: &'a str,
    name: &'a str,
    file: &'a str,
    document: usize,
}

/// Runs `promised validate`; returns the exit code (see the module docs).
pub fn validate_cmd(a: &ValidateArgs, out: &mut dyn Write) -> i32 {
    if !a.lint_output.is_empty() {
        return lint_output_cmd(a, out);
    }
    let mut cfg = match load_valid_for(a) {
        Ok(c) => c,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    if let Some(file) = &a.daemon_config {
        match crate::settings::Settings::load(Some(file), Default::default()) {
            Ok(s) => crate::pipeline::env::check_pipeline_env(&mut cfg, &s.env_sources()),
            Err(e) => {
                eprint_error(e);
                return 2;
            }
        }
    }
    let errors = cfg
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = cfg.diagnostics.len() - errors;
    let valid = errors == 0 && !(a.deny_warnings && warnings > 0);
    let report = ValidateReport {
        valid,
        commit: cfg.commit.as_deref(),
        tenancy: match &cfg.tenancy {
            None => format!(
                "no tenancy policy is in force (no {}): any file may hold any object",
                crate::validate::policy::POLICY_FILE
            ),
            Some(Ok(p)) => format!(
                "{} is in force: platform paths [{}], {} teams",
                crate::validate::policy::POLICY_FILE,
                p.spec.platform.paths.join(", "),
                p.spec.teams.len()
            ),
            Some(Err(_)) => format!(
                "{} does not load: every request and platform object is refused",
                crate::validate::policy::POLICY_FILE
            ),
        },
        errors,
        warnings,
        promises: cfg.promises.iter().map(|p| p.name()).collect(),
        requests: cfg
            .requests
            .iter()
            .map(|r| RequestLine {
                promise: &r.promise,
                namespace: r.namespace(),
                name: r.name(),
                file: &r.origin.file,
                document: r.origin.document,
            })
            .collect(),
        destinations: cfg
            .destinations
            .iter()
            .map(|d| d.id.name.as_str())
            .collect(),
        state_stores: cfg
            .git_state_stores
            .iter()
            .map(|s| format!("GitStateStore/{}", s.id.name))
            .chain(
                cfg.bucket_state_stores
                    .iter()
                    .map(|s| format!("BucketStateStore/{}", s.id.name)),
            )
            .collect(),
        assets: cfg
            .assets
            .iter()
            .map(|x| AssetLine {
                promise: &x.promise,
                file: &x.origin.file,
                document: x.origin.document,
                api_version: &x.api_version,
                kind: &x.id.kind,
                namespace: x.id.namespace.as_deref(),
                name: &x.id.name,
                label: format!("{} {}", x.origin, x.id),
            })
            .collect(),
        diagnostics: &cfg.diagnostics,
        verbose: a.verbose,
    };
    let res = match a.output {
        OutputFormat::Json => write_json(out, &report),
        OutputFormat::Text => write_text_report(&report, out),
    };
    if let Err(e) = res {
        eprint_error(format_args!("writing output: {e}"));
        return 2;
    }
    if valid { 0 } else { 1 }
}

fn write_text_report(r: &ValidateReport<'_>, out: &mut dyn Write) -> std::io::Result<()> {
    for d in r.diagnostics {
        let tag = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(out, "{tag}: {d}")?;
    }
    if r.verbose {
        for x in &r.assets {
            writeln!(
                out,
                "asset: {} (pipeline asset of Promise {})",
                x.label, x.promise
            )?;
        }
    }
    writeln!(out, "tenancy: {}", r.tenancy)?;
    writeln!(
        out,
        "{}: {} Promises, {} requests, {} Destinations, {} state stores, {} pipeline assets{}; {} errors, {} warnings",
        if r.valid { "valid" } else { "invalid" },
        r.promises.len(),
        r.requests.len(),
        r.destinations.len(),
        r.state_stores.len(),
        r.assets.len(),
        if r.verbose || r.assets.is_empty() {
            ""
        } else {
            " (listed with --verbose)"
        },
        r.errors,
        r.warnings
    )
}

/// `promised validate --lint-output DIR…`: every file under each DIR (`.git` excepted) linted
/// as one Destination named after the directory. Exit 0 clean (or warnings only), 1 an error
/// finding (any finding with `--deny-warnings`), 2 a directory or the daemon config could not
/// be read.
fn lint_output_cmd(a: &ValidateArgs, out: &mut dyn Write) -> i32 {
    let settings =
        match crate::settings::Settings::load(a.daemon_config.as_deref(), Default::default()) {
            Ok(s) => s.lint,
            Err(e) => {
                eprint_error(e);
                return 2;
            }
        };
    let mut findings = Vec::new();
    for dir in &a.lint_output {
        let files = match read_tree(dir) {
            Ok(f) => f,
            Err(e) => {
                eprint_error(format!("--lint-output {}: {e}", dir.display()));
                return 2;
            }
        };
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        findings.extend(crate::lint::lint_destination(&name, &files, &settings));
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == crate::lint::Severity::Error)
        .count();
    let failed = errors > 0 || (a.deny_warnings && !findings.is_empty());
    let written = match a.output {
        OutputFormat::Json => write_json(out, &findings),
        OutputFormat::Text => (|| {
            for f in &findings {
                writeln!(out, "{f}")?;
            }
            writeln!(
                out,
                "{} directories linted: {errors} errors, {} warnings",
                a.lint_output.len(),
                findings.len() - errors
            )
        })(),
    };
    if let Err(e) = written {
        eprint_error(e);
        return 2;
    }
    i32::from(failed)
}

/// Every regular file under `root` (skipping `.git`), keyed by its path relative to `root`'s
/// parent, so findings name `<dir>/<path>`.
fn read_tree(
    root: &std::path::Path,
) -> std::io::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let base = root.file_name().map(PathBuf::from).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), base)];
    while let Some((dir, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name == ".git" {
                continue;
            }
            let (path, rel) = (entry.path(), rel.join(&name));
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push((path, rel));
            } else if ft.is_file() {
                out.insert(rel.to_string_lossy().into_owned(), std::fs::read(&path)?);
            }
        }
    }
    Ok(out)
}
