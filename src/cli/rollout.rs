//! `promised rollout pause|resume|abort NAME`: an operator's override of an UpgradePlan's
//! rollout, recorded in the state directory (`rollout-overrides.json`, [`crate::rollout`])
//! and acted on by the next pass; and the rollouts' part of `promised status`.
//!
//! Exit codes: `0` recorded, `1` the rollout is aborted or completed (nothing to resume),
//! `2` the state directory cannot be read or written.

use std::io::Write;

use clap::{Args, ValueEnum};

use super::DaemonConfigArgs;
use super::output::{StatusFormat, write_json, write_yaml};
use super::stderr::{eprint_error, eprint_warning};
use crate::rollout::{Action, RolloutRecord, RolloutState, Rollouts};

/// Exit status and examples at the end of `promised rollout --help`.
pub(super) const ROLLOUT_EXAMPLES: &str = "\
The override is kept in the state directory; a running daemon acts on it in its next pass
(within a minute), promised reconcile in the next pass it makes. pause stops new requests from
moving (requests already moving finish); resume continues a paused rollout and acknowledges the
requests whose failure or bad health paused it; abort stops it for good: requests that did not
move stay at their version while the UpgradePlan is in the config repo. promised status NAME
shows the rollout.

Exit status: 0 recorded, 1 the rollout is aborted or completed, 2 the state directory cannot be
used.

Examples:
  promised rollout pause redis-v2 --state-dir /var/lib/promised
  promised rollout resume redis-v2 --daemon-config /etc/promised/promised.yaml
  promised rollout abort redis-v2";

/// What to do with a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RolloutAction {
    /// Stop admitting requests (those moving finish).
    Pause,
    /// Continue a paused rollout.
    Resume,
    /// Stop for good.
    Abort,
}

/// `promised rollout`.
#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    /// Daemon config and state directory.
    #[command(flatten)]
    pub daemon: DaemonConfigArgs,
    /// pause, resume or abort.
    #[arg(value_enum, value_name = "ACTION")]
    pub action: RolloutAction,
    /// The UpgradePlan's name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Runs `promised rollout`; returns the exit code (see the module docs).
pub fn rollout_cmd(a: &RolloutArgs, out: &mut dyn Write) -> i32 {
    let settings = match a.daemon.settings(Default::default()) {
        Ok(s) => s,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    let dir = &settings.state_dir;
    if !dir.is_dir() {
        eprint_error(format_args!(
            "state directory {} does not exist",
            dir.display()
        ));
        return 2;
    }
    let action = match a.action {
        RolloutAction::Pause => Action::Pause,
        RolloutAction::Resume => Action::Resume,
        RolloutAction::Abort => Action::Abort,
    };
    let rollouts = match crate::rollout::load(dir) {
        Ok(r) => r,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    match rollouts.plans.get(&a.name) {
        Some(r) if matches!(r.state, RolloutState::Aborted | RolloutState::Completed) => {
            eprint_error(format_args!(
                "rollout {} is {}: nothing to {}",
                a.name,
                r.state.as_str(),
                action.as_str()
            ));
            return 1;
        }
        Some(_) => {}
        None => eprint_warning(format_args!(
            "no pass has seen an UpgradePlan named {:?} yet; the override waits for it",
            a.name
        )),
    }
    match crate::rollout::push_override(dir, &a.name, action) {
        Ok(_) => {
            let _ = writeln!(
                out,
                "rollout {}: {} recorded; the next pass acts on it",
                a.name,
                action.as_str()
            );
            0
        }
        Err(e) => {
            eprint_error(e);
            2
        }
    }
}

/// The rollouts of a running daemon (`GET /api/v1/rollouts`), else of the state directory.
pub(super) fn load(daemon: Option<Rollouts>, state_dir: &std::path::Path) -> Rollouts {
    daemon.unwrap_or_else(|| crate::rollout::load(state_dir).unwrap_or_default())
}

fn progress(r: &RolloutRecord) -> String {
    format!("{}/{}", r.completed_resources, r.total_resources)
}

/// Writes the rollouts table after a blank line (nothing without rollouts).
pub(super) fn write_table(rollouts: &Rollouts, out: &mut dyn Write) -> std::io::Result<()> {
    if rollouts.plans.is_empty() {
        return Ok(());
    }
    let w = rollouts
        .plans
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(7);
    writeln!(out)?;
    writeln!(
        out,
        "{:<w$}  {:<16}  {:<10}  {:<10}  {:<8}  {:<24}  MESSAGE",
        "ROLLOUT", "PROMISE", "TO", "STATE", "DONE", "GROUP"
    )?;
    for (name, r) in &rollouts.plans {
        let group = r
            .groups
            .iter()
            .find(|g| g.state != "Completed")
            .map(|g| format!("{} {}/{}", g.name, g.succeeded, g.total))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{name:<w$}  {:<16}  {:<10}  {:<10}  {:<8}  {group:<24}  {}",
            r.promise,
            r.to,
            r.state.as_str(),
            progress(r),
            r.message
        )?;
    }
    Ok(())
}

/// Writes rollout `name` (also as `UpgradePlan/NAME`); `Ok(false)` when there is none.
pub(super) fn write_one(
    name: &str,
    rollouts: &Rollouts,
    format: StatusFormat,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let name = name.strip_prefix("UpgradePlan/").unwrap_or(name);
    let Some(r) = rollouts.plans.get(name) else {
        return Ok(false);
    };
    match format {
        StatusFormat::Json => write_json(out, r)?,
        StatusFormat::Yaml => write_yaml(out, r)?,
        StatusFormat::Table => {
            writeln!(out, "Rollout:       {name}")?;
            writeln!(
                out,
                "Promise:       {} ({} -> {})",
                r.promise,
                r.from.join(", "),
                r.to
            )?;
            writeln!(out, "State:         {}", r.state.as_str())?;
            writeln!(out, "Message:       {}", r.message)?;
            writeln!(
                out,
                "Resources:     {} completed, {} failed, {} total, {} in no group",
                r.completed_resources, r.failed_resources, r.total_resources, r.unselected
            )?;
            if let Some(p) = &r.paused {
                writeln!(out, "Paused:        by {} at {}: {}", p.by, p.at, p.reason)?;
            }
            writeln!(out, "Groups:")?;
            writeln!(
                out,
                "  {:<16}  {:<10}  {:>5}  {:>7}  {:>10}  {:>9}  {:>6}  {:>7}",
                "NAME", "STATE", "TOTAL", "PENDING", "INPROGRESS", "SUCCEEDED", "FAILED", "SKIPPED"
            )?;
            for g in &r.groups {
                writeln!(
                    out,
                    "  {:<16}  {:<10}  {:>5}  {:>7}  {:>10}  {:>9}  {:>6}  {:>7}",
                    g.name,
                    g.state,
                    g.total,
                    g.pending,
                    g.in_progress,
                    g.succeeded,
                    g.failed,
                    g.skipped
                )?;
            }
            writeln!(out, "Events:")?;
            if r.events.is_empty() {
                writeln!(out, "  <none>")?;
            }
            for e in &r.events {
                writeln!(out, "  {:<20}  {:<18}  {}", e.time, e.reason, e.message)?;
            }
        }
    }
    Ok(true)
}
