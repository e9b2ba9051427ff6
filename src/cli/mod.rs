//! The command line: the clap definitions of `promised` and its subcommands, and [`run()`],
//! which hands a parsed command line to its subcommand, one file each:
//!
//! | file | subcommand |
//! |---|---|
//! | `validate.rs` | `promised validate` |
//! | `reconcile.rs` | `promised reconcile` |
//! | `plan.rs` | `promised plan` (what a reconcile would do, for review) |
//! | `status.rs` | `promised status` (`status_infra.rs`: its Destinations and state stores) |
//! | `run.rs` | `promised run` (the daemon, [`crate::daemon`]) |
//! | `pipeline.rs` | `promised pipeline run` |
//! | `images.rs` | `promised images pull`, `prune` and `list` (the image cache) |
//! | `adapter.rs` | `promised adapter read-input` and `emit-output` (inside Kubernetes Job runtime pods) |
//! | `output.rs` | `--output` formats: text, table, JSON, YAML |
//! | `stderr.rs` | errors and warnings on stderr (text or JSON lines) |
//!
//! Subcommands write results to `out` (stdout) and progress to stderr, and return the process
//! exit code, so tests can run them without spawning a process.
//!
//! Exit codes: `0` success (config valid), `1` the config has errors, `2` the command could not
//! run (unreadable source, bad flags).
//!
//! Help is read by users in a terminal: each subcommand's `--help` is plain text (no rustdoc
//! links or Rust paths) and ends with an `Examples:` block (tests/help.rs checks every one).

pub mod adapter;
pub mod images;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod reconcile;
pub mod rollout;
pub mod run;
pub mod status;
mod status_infra;
pub mod stderr;
pub mod validate;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::Source;

pub use images::ImagesArgs;
pub use output::{OutputFormat, StatusFormat, TableFormat};
pub use pipeline::PipelineArgs;
pub use plan::PlanArgs;
pub use reconcile::ReconcileArgs;
pub use rollout::RolloutArgs;
pub use run::RunArgs;
pub use status::StatusArgs;
pub use stderr::{eprint_diagnostic, eprint_error, eprint_warning, set_json_logs};
pub use validate::{SourceArgs, ValidateArgs, load_valid};

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
    /// `logFormat` from the daemon config of `reconcile`, `status`, `run` and `images` (file, then
    /// environment), else `text`. A daemon config that does not load gives `text` here; the
    /// command itself then reports the error. Read once at start (SIGHUP does not change it).
    pub fn log_format(&self) -> crate::settings::LogFormat {
        if let Some(f) = self.log_format {
            return f;
        }
        let daemon = match &self.command {
            Command::Reconcile(a) => &a.daemon,
            Command::Plan(a) => &a.daemon,
            Command::Status(a) => &a.daemon,
            Command::Run(a) => &a.daemon,
            Command::Rollout(a) => &a.daemon,
            Command::Images(a) => a.daemon(),
            Command::Validate(_) | Command::Pipeline(_) | Command::Adapter(_) => {
                return Default::default();
            }
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
  promised plan --config testdata/quickstart --output markdown
  promised status
  promised run --config https://github.com/acme/platform-config.git --ref main --daemon-config /etc/promised/promised.yaml
  promised pipeline run --config testdata/quickstart --promise redis --request-name default/example
  promised images pull --config testdata/quickstart --daemon-config /etc/promised/promised.yaml";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config repo: schemas, cross-object rules, every request against its Promise.
    #[command(after_help = validate::VALIDATE_EXAMPLES)]
    Validate(ValidateArgs),
    /// One reconcile pass: run workflows, place output, commit to the state stores.
    #[command(after_help = reconcile::RECONCILE_EXAMPLES)]
    Reconcile(ReconcileArgs),
    /// What a reconcile would do (files, runs, blast radius, errors); writes nothing.
    #[command(after_help = plan::PLAN_EXAMPLES)]
    Plan(PlanArgs),
    /// Show the status of every Promise and resource request.
    #[command(after_help = status::STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Run as a service: webhooks, polling or file watch, HTTP endpoints, systemd notify.
    #[command(after_help = run::RUN_EXAMPLES)]
    Run(RunArgs),
    /// Run Promise workflows locally, without a state store (see promised pipeline run).
    #[command(after_help = pipeline::PIPELINE_EXAMPLES)]
    Pipeline(PipelineArgs),
    /// Pull, prune and list the images of the image runtime (images in the daemon config).
    #[command(after_help = images::IMAGES_EXAMPLES)]
    Images(ImagesArgs),
    /// Pause, resume or abort the staged rollout of an UpgradePlan.
    #[command(after_help = rollout::ROLLOUT_EXAMPLES)]
    Rollout(RolloutArgs),
    /// The commands promised runs inside the pods of the Kubernetes Job runtime.
    #[command(after_help = adapter::ADAPTER_EXAMPLES)]
    Adapter(adapter::AdapterArgs),
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

/// Decides whether `--config` (of `reconcile` and `run`) names a directory or a Git
/// repository: a URL (`…://…` or `user@host:path`), a bare repository, or any `--ref` makes it
/// Git (at `reference`, default `HEAD`); anything else is a directory.
pub fn source_of(config: &str, reference: Option<&str>) -> Source {
    let path = Path::new(config);
    let is_url = config.contains("://") || (config.contains('@') && config.contains(':'));
    let is_bare = path.join("HEAD").is_file() && path.join("objects").is_dir();
    if reference.is_some() || is_url || is_bare {
        Source::Git {
            url: config.to_string(),
            reference: reference.unwrap_or("HEAD").to_string(),
        }
    } else {
        // Absolute: pipelines run with another working directory (`sandbox: none` resolves
        // `/promise/...` against the Promise folder's path).
        Source::Dir(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
    }
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli, out: &mut dyn Write) -> i32 {
    match cli.command {
        Command::Validate(a) => validate::validate_cmd(&a, out),
        Command::Reconcile(a) => reconcile::reconcile_cmd(&a, out),
        Command::Plan(a) => plan::plan_cmd(&a, out),
        Command::Status(a) => status::status_cmd(&a, out),
        Command::Run(a) => run::run_cmd(&a),
        Command::Pipeline(a) => pipeline::run(&a, out),
        Command::Images(a) => images::run(&a, out),
        Command::Rollout(a) => rollout::rollout_cmd(&a, out),
        Command::Adapter(a) => adapter::run(&a, out),
    }
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
