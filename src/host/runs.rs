//! `journal::` — earlier runs read back for post-incident work: which runs exist, and one run's
//! records after its hash chain is verified (a tampered journal is refused, not summarised).

use super::{Effect, FnDoc, HostError, Registrar};
use crate::journal::{Record, SESSION_END, SESSION_START};
use crate::session::Session;
use rhai::{Dynamic, EvalAltResult};
use serde::Serialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const READ: FnDoc = FnDoc {
    module: Some("journal"),
    name: "read",
    signature: "(run: string) -> #{path, run, procedure, environment, operator, dry_run, status, error, started, ended, head, records}",
    summary: "Reads an earlier run's journal (a path, a run id, or \"latest\") after verifying its hash chain, failing on any edited, inserted or removed line.",
    example: r#"let j = journal::read("latest"); log(j.procedure + " ended " + j.status + " with " + j.records.len() + " records");"#,
    effect: Effect::Read,
};

const RUNS: FnDoc = FnDoc {
    module: Some("journal"),
    name: "runs",
    signature: "() -> array of #{run, procedure, environment, dry_run, status, started, path}",
    summary: "Lists the earlier runs in $ROLLBACK_HOME/runs, newest first, without this one.",
    example: r#"for r in journal::runs() { log(r.run + " " + r.procedure + " " + r.status); }"#,
    effect: Effect::Read,
};

/// What a run's first and last records say about it.
#[derive(Debug, Clone, Serialize)]
struct RunSummary {
    run: String,
    procedure: String,
    environment: String,
    operator: String,
    dry_run: bool,
    /// How it ended, or `unfinished` without an end record.
    status: String,
    error: String,
    started: String,
    ended: String,
    path: String,
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&READ, move |run: &str| read(&s, run));
    let s = session.clone();
    r.func(&RUNS, move || runs(&s));
}

/// `$ROLLBACK_HOME/runs`: the parent of this run's directory when it lives there, else the
/// home the command line would use.
fn runs_dir(session: &Session) -> PathBuf {
    let own = session
        .journal()
        .path()
        .and_then(Path::parent)
        .filter(|dir| dir.file_name().is_some_and(|n| n == session.id.as_str()))
        .and_then(Path::parent)
        .map(PathBuf::from);
    own.unwrap_or_else(|| {
        std::env::var_os("ROLLBACK_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rollback")))
            .unwrap_or_else(|| PathBuf::from(".rollback"))
            .join("runs")
    })
}

fn summarise(records: &[Record], path: &Path) -> Option<RunSummary> {
    let start = records.iter().find(|r| r.function == SESSION_START)?;
    let end = records.iter().rev().find(|r| r.function == SESSION_END);
    let text = |k: &str| {
        start
            .args
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(RunSummary {
        run: start.run.clone(),
        procedure: text("procedure"),
        environment: text("environment"),
        operator: text("operator"),
        dry_run: start.dry_run,
        status: end.map_or("unfinished".into(), |e| e.outcome.status.clone()),
        error: end
            .and_then(|e| e.outcome.error.clone())
            .unwrap_or_default(),
        started: start.time.clone(),
        ended: end.map(|e| e.time.clone()).unwrap_or_default(),
        path: path.display().to_string(),
    })
}

/// Earlier runs, newest first (run ids sort by their start time), this one left out.
fn list_runs(dir: &Path, own: &str) -> Vec<RunSummary> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<RunSummary> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() != own)
        .filter_map(|e| {
            let path = e.path().join("journal.jsonl");
            let text = std::fs::read_to_string(&path).ok()?;
            let first = text.lines().next()?;
            let last = text.lines().last()?;
            let records: Vec<Record> = [first, last]
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            summarise(&records, &path)
        })
        .collect();
    found.sort_by(|a, b| b.run.cmp(&a.run));
    found
}

fn runs(session: &Session) -> Result<Dynamic, Box<EvalAltResult>> {
    let dir = runs_dir(session);
    let own = session.id.clone();
    session.read(
        &RUNS.qualified_name(),
        json!({"dir": dir.display().to_string()}),
        async move { Ok(list_runs(&dir, &own)) },
    )
}

/// A path, a run id under the runs directory, or `latest` (the newest earlier run).
fn resolve(session: &Session, run: &str) -> Result<PathBuf, HostError> {
    let dir = runs_dir(session);
    if run.is_empty() || run == "latest" {
        return list_runs(&dir, &session.id)
            .first()
            .map(|r| PathBuf::from(&r.path))
            .ok_or_else(|| {
                HostError::Failed(format!(
                    "no earlier run in {}: pass a journal path or a run id",
                    dir.display()
                ))
            });
    }
    if run.contains('/') || run.ends_with(".jsonl") {
        return Ok(PathBuf::from(run));
    }
    let path = dir.join(run).join("journal.jsonl");
    if path.is_file() {
        Ok(path)
    } else {
        Err(HostError::Invalid(format!(
            "no run '{run}' in {}: `ls {}` lists the run ids",
            dir.display(),
            dir.display()
        )))
    }
}

fn read(session: &Session, run: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = READ.qualified_name();
    let path = resolve(session, run).map_err(|e| e.into_rhai(&f))?;
    // Only the summary is journaled: the records are evidence in their own, verified file.
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let slot = records.clone();
    let summary = session.read(&f, json!({"run": run}), async move {
        let verified = crate::journal::verify(&path).map_err(|e| HostError::Failed(e.message))?;
        let summary = summarise(&verified.records, &path).ok_or_else(|| {
            HostError::Failed(format!(
                "{} has no session start record: it is not a run journal",
                path.display()
            ))
        })?;
        let count = verified.records.len();
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = verified.records;
        let mut value = serde_json::to_value(summary).unwrap_or_default();
        value["head"] = json!(verified.head);
        value["record_count"] = json!(count);
        Ok(value)
    })?;
    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|e| e.into_inner()));
    // Every field present on every record, so scripts need no `"key" in r` checks.
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["mutating"] = json!(r.mutating);
            v["step"] = json!(r.step.clone().unwrap_or_default());
            v["outcome"]["error"] = json!(r.outcome.error.clone().unwrap_or_default());
            v
        })
        .collect();
    let mut map = summary.cast::<rhai::Map>();
    map.insert("records".into(), rhai::serde::to_dynamic(records)?);
    Ok(map.into())
}
