//! Top-level functions every procedure uses: logging, timed steps, confirmation, time.

use super::{Effect, FnDoc, HostError, Registrar};
use crate::console::{self, Level};
use crate::journal::{Entry, Outcome};
use crate::session::Session;
use rhai::{Dynamic, EvalAltResult, FnPtr, NativeCallContext};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOG: FnDoc = FnDoc {
    module: None,
    name: "log",
    signature: "(message: string) | (level: string, message: string)",
    summary: "Writes a line to the operator's terminal and the journal; level is debug, info, warn or error.",
    example: r#"log("standby is ready"); log("warn", "error rate still above 5%");"#,
    effect: Effect::Read,
};

const STEP: FnDoc = FnDoc {
    module: None,
    name: "step",
    signature: "(name: string, body: Fn) -> any",
    summary: "Runs a closure as a named, timed step that the journal and the report show in the timeline.",
    example: r#"let took = step("switch traffic", || { sleep(0); 42 });"#,
    effect: Effect::Read,
};

const CONFIRM: FnDoc = FnDoc {
    module: None,
    name: "confirm",
    signature: "(question: string) -> bool",
    summary: "Asks the operator to approve a destructive step; --yes answers yes, and with no terminal and no --yes it refuses.",
    example: r#"if !confirm("Scale analysis-service to zero?") { throw "not approved"; }"#,
    effect: Effect::Read,
};

const SLEEP: FnDoc = FnDoc {
    module: None,
    name: "sleep",
    signature: "(seconds: int | float)",
    summary: "Waits, cancelled at once by Ctrl-C or the end of the time budget; prefer the wait functions to fixed sleeps.",
    example: "sleep(0.5);",
    effect: Effect::Read,
};

const NOW: FnDoc = FnDoc {
    module: None,
    name: "now",
    signature: "() -> string",
    summary: "Returns the current time as an RFC 3339 UTC timestamp.",
    example: r#"log("started at " + now());"#,
    effect: Effect::Read,
};

const ELAPSED: FnDoc = FnDoc {
    module: None,
    name: "elapsed",
    signature: "() -> float",
    summary: "Returns the seconds since the run started.",
    example: r#"if elapsed() > 120.0 { log("warn", "notification objective missed"); }"#,
    effect: Effect::Read,
};

const DEADLINE_LEFT: FnDoc = FnDoc {
    module: None,
    name: "deadline_left",
    signature: "() -> float",
    summary: "Returns the seconds left in the run's time budget, or a very large number when it has none.",
    example: r#"if deadline_left() < 60.0 { log("warn", "less than a minute left"); }"#,
    effect: Effect::Read,
};

const MILESTONE: FnDoc = FnDoc {
    module: None,
    name: "milestone",
    signature: "(name: string)",
    summary: "Marks a point the report measures objectives against: \"restored\" (traffic served by a good version) or \"validated\" (checks passed).",
    example: r#"milestone("restored");"#,
    effect: Effect::Read,
};

const PLATFORM: FnDoc = FnDoc {
    module: None,
    name: "platform",
    signature: "() -> map",
    summary: "Returns the current environment and its services from the platform definition (secrets excluded).",
    example: r#"for svc in platform().services { log(svc.name + ": " + svc.replicas); }"#,
    effect: Effect::Read,
};

pub const MILESTONES: [&str; 2] = ["restored", "validated"];

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&LOG, move |message: &str| write_log(&s, "info", message));
    let s = session.clone();
    r.func(&LOG, move |level: &str, message: &str| {
        write_log(&s, level, message)
    });

    let s = session.clone();
    r.func(
        &STEP,
        move |ctx: NativeCallContext, name: &str, body: FnPtr| run_step(&s, &ctx, name, body),
    );

    let s = session.clone();
    r.func(&CONFIRM, move |question: &str| confirm(&s, question));

    let s = session.clone();
    r.func(&SLEEP, move |seconds: i64| sleep(&s, seconds as f64));
    let s = session.clone();
    r.func(&SLEEP, move |seconds: f64| sleep(&s, seconds));

    r.func(&NOW, crate::timefmt::now_rfc3339);
    let s = session.clone();
    r.func(&ELAPSED, move || s.started.elapsed().as_secs_f64());
    let s = session.clone();
    r.func(&DEADLINE_LEFT, move || {
        s.deadline_left().map_or(f64::MAX, |d| d.as_secs_f64())
    });

    let s = session.clone();
    r.func(&MILESTONE, move |name: &str| milestone(&s, name));

    let s = session.clone();
    r.func(&PLATFORM, move || platform_map(&s));
}

fn write_log(session: &Session, level: &str, message: &str) -> Result<(), Box<EvalAltResult>> {
    let parsed = Level::parse(level).ok_or_else(|| {
        HostError::Invalid(format!(
            "unknown log level '{level}': use debug, info, warn or error"
        ))
        .into_rhai("log")
    })?;
    let prefix = session
        .current_step()
        .map(|s| format!("[{s}] "))
        .unwrap_or_default();
    console::log(parsed, &format!("{prefix}{message}"));
    session
        .read(
            "log",
            json!({"level": parsed.name(), "message": message}),
            async { Ok(()) },
        )
        .map(|_| ())
}

