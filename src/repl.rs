//! `rollback repl`: an interactive Rhai session with the host functions, for ad-hoc recovery.
//! It is a run like any other — same engine, session, journal and report — whose script is
//! typed one line at a time.

mod commands;
mod completion;
mod input;
mod shell;

use crate::cli::{self, GlobalArgs};
use crate::console;
use crate::engine::ScriptEngine;
use crate::error::Result;
use crate::session::{self, Session};
use completion::ReplHelper;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};
use shell::{Flow, Shell};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

type LineEditor = Editor<ReplHelper, FileHistory>;

pub fn run(global: GlobalArgs) -> Result<ExitCode> {
    let catalog = cli::catalog(&global);
    let platform = cli::load_platform(&global, &catalog)?;
    let environment = cli::require_env(&global, &platform)?;
    let run_id = session::new_run_id();
    let (journal_path, report_path) = cli::run_paths(&global, &run_id);
    let session = Session::start(
        session::Options {
            id: run_id,
            procedure: "repl".into(),
            environment,
            operator: cli::operator(&global),
            dry_run: global.dry_run,
            yes: global.yes,
            // An operator exploring during an incident sets the pace; only --timeout limits it.
            timeout: global.timeout,
            journal: Some(journal_path.clone()),
            report: Some(report_path),
            params: serde_json::json!({}),
        },
        platform,
        cli::runtime()?,
    )?;
    cli::watch_signals(&session, false);
    let engine = ScriptEngine::new(&session, &catalog);
    let environments = session.platform.environments.keys().cloned().collect();
    let helper = ReplHelper::new(&engine.docs, environments);
    let mut shell = Shell::new(engine, session.clone(), catalog);

    let budget = global
        .timeout
        .map(|t| format!(", time budget {}", crate::timefmt::format_duration(t)))
        .unwrap_or_default();
    console::info(&format!(
        "repl {} on {}{} by {}{budget}; every line is journaled to {}",
        session.id,
        session.environment(),
        if session.dry_run() {
            " (dry-run: nothing will be changed)"
        } else {
            ""
        },
        session.operator,
        journal_path.display()
    ));
    console::info(
        ":help lists the commands and functions; :quit or Ctrl-D leaves and writes the report",
    );

    match open_editor(helper) {
        Ok(mut editor) => {
            let history = open_history(&mut editor, &cli::home(&global));
            read_loop(&mut editor, &mut shell, history.as_deref());
        }
        Err(e) => console::error(&format!("cannot start the line editor: {e}")),
    }
    // `:dry-run` may have been switched on after real changes; the closing summary must not
    // then claim that nothing was changed.
    if session.dry_run() && changed_anything(&session) {
        session.set_dry_run(false);
    }
    crate::report::conclude(&session, Ok(()))
}

fn changed_anything(session: &Session) -> bool {
    session
        .records()
        .iter()
        .any(|r| r.mutating && r.outcome.status != "planned")
}

fn open_editor(helper: ReplHelper) -> rustyline::Result<LineEditor> {
    let config = Config::builder()
        .max_history_size(10_000)?
        .history_ignore_dups(true)?
        .completion_type(CompletionType::List)
        .build();
    let mut editor = LineEditor::with_config(config)?;
    editor.set_helper(Some(helper));
    Ok(editor)
}

/// Loads `$ROLLBACK_HOME/repl_history`; `None` (history kept in memory only) if unusable.
fn open_history(editor: &mut LineEditor, home: &Path) -> Option<PathBuf> {
    if let Err(e) = std::fs::create_dir_all(home) {
        console::warn(&format!(
            "history is not saved: cannot create {}: {e}",
            home.display()
        ));
        return None;
    }
    let path = home.join("repl_history");
    match editor.load_history(&path) {
        Ok(()) => {}
        Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => console::warn(&format!(
            "cannot read the history {}: {e}; starting with an empty one",
            path.display()
        )),
    }
    Some(path)
}

enum Input {
    Text(String),
    Cleared,
    End,
}

fn read_loop(editor: &mut LineEditor, shell: &mut Shell, history: Option<&Path>) {
    let mut interrupts = 0;
    loop {
        let text = match read_input(editor, shell) {
            Input::Text(text) => text,
            Input::Cleared => {
                interrupts += 1;
                if interrupts >= 2 {
                    console::info("(:quit or Ctrl-D leaves the REPL and writes the report)");
                }
                continue;
            }
            Input::End => break,
        };
        interrupts = 0;
        if text.trim().is_empty() {
            continue;
        }
        remember(editor, history, &text);
        // A Ctrl-C that stopped the previous line must not stop this one.
        shell.session.reset_cancel();
        let flow = shell.handle(&text);
        if let Some(helper) = editor.helper_mut() {
            helper.set_defined(shell.defined_names());
        }
        if flow == Flow::Quit {
            break;
        }
    }
}

/// Reads one input: several lines when a line ends in `\` or leaves a bracket open.
fn read_input(editor: &mut LineEditor, shell: &Shell) -> Input {
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            shell.prompt()
        } else {
            shell.continuation_prompt()
        };
        match editor.readline(&prompt) {
            Ok(line) => {
                if let Some(head) = input::continued(&line) {
                    buffer.push_str(head);
                    buffer.push('\n');
                    continue;
                }
                buffer.push_str(&line);
                if shell.is_incomplete(&buffer) {
                    buffer.push('\n');
                    continue;
                }
                return Input::Text(buffer);
            }
            Err(ReadlineError::Interrupted) => return Input::Cleared,
            // Ctrl-D inside an unfinished input runs it, showing what is missing, rather than
            // leaving the session by surprise.
            Err(ReadlineError::Eof) if !buffer.is_empty() => return Input::Text(buffer),
            Err(ReadlineError::Eof) => return Input::End,
            Err(e) => {
                console::error(&format!("cannot read the terminal: {e}"));
                return Input::End;
            }
        }
    }
}

/// Adds the input to the history and saves it at once, so a killed session keeps it.
fn remember(editor: &mut LineEditor, history: Option<&Path>, text: &str) {
    let _ = editor.add_history_entry(crate::redact::scrub(text));
    if let Some(path) = history
        && let Err(e) = editor.append_history(path)
    {
        console::warn(&format!("cannot save the history {}: {e}", path.display()));
    }
}
