//! The command line: clap definitions and one function per subcommand.
//!
//! Subcommands write results to `out` (stdout) and progress to stderr, and return the process
//! exit code, so tests can run them without spawning a process.
//!
//! Exit codes: `0` success (config valid), `1` the config has errors, `2` the command could not
//! run (unreadable source, bad flags).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::config::{self, FileFilter, Source};
use crate::diag::{Diagnostic, Severity};
use crate::validate::{self, ValidConfig};

/// Keeps Kratix Promises without Kubernetes.
///
/// The `about` line of `promised --help` is the package description (Cargo.toml), not this
/// comment. Help text is read by users in a terminal: plain text, no rustdoc links
/// (tests/help.rs checks every subcommand's help, and that it ends with an `Examples:` block).
#[derive(Debug, Parser)]
#[command(
    name = "promised",
    version,
    about,
    long_about = None,
    after_help = TOP_EXAMPLES
)]
pub struct Cli {
    /// Log filter in tracing's env-filter syntax, e.g. info or promised=debug. Default: warn
    /// (info for promised run).
    #[arg(long, global = true, value_name = "FILTER", env = "PROMISED_LOG")]
    pub log: Option<String>,
    /// Log format. Default: the daemon config's `logFormat` (see [`Cli::log_format`]), else
    /// `text`.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "PROMISED_LOG_FORMAT",
        help = "Log format. Default: logFormat in the daemon config, else text"
    )]
    pub log_format: Option<crate::settings::LogFormat>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log format to start with: `--log-format` (or `PROMISED_LOG_FORMAT`), else
    /// `logFormat` from the daemon config of `reconcile`, `status` and `run` (file, then
    /// environment), else `text`. A daemon config that does not load gives `text` here; the
    /// command itself then reports the error. Read once at start (SIGHUP does not change it).
    pub fn log_format(&self) -> crate::settings::LogFormat {
        if let Some(f) = self.log_format {
            return f;
        }
        let daemon = match &self.command {
            Command::Reconcile(a) => &a.daemon,
            Command::Status(a) => &a.daemon,
            Command::Run(a) => &a.daemon,
            Command::Validate(_) | Command::Pipeline(_) => return Default::default(),
        };
        daemon
            .settings(Default::default())
            .map(|s| s.log_format)
            .unwrap_or_default()
    }
}

/// Examples at the end of `promised --help`.
const TOP_EXAMPLES: &str = "\
Examples:
  promised validate testdata/quickstart
  promised reconcile --config testdata/quickstart
  promised status
  promised run --config https://github.com/acme/platform-config.git --ref main --daemon-config /etc/promised/promised.yaml
  promised pipeline run --config testdata/quickstart --promise redis --request-name default/example";

/// Exit status and examples at the end of `promised validate --help`.
const VALIDATE_EXAMPLES: &str = "\
Exit status: 0 valid, 1 the config has errors (or warnings, with --deny-warnings), 2 the config
repo could not be read.

Examples:
  promised validate testdata/quickstart
  promised validate . --exclude 'ci/**' --deny-warnings
  promised validate --git https://github.com/acme/platform-config.git --ref main --output json
  promised validate . --daemon-config /etc/promised/promised.yaml --verbose";

/// Exit status and examples at the end of `promised reconcile --help`.
const RECONCILE_EXAMPLES: &str = "\
Exit status: 0 everything reconciled, 1 some object failed (the rest was still committed), 2
the pass could not run.

Examples:
  promised reconcile --config testdata/quickstart
  promised reconcile --config https://github.com/acme/platform-config.git --ref main --daemon-config /etc/promised/promised.yaml
  promised reconcile --config . --state-dir /var/lib/promised --output json";

/// Exit status and examples at the end of `promised status --help`.
const STATUS_EXAMPLES: &str = "\
Asks the daemon listening at --listen first; without one, reads the state directory (which
must exist).

Exit status: 0 shown, 2 no status could be read.

Examples:
  promised status
  promised status --state-dir /var/lib/promised --output yaml
  promised status --daemon-config /etc/promised/promised.yaml --output json";

/// Exit status and examples at the end of `promised run --help`.
const RUN_EXAMPLES: &str = "\
Runs until SIGTERM or SIGINT (which drain running pipelines); SIGHUP reloads the daemon config.

Exit status: 0 after a drain, 2 the daemon could not start (bad config, port in use,
unreadable state directory).

Examples:
  promised run --config /srv/platform-config --daemon-config /etc/promised/promised.yaml
  promised run --config https://github.com/acme/platform-config.git --ref main --poll-interval 30s
  promised run --config . --listen 127.0.0.1:8473 --log-format json";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config repo: schemas, cross-object rules, every request against its Promise.
    #[command(after_help = VALIDATE_EXAMPLES)]
    Validate(ValidateArgs),
    /// One reconcile pass: run workflows, place output, commit to the state stores.
    #[command(after_help = RECONCILE_EXAMPLES)]
    Reconcile(ReconcileArgs),
    /// Show the status of every Promise and resource request.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Run as a service: webhooks, polling or file watch, HTTP endpoints, systemd notify.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Run Promise workflows locally, without a state store (see promised pipeline run).
    #[command(after_help = crate::pipeline::cmd::PIPELINE_EXAMPLES)]
    Pipeline(crate::pipeline::cmd::PipelineArgs),
}

