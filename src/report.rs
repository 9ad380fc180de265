//! The markdown incident report, built from the journal alone, so the report of any run can be
//! rebuilt later with `rollback journal report FILE`.

use crate::console;
use crate::error::{Error, Kind, Result};
use crate::journal::{Record, SESSION_END, SESSION_START};
use crate::session::{Session, Stop};
use crate::timefmt::format_duration;
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The runbook's objectives.
pub const RESTORE_OBJECTIVE: Duration = Duration::from_secs(15 * 60);
pub const NOTIFY_OBJECTIVE: Duration = Duration::from_secs(2 * 60);
pub const VALIDATE_OBJECTIVE: Duration = Duration::from_secs(5 * 60);

/// Ends a run: the closing journal record, the report, a summary line, the exit code.
pub fn conclude(session: &Session, result: Result<()>) -> Result<ExitCode> {
    let (status, error) = match &result {
        Ok(()) => ("succeeded", None),
        Err(e) => {
            let status = match e.kind {
                Kind::Failed => "failed",
                Kind::Usage => "script error",
                Kind::Aborted if session.stopped() == Some(Stop::OutOfTime) => "out of time",
                Kind::Aborted => "aborted",
            };
            (status, Some(e.message.clone()))
        }
    };
    session.finish(status, error)?;
    let journal_path = session.journal().path().map(Path::to_path_buf);
    let report = render(&session.records(), journal_path.as_deref());
    if let Some(path) = &session.report_path {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(path, &report).map_err(|e| {
            Error::failed(format!("cannot write the report {}: {e}", path.display()))
        })?;
    }
    let took = format_duration(session.started.elapsed());
    let mode = if session.dry_run() {
        " (dry-run: nothing was changed)"
    } else {
        ""
    };
    let mark = if result.is_ok() { "✔" } else { "✘" };
    console::info(&format!(
        "{mark} run {} {status} in {took}{mode}",
        session.id
    ));
    if let Some(path) = &session.report_path {
        console::info(&format!("  report:  {}", path.display()));
    }
    if let Some(path) = &journal_path {
        console::info(&format!("  journal: {}", path.display()));
    }
    result.map(|()| ExitCode::SUCCESS)
}

/// Milliseconds since the start of the run for a record's timestamp.
fn offset(start: &chrono::DateTime<chrono::FixedOffset>, record: &Record) -> Option<Duration> {
    let t = chrono::DateTime::parse_from_rfc3339(&record.time).ok()?;
    (t - *start).to_std().ok()
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn short(value: &Value, max: usize) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max).collect::<String>())
    } else {
        text
    }
}

