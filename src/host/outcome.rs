//! What a run hands back besides its actions: findings for the report and stdout, documents
//! written beside its journal, a verdict carried by the exit status, and parameter errors.
//!
//! Assessments (`assess`, `impact`, `post-rollback`) change nothing; their result is what they
//! found. `finding` puts it on stdout (pipeable; progress stays on stderr) and in the report's
//! Findings section, and `exit_code` lets automation branch on a verdict without parsing text.

use super::{Effect, FnDoc, HostError, Registrar};
use crate::journal::Record;
use crate::session::Session;
use rhai::{Dynamic, EvalAltResult};
use serde::Serialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

const FINDING: FnDoc = FnDoc {
    module: None,
    name: "finding",
    signature: "(text: string)",
    summary: "Prints a line of the procedure's result on stdout and adds it to the report's Findings section.",
    example: r#"finding("DECISION: monitor — no rollback trigger is met");"#,
    effect: Effect::Read,
};

const EXIT_CODE: FnDoc = FnDoc {
    module: None,
    name: "exit_code",
    signature: "(code: int, reason: string)",
    summary: "Sets the exit status a successful run ends with: 0, or a verdict code from 10 to 19 whose meaning the procedure documents (1, 2 and 3 keep theirs).",
    example: r#"exit_code(12, "immediate rollback: analysis-service error rate 12%");"#,
    effect: Effect::Read,
};

const PARAM_ERROR: FnDoc = FnDoc {
    module: None,
    name: "param_error",
    signature: "(name: string, message: string)",
    summary: "Stops the run as a usage error (exit 2) about one of the procedure's parameters, for values its type alone cannot reject.",
    example: r#"let duration = -5; if duration < 0 { param_error("duration", "expects minutes (0 or more)"); }"#,
    effect: Effect::Read,
};

const ARTIFACT: FnDoc = FnDoc {
    module: None,
    name: "artifact",
    signature: "(name: string, text: string) -> #{path, bytes}",
    summary: "Writes a document (an incident report, a checklist) into this run's directory beside its journal and report, in dry-run too, and returns its path.",
    example: r##"let doc = artifact("incident-report.md", "# Incident\n"); finding("written: " + doc.path);"##,
    effect: Effect::Read,
};

/// Exit statuses a procedure may choose; 1–3 belong to failures, usage errors and aborts.
pub const VERDICT_CODES: std::ops::RangeInclusive<i64> = 10..=19;

#[derive(Debug, Serialize)]
struct Written {
    path: String,
    bytes: usize,
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&FINDING, move |text: &str| finding(&s, text));
    let s = session.clone();
    r.func(&EXIT_CODE, move |code: i64, reason: &str| {
        exit_code(&s, code, reason)
    });
    let s = session.clone();
    r.func(&PARAM_ERROR, move |name: &str, message: &str| {
        param_error(&s, name, message)
    });
    let s = session.clone();
    r.func(&ARTIFACT, move |name: &str, text: &str| {
        artifact(&s, name, text)
    });
}

fn finding(session: &Session, text: &str) -> Result<(), Box<EvalAltResult>> {
    crate::console::out(text);
    session
        .read(FINDING.name, json!({"text": text}), async { Ok(()) })
        .map(|_| ())
}

fn exit_code(session: &Session, code: i64, reason: &str) -> Result<(), Box<EvalAltResult>> {
    if code != 0 && !VERDICT_CODES.contains(&code) {
        return Err(HostError::Invalid(format!(
            "{code} is not a verdict code: use 0 or {}–{} (1, 2 and 3 mean failed, usage error and aborted)",
            VERDICT_CODES.start(),
            VERDICT_CODES.end()
        ))
        .into_rhai(EXIT_CODE.name));
    }
    session
        .read(
            EXIT_CODE.name,
            json!({"code": code, "reason": reason}),
            async { Ok(()) },
        )
        .map(|_| ())
}

