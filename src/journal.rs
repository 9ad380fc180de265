//! The run journal: append-only JSON lines, each carrying the SHA-256 of the line before it,
//! so an edited, inserted or removed line is detected by `rollback journal verify`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// `prev` of the first record: there is no line before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub const SESSION_START: &str = "session.start";
pub const SESSION_END: &str = "session.end";

/// One journal line. Every host call, step, REPL line, session start and end is one record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub time: String,
    pub run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub function: String,
    pub args: Value,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub dry_run: bool,
    /// The call changes the world (done for real, or only planned in a dry-run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mutating: bool,
    pub prev: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// `ok`, `error`, `planned`, `cancelled`; for the session end: how the run ended.
    pub status: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub result: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    pub fn ok(result: Value) -> Self {
        Outcome {
            status: "ok".into(),
            result,
            error: None,
        }
    }

    pub fn status(status: &str, result: Value, error: Option<String>) -> Self {
        Outcome {
            status: status.into(),
            result,
            error,
        }
    }
}

/// What a caller supplies; the journal adds sequence, time, run id and hash, and redacts.
#[derive(Debug, Clone)]
pub struct Entry {
    pub step: Option<String>,
    pub function: String,
    pub args: Value,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub dry_run: bool,
    pub mutating: bool,
}

pub struct Journal {
    run: String,
    file: Option<File>,
    path: Option<PathBuf>,
    prev: String,
    records: Vec<Record>,
}

pub fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