/// Flags shared by commands that use the daemon config.
#[derive(Debug, Clone, Args)]
pub struct DaemonConfigArgs {
    /// The daemon config file (promised.yaml); the README lists every key.
    #[arg(long, value_name = "FILE", env = "PROMISED_CONFIG")]
    pub daemon_config: Option<PathBuf>,
    /// State directory (overrides stateDir in the daemon config; default $STATE_DIRECTORY,
    /// else ./.promised).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl DaemonConfigArgs {
    /// Loads the layered settings with these flags on top; the state directory is made absolute.
    pub fn settings(
        &self,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<crate::settings::Settings, String> {
        let mut flags = extra;
        if let Some(d) = &self.state_dir {
            flags.insert(
                "stateDir".into(),
                serde_json::Value::String(d.to_string_lossy().into_owned()),
            );
        }
        let mut s = crate::settings::Settings::load(self.daemon_config.as_deref(), flags)
            .map_err(|e| e.to_string())?;
        s.state_dir =
            std::path::absolute(&s.state_dir).map_err(|e| format!("state directory: {e}"))?;
        Ok(s)
    }
}

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

/// `promised run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The config repo: a directory (watched) or a Git repository (polled; with --ref).
    #[arg(long, value_name = "DIR|GIT-URL")]
    pub config: String,
    /// Git ref to follow: a branch or tag (makes --config a Git repository; default HEAD for
    /// URLs).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Daemon config and state directory.
    #[command(flatten)]
    pub daemon: DaemonConfigArgs,
    /// HTTP listen address for webhooks, health, metrics and status (overrides listen in the
    /// daemon config; default 127.0.0.1:8473).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Git poll interval, e.g. 30s or 5m (overrides pollInterval in the daemon config).
    #[arg(long, value_name = "DURATION")]
    pub poll_interval: Option<String>,
    /// File with the webhook secret (overrides webhookSecretFile in the daemon config).
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Pipelines running at once (overrides concurrency in the daemon config).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
}

impl RunArgs {
    /// Flag values as a partial settings map.
    pub fn flags(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let Some(v) = &self.listen {
            m.insert("listen".into(), v.clone().into());
        }
        if let Some(v) = &self.poll_interval {
            m.insert("pollInterval".into(), v.clone().into());
        }
        if let Some(v) = &self.webhook_secret_file {
            m.insert(
                "webhookSecretFile".into(),
                v.to_string_lossy().into_owned().into(),
            );
        }
        if let Some(v) = self.concurrency {
            m.insert("concurrency".into(), v.into());
        }
        if let Some(v) = &self.daemon.state_dir {
            m.insert("stateDir".into(), v.to_string_lossy().into_owned().into());
        }
        m
    }
}

/// `promised status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Daemon config and state directory.
    #[command(flatten)]
    pub daemon: DaemonConfigArgs,
    /// Address of a running daemon to ask first (default: listen in the daemon config).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: StatusFormat,
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

/// Output format of a subcommand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document (stable keys, for CI tools).
    Json,
}

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
}

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

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli, out: &mut dyn Write) -> i32 {
    match cli.command {
        Command::Validate(a) => validate_cmd(&a, out),
        Command::Reconcile(a) => crate::cli_reconcile::reconcile_cmd(&a, out),
        Command::Status(a) => crate::cli_reconcile::status_cmd(&a, out),
        Command::Run(a) => run_cmd(&a),
        Command::Pipeline(a) => crate::pipeline::cmd::run(&a, out),
    }
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

fn validate_cmd(a: &ValidateArgs, out: &mut dyn Write) -> i32 {
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
        OutputFormat::Json => serde_json::to_writer_pretty(&mut *out, &report)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out)),
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

fn run_cmd(a: &RunArgs) -> i32 {
    let source = crate::cli_reconcile::source_of(&a.config, a.reference.as_deref());
    let opts = crate::daemon::DaemonOptions {
        source,
        daemon_config: a.daemon.daemon_config.clone(),
        flags: a.flags(),
    };
    let Some(rt) = runtime() else { return 2 };
    let code = match rt.block_on(crate::daemon::run(opts)) {
        Ok(()) => 0,
        Err(e) => {
            eprint_error(e);
            2
        }
    };
    // A blocking task still inside a network call (a fetch from a server that stopped
    // answering, cut short by the shutdown grace) must not keep the process alive: dropping
    // the runtime would wait for it.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

/// A multi-threaded tokio runtime for a subcommand; prints the error and returns `None` when
/// it cannot start.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprint_error(format_args!("starting the async runtime: {e}"));
            None
        }
    }
}
