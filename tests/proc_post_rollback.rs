//! `post-rollback` on the sandbox: after a rehearsed rollback of one service, the timeline
//! from its verified journal, the follow-up checklist, the incident report and its
//! notification; a tampered journal is refused.

mod common;
use common::free_port;
use common::golden::assert_golden;
use common::sandbox::Sandbox;

/// A rollback of one service as the service procedure would run it, kept small.
const REHEARSAL: &str = r#"//! Rehearsal: switch analysis-service back to its standby slot.
//! @timeout 2m
import "notify" as tell;
tell::started("Rollback of analysis-service", #{ service: "analysis-service" });
step("switch traffic", || switch_slot("analysis-service", "blue"));
milestone("restored");
milestone("validated");
tell::succeeded("Rollback of analysis-service", #{ service: "analysis-service" });
"#;

#[test]
fn post_rollback_on_the_sandbox() {
    let sandbox = Sandbox::up();
    let script = sandbox.dir.path().join("rehearsal.rhai");
    std::fs::write(&script, REHEARSAL).unwrap();
    let rehearsal = sandbox.procedure(&["--yes"], script.to_str().unwrap(), &[]);
    rehearsal.success();
    let rollback_run = rehearsal.journal()[0]["run"].as_str().unwrap().to_string();
    assert_eq!(sandbox.selector("analysis-service"), "blue");
    // An assessment afterwards is not what "latest" means.
    sandbox
        .procedure(&[], "impact", &["--services", "analysis-service"])
        .success();

    let cluster = sandbox.cluster_state();
    let database = sandbox.database_state();
    let plan = sandbox.procedure(&["--dry-run"], "post-rollback", &[]);
    plan.success()
        .stdout_has(&format!("### Run {rollback_run}: "))
        .stdout_has("switch_slot");
    assert_golden("post-rollback-dry-run", &plan.report());
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);
    let slack_before = sandbox.notifications("slack").len();

    let run = sandbox.procedure(&[], "post-rollback", &["--run", &rollback_run]);
    run.success()
        .stdout_has("- Journal verified: ")
        .stdout_has("| step switch traffic | ok |")
        .stdout_has("| milestone restored | ok |")
        .stdout_has("- [ ] Stop the bad version coming back")
        .stdout_has("- [ ] Watch error rate and p95 latency for at least 30 minutes");
    let path = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Incident report: "))
        .expect("the report path is printed");
    assert!(
        path.ends_with(&format!("incident-{rollback_run}.md")),
        "{path}"
    );
    let report = std::fs::read_to_string(path).unwrap();
    for part in [
        "# Incident report: ",
        "| Outcome | succeeded |",
        "## Timeline (UTC)",
        "`switch_slot`",
        "Rollback of analysis-service started on sandbox.",
        "## Follow-ups",
        "- Verify: `rollback journal verify ",
    ] {
        assert!(
            report.contains(part),
            "incident report lacks {part:?}:\n{report}"
        );
    }
    let slack = sandbox.notifications("slack");
    assert_eq!(slack.len(), slack_before + 1);
    let text = slack.last().unwrap()["body"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains(&format!("incident report for run {rollback_run}")),
        "{text}"
    );

    // The Slack receiver down: the report is still written, the failure is said and reported.
    let closed = format!("http://127.0.0.1:{}/hook", free_port());
    let offline = sandbox
        .test()
        .env("ROLLBACK_SANDBOX_SLACK_WEBHOOK_URL", &closed)
        .args([
            "--env",
            "sandbox",
            "run",
            "post-rollback",
            "--run",
            &rollback_run,
        ])
        .run();
    offline
        .success()
        .stdout_has("Incident report: ")
        .stdout_has("notification not delivered to [\"slack\"]: share the report another way")
        .stderr_has("the team was not told through");
    assert!(
        offline
            .report()
            .contains("notification delivery(ies) failed")
    );
    assert_eq!(sandbox.notifications("slack").len(), slack_before + 1);

    // An edited journal is refused, naming the line; an unknown run id is a usage error.
    let original = sandbox
        .home()
        .join("runs")
        .join(&rollback_run)
        .join("journal.jsonl");
    let tampered = sandbox.dir.path().join("tampered.jsonl");
    let text = std::fs::read_to_string(&original).unwrap();
    std::fs::write(&tampered, text.replacen("\"blue\"", "\"green\"", 1)).unwrap();
    sandbox
        .procedure(&[], "post-rollback", &["--run", tampered.to_str().unwrap()])
        .code(1)
        .stderr_has("fails verification at line");
    sandbox
        .procedure(&[], "post-rollback", &["--run", "20200101-000000-abcd"])
        .code(2)
        .stderr_has("no run '20200101-000000-abcd'");
}
