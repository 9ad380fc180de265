//! Runs as sessions: time budget, Ctrl-C, confirm, and how the journal and report record the end.

mod common;
use common::Test;
use common::http::{HttpServer, Reply};
use std::time::{Duration, Instant};

#[test]
fn time_budget_cancels_the_call_in_flight() {
    let server = HttpServer::start(|_| Reply::ok("late").after(Duration::from_secs(60)));
    let started = Instant::now();
    let run = Test::new()
        .script(&format!(
            "log(\"before\");\nhealth_check(\"{}\", #{{ timeout: 120, retries: 0 }});\nlog(\"after\");\n",
            server.url() + "/"
        ))
        .args(["--timeout", "1s"])
        .run();
    // A hang guard, not a timing check: the server would answer after 60 s.
    assert!(started.elapsed() < Duration::from_secs(30));
    run.code(3)
        .stderr_has("run stopped: out of time")
        .stderr_lacks("after");
    let journal = run.journal();
    let call = journal
        .iter()
        .find(|r| r["function"] == "health_check")
        .unwrap();
    assert_eq!(call["outcome"]["status"], "cancelled");
    let end = journal.last().unwrap();
    assert_eq!(end["function"], "session.end");
    assert_eq!(end["outcome"]["status"], "out of time");
    let report = run.report();
    assert!(report.contains("— OUT OF TIME"), "{report}");
    assert!(
        report.contains("The run stopped before the end"),
        "{report}"
    );
}

#[test]
fn time_budget_stops_a_busy_script_between_operations() {
    Test::new()
        .script("//! Busy.\n//! @timeout 1s\nlet i = 0;\nwhile true { i += 1; if i % 100000 == 0 { sleep(0.01); } }\n")
        .run()
        .code(3)
        .stderr_has("out of time");
}

#[test]
fn ctrl_c_stops_the_run_and_writes_the_report() {
    let t = Test::new().script("log(\"waiting\");\nsleep(60);\nlog(\"never\");\n");
    let journal = t.journal();
    let mut child = t.spawn();
    common::wait_for_file(&journal, |text| text.contains("\"function\":\"log\""));
    std::thread::sleep(Duration::from_millis(200));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let out = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "rollback did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("interrupted by Ctrl-C"), "{stderr}");
    assert!(!stderr.contains("never"));
    let report = std::fs::read_to_string(t.report()).unwrap();
    assert!(report.contains("— ABORTED"), "{report}");
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.contains("\"status\":\"cancelled\""), "{text}");
}

#[test]
fn confirm_without_terminal_fails_closed() {
    let run = Test::new()
        .script(
            "if confirm(\"Scale analysis-service to zero?\") { log(\"was \" + \"approved\"); }\n",
        )
        .run();
    run.code(2)
        .stderr_has("cannot ask \"Scale analysis-service to zero?\": there is no terminal to answer on and --yes was not given")
        .stderr_has("re-run with --yes")
        .stderr_lacks("was approved");
}

#[test]
fn confirm_with_yes_approves_and_is_journaled() {
    let run = Test::new()
        .script("if confirm(\"Proceed?\") { log(\"approved\"); }\n")
        .args(["--yes"])
        .run();
    run.success().stderr_has("approved");
    let journal = run.journal();
    let c = journal.iter().find(|r| r["function"] == "confirm").unwrap();
    assert_eq!(c["args"]["answered_by"], "--yes");
}

#[test]
fn confirm_in_dry_run_does_not_ask() {
    Test::new()
        .script("if confirm(\"Proceed?\") { log(\"planned on\"); }\n")
        .args(["--dry-run"])
        .run()
        .success()
        .stderr_has("dry-run: would ask")
        .stderr_has("planned on");
}

#[test]
fn steps_and_milestones_reach_the_report() {
    let run = Test::new()
        .script("step(\"switch traffic\", || { sleep(0.05); });\nmilestone(\"restored\");\nstep(\"verify\", || { });\nmilestone(\"validated\");\n")
        .run();
    run.success();
    let report = run.report();
    assert!(report.contains("step **switch traffic**"), "{report}");
    assert!(report.contains("| Restore service | 15m 00s |"), "{report}");
    let restore_line = report
        .lines()
        .find(|l| l.starts_with("| Restore service"))
        .unwrap();
    assert!(restore_line.ends_with("| **met** |"), "{restore_line}");
    let notify_line = report
        .lines()
        .find(|l| l.starts_with("| Notify stakeholders"))
        .unwrap();
    assert!(notify_line.contains("not reached"), "{notify_line}");
    let journal = run.journal();
    let step = journal
        .iter()
        .find(|r| r["function"] == "step" && r["args"]["name"] == "switch traffic")
        .unwrap();
    assert!(step["duration_ms"].as_u64().unwrap() >= 50);
    let inner = journal.iter().find(|r| r["function"] == "sleep").unwrap();
    assert_eq!(inner["step"], "switch traffic");
}

#[test]
fn failing_step_is_reported_and_fails_the_run() {
    let run = Test::new()
        .script("step(\"helm rollback\", || { throw \"release stuck\"; });\n")
        .run();
    run.code(1).stderr_has("✘ helm rollback failed");
    let report = run.report();
    assert!(report.contains("— FAILED"), "{report}");
    assert!(report.contains("release stuck"), "{report}");
}

#[test]
fn unknown_milestone_and_log_level_are_usage_errors() {
    Test::new()
        .script("milestone(\"done\");\n")
        .run()
        .code(2)
        .stderr_has("unknown milestone 'done': use one of restored, validated");
    Test::new()
        .script("log(\"loud\", \"x\");\n")
        .run()
        .code(2)
        .stderr_has("unknown log level 'loud'");
}

#[test]
fn default_paths_go_under_rollback_home() {
    let t = Test::new().file("p.rhai", "log(\"x\");\n");
    let path = t.path("p.rhai");
    let home = t.path("home");
    let run = t
        .args(["run", path.to_str().unwrap(), "--env", "test"])
        .run();
    run.success();
    let runs: Vec<_> = std::fs::read_dir(home.join("runs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].path().join("journal.jsonl").is_file());
    assert!(runs[0].path().join("report.md").is_file());
}