fn run_step(
    session: &Session,
    ctx: &NativeCallContext,
    name: &str,
    body: FnPtr,
) -> Result<Dynamic, Box<EvalAltResult>> {
    console::info(&format!("▶ {name}"));
    session.enter_step(name);
    let started = Instant::now();
    let result = body.call_within_context::<Dynamic>(ctx, ());
    session.leave_step();
    let took = started.elapsed();
    let (outcome, shown) = match &result {
        Ok(_) => (
            Outcome::ok(Value::Null),
            format!("✔ {name} ({})", crate::timefmt::format_duration(took)),
        ),
        Err(e) => {
            let reason = short_error(e);
            let status = if matches!(**e, EvalAltResult::ErrorTerminated(..)) {
                "cancelled"
            } else {
                "error"
            };
            (
                Outcome::status(status, Value::Null, Some(reason.clone())),
                format!(
                    "✘ {name} failed after {}: {reason}",
                    crate::timefmt::format_duration(took)
                ),
            )
        }
    };
    if result.is_ok() {
        console::info(&shown);
    } else {
        console::warn(&shown);
    }
    session
        .append(Entry {
            step: session.current_step(),
            function: "step".into(),
            args: json!({"name": name}),
            outcome,
            duration_ms: took.as_millis() as u64,
            dry_run: session.dry_run(),
            mutating: false,
        })
        .map_err(|e| HostError::Failed(e.message).into_rhai("step"))?;
    result
}

/// The message of an error without its nesting, for one-line logs and the journal.
pub fn short_error(err: &EvalAltResult) -> String {
    match err.unwrap_inner() {
        EvalAltResult::ErrorRuntime(value, _) => match value.read_lock::<rhai::Map>() {
            Some(map) if map.contains_key("message") => format!(
                "{}: {}",
                map.get("function")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                map.get("message")
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            ),
            _ => value.to_string(),
        },
        EvalAltResult::ErrorTerminated(reason, _) => reason.to_string(),
        inner => inner.to_string(),
    }
}

fn confirm(session: &Session, question: &str) -> Result<bool, Box<EvalAltResult>> {
    let args = json!({"question": question});
    if session.dry_run() {
        console::info(&format!(
            "? {question} — dry-run: would ask; continuing as if approved"
        ));
        return session
            .read("confirm", with(args, "answered_by", "dry-run"), async {
                Ok(())
            })
            .map(|_| true);
    }
    if session.yes {
        console::info(&format!("? {question} — yes (--yes)"));
        return session
            .read("confirm", with(args, "answered_by", "--yes"), async {
                Ok(())
            })
            .map(|_| true);
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let question_owned = question.to_string();
    let answer = session.read("confirm", with(args, "answered_by", "operator"), async move {
        if !interactive {
            return Err(HostError::Invalid(format!(
                "cannot ask \"{question_owned}\": there is no terminal to answer on and --yes was not given; \
                 re-run with --yes to approve destructive steps, or run from a terminal"
            )));
        }
        let answer = tokio::task::spawn_blocking(move || {
            eprint!("? {question_owned} [y/N] ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await
        .map_err(|e| HostError::Failed(format!("the prompt failed: {e}")))?
        .map_err(|e| HostError::Failed(format!("cannot read the answer: {e}")))?;
        Ok(json!({"approved": matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")}))
    })?;
    let approved = answer
        .read_lock::<rhai::Map>()
        .and_then(|m| m.get("approved").and_then(|v| v.as_bool().ok()))
        .unwrap_or(false);
    Ok(approved)
}

fn with(mut value: Value, key: &str, v: &str) -> Value {
    if let Value::Object(map) = &mut value {
        map.insert(key.into(), Value::String(v.into()));
    }
    value
}

fn sleep(session: &Session, seconds: f64) -> Result<(), Box<EvalAltResult>> {
    let duration: Duration = super::options::seconds("sleep", "the duration", seconds)
        .map_err(|e| e.into_rhai("sleep"))?;
    session
        .read("sleep", json!({"seconds": seconds}), async move {
            tokio::time::sleep(duration).await;
            Ok(())
        })
        .map(|_| ())
}

fn milestone(session: &Session, name: &str) -> Result<(), Box<EvalAltResult>> {
    if !MILESTONES.contains(&name) {
        return Err(HostError::Invalid(format!(
            "unknown milestone '{name}': use one of {}",
            MILESTONES.join(", ")
        ))
        .into_rhai("milestone"));
    }
    console::info(&format!(
        "◆ milestone {name} at {}",
        crate::timefmt::format_duration(session.started.elapsed())
    ));
    session
        .read("milestone", json!({"name": name}), async { Ok(()) })
        .map(|_| ())
}

fn platform_map(session: &Session) -> Result<Dynamic, Box<EvalAltResult>> {
    let env_name = session.environment();
    let env = session.env_config();
    let p = &session.platform;
    let services: Vec<Value> = p
        .services
        .iter()
        .map(|(name, svc)| {
            let health: serde_json::Map<String, Value> = crate::platform::SLOTS
                .iter()
                .filter_map(|slot| {
                    Some((
                        slot.to_string(),
                        Value::String(p.health_url(&env_name, name, slot)?),
                    ))
                })
                .collect();
            json!({
                "name": name,
                "release": svc.release.clone().unwrap_or_default(),
                "replicas": p.replicas(svc, &env_name),
                "critical": svc.critical,
                "health": health,
            })
        })
        .collect();
    let value = json!({
        "environment": env_name,
        "namespace": env.namespace,
        "prometheus_url": env.prometheus_url.clone().unwrap_or_default(),
        "pushgateway_url": env.pushgateway_url.clone().unwrap_or_default(),
        "has_database": env.database_url_env.is_some(),
        "has_registry": env.registry.is_some(),
        "has_redis": env.redis_url_env.is_some(),
        "sessions": env.sessions.clone().map(|s| json!({
            "label": s.label.unwrap_or_else(|| "active sessions".into()),
            "sql": s.sql.unwrap_or_default(),
            "redis_pattern": s.redis_pattern.unwrap_or_default(),
        })),
        "services": services,
    });
    rhai::serde::to_dynamic(value)
}
