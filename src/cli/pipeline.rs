//! `promised pipeline run`: run one workflow locally, with no state store, and print the
//! output tree, the parsed destination selectors, the merged status and the logs (the local
//! pipeline test Kratix users ask for, kratix#586).
//!
//! Exit codes: `0` the workflow succeeded (or suspended / asked for a retry), `1` it failed or
//! the request was rejected by the Promise's schema, `2` the command could not run (bad flags,
//! unreadable config, unknown Promise or request).
//!
//! `--image-overrides FILE` is a YAML map from image reference to [`ImageOverride`]; relative
//! `host` paths are resolved against the file's folder:
//! ```yaml
//! ghcr.io/syntasso/kratix-marketplace/redis-configure-pipeline:v0.1.0:
//!   command: [sh, /image/execute-pipeline]
//!   mounts:
//!     - {host: images/redis-configure-pipeline, target: /image}
//!     - {host: ../marketplace/redis/internal/configure-pipeline/resources, target: /tmp/transfer}
//!   network: false
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use super::output::{OutputFormat, write_json};
use crate::config::{self, FileFilter, RawFile, Source};
use crate::pipeline::{
    Action, ImageOverride, Mount, Outcome, RunnerConfig, SandboxMode, WorkflowInput,
    WorkflowResult, WorkflowType, run_workflow,
};
use crate::validate::{self, ValidConfig};

/// Examples at the end of `promised pipeline --help`.
pub(crate) const PIPELINE_EXAMPLES: &str = "\
Examples:
  promised pipeline run --config testdata/quickstart --promise redis --request-name default/example
  promised pipeline run --config testdata/quickstart --promise redis --workflow promise.configure";

/// Exit status and examples at the end of `promised pipeline run --help`.
const RUN_EXAMPLES: &str = "\
Prints the output files, the destination selectors, the merged status and the logs of each
Pipeline. Images are not pulled: a container runs its own command on the host, or the command
an image override gives it.

Exit status: 0 the workflow succeeded (or was suspended or asked for a retry), 1 it failed or
the request does not match the Promise's schema, 2 the command could not run.

Examples:
  promised pipeline run --config testdata/quickstart --promise redis --request-name default/example
  promised pipeline run --config . --promise redis --request my-redis.yaml --output-dir /tmp/out
  promised pipeline run --config . --promise redis --workflow resource.delete --request-name team-a/cache
  promised pipeline run --config . --promise redis --image-override 'ghcr.io/acme/redis-configure:v1=sh /image/run' --mount ghcr.io/acme/redis-configure:v1:./images/redis:/image";

/// `promised pipeline …`.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// The pipeline subcommand.
    #[command(subcommand)]
    pub command: PipelineCommand,
}

/// Pipeline subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum PipelineCommand {
    /// Run one workflow of a Promise locally and print what it produced.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
}

/// Which workflow to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkflowChoice {
    /// The Promise's workflows.resource.configure.
    #[value(name = "resource.configure")]
    ResourceConfigure,
    /// The Promise's workflows.resource.delete (first Pipeline only).
    #[value(name = "resource.delete")]
    ResourceDelete,
    /// The Promise's workflows.promise.configure.
    #[value(name = "promise.configure")]
    PromiseConfigure,
    /// The Promise's workflows.promise.delete (first Pipeline only).
    #[value(name = "promise.delete")]
    PromiseDelete,
}

impl WorkflowChoice {
    fn split(self) -> (WorkflowType, Action) {
        match self {
            WorkflowChoice::ResourceConfigure => (WorkflowType::Resource, Action::Configure),
            WorkflowChoice::ResourceDelete => (WorkflowType::Resource, Action::Delete),
            WorkflowChoice::PromiseConfigure => (WorkflowType::Promise, Action::Configure),
            WorkflowChoice::PromiseDelete => (WorkflowType::Promise, Action::Delete),
        }
    }
}

