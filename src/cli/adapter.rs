//! `promised adapter read-input` and `promised adapter emit-output`: the commands of the
//! containers promised adds to each Pipeline Job on the Kubernetes Job runtime (README
//! "Kubernetes Job runtime"; [`crate::pipeline::kubernetes::transfer`]).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

pub(super) const ADAPTER_EXAMPLES: &str = "\
Run inside the pods of the Kubernetes Job runtime, not by hand.

Examples:
  promised adapter read-input --from /promised/input/object.yaml --to /kratix/input/object.yaml
  promised adapter emit-output --output /kratix/output --metadata /kratix/metadata --max-bytes 52428800";

const READ_INPUT_EXAMPLES: &str = "\
Examples:
  promised adapter read-input --from /promised/input/object.yaml --to /kratix/input/object.yaml";

const EMIT_OUTPUT_EXAMPLES: &str = "\
Writes one line when the output is refused (too large, a link, a special file), else the
archive between the lines promised-output-v1 begin and promised-output-v1 end.

Examples:
  promised adapter emit-output --output /kratix/output --metadata /kratix/metadata --max-bytes 52428800
  promised adapter emit-output --output /kratix/output --metadata /kratix/metadata --max-bytes 52428800 --skip-output";

/// `promised adapter`.
#[derive(Debug, Clone, Args)]
pub struct AdapterArgs {
    /// The adapter subcommand.
    #[command(subcommand)]
    pub command: AdapterCommand,
}

/// The containers' commands.
#[derive(Debug, Clone, Subcommand)]
pub enum AdapterCommand {
    /// Copy the input object from the input Secret's mount to /kratix/input (the reader
    /// init container).
    #[command(after_help = READ_INPUT_EXAMPLES)]
    ReadInput(ReadInputArgs),
    /// Write /kratix/output and the metadata files to stdout as a compressed archive (the
    /// output container; the daemon reads it from the container's log).
    #[command(after_help = EMIT_OUTPUT_EXAMPLES)]
    EmitOutput(EmitOutputArgs),
    /// Forward 127.0.0.1:6443 to the pipeline API's socket and run a command (inside the
    /// process runtime's sandbox; README "Pipeline API").
    #[command(hide = true)]
    KubeForward(KubeForwardArgs),
}

/// `promised adapter kube-forward`.
#[derive(Debug, Clone, Args)]
pub struct KubeForwardArgs {
    /// The pipeline API's unix socket.
    #[arg(long, value_name = "PATH", default_value = crate::pipeline::kubeapi::SOCKET)]
    pub socket: PathBuf,
    /// The TCP address to listen on.
    #[arg(long, value_name = "ADDR", default_value = crate::pipeline::kubeapi::FORWARD_ADDR)]
    pub listen: String,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `promised adapter read-input`.
#[derive(Debug, Clone, Args)]
pub struct ReadInputArgs {
    /// The object file in the input Secret's mount.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Where the Pipeline's containers read it.
    #[arg(long, value_name = "FILE", default_value = "/kratix/input/object.yaml")]
    pub to: PathBuf,
}

/// `promised adapter emit-output`.
#[derive(Debug, Clone, Args)]
pub struct EmitOutputArgs {
    /// The output directory.
    #[arg(long, value_name = "DIR", default_value = "/kratix/output")]
    pub output: PathBuf,
    /// The metadata directory.
    #[arg(long, value_name = "DIR", default_value = "/kratix/metadata")]
    pub metadata: PathBuf,
    /// The output size cap in bytes (maxOutputBytes of the daemon config).
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: u64,
    /// Leave the output out (delete workflows): only the metadata files.
    #[arg(long)]
    pub skip_output: bool,
}

/// Runs an adapter subcommand; exit code 0, or 2 with the reason on stderr.
pub fn run(a: &AdapterArgs, out: &mut dyn Write) -> i32 {
    if let AdapterCommand::KubeForward(k) = &a.command {
        return crate::pipeline::kubeapi::forward::run(&k.socket, &k.listen, &k.command);
    }
    let result = match &a.command {
        AdapterCommand::ReadInput(a) => {
            crate::pipeline::kubernetes::transfer::read_input(&a.from, &a.to)
        }
        AdapterCommand::EmitOutput(a) => crate::pipeline::kubernetes::transfer::emit_output(
            &a.output,
            &a.metadata,
            a.max_bytes,
            a.skip_output,
            out,
        )
        .map_err(|e| format!("writing the output archive: {e}")),
        AdapterCommand::KubeForward(_) => Ok(()),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
