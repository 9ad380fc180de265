//! The REPL's own `:commands`. Rhai code never starts with `:`, so a leading colon is
//! unambiguous.

use super::shell::{Flow, Shell};
use crate::console;
use crate::error::{Error, Result};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub const COMMANDS: [&str; 7] = [
    ":help", ":dry-run", ":env", ":load", ":journal", ":quit", ":exit",
];

/// How many journal records `:journal` shows.
const JOURNAL_TAIL: usize = 20;

const HELP: &str = "\
REPL commands:
  :help [NAME]      list the host functions, or show one function or module
  :dry-run on|off   plan mutating calls instead of sending them, or send them again
  :env NAME         switch the environment the host functions act on
  :load FILE        run a .rhai file here; its functions and variables stay defined
  :journal          show the journal file and its last records
  :quit             leave (also :exit or Ctrl-D) and write the report
End a line with \\ to go on on the next one; an unclosed bracket goes on by itself.
Ctrl-C stops the line that is running; at the prompt it clears the input.
Every line is journaled, with the host calls it makes.";

#[derive(Debug, PartialEq)]
pub enum Command<'a> {
    Help(Option<&'a str>),
    DryRun(Option<bool>),
    Env(Option<&'a str>),
    Load(&'a str),
    Journal,
    Quit,
}

/// `None` when `input` is code, not a command.
pub fn parse(input: &str) -> Option<Result<Command<'_>>> {
    let text = input.trim().strip_prefix(':')?;
    let (name, arg) = match text.split_once(char::is_whitespace) {
        Some((name, arg)) => (name, Some(arg.trim()).filter(|a| !a.is_empty())),
        None => (text, None),
    };
    Some(match name {
        "help" | "h" | "?" => Ok(Command::Help(arg)),
        "dry-run" => match arg {
            None => Ok(Command::DryRun(None)),
            Some("on") => Ok(Command::DryRun(Some(true))),
            Some("off") => Ok(Command::DryRun(Some(false))),
            Some(other) => Err(Error::usage(format!(
                ":dry-run takes on or off, not `{other}`"
            ))),
        },
        "env" => Ok(Command::Env(arg)),
        "load" => arg
            .map(Command::Load)
            .ok_or_else(|| Error::usage(":load needs a file: `:load fix.rhai`")),
        "journal" => Ok(Command::Journal),
        "quit" | "exit" | "q" => Ok(Command::Quit),
        other => {
            let typed = format!(":{other}");
            let hint = crate::engine::suggest::did_you_mean(&typed, COMMANDS)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            Err(Error::usage(format!(
                "unknown REPL command `{typed}`{hint}\n`:help` lists the commands"
            )))
        }
    })
}

/// Runs a command; `journal_args` receives what the journal should record beyond the line.
pub fn execute(
    shell: &mut Shell,
    command: Command,
    journal_args: &mut Map<String, Value>,
) -> Result<Flow> {
    match command {
        Command::Help(None) => {
            let functions = crate::host::docs::render(&shell.engine.docs, None)?;
            console::out(&format!("{HELP}\n\n{functions}"));
        }
        Command::Help(Some(name)) => {
            console::out(&crate::host::docs::render(&shell.engine.docs, Some(name))?);
        }
        Command::DryRun(None) => console::out(&dry_run_state(shell)),
        Command::DryRun(Some(on)) => {
            shell.session.set_dry_run(on);
            console::info(&dry_run_state(shell));
        }
        Command::Env(None) => {
            let known: Vec<&str> = shell
                .session
                .platform
                .environments
                .keys()
                .map(String::as_str)
                .collect();
            console::out(&format!(
                "environment: {} (defined: {})",
                shell.session.environment(),
                known.join(", ")
            ));
        }
        Command::Env(Some(name)) => {
            shell.session.set_environment(name)?;
            journal_args.insert("environment".into(), json!(name));
            console::info(&format!(
                "environment is now {name}: the host functions act on it from the next line"
            ));
        }
        Command::Load(file) => load(shell, file, journal_args)?,
        Command::Journal => journal(shell),
        Command::Quit => return Ok(Flow::Quit),
    }
    Ok(Flow::Continue)
}

fn dry_run_state(shell: &Shell) -> String {
    let env = shell.session.environment();
    if shell.session.dry_run() {
        format!("dry-run is on: mutating calls are journaled as planned, nothing on {env} changes")
    } else {
        format!("dry-run is off: mutating calls change {env} for real")
    }
}

/// Runs a file in the REPL's scope. Its text joins the REPL transcript, so an error in one of
/// its functions, called lines later, still shows the right source line.
fn load(shell: &mut Shell, file: &str, journal_args: &mut Map<String, Value>) -> Result<()> {
    let source = shell.catalog.procedure(file)?;
    journal_args.insert("file".into(), json!(source.display));
    journal_args.insert(
        "sha256".into(),
        json!(hex::encode(Sha256::digest(source.text.as_bytes()))),
    );
    let (first, last) = shell.next_lines(&source.text);
    let mapping = format!(
        "{} is {} lines {first}-{last}",
        source.display,
        super::shell::SOURCE
    );
    match shell.eval(&source.text) {
        Ok(value) => {
            shell.show(&value);
            console::info(&format!("loaded {mapping}"));
            Ok(())
        }
        Err(e) => Err(Error::new(
            e.kind,
            format!("{}\n   = note: {mapping}", e.message),
        )),
    }
}

fn journal(shell: &Shell) {
    let path = shell
        .session
        .journal()
        .path()
        .map(|p| p.display().to_string());
    console::out(&format!(
        "journal: {}",
        path.as_deref().unwrap_or("(not written to a file)")
    ));
    let records = shell.session.records();
    let skip = records.len().saturating_sub(JOURNAL_TAIL);
    for r in &records[skip..] {
        let what = match r.args.get("line") {
            Some(Value::String(line)) => line.clone(),
            _ => r.args.to_string(),
        };
        let error = r
            .outcome
            .error
            .as_deref()
            .and_then(|e| e.lines().next())
            .map(|e| format!(" — {e}"))
            .unwrap_or_default();
        console::out(&format!(
            "{:>4} {} {:<20} {:<9} {}{error}",
            r.seq,
            r.time,
            r.function,
            r.outcome.status,
            short(&what, 60)
        ));
    }
}

fn short(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    match one_line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_their_arguments() {
        assert!(parse("1 + 1").is_none());
        assert_eq!(parse(":help").unwrap().unwrap(), Command::Help(None));
        assert_eq!(
            parse("  :help  prom::query ").unwrap().unwrap(),
            Command::Help(Some("prom::query"))
        );
        assert_eq!(
            parse(":dry-run on").unwrap().unwrap(),
            Command::DryRun(Some(true))
        );
        assert_eq!(
            parse(":env staging").unwrap().unwrap(),
            Command::Env(Some("staging"))
        );
        assert_eq!(
            parse(":load a b.rhai").unwrap().unwrap(),
            Command::Load("a b.rhai")
        );
        assert_eq!(parse(":exit").unwrap().unwrap(), Command::Quit);
    }

    #[test]
    fn rejects_bad_commands_with_a_suggestion() {
        let e = parse(":dry-run maybe").unwrap().unwrap_err();
        assert!(e.message.contains("on or off"), "{}", e.message);
        let e = parse(":jurnal").unwrap().unwrap_err();
        assert!(
            e.message.contains("did you mean `:journal`"),
            "{}",
            e.message
        );
        assert!(parse(":load").unwrap().is_err());
    }

    #[test]
    fn shortens_long_lines() {
        assert_eq!(short("abc\ndef", 10), "abc def");
        assert_eq!(short("abcdef", 3), "abc…");
    }
}