/// `promised pipeline run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Config repo directory (validated like promised validate).
    #[arg(long, value_name = "DIR")]
    pub config: PathBuf,
    /// Name of the Promise.
    #[arg(long, value_name = "NAME")]
    pub promise: String,
    /// A resource request file, admitted against the Promise's schema (it replaces a request
    /// of the same identity in the repo).
    #[arg(long, value_name = "FILE", conflicts_with = "request_name")]
    pub request: Option<PathBuf>,
    /// A request of the repo, as namespace/name (or name, in namespace default).
    #[arg(long, value_name = "NS/NAME")]
    pub request_name: Option<String>,
    /// The workflow to run. Default: resource.configure with a request, else
    /// promise.configure.
    #[arg(long, value_enum, value_name = "WORKFLOW")]
    pub workflow: Option<WorkflowChoice>,
    /// Keep the output files here, as DIR/PIPELINE/PATH.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Run containers of IMAGE as this host command, split at whitespace (repeatable), e.g.
    /// 'ghcr.io/acme/redis-configure:v1=sh /image/run'. A container's own command still wins.
    #[arg(long = "image-override", value_name = "IMAGE=CMD")]
    pub image_override: Vec<String>,
    /// Mount the host path HOST read-only at TARGET in containers of IMAGE (repeatable).
    #[arg(long = "mount", value_name = "IMAGE:HOST:TARGET")]
    pub mount: Vec<String>,
    /// YAML map of image overrides, shaped like imageOverrides in the daemon config: image
    /// to command, mounts, network, workingDir, env and scratch. Relative host paths are
    /// relative to the file's folder.
    #[arg(long, value_name = "FILE")]
    pub image_overrides: Option<PathBuf>,
    /// How containers are isolated.
    #[arg(long, value_enum, value_name = "SANDBOX", default_value = "bwrap")]
    pub sandbox: SandboxChoice,
    /// Allow network access in every Pipeline.
    #[arg(long)]
    pub allow_network: bool,
    /// Per-container timeout, e.g. 30s or 10m.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub timeout: String,
    /// Daemon config (promised.yaml) whose pipelineSecrets and pipelineConfigMaps settings
    /// env[].valueFrom reads (without it, every secretKeyRef is refused), and whose images
    /// section pulls and runs containers from their images, as promised run does.
    #[arg(long, value_name = "FILE")]
    pub daemon_config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: OutputFormat,
}

/// `--sandbox` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxChoice {
    /// bubblewrap (default).
    Bwrap,
    /// No sandbox (see [`SandboxMode::None`]).
    #[value(
        help = "No isolation, for machines without user namespaces: scripts find the contract directories in KRATIX_INPUT_DIR, KRATIX_OUTPUT_DIR and KRATIX_METADATA_DIR instead of /kratix"
    )]
    None,
}

/// Runs `promised pipeline …`; returns the exit code.
pub fn run(args: &PipelineArgs, out: &mut dyn Write) -> i32 {
    match &args.command {
        PipelineCommand::Run(a) => match run_cmd(a, out) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
    }
}