fn param_error(session: &Session, name: &str, message: &str) -> Result<(), Box<EvalAltResult>> {
    let flag = name.replace('_', "-");
    let text = format!("{message}\nsee `rollback run {} --help`", session.procedure);
    let error = HostError::Invalid(text.clone());
    // Journaled as the call that failed, so the report's Errors section names the parameter.
    let _ = session.read(PARAM_ERROR.name, json!({"name": name}), async move {
        Err::<(), _>(HostError::Invalid(text))
    });
    Err(error.into_rhai(&format!("parameter --{flag}")))
}

/// Where this run keeps its files: the directory of its report, else of its journal.
fn run_dir(session: &Session) -> Option<PathBuf> {
    let journal = session.journal().path().map(PathBuf::from);
    session
        .report_path
        .clone()
        .or(journal)
        .and_then(|p| p.parent().map(PathBuf::from))
}

fn artifact(session: &Session, name: &str, text: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = ARTIFACT.name;
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Err(HostError::Invalid(format!(
            "'{name}' is not a plain file name (letters, digits, '-', '_' and '.', not starting with '.')"
        ))
        .into_rhai(f));
    }
    if name == "journal.jsonl" || name == "report.md" {
        return Err(HostError::Invalid(format!(
            "{name} is the run's own record: choose another name"
        ))
        .into_rhai(f));
    }
    let Some(dir) = run_dir(session) else {
        return Err(HostError::Failed(
            "this session keeps no files (no journal or report path): run it as a procedure".into(),
        )
        .into_rhai(f));
    };
    let path = dir.join(name);
    let text = crate::redact::scrub(text);
    session.read(f, json!({"name": name}), async move {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| HostError::Failed(format!("cannot create {}: {e}", dir.display())))?;
        tokio::fs::write(&path, text.as_bytes())
            .await
            .map_err(|e| HostError::Failed(format!("cannot write {}: {e}", path.display())))?;
        Ok(Written {
            path: path.display().to_string(),
            bytes: text.len(),
        })
    })
}

/// The exit status the run chose with `exit_code`, and why: the last successful call wins.
pub fn chosen(records: &[Record]) -> Option<(u8, String)> {
    records
        .iter()
        .rev()
        .filter(|r| r.function == EXIT_CODE.name && r.outcome.status == "ok")
        .find_map(|r| {
            let code = r.args.get("code").and_then(Value::as_i64)?;
            let reason = r.args.get("reason").and_then(Value::as_str).unwrap_or("");
            Some((u8::try_from(code).ok()?, reason.to_string()))
        })
}

/// Every `finding` of a run, in order, for the report.
pub fn findings(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.function == FINDING.name)
        .filter_map(|r| r.args.get("text").and_then(Value::as_str))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Outcome;

    fn record(function: &str, args: Value, status: &str) -> Record {
        Record {
            seq: 1,
            time: String::new(),
            run: "r".into(),
            step: None,
            function: function.into(),
            args,
            outcome: Outcome::status(status, Value::Null, None),
            duration_ms: 0,
            dry_run: false,
            mutating: false,
            prev: String::new(),
        }
    }

    #[test]
    fn the_last_successful_exit_code_wins() {
        let records = vec![
            record("exit_code", json!({"code": 10, "reason": "a"}), "ok"),
            record("exit_code", json!({"code": 12, "reason": "b"}), "ok"),
            record("exit_code", json!({"code": 99, "reason": "c"}), "error"),
        ];
        assert_eq!(chosen(&records), Some((12, "b".into())));
        assert_eq!(chosen(&records[..0]), None);
    }

    #[test]
    fn findings_keep_their_order() {
        let records = vec![
            record("finding", json!({"text": "one"}), "ok"),
            record("log", json!({"message": "x"}), "ok"),
            record("finding", json!({"text": "two"}), "ok"),
        ];
        assert_eq!(findings(&records), vec!["one", "two"]);
    }
}
