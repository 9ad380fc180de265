//! `rollback repl` driven through a pseudo-terminal, as an operator would type into it.

mod common;

use common::Test;
use rexpect::session::{PtySession, spawn_command};
use serde_json::Value;

/// A hang guard for each expectation, not a speed requirement.
const TIMEOUT_MS: u64 = 15_000;
const PROMPT: &str = "rollback[test]> ";
const CONTINUED: &str = "...> ";

fn repl(test: &Test) -> PtySession {
    let mut p = spawn_command(test.command(), Some(TIMEOUT_MS)).expect("spawn rollback repl");
    expect(&mut p, PROMPT);
    p
}

fn start() -> (Test, PtySession) {
    let test = Test::new().args(["repl", "--env", "test"]);
    let p = repl(&test);
    (test, p)
}

/// Waits for `text`; returns what came before it.
fn expect(p: &mut PtySession, text: &str) -> String {
    p.exp_string(text)
        .unwrap_or_else(|e| panic!("waiting for {text:?}: {e}"))
}

/// Types a line; returns what the REPL printed until its next prompt.
fn line(p: &mut PtySession, text: &str) -> String {
    line_then(p, text, PROMPT)
}

fn line_then(p: &mut PtySession, text: &str, prompt: &str) -> String {
    send(p, text);
    expect(p, prompt)
}

fn has(output: &str, text: &str) {
    assert!(output.contains(text), "{text:?} missing from:\n{output}");
}

fn send(p: &mut PtySession, line: &str) {
    p.send_line(line).expect("send a line");
}

/// Sends keys without Enter (the writer only flushes by itself at a newline).
fn keys(p: &mut PtySession, keys: &str) {
    p.send(keys).expect("send keys");
    p.flush().expect("flush keys");
}

fn quit(mut p: PtySession) -> String {
    send(&mut p, ":quit");
    let rest = p.exp_eof().expect("the REPL ends after :quit");
    let status = p.process().wait().expect("wait for rollback");
    assert!(
        matches!(status, rexpect::process::WaitStatus::Exited(_, 0)),
        "{status:?}\n{rest}"
    );
    rest
}

#[test]
fn functions_and_variables_persist_between_lines() {
    let (_test, mut p) = start();
    line(&mut p, "fn double(x) { x * 2 }");
    has(&line(&mut p, "double(21)"), "=> 42");
    line(&mut p, "let replicas = 5;");
    has(&line(&mut p, "replicas * 3"), "=> 15");
    // Redefining a function replaces it for the following lines.
    line(&mut p, "fn double(x) { x * 20 }");
    has(&line(&mut p, "double(replicas)"), "=> 100");
    quit(p);
}

#[test]
fn backslash_and_open_brackets_continue_the_input() {
    let (_test, mut p) = start();
    line_then(&mut p, "let total = 1 + \\", CONTINUED);
    line(&mut p, "2;");
    has(&line(&mut p, "total"), "=> 3");

    line_then(&mut p, "fn triple(n) {", CONTINUED);
    line_then(&mut p, "  n * 3", CONTINUED);
    line(&mut p, "}");
    has(&line(&mut p, "triple(4)"), "=> 12");

    line_then(
        &mut p,
        "let m = #{ service: \"analysis-service\",",
        CONTINUED,
    );
    line(&mut p, "  replicas: [1, 2] }");
    has(&line(&mut p, "m.replicas.len()"), "=> 2");
    quit(p);
}

#[test]
fn help_shows_one_function() {
    let (_test, mut p) = start();
    let help = line(&mut p, ":help health_check");
    has(&help, "health_check(url: string");
    has(&help, "Checks one HTTP endpoint with a timeout");
    has(&help, "example:");
    let all = line(&mut p, ":help");
    has(&all, ":dry-run on|off");
    has(&all, "health_check_all");
    has(
        &line(&mut p, ":help helth_check"),
        "did you mean `health_check`?",
    );
    quit(p);
}

#[test]
fn dry_run_and_environment_commands() {
    let (_test, mut p) = start();
    let dry = "rollback[test dry-run]> ";
    has(&line_then(&mut p, ":dry-run on", dry), "dry-run is on");
    let unknown = line_then(&mut p, ":env nope", dry);
    has(&unknown, "unknown environment 'nope'");
    has(&unknown, "defined environments: test");
    has(&line(&mut p, ":dry-run off"), "dry-run is off");
    has(&line(&mut p, ":dry-run maybe"), ":dry-run takes on or off");
    quit(p);
}