/// Parses `--image-override`, `--mount` and `--image-overrides` into a map.
pub fn image_overrides(a: &RunArgs) -> Result<BTreeMap<String, ImageOverride>, String> {
    let mut map: BTreeMap<String, ImageOverride> = BTreeMap::new();
    if let Some(f) = &a.image_overrides {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let parsed: BTreeMap<String, ImageOverride> =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        let base = f.parent().unwrap_or(Path::new("."));
        for (k, mut v) in parsed {
            for m in &mut v.mounts {
                if m.host.is_relative() {
                    m.host = base.join(&m.host);
                }
            }
            map.insert(k, v);
        }
        crate::pipeline::check_overrides(&map).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    for s in &a.image_override {
        let (image, cmd) = s
            .split_once('=')
            .ok_or_else(|| format!("--image-override {s:?}: expected IMAGE=CMD"))?;
        let command: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
        if command.is_empty() {
            return Err(format!("--image-override {s:?}: empty command"));
        }
        map.entry(image.to_string()).or_default().command = command;
    }
    for s in &a.mount {
        let parts: Vec<&str> = s.rsplitn(3, ':').collect();
        let [target, host, image] = parts.as_slice() else {
            return Err(format!("--mount {s:?}: expected IMAGE:HOST:TARGET"));
        };
        if !target.starts_with('/') {
            return Err(format!("--mount {s:?}: TARGET must be absolute"));
        }
        map.entry(image.to_string())
            .or_default()
            .mounts
            .push(Mount {
                host: PathBuf::from(host),
                target: target.to_string(),
                writable: false,
            });
    }
    Ok(map)
}

/// Loads the repo, adding the `--request` file's documents (replacing repo requests with the
/// same identity). Returns the validated config and the label of the request file.
fn load(a: &RunArgs) -> Result<(ValidConfig, Option<String>), String> {
    let mut objects = config::load(&Source::Dir(a.config.clone()), &FileFilter::default(), None)
        .map_err(|e| e.to_string())?;
    let mut label = None;
    if let Some(f) = &a.request {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let path = format!("{} (--request)", f.display());
        let (docs, diags) = config::parse_documents(&[RawFile {
            path: path.clone(),
            oid: config::source::blob_id(&bytes),
            bytes,
            executable: false,
        }]);
        if let Some(d) = diags.first() {
            return Err(d.to_string());
        }
        let extra = config::classify(docs);
        let ids: Vec<_> = extra.candidates.iter().map(|c| c.id.clone()).collect();
        let same = |x: &crate::model::ObjectRef, y: &crate::model::ObjectRef| {
            x.kind == y.kind
                && x.name == y.name
                && x.namespace.as_deref().unwrap_or("default")
                    == y.namespace.as_deref().unwrap_or("default")
        };
        objects
            .candidates
            .retain(|c| !ids.iter().any(|i| same(i, &c.id)));
        objects.candidates.extend(extra.candidates);
        label = Some(path);
    }
    Ok((validate::validate(objects), label))
}

fn run_cmd(a: &RunArgs, out: &mut dyn Write) -> Result<i32, String> {
    let (mut cfg, label) = load(a)?;
    let settings = match &a.daemon_config {
        Some(f) => crate::settings::Settings::load(Some(f), Default::default())
            .map_err(|e| e.to_string())?,
        None => crate::settings::Settings::default(),
    };
    if a.daemon_config.is_some() {
        crate::pipeline::env::check_pipeline_env(&mut cfg, &settings.env_sources());
    }
    let promise = cfg.promise(&a.promise).ok_or_else(|| {
        let why = cfg
            .rejected
            .iter()
            .find(|r| r.id.kind == "Promise" && r.id.name == a.promise)
            .map(|r| format!(": rejected: {}", r.reasons.join("; ")))
            .unwrap_or_else(|| {
                format!(
                    " (valid Promises: {})",
                    cfg.promises
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        format!("Promise {:?} not found{why}", a.promise)
    })?;
    let has_request = a.request.is_some() || a.request_name.is_some();
    let choice = a.workflow.unwrap_or(if has_request {
        WorkflowChoice::ResourceConfigure
    } else {
        WorkflowChoice::PromiseConfigure
    });
    let (wtype, action) = choice.split();
    let mine = |r: &&std::sync::Arc<validate::ValidRequest>| r.promise == a.promise;
    let request = if wtype == WorkflowType::Resource {
        let candidates: Vec<_> = if let Some(l) = &label {
            if let Some(rej) = cfg.rejected.iter().find(|r| &r.origin.file == l) {
                writeln!(out, "request {} rejected:", rej.id).map_err(|e| e.to_string())?;
                for reason in &rej.reasons {
                    writeln!(out, "  {reason}").map_err(|e| e.to_string())?;
                }
                return Ok(1);
            }
            // Not a request at all (a kind no Promise serves): say why.
            let why: Vec<_> = cfg.diagnostics.iter().filter(|d| &d.file == l).collect();
            if !cfg.requests.iter().any(|r| &r.origin.file == l) && !why.is_empty() {
                for d in why {
                    // The validate hint about excluding folders is not for a --request file.
                    let message = d.message.split(" and the file is in no Promise folder");
                    let label = d.object.as_ref().map(|o| o.to_string()).unwrap_or_default();
                    writeln!(out, "request {label} rejected:").map_err(|e| e.to_string())?;
                    writeln!(out, "  {}", message.clone().next().unwrap_or_default())
                        .map_err(|e| e.to_string())?;
                }
                return Ok(1);
            }
            cfg.requests
                .iter()
                .filter(mine)
                .filter(|r| &r.origin.file == l)
                .collect()
        } else if let Some(n) = &a.request_name {
            let (ns, name) = n.split_once('/').unwrap_or(("default", n));
            cfg.requests
                .iter()
                .filter(mine)
                .filter(|r| r.namespace() == ns && r.name() == name)
                .collect()
        } else {
            cfg.requests.iter().filter(mine).collect()
        };
        match candidates.as_slice() {
            [one] => Some((*one).clone()),
            [] => {
                return Err(format!(
                    "no admitted request for Promise {:?} (give --request FILE or --request-name NS/NAME)",
                    a.promise
                ));
            }
            many => {
                return Err(format!(
                    "{} requests for Promise {:?}; pick one with --request-name: {}",
                    many.len(),
                    a.promise,
                    many.iter()
                        .map(|r| format!("{}/{}", r.namespace(), r.name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    } else {
        None
    };
    let mut input = match &request {
        Some(r) => WorkflowInput::for_request(promise, r, action),
        None => WorkflowInput::for_promise(promise, action),
    };
    input.promise_dir = Path::new(&promise.promise.origin.file)
        .parent()
        .map(|p| a.config.join(p));
    let runner = RunnerConfig {
        sandbox: match a.sandbox {
            SandboxChoice::Bwrap => SandboxMode::Bwrap,
            SandboxChoice::None => SandboxMode::None,
        },
        timeout: validate::parse_go_duration(&a.timeout)
            .map_err(|e| format!("--timeout {:?}: {e}", a.timeout))?,
        allow_network: a.allow_network,
        image_overrides: image_overrides(a)?,
        // The state directory, the secrets directories and `$CREDENTIALS_DIRECTORY`, as
        // `promised run` hides them.
        hidden: settings
            .hidden_paths()
            .iter()
            .map(|p| crate::pipeline::sandbox::Hidden::of(p))
            .collect(),
        env_sources: settings.env_sources(),
        // The image runtime, as `promised run` has it (the daemon config's `images:`).
        images: settings.runner().images,
        ..RunnerConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(run_workflow(&runner, &input));
    if let Some(dir) = &a.output_dir {
        write_outputs(dir, &result).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let title = match &request {
        Some(r) => format!(
            "{}.{} of Promise {} for {} {}/{}",
            wtype.as_str(),
            action.as_str(),
            a.promise,
            r.id.kind,
            r.namespace(),
            r.name()
        ),
        None => format!(
            "{}.{} of Promise {}",
            wtype.as_str(),
            action.as_str(),
            a.promise
        ),
    };
    let res = match a.output {
        OutputFormat::Json => write_json(out, &report(&title, &result)),
        OutputFormat::Text => write_text(out, &title, &result, input.pipelines.is_empty()),
    };
    res.map_err(|e| format!("writing output: {e}"))?;
    Ok(if result.error().is_some() { 1 } else { 0 })
}

fn write_outputs(dir: &Path, r: &WorkflowResult) -> std::io::Result<()> {
    for p in &r.pipelines {
        for f in &p.outputs {
            // Paths were checked by output::collect (relative, no `..`).
            let dest = dir.join(&p.name).join(&f.path);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(dest, &f.bytes)?;
        }
    }
    Ok(())
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Succeeded => "succeeded".into(),
        Outcome::Failed { .. } => "failed".into(),
        Outcome::Suspended { message } => format!("suspended ({message})"),
        Outcome::Retry { after, message } => {
            format!("retry after {} ({message})", fmt_duration(*after))
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn write_text(
    out: &mut dyn Write,
    title: &str,
    r: &WorkflowResult,
    no_pipelines: bool,
) -> std::io::Result<()> {
    writeln!(out, "workflow: {title}")?;
    if no_pipelines {
        writeln!(out, "(no pipelines defined for this workflow)")?;
    }
    for p in &r.pipelines {
        writeln!(out, "\npipeline {}: {}", p.name, outcome_text(&p.outcome))?;
        if let Outcome::Failed { error } = &p.outcome {
            for line in error.to_string().lines() {
                writeln!(out, "  error: {line}")?;
            }
        }
        writeln!(out, "  output:")?;
        if p.outputs.is_empty() {
            writeln!(out, "    (none)")?;
        }
        for f in &p.outputs {
            writeln!(
                out,
                "    {}  ({} bytes, sha256 {})",
                f.path,
                f.bytes.len(),
                &f.sha256[..12]
            )?;
        }
        writeln!(out, "  destination selectors:")?;
        if p.selectors.is_empty() {
            writeln!(out, "    (none)")?;
        }
        for s in &p.selectors {
            let labels: Vec<String> = s
                .match_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(
                out,
                "    {}: {}",
                s.directory.as_deref().unwrap_or("(root)"),
                labels.join(",")
            )?;
        }
        if let Some(st) = &p.status {
            writeln!(out, "  status.yaml:")?;
            for line in validate::to_yaml(&Value::Object(st.clone())).lines() {
                writeln!(out, "    {line}")?;
            }
        }
        for l in &p.logs {
            let code = l
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "killed".into());
            writeln!(out, "  container {} (exit {code}):", l.name)?;
            for (name, text) in [("stdout", &l.stdout), ("stderr", &l.stderr)] {
                if !text.is_empty() {
                    writeln!(out, "    {name}:")?;
                    for line in text.lines() {
                        writeln!(out, "      | {line}")?;
                    }
                }
            }
        }
    }
    writeln!(out, "\nmerged status:")?;
    if r.merged_status.is_empty() {
        writeln!(out, "  (empty)")?;
    } else {
        for line in validate::to_yaml(&Value::Object(r.merged_status.clone())).lines() {
            writeln!(out, "  {line}")?;
        }
    }
    writeln!(
        out,
        "\nresult: {}",
        match r.error() {
            Some(_) => "failed",
            None if r.succeeded() => "succeeded",
            None => "paused",
        }
    )
}

#[derive(Serialize)]
struct Report<'a> {
    workflow: &'a str,
    succeeded: bool,
    error: Option<String>,
    pipelines: Vec<PipelineReport<'a>>,
    merged_status: &'a serde_json::Map<String, Value>,
}

#[derive(Serialize)]
struct PipelineReport<'a> {
    name: &'a str,
    outcome: String,
    error: Option<String>,
    outputs: &'a [crate::pipeline::OutputFile],
    selectors: &'a [crate::pipeline::DestinationSelector],
    status: &'a Option<serde_json::Map<String, Value>>,
    logs: &'a [crate::pipeline::ContainerLog],
}

fn report<'a>(title: &'a str, r: &'a WorkflowResult) -> Report<'a> {
    Report {
        workflow: title,
        succeeded: r.succeeded(),
        error: r.error().map(|e| e.to_string()),
        pipelines: r
            .pipelines
            .iter()
            .map(|p| PipelineReport {
                name: &p.name,
                outcome: outcome_text(&p.outcome),
                error: match &p.outcome {
                    Outcome::Failed { error } => Some(error.to_string()),
                    _ => None,
                },
                outputs: &p.outputs,
                selectors: &p.selectors,
                status: &p.status,
                logs: &p.logs,
            })
            .collect(),
        merged_status: &r.merged_status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: RunArgs,
    }

    #[test]
    fn override_flags() {
        let t = T::parse_from([
            "t",
            "--config",
            "c",
            "--promise",
            "p",
            "--image-override",
            "ghcr.io/x/y:v1=sh /image/run --flag",
            "--mount",
            "ghcr.io/x/y:v1:/host/res:/tmp/transfer",
        ]);
        let m = image_overrides(&t.a).unwrap();
        let o = &m["ghcr.io/x/y:v1"];
        assert_eq!(o.command, ["sh", "/image/run", "--flag"]);
        assert_eq!(o.mounts[0].host, PathBuf::from("/host/res"));
        assert_eq!(o.mounts[0].target, "/tmp/transfer");
        assert!(!o.mounts[0].writable);
        let t = T::parse_from(["t", "--config", "c", "--promise", "p", "--mount", "img:rel"]);
        assert!(image_overrides(&t.a).is_err());
        let t = T::parse_from([
            "t",
            "--config",
            "c",
            "--promise",
            "p",
            "--image-override",
            "img",
        ]);
        assert!(image_overrides(&t.a).is_err());
    }
}