/// Renders the report; a journal without an end record is reported as unfinished.
pub fn render(records: &[Record], journal_path: Option<&Path>) -> String {
    let mut out = String::new();
    let Some(start) = records.iter().find(|r| r.function == SESSION_START) else {
        return "# Rollback report\n\nThe journal has no session start record.\n".into();
    };
    let started = chrono::DateTime::parse_from_rfc3339(&start.time).ok();
    let end = records.iter().rev().find(|r| r.function == SESSION_END);
    let arg = |k: &str| short(start.args.get(k).unwrap_or(&Value::Null), 200);
    // A REPL session can leave dry-run mid-way: any change actually sent makes it a live run.
    let dry_run = start.dry_run
        && !records
            .iter()
            .any(|r| r.mutating && r.outcome.status != "planned");
    let status = end
        .map(|e| e.outcome.status.clone())
        .unwrap_or_else(|| "unfinished".into());
    let title_status = if dry_run && status == "succeeded" {
        "DRY-RUN PLAN".to_string()
    } else {
        status.to_uppercase()
    };
    let _ = writeln!(
        out,
        "# Rollback report: {} on {} — {title_status}\n",
        arg("procedure"),
        arg("environment")
    );
    let duration = end.map(|e| format_duration(Duration::from_millis(e.duration_ms)));
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| Run | `{}` |", start.run);
    let _ = writeln!(out, "| Procedure | {} |", arg("procedure"));
    let _ = writeln!(out, "| Environment | {} |", arg("environment"));
    let _ = writeln!(out, "| Operator | {} on {} |", arg("operator"), arg("host"));
    let _ = writeln!(out, "| Started | {} |", start.time);
    if let Some(end) = end {
        let _ = writeln!(out, "| Ended | {} |", end.time);
    }
    let _ = writeln!(
        out,
        "| Duration | {} |",
        duration
            .clone()
            .unwrap_or_else(|| "unknown (the run did not finish)".into())
    );
    let _ = writeln!(
        out,
        "| Mode | {} |",
        if dry_run {
            "dry-run: mutating calls were planned, not sent"
        } else {
            "live"
        }
    );
    let params = start.args.get("params").cloned().unwrap_or(Value::Null);
    if params.as_object().is_some_and(|m| !m.is_empty()) {
        let _ = writeln!(out, "| Parameters | `{}` |", cell(&params.to_string()));
    }

    let calls: Vec<&Record> = records
        .iter()
        .filter(|r| r.function != SESSION_START && r.function != SESSION_END)
        .collect();
    let actions: Vec<&&Record> = calls.iter().filter(|r| r.mutating).collect();
    let checks: Vec<&&Record> = calls
        .iter()
        .filter(|r| r.function.starts_with("health_check"))
        .collect();
    let notifications: Vec<&&Record> = calls.iter().filter(|r| r.function == "notify").collect();
    let errors: Vec<&&Record> = calls
        .iter()
        .filter(|r| r.outcome.status == "error" || r.outcome.status == "cancelled")
        .collect();

    // Summary
    let _ = writeln!(out, "\n## Summary\n");
    let outcome_text = match status.as_str() {
        "succeeded" if dry_run => "The dry-run finished: this report is the plan; nothing was changed.".to_string(),
        "succeeded" => "The procedure finished successfully.".to_string(),
        "unfinished" => "The journal ends before the run finished: the process was killed or the journal was cut.".to_string(),
        other => format!(
            "The procedure ended: **{other}**. {}",
            end.and_then(|e| e.outcome.error.clone())
                .map(|e| format!("Cause: {}", e.lines().next().unwrap_or_default()))
                .unwrap_or_default()
        ),
    };
    let _ = writeln!(out, "{outcome_text}\n");
    let planned = actions
        .iter()
        .filter(|r| r.outcome.status == "planned")
        .count();
    let _ = writeln!(
        out,
        "- {} action(s){}; {} check call(s); {} notification call(s); {} error(s).",
        actions.len(),
        if planned > 0 {
            format!(", {planned} planned only")
        } else {
            String::new()
        },
        checks.len(),
        notifications.len(),
        errors.len()
    );
    let undelivered: usize = notifications.iter().map(|r| result_len(r, "failed")).sum();
    if undelivered > 0 {
        let _ = writeln!(
            out,
            "- **{undelivered} notification delivery(ies) failed**: the team may not have been told; see Notifications."
        );
    }

    if let Some((code, reason)) = crate::host::outcome::chosen(records) {
        let _ = writeln!(out, "- Exit status {code}: {}", cell(&reason));
    }
    let findings = crate::host::outcome::findings(records);
    if !findings.is_empty() {
        let _ = writeln!(out, "\n## Findings\n");
        for (i, line) in findings.iter().enumerate() {
            // A heading among the findings needs blank lines around it to render as one.
            if line.starts_with('#') {
                let before = if i == 0 { "" } else { "\n" };
                let _ = writeln!(out, "{before}{line}\n");
            } else {
                let _ = writeln!(out, "{line}");
            }
        }
    }

    // Objectives
    let _ = writeln!(out, "\n## Objectives\n");
    let _ = writeln!(
        out,
        "| Objective | Target | Measured | Result |\n|---|---|---|---|"
    );
    let at = |r: &Record| started.as_ref().and_then(|s| offset(s, r));
    let milestone = |name: &str| {
        calls.iter().find(|r| {
            r.function == "milestone" && r.args.get("name").and_then(Value::as_str) == Some(name)
        })
    };
    let restored = milestone("restored").and_then(|r| at(r));
    let validated = milestone("validated").and_then(|r| at(r));
    let first_notified = notifications
        .iter()
        .filter(|r| result_len(r, "delivered") > 0)
        .filter_map(|r| at(r).map(|t| t + Duration::from_millis(r.duration_ms)))
        .next();
    let _ = writeln!(
        out,
        "{}",
        objective_row(
            "Restore service",
            RESTORE_OBJECTIVE,
            restored,
            "milestone \"restored\"",
            dry_run
        )
    );
    let _ = writeln!(
        out,
        "{}",
        objective_row(
            "Notify stakeholders",
            NOTIFY_OBJECTIVE,
            first_notified,
            "first delivered notification",
            dry_run
        )
    );
    let validation = match (restored, validated) {
        (Some(r), Some(v)) => Some(v.saturating_sub(r)),
        (None, Some(v)) => Some(v),
        _ => None,
    };
    let _ = writeln!(
        out,
        "{}",
        objective_row(
            "Validate rollback",
            VALIDATE_OBJECTIVE,
            validation,
            "from restored to milestone \"validated\"",
            dry_run
        )
    );

    // Timeline
    let _ = writeln!(out, "\n## Timeline\n");
    let _ = writeln!(
        out,
        "| At | Step | Event | Took | Result |\n|---|---|---|---|---|"
    );
    for r in records {
        let event = match r.function.as_str() {
            SESSION_START => "run started".to_string(),
            SESSION_END => format!("run ended: {}", r.outcome.status),
            "step" => format!(
                "step **{}**",
                short(r.args.get("name").unwrap_or(&Value::Null), 80)
            ),
            "milestone" => format!(
                "milestone **{}**",
                short(r.args.get("name").unwrap_or(&Value::Null), 40)
            ),
            "log" => continue,
            "repl" => format!(
                "`> {}`",
                short(r.args.get("line").unwrap_or(&Value::Null), 80)
            ),
            f if r.mutating => format!("`{f}` {}", short(&r.args, 80)),
            _ => continue,
        };
        let when = at(r).map(format_duration).unwrap_or_default();
        let took = if r.function == "milestone" || r.function == SESSION_START {
            String::new()
        } else {
            format_duration(Duration::from_millis(r.duration_ms))
        };
        let result = match &r.outcome.error {
            Some(e) => format!(
                "{}: {}",
                r.outcome.status,
                e.lines().next().unwrap_or_default()
            ),
            None => r.outcome.status.clone(),
        };
        let _ = writeln!(
            out,
            "| +{when} | {} | {} | {took} | {} |",
            cell(r.step.as_deref().unwrap_or("")),
            cell(&event),
            cell(&result)
        );
    }

    // Actions
    let _ = writeln!(out, "\n## Actions\n");
    if actions.is_empty() {
        let _ = writeln!(out, "No action changed anything.");
    } else {
        let _ = writeln!(
            out,
            "| At | Function | Request | Result |\n|---|---|---|---|"
        );
        for r in &actions {
            let result = match (&r.outcome.error, r.outcome.status.as_str()) {
                (Some(e), s) => format!("{s}: {e}"),
                (None, "planned") => "planned (not sent)".into(),
                (None, s) => format!("{s} {}", short(&r.outcome.result, 80)),
            };
            let _ = writeln!(
                out,
                "| +{} | `{}` | `{}` | {} |",
                at(r).map(format_duration).unwrap_or_default(),
                r.function,
                cell(&short(&r.args, 160)),
                cell(&result)
            );
        }
    }

    // Checks
    let _ = writeln!(out, "\n## Checks\n");
    let mut rows = Vec::new();
    for r in &checks {
        let results: Vec<Value> = match &r.outcome.result {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            single => vec![single.clone()],
        };
        if results.is_empty() {
            rows.push(format!(
                "| {} | — | — | {} |",
                cell(&short(&r.args, 80)),
                cell(r.outcome.error.as_deref().unwrap_or(&r.outcome.status))
            ));
        }
        for h in results {
            let ok = h.get("ok").and_then(Value::as_bool).unwrap_or(false);
            rows.push(format!(
                "| {} | {} | {} ms | {} |",
                cell(&short(h.get("url").unwrap_or(&Value::Null), 100)),
                if ok { "healthy" } else { "**unhealthy**" },
                h.get("latency_ms")
                    .and_then(Value::as_f64)
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or_default(),
                cell(&short(h.get("error").unwrap_or(&Value::Null), 100))
            ));
        }
    }
    if rows.is_empty() {
        let _ = writeln!(out, "No health checks ran.");
    } else {
        let _ = writeln!(
            out,
            "| Endpoint | Result | Latency | Detail |\n|---|---|---|---|"
        );
        for row in rows {
            let _ = writeln!(out, "{row}");
        }
    }

    // Notifications
    let _ = writeln!(out, "\n## Notifications\n");
    if notifications.is_empty() {
        let _ = writeln!(out, "No notification was sent.");
    } else {
        let _ = writeln!(
            out,
            "| At | Message | Delivered | Failed | Not sent |\n|---|---|---|---|---|"
        );
        for r in &notifications {
            let delivered = notification_list(r, "delivered");
            let delivered = if r.outcome.status == "planned" {
                format!("planned, not sent: {delivered}")
            } else {
                delivered
            };
            let _ = writeln!(
                out,
                "| +{} | {} | {} | {} | {} |",
                at(r).map(format_duration).unwrap_or_default(),
                cell(&short(r.args.get("message").unwrap_or(&Value::Null), 100)),
                cell(&delivered),
                cell(&notification_list(r, "failed")),
                cell(&notification_list(r, "skipped"))
            );
        }
    }

    // Errors
    let _ = writeln!(out, "\n## Errors\n");
    let end_error = end.and_then(|e| e.outcome.error.clone());
    if errors.is_empty() && end_error.is_none() {
        let _ = writeln!(out, "None.");
    } else {
        for r in &errors {
            let _ = writeln!(
                out,
                "- +{} `{}`: {}",
                at(r).map(format_duration).unwrap_or_default(),
                r.function,
                r.outcome
                    .error
                    .as_deref()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
            );
        }
        if let Some(e) = end_error {
            let _ = writeln!(out, "\nThe run ended with:\n\n```\n{e}\n```");
        }
    }

    // Next steps
    let _ = writeln!(out, "\n## Next steps\n");
    let env = arg("environment");
    let steps: Vec<String> = match status.as_str() {
        "succeeded" if dry_run => vec![
            "Review the planned actions above.".into(),
            format!("Run again without --dry-run to carry them out on {env}."),
        ],
        "succeeded" => vec![
            "Watch the error rate and latency for at least 30 minutes.".into(),
            "Keep the failed version's artefacts for the investigation; do not redeploy it.".into(),
            "Hold the post-incident review with this report and the journal.".into(),
        ],
        "aborted" | "out of time" => vec![
            "The run stopped before the end: the actions table shows what was done; anything after the last row was not.".into(),
            format!("Check the platform's current state (`rollback run assess --env {env}`) before resuming or rerunning."),
        ],
        "script error" => vec![
            "The script or its inputs are wrong: fix the error above, run `rollback check`, then rerun.".into(),
            "The actions table shows anything done before the error.".into(),
        ],
        _ => vec![
            "Read the errors above: the actions table shows what was changed before the failure.".into(),
            format!("Check the platform's current state (`rollback run assess --env {env}`) and escalate if services are still down."),
        ],
    };
    for s in steps {
        let _ = writeln!(out, "- {s}");
    }

    // Journal
    let _ = writeln!(out, "\n## Journal\n");
    let head = records
        .last()
        .map(|r| crate::journal::line_hash(&serde_json::to_string(r).unwrap_or_default()));
    if let Some(path) = journal_path {
        let _ = writeln!(out, "- File: `{}`", path.display());
        let _ = writeln!(
            out,
            "- Verify: `rollback journal verify {}`",
            path.display()
        );
    }
    let _ = writeln!(out, "- Records: {}", records.len());
    if let Some(head) = head {
        let _ = writeln!(out, "- Head: `sha256:{head}`");
    }
    crate::redact::scrub(&out)
}

