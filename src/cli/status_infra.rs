//! `promised status`'s Destinations and state stores ([`crate::infra`]): the tables after
//! the objects' (Kratix's `kubectl get destinations` columns `NAME STATESTOREKIND
//! STATESTORENAME READY`, plus the reason and the requests placed), and `promised status NAME`
//! for one Destination, state store, Promise or request with its conditions and events.

use std::io::Write;

use super::output::{StatusFormat, write_json, write_yaml};
use crate::infra::InfraStatus;
use crate::status::{Condition, Event, StatusRow};

/// Writes the Destinations and state stores tables (nothing when there are none), each after
/// a blank line.
pub(super) fn write_tables(infra: &InfraStatus, out: &mut dyn Write) -> std::io::Result<()> {
    if !infra.destinations.is_empty() {
        let w = width(infra.destinations.keys(), 11);
        let kw = width(
            infra.destinations.values().map(|d| &d.state_store_ref.kind),
            14,
        );
        let nw = width(
            infra.destinations.values().map(|d| &d.state_store_ref.name),
            14,
        );
        writeln!(out)?;
        writeln!(
            out,
            "{:<w$}  {:<kw$}  {:<nw$}  {:<5}  {:<8}  {:<24}  MESSAGE",
            "DESTINATION", "STATESTOREKIND", "STATESTORENAME", "READY", "REQUESTS", "REASON"
        )?;
        for (name, d) in &infra.destinations {
            let (ready, reason, message) = columns(d.ready());
            writeln!(
                out,
                "{name:<w$}  {:<kw$}  {:<nw$}  {ready:<5}  {:<8}  {reason:<24}  {message}",
                d.state_store_ref.kind, d.state_store_ref.name, d.requests
            )?;
        }
        for (name, d) in infra
            .destinations
            .iter()
            .filter(|(_, d)| !d.lint.is_empty())
        {
            writeln!(
                out,
                "warning: {} consumer lint findings on Destination {name} (promised status {name})",
                d.lint.len() + d.lint_omitted
            )?;
        }
    }
    if !infra.state_stores.is_empty() {
        let w = width(infra.state_stores.keys(), 10);
        writeln!(out)?;
        writeln!(
            out,
            "{:<w$}  {:<5}  {:<28}  {:<9}  MESSAGE",
            "STATESTORE", "READY", "REASON", "LASTWRITE"
        )?;
        for (key, s) in &infra.state_stores {
            let (ready, reason, message) = columns(s.ready());
            let last = s
                .last_successful_write
                .as_ref()
                .map_or("-", |w| &w.version[..w.version.len().min(9)]);
            writeln!(
                out,
                "{key:<w$}  {ready:<5}  {reason:<28}  {last:<9}  {message}"
            )?;
        }
    }
    Ok(())
}