impl Journal {
    /// Opens a new journal file (refusing to append to an existing one: a journal is one run).
    pub fn create(run: &str, path: Option<&Path>) -> Result<Journal> {
        let file = match path {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Error::usage(format!(
                            "cannot create the journal directory {}: {e}",
                            dir.display()
                        ))
                    })?;
                }
                Some(
                    std::fs::OpenOptions::new()
                        .create_new(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| {
                            Error::usage(format!(
                                "cannot create the journal {}: {e}\nchoose another path with --journal",
                                path.display()
                            ))
                        })?,
                )
            }
            None => None,
        };
        Ok(Journal {
            run: run.to_string(),
            file,
            path: path.map(Path::to_path_buf),
            prev: GENESIS.to_string(),
            records: Vec::new(),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends a record; secrets are scrubbed here, once, for every caller.
    pub fn append(&mut self, entry: Entry) -> Result<&Record> {
        let mut args = entry.args;
        crate::redact::scrub_json(&mut args);
        let mut outcome = entry.outcome;
        crate::redact::scrub_json(&mut outcome.result);
        outcome.error = outcome.error.map(|e| crate::redact::scrub(&e));
        let record = Record {
            seq: self.records.len() as u64 + 1,
            time: crate::timefmt::now_rfc3339(),
            run: self.run.clone(),
            step: entry.step.map(|s| crate::redact::scrub(&s)),
            function: entry.function,
            args,
            outcome,
            duration_ms: entry.duration_ms,
            dry_run: entry.dry_run,
            mutating: entry.mutating,
            prev: self.prev.clone(),
        };
        let line = serde_json::to_string(&record).expect("a record always serializes");
        if let Some(file) = self.file.as_mut() {
            writeln!(file, "{line}").map_err(|e| {
                Error::failed(format!(
                    "cannot write the journal {}: {e}",
                    self.path.as_deref().unwrap_or(Path::new("?")).display()
                ))
            })?;
        }
        self.prev = line_hash(&line);
        self.records.push(record);
        Ok(self.records.last().expect("just pushed"))
    }

    /// Flushes the file to disk; called at the end of a run.
    pub fn sync(&mut self) {
        if let Some(file) = self.file.as_mut() {
            let _ = file.sync_data();
        }
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The hash of the last line: quoting it elsewhere (the report) anchors the whole chain.
    pub fn head(&self) -> &str {
        &self.prev
    }
}

/// The result of checking a journal file.
#[derive(Debug)]
pub struct Verified {
    pub records: Vec<Record>,
    pub head: String,
}

/// Checks the hash chain, the sequence and the closing record; the first problem is an error
/// naming the line and what probably happened to it.
pub fn verify(path: &Path) -> Result<Verified> {
    let file = File::open(path)
        .map_err(|e| Error::usage(format!("cannot open the journal {}: {e}", path.display())))?;
    let mut prev = GENESIS.to_string();
    let mut records: Vec<Record> = Vec::new();
    let broken = |n: usize, what: String| {
        Error::failed(format!(
            "journal {} fails verification at line {n}: {what}\nthe journal was changed after it was written; keep this copy as evidence and use the report's journal head to find the original",
            path.display()
        ))
    };
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let n = index + 1;
        let line = line.map_err(|e| broken(n, format!("unreadable ({e})")))?;
        let record: Record = serde_json::from_str(&line)
            .map_err(|e| broken(n, format!("not a journal record ({e})")))?;
        let expected_seq = n as u64;
        if record.seq > expected_seq {
            return Err(broken(
                n,
                format!(
                    "record {} follows record {} — {} line(s) were removed",
                    record.seq,
                    expected_seq - 1,
                    record.seq - expected_seq
                ),
            ));
        }
        if record.seq < expected_seq {
            return Err(broken(
                n,
                format!(
                    "record {} appears again after record {} — a line was inserted or duplicated",
                    record.seq,
                    expected_seq - 1
                ),
            ));
        }
        if record.prev != prev {
            return Err(broken(
                n,
                format!(
                    "the hash it records for line {} does not match that line — line {} was edited",
                    n - 1,
                    n - 1
                ),
            ));
        }
        if let Some(first) = records.first()
            && first.run != record.run
        {
            return Err(broken(
                n,
                format!("it belongs to run {}, not {}", record.run, first.run),
            ));
        }
        prev = line_hash(&line);
        records.push(record);
    }
    let Some(last) = records.last() else {
        return Err(Error::failed(format!(
            "journal {} is empty",
            path.display()
        )));
    };
    if records[0].function != SESSION_START {
        return Err(broken(1, "the session start record is missing".into()));
    }
    if last.function != SESSION_END {
        return Err(Error::failed(format!(
            "journal {} ends at line {} without its session end record: lines were removed from the end, or the run was killed before it could finish",
            path.display(),
            records.len()
        )));
    }
    Ok(Verified {
        records,
        head: prev,
    })
}

/// Reads a journal without verifying it (for reports of a damaged or unfinished run).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("cannot read the journal {}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                Error::usage(format!(
                    "{} line {} is not a journal record: {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(function: &str) -> Entry {
        Entry {
            step: None,
            function: function.into(),
            args: json!({"url": "http://u:pw1234@h/"}),
            outcome: Outcome::ok(Value::Null),
            duration_ms: 1,
            dry_run: false,
            mutating: false,
        }
    }

    fn write_journal(dir: &Path) -> PathBuf {
        let path = dir.join("j.jsonl");
        let mut j = Journal::create("r1", Some(&path)).unwrap();
        j.append(entry(SESSION_START)).unwrap();
        j.append(entry("log")).unwrap();
        j.append(entry("log")).unwrap();
        j.append(entry(SESSION_END)).unwrap();
        j.sync();
        path
    }

    fn edit_lines(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
        let mut lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        f(&mut lines);
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn intact_journal_verifies_and_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_journal(dir.path());
        let v = verify(&path).unwrap();
        assert_eq!(v.records.len(), 4);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("pw1234"));
    }

    #[test]
    fn edited_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_journal(dir.path());
        edit_lines(&path, |l| l[1] = l[1].replace("\"log\"", "\"lag\""));
        let err = verify(&path).unwrap_err();
        assert!(err.message.contains("at line 3"), "{}", err.message);
        assert!(err.message.contains("line 2 was edited"), "{}", err.message);
    }

    #[test]
    fn removed_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_journal(dir.path());
        edit_lines(&path, |l| {
            l.remove(1);
        });
        assert!(
            verify(&path)
                .unwrap_err()
                .message
                .contains("1 line(s) were removed")
        );
    }

    #[test]
    fn inserted_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_journal(dir.path());
        edit_lines(&path, |l| {
            let copy = l[1].clone();
            l.insert(2, copy);
        });
        assert!(verify(&path).unwrap_err().message.contains("inserted"));
    }

    #[test]
    fn truncated_journal_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_journal(dir.path());
        edit_lines(&path, |l| {
            l.pop();
        });
        assert!(
            verify(&path)
                .unwrap_err()
                .message
                .contains("without its session end record")
        );
    }
}