/// A `notify` result list: channel names, or `channel (why)` for failed and skipped ones.
fn notification_list(r: &Record, key: &str) -> String {
    let Some(Value::Array(items)) = r.outcome.result.get(key) else {
        return String::new();
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(channel) => channel.clone(),
            other => format!(
                "{} ({})",
                short(other.get("channel").unwrap_or(&Value::Null), 20),
                short(
                    other
                        .get("error")
                        .or_else(|| other.get("reason"))
                        .unwrap_or(&Value::Null),
                    160
                )
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The length of a list in a record's result (0 when absent).
fn result_len(r: &Record, key: &str) -> usize {
    r.outcome
        .result
        .get(key)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn objective_row(
    name: &str,
    target: Duration,
    measured: Option<Duration>,
    how: &str,
    dry_run: bool,
) -> String {
    let (shown, result) = match measured {
        Some(m) if dry_run => (
            format!("{} ({how})", format_duration(m)),
            "not measured (dry-run)".to_string(),
        ),
        Some(m) if m <= target => (
            format!("{} ({how})", format_duration(m)),
            "**met**".to_string(),
        ),
        Some(m) => (
            format!("{} ({how})", format_duration(m)),
            "**missed**".to_string(),
        ),
        None if dry_run => ("—".into(), "not measured (dry-run)".into()),
        None => ("—".into(), format!("not reached (no {how})")),
    };
    format!(
        "| {name} | {} | {shown} | {result} |",
        format_duration(target)
    )
}
