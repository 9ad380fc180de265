//! Rehearsals on the sandbox: put a slot into trouble, run a procedure as its own run, and read
//! back how long each of its steps took to recover.
//!
//! These functions refuse every environment but `sandbox`. They change only the sandbox's
//! fault injector (its incident file), never the platform under management, so they do not
//! take the run lock: the rehearsed procedure, a separate run, must be able to take it. In a
//! dry-run `sandbox::inject` changes nothing and `sandbox::run` runs the procedure with
//! `--dry-run`.

use super::{Effect, FnDoc, HostError, Registrar, options};
use crate::journal::{Record, SESSION_END, SESSION_START};
use crate::sandbox::incidents::Incidents;
use crate::sandbox::state::{Paths, State};
use crate::session::Session;
use rhai::{Array, Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const ENVIRONMENT: &str = crate::sandbox::environment::ENVIRONMENT;

const INJECT: FnDoc = FnDoc {
    module: Some("sandbox"),
    name: "inject",
    signature: "(service: string, slot: string, incident: #{error_rate, latency_ms, down}) | (clear: ()) -> #{incidents: [#{service, slot, error_rate, latency_ms, down}], planned}",
    summary: "Sets the incident of one sandbox service slot (errors, latency, down), or with no arguments clears every incident; refused outside the sandbox environment, nothing changes in a dry-run.",
    example: r#"sandbox::inject("analysis-service", "green", #{ error_rate: 12.0 }); sandbox::inject();"#,
    effect: Effect::Read,
};
const RUN: FnDoc = FnDoc {
    module: Some("sandbox"),
    name: "run",
    signature: "(procedure: string, params: array) -> #{procedure, code, ok, report, journal, status, took_ms, steps: [#{name, at_ms, took_ms, status}], milestones: map}",
    summary: "Runs a procedure on the sandbox as a separate run (with --yes, and --dry-run when this run is one) and returns its exit code and the timing of its steps and milestones.",
    example: r#"let r = sandbox::run("emergency", ["--window", "15s"]); log(r.procedure + " exited " + r.code);"#,
    effect: Effect::Read,
};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct IncidentOptions {
    #[serde(deserialize_with = "options::number")]
    error_rate: f64,
    latency_ms: u64,
    down: bool,
}

#[derive(Debug, Clone, Serialize)]
struct StepTiming {
    name: String,
    /// From the start of the rehearsed run to the end of the step.
    at_ms: u64,
    took_ms: u64,
    status: String,
}

#[derive(Debug, Clone, Serialize)]
struct RunResult {
    procedure: String,
    code: i64,
    ok: bool,
    status: String,
    report: String,
    journal: String,
    took_ms: u64,
    steps: Vec<StepTiming>,
    /// Milestone name → ms from the start of the rehearsed run.
    milestones: BTreeMap<String, u64>,
}

type Outcome = Result<Dynamic, Box<EvalAltResult>>;

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&INJECT, move |service: &str, slot: &str, incident: Map| {
        inject(&s, Some((service, slot, incident)))
    });
    let s = session.clone();
    r.func(&INJECT, move || inject(&s, None));
    let s = session.clone();
    r.func(&RUN, move |procedure: &str, params: Array| {
        run(&s, procedure, params)
    });
}

fn sandbox_only(session: &Session) -> Result<Paths, HostError> {
    let env = session.environment();
    if env != ENVIRONMENT {
        return Err(HostError::Invalid(format!(
            "rehearsals run only on the sandbox environment, not '{env}'; start one with `rollback sandbox up` and pass --env sandbox"
        )));
    }
    Ok(Paths::new(&home()))
}

/// `$ROLLBACK_HOME`, else `~/.rollback`: where `rollback sandbox up` keeps its state.
fn home() -> PathBuf {
    std::env::var_os("ROLLBACK_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".rollback")
        })
}