#[test]
fn a_mistake_is_explained_and_the_session_goes_on() {
    let (_test, mut p) = start();
    line(&mut p, "let url = \"http://127.0.0.1:9/health\";");
    let error = line(&mut p, "helth_check(url)");
    has(&error, "unknown function `helth_check");
    has(&error, "| helth_check(url)");
    has(&error, "did you mean `health_check(url: string");
    // The variable defined before the error is still there.
    has(&line(&mut p, "url.len()"), "=> 25");
    has(&line(&mut p, ":jurnal"), "did you mean `:journal`?");
    quit(p);
}

#[test]
fn an_error_inside_an_earlier_function_shows_its_own_line() {
    let (_test, mut p) = start();
    line(&mut p, "fn replicas_of(svc) { svc.replicas }");
    has(&line(&mut p, "1 + 1"), "=> 2");
    let error = line(&mut p, "replicas_of(#{ name: \"api\" })");
    has(&error, "no property `replicas` in this map");
    has(&error, "<repl>:1:27");
    has(&error, "| fn replicas_of(svc) { svc.replicas }");
    has(&error, "in call to 'replicas_of' at <repl>:3:1");
    quit(p);
}

#[test]
fn ctrl_c_stops_the_running_line_and_the_session_goes_on() {
    let (_test, mut p) = start();
    // The printed word proves the line is running (the terminal is out of the line editor's
    // raw mode), so Ctrl-C arrives as an interrupt, not as a key. The echoed input does not
    // contain it: it is built by the line.
    send(
        &mut p,
        "print(\"sleep\" + \"ing\"); sleep(30); print(\"not\" + \"reached\")",
    );
    expect(&mut p, "sleeping");
    p.send_control('c').expect("send Ctrl-C");
    let stopped = expect(&mut p, PROMPT);
    has(&stopped, "line stopped: interrupted by Ctrl-C");
    assert!(!stopped.contains("notreached"), "{stopped}");
    has(&line(&mut p, "1+1"), "=> 2");

    // At the prompt Ctrl-C drops the typed text and keeps the session.
    keys(&mut p, "unfinished_text");
    p.send_control('c').expect("send Ctrl-C");
    expect(&mut p, PROMPT);
    let after = line(&mut p, "40 + 2");
    has(&after, "=> 42");
    assert!(!after.contains("unknown variable"), "{after}");
    quit(p);
}

