//! `emergency` on the sandbox: alert first, traffic back on the standby slots, the Helm and
//! restart fallbacks, escalation, a dead notification receiver, the time budget and Ctrl-C.

mod common;
use common::golden::assert_golden;
use common::restore::{self, image, replicas, select_all, selectors};
use common::sandbox::{SERVICES, Sandbox};
use common::{free_port, interrupt, wait_until};
use std::time::Duration;

fn all_on(sandbox: &Sandbox, slot: &str) {
    for (service, selected) in selectors(sandbox) {
        assert_eq!(selected, slot, "{service}");
    }
}

#[test]
fn emergency_moves_traffic_to_the_standby_its_plan_changes_nothing_and_ctrl_c_stops_it() {
    let sandbox = Sandbox::up();
    sandbox.inject(&[
        "--service",
        "analysis-service",
        "--slot",
        "green",
        "--error-rate",
        "12",
    ]);
    restore::wait_for_errors(&sandbox, "analysis-service", 0.1);
    let cluster = sandbox.cluster_state();
    let database = sandbox.database_state();

    let plan = sandbox.procedure(&["--dry-run"], "emergency", &["--window", "5s"]);
    plan.success();
    assert_golden("emergency-dry-run", &plan.report());
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);
    assert!(sandbox.notifications("slack").is_empty());

    let run = sandbox.procedure(
        &["--yes"],
        "emergency",
        &[
            "--window",
            "5s",
            "--reason",
            "analysis-service answers 12% 500s",
        ],
    );
    run.success()
        .stderr_has("analysis-service: error rate")
        .stderr_has("severity high");
    all_on(&sandbox, "blue");
    for service in SERVICES {
        assert!(image(&sandbox, &format!("{service}-blue")).ends_with(":v1.2.3"));
        // The failed slot is kept as it was, for the investigation.
        assert!(image(&sandbox, &format!("{service}-green")).ends_with(":v1.2.4"));
        for slot in ["blue", "green"] {
            let name = format!("{service}-{slot}");
            assert_eq!(
                serde_json::json!(replicas(&sandbox, &name)),
                cluster["deployments"][&name]["replicas"]
            );
        }
    }
    let slack = sandbox.notifications("slack");
    assert_eq!(slack.len(), 2, "{slack:?}");
    let alert = slack[0]["body"]["text"].as_str().unwrap();
    assert!(alert.starts_with("<!channel> [CRITICAL]"), "{alert}");
    assert!(alert.contains("EMERGENCY ROLLBACK on sandbox"), "{alert}");
    assert!(
        alert.contains("analysis-service answers 12% 500s"),
        "{alert}"
    );
    assert!(
        slack[1]["body"]["text"]
            .as_str()
            .unwrap()
            .contains("completed")
    );
    let pages = sandbox.notifications("pagerduty");
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(pages[0]["body"]["event_action"], "trigger");
    assert_eq!(pages[0]["body"]["payload"]["severity"], "critical");
    assert_eq!(pages[1]["body"]["event_action"], "resolve");
    assert_eq!(pages[0]["body"]["dedup_key"], pages[1]["body"]["dedup_key"]);
    let report = run.report();
    for text in [
        "— SUCCEEDED",
        "step **alert**",
        "step **assess severity**",
        "step **platform state: 4 on green — to restore: 4**",
        "step **attempt 1: switch traffic to the standby slots**",
        "milestone **restored**",
        "step **platform state: 4 on blue — nothing left to restore**",
        "milestone **validated**",
        "`switch_slots`",
    ] {
        assert!(report.contains(text), "{text} not in:\n{report}");
    }
    assert!(!report.contains("attempt 2"), "{report}");

    // Ctrl-C while the standby health checks hang: nothing is switched, the report says so.
    select_all(&sandbox, "green");
    sandbox.inject(&[
        "--service",
        "file-watcher",
        "--slot",
        "blue",
        "--latency-ms",
        "30000",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    let report_path = dir.path().join("report.md");
    let (j, r) = (
        journal.display().to_string(),
        report_path.display().to_string(),
    );
    // The `Test` owns the run's home and platform file: kept until the child has exited.
    let home = sandbox.procedure_test(
        &["--yes", "--journal", &j, "--report", &r],
        "emergency",
        &["--force", "true"],
    );
    let child = home.spawn();
    wait_until(
        "the run to reach its first attempt",
        Duration::from_secs(120),
        || {
            std::fs::read_to_string(&journal)
                .ok()
                .filter(|t| t.contains("platform state: 4 on green"))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = interrupt(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("interrupted by Ctrl-C"), "{stderr}");
    all_on(&sandbox, "green");
    let report = std::fs::read_to_string(&report_path).unwrap();
    assert!(report.contains("— ABORTED"), "{report}");
    assert!(
        report.contains("platform state: 4 on green — to restore: 4"),
        "{report}"
    );
    assert!(!report.contains("`switch_slots`"), "{report}");
}

#[test]
fn emergency_falls_back_then_escalates_and_copes_with_a_dead_receiver_and_the_time_budget() {
    let sandbox = Sandbox::up();
    // Three services with both slots down: no fallback can help them.
    let broken = &SERVICES[..3];
    for service in broken {
        for slot in ["green", "blue"] {
            sandbox.inject(&["--service", service, "--slot", slot, "--down"]);
        }
    }
    let run = sandbox.procedure(&["--yes"], "emergency", &[]);
    run.code(1)
        .stderr_has("severity critical")
        .stderr_has("emergency rollback failed: 1/4 services healthy, below the required 75%");
    let report = run.report();
    for text in [
        "— FAILED",
        "step **attempt 1: switch traffic to the standby slots**",
        "step **attempt 2: Helm rollback of 3 release(s)**",
        "step **attempt 3: restart 3 deployment(s)**",
        "step **escalate**",
        "`helm_rollback`",
        "`rollout_restart`",
    ] {
        assert!(report.contains(text), "{text} not in:\n{report}");
    }
    assert!(!report.contains("milestone **restored**"), "{report}");
    for attempt in ["attempt 1", "attempt 2", "attempt 3"] {
        let row = report
            .lines()
            .find(|l| l.contains(&format!("step **{attempt}")))
            .unwrap();
        assert!(row.contains("| error: "), "{row}");
    }
    // The healthy service was switched; the broken ones were rolled back with Helm.
    assert_eq!(sandbox.selector(SERVICES[3]), "blue");
    for service in broken {
        let history = sandbox.helm_history(&format!("tracktion-{service}"));
        let last = history.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["description"], "Rollback to 1", "{history}");
    }
    let pages = sandbox.notifications("pagerduty");
    let actions: Vec<&str> = pages
        .iter()
        .map(|p| p["body"]["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "trigger"]);
    let slack = sandbox.notifications("slack");
    let last = slack.last().unwrap()["body"]["text"].as_str().unwrap();
    assert!(last.starts_with("<!channel>"), "{last}");
    assert!(last.contains("MANUAL INTERVENTION REQUIRED NOW"), "{last}");

    // Out of time while the standby health checks hang: exit 3, and the report's last
    // platform state says where traffic was left.
    sandbox.inject(&["--clear"]);
    select_all(&sandbox, "green");
    sandbox.inject(&[
        "--service",
        "analysis-service",
        "--slot",
        "blue",
        "--latency-ms",
        "30000",
    ]);
    let run = sandbox.procedure(
        &["--yes", "--timeout", "4s"],
        "emergency",
        &["--force", "true"],
    );
    run.code(3).stderr_has("out of time");
    all_on(&sandbox, "green");
    let report = run.report();
    assert!(report.contains("— OUT OF TIME"), "{report}");
    assert!(
        report.contains("platform state: 4 on green — to restore: 4"),
        "{report}"
    );

    // Slack unreachable: traffic is restored all the same and the report says who was not told.
    sandbox.inject(&["--clear"]);
    let dead = format!("http://127.0.0.1:{}/hooks/dead", free_port());
    let run = sandbox
        .procedure_test(&["--yes"], "emergency", &["--force", "true"])
        .env("ROLLBACK_SANDBOX_SLACK_WEBHOOK_URL", &dead)
        .run();
    run.success().stderr_lacks("hooks/dead");
    all_on(&sandbox, "blue");
    let report = run.report();
    assert!(
        report.contains("notification delivery(ies) failed"),
        "{report}"
    );
    assert!(report.contains("milestone **restored**"), "{report}");
}