fn inject(s: &Arc<Session>, change: Option<(&str, &str, Map)>) -> Outcome {
    let f = INJECT.name;
    let paths = sandbox_only(s).map_err(|e| e.into_rhai(f))?;
    let change = match change {
        None => None,
        Some((service, slot, incident)) => {
            if !crate::platform::SLOTS.contains(&slot) {
                return Err(HostError::Invalid(format!(
                    "unknown slot '{slot}': use \"blue\" or \"green\""
                ))
                .into_rhai(f));
            }
            let o: IncidentOptions = options::parse(f, incident).map_err(|e| e.into_rhai(f))?;
            if !(0.0..=100.0).contains(&o.error_rate) {
                return Err(HostError::Invalid(format!(
                    "error_rate {} is not a percentage; give a number from 0 to 100",
                    o.error_rate
                ))
                .into_rhai(f));
            }
            Some((service.to_string(), slot.to_string(), o))
        }
    };
    let args = match &change {
        Some((service, slot, o)) => json!({"service": service, "slot": slot, "incident": o}),
        None => json!({"clear": true}),
    };
    let dry_run = s.dry_run();
    let session = s.clone();
    s.read(f, args, async move {
        let state = State::load(&paths)
            .map_err(|e| HostError::Failed(e.message))?
            .filter(|st| st.complete)
            .ok_or_else(|| {
                HostError::Failed(format!(
                    "no sandbox is running under {}; start it with `rollback sandbox up`",
                    paths.dir.display()
                ))
            })?;
        let mut incidents = Incidents::load(&paths.incidents()).map_err(|e| HostError::Failed(e.message))?;
        match &change {
            None => incidents = Incidents::default(),
            Some((service, slot, o)) => {
                if !state.services.iter().any(|x| &x.name == service) {
                    return Err(HostError::Invalid(format!(
                        "the sandbox runs no service '{service}'; it runs {}",
                        state.services.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
                incidents.set(
                    service,
                    slot,
                    crate::sandbox::incidents::Incident {
                        error_rate: o.error_rate,
                        latency_ms: o.latency_ms,
                        down: o.down,
                    },
                );
            }
        }
        if !dry_run {
            incidents.save(&paths.incidents()).map_err(|e| HostError::Failed(e.message))?;
            let server = state.server.as_ref().map(|p| p.url()).unwrap_or_default();
            let reply = session
                .http()
                .post(format!("{server}/_sandbox/reload"))
                .send()
                .await
                .map_err(|e| {
                    HostError::Failed(format!(
                        "the sandbox server at {server} did not answer ({e}); check `rollback sandbox status`"
                    ))
                })?;
            if !reply.status().is_success() {
                return Err(HostError::Failed(format!(
                    "the sandbox server at {server} refused to reload the incidents (HTTP {})",
                    reply.status()
                )));
            }
        }
        let list: Vec<_> = incidents
            .list()
            .into_iter()
            .map(|(service, slot, i)| {
                json!({"service": service, "slot": slot, "error_rate": i.error_rate, "latency_ms": i.latency_ms, "down": i.down})
            })
            .collect();
        Ok(json!({"incidents": list, "planned": dry_run}))
    })
}

fn run(s: &Arc<Session>, procedure: &str, params: Array) -> Outcome {
    let f = RUN.name;
    sandbox_only(s).map_err(|e| e.into_rhai(f))?;
    if procedure.trim().is_empty() || procedure == s.procedure {
        return Err(HostError::Invalid(format!(
            "cannot rehearse '{procedure}': name another procedure, such as emergency or full"
        ))
        .into_rhai(f));
    }
    let params: Vec<String> = params
        .into_iter()
        .map(|p| {
            p.into_string().map_err(|t| {
                HostError::Invalid(format!("every parameter must be a string, found a {t}"))
                    .into_rhai(f)
            })
        })
        .collect::<Result<_, _>>()?;
    let dir = child_dir(s, procedure);
    let args = json!({"procedure": procedure, "params": params, "dir": dir.display().to_string()});
    let dry_run = s.dry_run();
    let operator = s.operator.clone();
    let procedure = procedure.to_string();
    s.read(f, args, async move {
        std::fs::create_dir_all(&dir)
            .map_err(|e| HostError::Failed(format!("cannot create {}: {e}", dir.display())))?;
        let journal = dir.join("journal.jsonl");
        let report = dir.join("report.md");
        let exe = std::env::current_exe()
            .map_err(|e| HostError::Failed(format!("cannot find this program's path: {e}")))?;
        let mut command = tokio::process::Command::new(exe);
        command
            .args(["--env", ENVIRONMENT, "--operator", &operator, "--yes"])
            .arg("--journal")
            .arg(&journal)
            .arg("--report")
            .arg(&report);
        if dry_run {
            command.arg("--dry-run");
        }
        command
            .args(["run", &procedure])
            .args(&params)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let started = std::time::Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| HostError::Failed(format!("cannot start the {procedure} run: {e}")))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (_, _, status) = tokio::join!(relay(stdout), relay(stderr), child.wait());
        let status = status.map_err(|e| {
            HostError::Failed(format!("the {procedure} run could not be awaited: {e}"))
        })?;
        let records = crate::journal::read(&journal).unwrap_or_default();
        Ok(summarise(
            &procedure,
            status.code().unwrap_or(-1).into(),
            &records,
            &journal,
            &report,
            started.elapsed().as_millis() as u64,
        ))
    })
}

/// Shows the rehearsed run's output as it comes, indented under this run's. Its closing
/// "report:"/"journal:" lines are reworded so that this run's own remain the ones to follow.
async fn relay<R: tokio::io::AsyncRead + Unpin>(stream: Option<R>) {
    use tokio::io::AsyncBufReadExt;
    let Some(stream) = stream else { return };
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line
            .replace(" report: ", " rehearsed run's report at ")
            .replace(" journal: ", " rehearsed run's journal at ");
        eprintln!("  │ {}", crate::redact::scrub(&line));
    }
}

/// `<this run's directory>/rehearsed-<procedure>`, beside this run's journal.
fn child_dir(s: &Session, procedure: &str) -> PathBuf {
    let base = s
        .journal()
        .path()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("rollback-{}", s.id)));
    let safe: String = procedure
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    base.join(format!("rehearsed-{safe}"))
}