/// Writes the one Destination, state store, Promise or request called `name` (see the
/// module docs); `Ok(false)` when there is none.
pub(super) fn write_one(
    name: &str,
    rows: &[StatusRow],
    infra: &InfraStatus,
    format: StatusFormat,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    if let Some(d) = infra.destinations.get(name) {
        return emit(d, format, out, |out| {
            writeln!(out, "Destination:   {}", d.name)?;
            writeln!(
                out,
                "State store:   {}/{}",
                d.state_store_ref.kind, d.state_store_ref.name
            )?;
            writeln!(out, "Requests:      {}", d.requests)?;
            writeln!(out, "Promises:      {}", d.promises)?;
            conditions(&d.conditions, out)?;
            if !d.lint.is_empty() {
                writeln!(out, "Consumer lint:")?;
                for f in &d.lint {
                    writeln!(out, "  {f}")?;
                }
                if d.lint_omitted > 0 {
                    writeln!(out, "  … and {} more", d.lint_omitted)?;
                }
            }
            events(&d.events, out)
        })
        .map(|()| true);
    }
    let stores: Vec<_> = infra
        .state_stores
        .iter()
        .filter(|(k, s)| k.as_str() == name || s.name == name)
        .collect();
    if let [(key, s)] = stores.as_slice() {
        return emit(*s, format, out, |out| {
            writeln!(out, "State store:   {key}")?;
            let (url, branch) = if s.kind == "GitStateStore" {
                ("URL:", "Branch:")
            } else {
                ("Endpoint:", "Bucket:")
            };
            writeln!(out, "{url:<14} {}", s.url)?;
            writeln!(out, "{branch:<14} {}", s.branch_or_bucket)?;
            writeln!(out, "Status:        {}", s.status)?;
            writeln!(out, "Destinations:  {}", s.destinations.join(", "))?;
            match &s.last_successful_write {
                Some(w) => writeln!(out, "Last write:    {} at {}", w.version, w.time)?,
                None => writeln!(out, "Last write:    -")?,
            }
            writeln!(
                out,
                "Last check:    {}",
                s.last_check_time.as_deref().unwrap_or("-")
            )?;
            conditions(&s.conditions, out)?;
            events(&s.events, out)
        })
        .map(|()| true);
    }
    let matches: Vec<&StatusRow> = rows
        .iter()
        .filter(|r| {
            r.key == name
                || r.key == format!("promise/{name}")
                || (r.status.object.namespace.is_some() && r.status.object.name == name)
        })
        .collect();
    let row = match matches.as_slice() {
        [one] => *one,
        many => match many.iter().find(|r| r.key == name) {
            Some(r) => *r,
            None => return Ok(false),
        },
    };
    emit(row, format, out, |out| {
        writeln!(out, "Object:        {}", row.key)?;
        writeln!(out, "Reconciled:    {}", row.status.summary())?;
        writeln!(out, "Message:       {}", row.status.message)?;
        // Compound Promises: the request that requested this one, and those it requested.
        if let Some(p) = &row.status.parent {
            writeln!(out, "Parent:        {p}")?;
        }
        let children: Vec<&str> = rows
            .iter()
            .filter(|r| r.status.parent.as_deref() == Some(row.key.as_str()))
            .map(|r| r.key.as_str())
            .collect();
        if !children.is_empty() {
            writeln!(out, "Children:      {}", children.join(", "))?;
        }
        conditions(&row.status.conditions, out)?;
        events(&row.status.events, out)
    })
    .map(|()| true)
}

/// `value` as JSON or YAML, or `text` for the table format.
fn emit<T: serde::Serialize>(
    value: &T,
    format: StatusFormat,
    out: &mut dyn Write,
    text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match format {
        StatusFormat::Json => write_json(out, value),
        StatusFormat::Yaml => write_yaml(out, value),
        StatusFormat::Table => text(out),
    }
}

/// The `Conditions:` block.
fn conditions(conds: &[Condition], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "Conditions:")?;
    writeln!(
        out,
        "  {:<26}  {:<7}  {:<28}  {:<20}  MESSAGE",
        "TYPE", "STATUS", "REASON", "LASTTRANSITION"
    )?;
    for c in conds {
        writeln!(
            out,
            "  {:<26}  {:<7}  {:<28}  {:<20}  {}",
            c.type_,
            format!("{:?}", c.status),
            c.reason,
            c.last_transition_time,
            c.message
        )?;
    }
    Ok(())
}

/// The `Events:` block, oldest first (`<none>` without events).
fn events(events: &[Event], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "Events:")?;
    if events.is_empty() {
        return writeln!(out, "  <none>");
    }
    writeln!(
        out,
        "  {:<20}  {:<7}  {:<24}  MESSAGE",
        "TIME", "TYPE", "REASON"
    )?;
    for e in events {
        writeln!(
            out,
            "  {:<20}  {:<7}  {:<24}  {}",
            e.time,
            format!("{:?}", e.type_),
            e.reason,
            e.message
        )?;
    }
    Ok(())
}

/// READY, REASON and the first line of the message of a `Ready` condition (`Unknown`, `-`
/// without one).
fn columns(c: Option<&Condition>) -> (String, &str, &str) {
    match c {
        Some(c) => (
            format!("{:?}", c.status),
            c.reason.as_str(),
            c.message.lines().next().unwrap_or_default(),
        ),
        None => ("Unknown".into(), "-", ""),
    }
}

/// The widest of `names`, at least `min`.
fn width<'a>(names: impl Iterator<Item = &'a String>, min: usize) -> usize {
    names.map(|n| n.len()).max().unwrap_or(min).max(min)
}