#[test]
fn every_line_is_journaled_and_the_report_is_written() {
    let test = Test::new();
    let (journal, report) = (test.journal(), test.report());
    let test = test.args([
        "repl",
        "--env",
        "test",
        "--journal",
        journal.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let mut p = repl(&test);
    let lines = [
        "let base = 40;",
        "base + 2",
        "no_such_function()",
        ":dry-run on",
        "log(\"checked by hand\")",
    ];
    for text in lines {
        line_then(&mut p, text, "]> ");
    }
    let shown = line_then(&mut p, ":journal", "]> ");
    has(&shown, &format!("journal: {}", journal.display()));
    has(&shown, "repl                 error     no_such_function()");
    let goodbye = quit(p);
    assert!(goodbye.contains("report:"), "{goodbye}");
    assert!(goodbye.contains(&report.display().to_string()), "{goodbye}");

    let records: Vec<Value> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let typed: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["function"] == "repl")
        .map(|r| {
            (
                r["args"]["line"].as_str().unwrap(),
                r["outcome"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        typed,
        vec![
            (lines[0], "ok"),
            (lines[1], "ok"),
            (lines[2], "error"),
            (lines[3], "ok"),
            (lines[4], "ok"),
            (":journal", "ok"),
            (":quit", "ok"),
        ]
    );
    let failed = records
        .iter()
        .find(|r| r["args"]["line"] == lines[2])
        .unwrap();
    assert!(
        failed["outcome"]["error"]
            .as_str()
            .unwrap()
            .contains("unknown function `no_such_function"),
        "{failed}"
    );
    // The host call the line made is journaled on its own, before the line's record.
    let log = records.iter().position(|r| r["function"] == "log").unwrap();
    let log_line = records
        .iter()
        .position(|r| r["args"]["line"] == lines[4])
        .unwrap();
    assert!(log < log_line);
    assert_eq!(records[log]["dry_run"], true);
    assert_eq!(records.last().unwrap()["function"], "session.end");
    assert_eq!(records[0]["args"]["procedure"], "repl");

    Test::new()
        .args(["journal", "verify", journal.to_str().unwrap()])
        .run()
        .success()
        .stdout_has("is intact");
    let report_text = std::fs::read_to_string(&report).unwrap();
    assert!(report_text.contains("repl on test"), "{report_text}");
    assert!(report_text.contains("no_such_function"), "{report_text}");
}

#[test]
fn history_is_saved_and_loaded_again() {
    let test = Test::new().args(["repl", "--env", "test"]);
    let mut p = repl(&test);
    line(&mut p, "let first_session = 1;");
    line_then(&mut p, "let spread = 1 + \\", CONTINUED);
    line(&mut p, "2;");
    quit(p);
    let history = std::fs::read_to_string(test.path("home/repl_history")).unwrap();
    for text in ["let first_session = 1;", ":quit", "let spread = 1 + "] {
        assert!(history.contains(text), "{text:?} missing from\n{history}");
    }

    // A new session recalls the last line with the up arrow.
    let mut p = repl(&test);
    keys(&mut p, "\x1b[A");
    expect(&mut p, ":quit");
    p.send_control('c').expect("clear the recalled line");
    expect(&mut p, PROMPT);
    // Variables do not outlive their session; history does.
    let error = line(&mut p, "first_session");
    has(&error, "first_session");
    has(&error, "<repl>:1:1");
    // Ctrl-D leaves like :quit, report included.
    p.send_control('d').expect("send Ctrl-D");
    let goodbye = p.exp_eof().expect("the REPL ends at Ctrl-D");
    has(&goodbye, "report:");
    let runs: Vec<_> = std::fs::read_dir(test.path("home/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for run in runs {
        assert!(run.join("report.md").is_file(), "{}", run.display());
    }
}

#[test]
fn a_spent_time_budget_stops_every_line() {
    let test = Test::new().args(["repl", "--env", "test", "--timeout", "1s"]);
    let mut p = repl(&test);
    let stopped = line(&mut p, "sleep(30)");
    has(&stopped, "line stopped: out of time");
    has(&stopped, "--timeout budget is spent");
    has(&line(&mut p, "1 + 1"), "line stopped: out of time");
    quit(p);
}

#[test]
fn load_runs_a_file_in_the_session_scope() {
    let test = Test::new()
        .file(
            "helpers.rhai",
            "fn half(n) {\n  n / 2\n}\nlet loaded = 7;\n",
        )
        .file("broken.rhai", "let a = 1;\nlet b = a + missing;\n");
    let test = test.args(["repl", "--env", "test"]);
    let mut p = repl(&test);
    let helpers = test.path("helpers.rhai");
    has(
        &line(&mut p, &format!(":load {}", helpers.display())),
        "helpers.rhai is <repl> lines 1-4",
    );
    has(&line(&mut p, "half(loaded * 2)"), "=> 7");
    let broken = line(
        &mut p,
        &format!(":load {}", test.path("broken.rhai").display()),
    );
    has(&broken, "missing");
    has(&broken, "| let b = a + missing;");
    has(&broken, "broken.rhai is <repl> lines 7-8");
    has(
        &line(&mut p, ":load /nonexistent/file.rhai"),
        "/nonexistent/file.rhai",
    );
    quit(p);
}

#[test]
fn an_import_lasts_for_the_session() {
    let test = Test::new().file(
        "stdlib/greeting.rhai",
        "fn hello(name) { \"hello \" + name }\n",
    );
    let stdlib = test.path("stdlib");
    let test = test.args([
        "repl",
        "--env",
        "test",
        "--stdlib",
        stdlib.to_str().unwrap(),
    ]);
    let mut p = repl(&test);
    line(&mut p, "import \"greeting\" as greeting;");
    has(
        &line(&mut p, "greeting::hello(\"on-call\")"),
        "=> \"hello on-call\"",
    );
    quit(p);
}

#[test]
fn tab_completes_host_functions_and_commands() {
    let (_test, mut p) = start();
    keys(&mut p, "health_check_a\t");
    expect(&mut p, "health_check_all");
    p.send_control('c').expect("clear");
    expect(&mut p, PROMPT);
    has(
        &line_then(&mut p, ":dry\t on", "rollback[test dry-run]> "),
        "dry-run is on",
    );
    quit(p);
}

#[test]
fn piped_input_runs_without_a_terminal() {
    Test::new()
        .args(["repl", "--env", "test"])
        .stdin("fn inc(x) { x + 1 }\ninc(41)\n")
        .run()
        .success()
        .stdout_has("=> 42");
}

#[test]
fn an_environment_is_required() {
    Test::new()
        .args(["repl"])
        .run()
        .code(2)
        .stderr_has("no environment given")
        .stderr_has("defined: test");
}
