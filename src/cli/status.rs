//! `promised status`: the status of every Promise and resource request, Destination and
//! state store, from a running daemon (`GET /api/v1/status`, `GET /api/v1/destinations`) or
//! else from the state directory, as a table, JSON or YAML ([`super::output`],
//! `status_infra.rs`); `promised status NAME` shows one of them with its conditions and
//! events. `promised status --serve ADDR` serves the read-only web console over the state
//! directory instead ([`crate::web`]).
//!
//! Exit codes: `0` shown, `1` NAME not found, `2` no status could be read (or, with
//! `--serve`, the console could not start).

use std::io::Write;

use clap::Args;

use super::DaemonConfigArgs;
use super::output::{StatusFormat, write_rows};
use super::stderr::{eprint_error, eprint_warning};
use crate::state::StateDir;
use crate::status::StatusRow;

/// Exit status and examples at the end of `promised status --help`.
pub(super) const STATUS_EXAMPLES: &str = "\
Asks the daemon listening at --listen first; without one, reads the state directory (which
must exist).

The table lists Promises and requests (a compound Promise's children indented under the
request that asked for them), then Destinations (like kubectl get destinations) and state
stores, then rollouts (UpgradePlans). NAME is a Destination, a state store (GitStateStore/NAME,
BucketStateStore/NAME or its bare name), a Promise (promise/NAME) or a request
(PROMISE/NAMESPACE/NAME, or its bare name when unique): it is shown with its conditions and
events; or a rollout (its UpgradePlan's name, or UpgradePlan/NAME): its state, groups and
events. --output json|yaml without NAME prints the rows of the Promises and requests (as
/api/v1/status does); the daemon serves Destinations and state stores at
/api/v1/destinations.

--serve ADDR serves the read-only web console (overview, Promise, request and audit pages
and their JSON) over the state directory until interrupted, for a host with no daemon.

Exit status: 0 shown, 1 NAME not found, 2 no status could be read (or the console could not
start).

Examples:
  promised status
  promised status prod-eu
  promised status GitStateStore/default --output yaml
  promised status --state-dir /var/lib/promised --output yaml
  promised status --daemon-config /etc/promised/promised.yaml --output json
  promised status --state-dir /var/lib/promised --serve 127.0.0.1:8474";

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
    /// Serve the read-only web console over the state directory on ADDR (host:port) until
    /// interrupted, for a host with no daemon (README "Web console").
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["name", "output"])]
    pub serve: Option<String>,
    /// Show only this Destination, state store, Promise or request, with its conditions and
    /// events.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}

/// Runs `promised status`: prints the status of a running daemon, else the one persisted in
/// the state directory; returns the exit code (see the module docs).
pub fn status_cmd(a: &StatusArgs, out: &mut dyn Write) -> i32 {
    let settings = match a.daemon.settings(Default::default()) {
        Ok(s) => s,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    if let Some(addr) = &a.serve {
        return serve(addr, &settings);
    }
    // A running daemon has the freshest status; otherwise read the state directory, which
    // must exist: a mistyped path is an error, never created (status only reads).
    let listen = a.listen.as_deref().unwrap_or(&settings.listen);
    let (rows, infra) = match daemon_status(listen) {
        Some(rows) => (
            rows,
            daemon_get(listen, "/api/v1/destinations")
                .unwrap_or_else(|| crate::infra::load(&settings.state_dir)),
        ),
        None => match StateDir::open_read_only(&settings.state_dir).and_then(|d| d.load()) {
            Ok(state) => {
                if !settings.state_dir.join("state.json").exists() {
                    eprint_warning(format_args!(
                        "no state in {}: nothing has been reconciled with this state directory",
                        settings.state_dir.display()
                    ));
                }
                (state.status_rows(), crate::infra::load(&settings.state_dir))
            }
            Err(e) => {
                eprint_error(format_args!("no status from a daemon at {listen}, and {e}"));
                return 2;
            }
        },
    };
    let rollouts =
        super::rollout::load(daemon_get(listen, "/api/v1/rollouts"), &settings.state_dir);
    // Status pipelines published while running (README "Pipeline API").
    let mut rows = rows;
    crate::pipeline::kubeapi::published::overlay(&settings.state_dir, &mut rows);
    let res = match &a.name {
        Some(name) => match super::status_infra::write_one(name, &rows, &infra, a.output, out)
            .and_then(|found| {
                Ok(found || super::rollout::write_one(name, &rollouts, a.output, out)?)
            }) {
            Ok(true) => Ok(()),
            Ok(false) => {
                eprint_error(format_args!(
                    "no Destination, state store, Promise, request or rollout named {name:?}"
                ));
                return 1;
            }
            Err(e) => Err(e),
        },
        None => refused_line(&settings.state_dir, a.output, out)
            .and_then(|()| write_rows(&rows, a.output, out))
            .and_then(|()| {
                if a.output == super::output::StatusFormat::Table {
                    super::status_infra::write_tables(&infra, out)
                        .and_then(|()| super::rollout::write_table(&rollouts, out))
                } else {
                    Ok(())
                }
            }),
    };
    if let Err(e) = res {
        eprint_error(e);
        return 2;
    }
    0
}

/// `--serve ADDR`: the web console over the state directory (which must exist); `2` when it
/// cannot start.
fn serve(addr: &str, settings: &crate::settings::Settings) -> i32 {
    if let Err(e) = StateDir::open_read_only(&settings.state_dir) {
        eprint_error(e);
        return 2;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    let dir = settings.state_dir.clone();
    match rt.block_on(crate::web::serve_state_dir(addr, dir, settings.web.clone())) {
        Ok(()) => 0,
        Err(e) => {
            eprint_error(e);
            2
        }
    }
}

/// The table's first lines while the config remote is unreachable
/// (`<stateDir>/config-unreachable.json`, written by the daemon) or the newest config commit is
/// refused by verification (`<stateDir>/config-refused.json`, written by the daemon and
/// `promised reconcile`).
fn refused_line(
    state_dir: &std::path::Path,
    format: super::output::StatusFormat,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if format != super::output::StatusFormat::Table {
        return Ok(());
    }
    // The daemon cannot fetch its config remote (`crate::config::unreachable`).
    if let Some(u) = crate::config::unreachable::load(state_dir) {
        writeln!(out, "config: {u}\n")?;
    }
    match crate::config::verify::load_refusal(state_dir) {
        Some(r) => writeln!(
            out,
            "config: {r}; not applied, the last applied commit stays in force\n"
        ),
        None => Ok(()),
    }
}

/// Asks a daemon listening on `listen` for its status (`GET /api/v1/status`); `None` when no
/// daemon answers within a second, or it answers with an error (503 before its first pass
/// has ended).
pub fn daemon_status(listen: &str) -> Option<Vec<StatusRow>> {
    daemon_get(listen, "/api/v1/status")
}

/// `GET <path>` of a daemon listening on `listen`, as JSON; `None` when no daemon answers
/// within a second, it answers with an error, or the body does not parse.
fn daemon_get<T: serde::de::DeserializeOwned>(listen: &str, path: &str) -> Option<T> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(1)))
        .build()
        .into();
    let mut resp = agent.get(format!("http://{listen}{path}")).call().ok()?;
    let body = resp.body_mut().read_to_vec().ok()?;
    serde_json::from_slice(&body).ok()
}
