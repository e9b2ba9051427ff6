//! Time in config fields: Go durations (`1h30m`) and cron schedules, shared by the objects
//! that have them (UpgradePlan windows, HealthDefinitions, Promise intervals).

use std::time::SystemTime;

/// Longest Go duration, in seconds: `i64::MAX` nanoseconds (2562047h47m16.854775807s).
const MAX_GO_DURATION_SECS: f64 = i64::MAX as f64 / 1e9;

/// Parses a Go `time.ParseDuration` string (`1h30m`, `90s`, `10h`). Errors quote the input;
/// a duration longer than Go's int64 nanoseconds allow (about 292 years) is an error.
pub fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration (expected e.g. \"10h\", \"30m\", \"1h30m\")");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    // Go's durations are int64 nanoseconds: larger ones are an error there too (and
    // `Duration::from_secs_f64` would panic on them; found by the workflow_control fuzz
    // target with `retryAfter: 9999999999999999999h`).
    if !total.is_finite() || total > MAX_GO_DURATION_SECS {
        return Err(format!(
            "{s:?} is too long: a duration is at most 2562047h47m16.854775807s (Go's int64 nanoseconds)"
        ));
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// The next time after `after` that `schedule` fires (UTC).
///
/// Errors: the schedule does not parse (the parser's message).
pub fn next_run(schedule: &str, after: SystemTime) -> Result<SystemTime, String> {
    use croner::parser::{CronParser, Seconds};
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| format!("schedule {schedule:?}: {e}"))?;
    let t: chrono::DateTime<chrono::Utc> = after.into();
    let next = cron
        .find_next_occurrence(&t, false)
        .map_err(|e| format!("schedule {schedule:?}: {e}"))?;
    Ok(next.into())
}