fn summarise(
    procedure: &str,
    code: i64,
    records: &[Record],
    journal: &Path,
    report: &Path,
    took_ms: u64,
) -> RunResult {
    let time = |r: &Record| chrono::DateTime::parse_from_rfc3339(&r.time).ok();
    let start = records
        .iter()
        .find(|r| r.function == SESSION_START)
        .and_then(time);
    let at = |r: &Record| -> u64 {
        match (start, time(r)) {
            (Some(s), Some(t)) => (t - s).num_milliseconds().max(0) as u64,
            _ => 0,
        }
    };
    let steps = records
        .iter()
        .filter(|r| r.function == "step")
        .map(|r| StepTiming {
            name: r.args["name"].as_str().unwrap_or_default().to_string(),
            at_ms: at(r),
            took_ms: r.duration_ms,
            status: r.outcome.status.clone(),
        })
        .collect();
    let milestones = records
        .iter()
        .filter(|r| r.function == "milestone")
        .filter_map(|r| Some((r.args["name"].as_str()?.to_string(), at(r))))
        .collect();
    let status = records
        .iter()
        .rev()
        .find(|r| r.function == SESSION_END)
        .map(|r| r.outcome.status.clone())
        .unwrap_or_else(|| "unfinished".into());
    RunResult {
        procedure: procedure.to_string(),
        code,
        ok: code == 0,
        status,
        report: report.display().to_string(),
        journal: journal.display().to_string(),
        took_ms,
        steps,
        milestones,
    }
}
