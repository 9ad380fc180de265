//! The `service` procedure on the sandbox: the plan, a real Helm rollback and everything it
//! leaves behind (Service selector, images, Helm revision, labels, notifications, the
//! Pushgateway metric, the report), and each way it can fail, ending in a known state.

mod common;
use common::golden::assert_golden;
use common::sandbox::{NAMESPACE, Sandbox};
use common::{Run, free_port, http_get, interrupt, wait_for_file, wait_until};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `rollback --env sandbox … run service [params…]` with Helm from the testbed.
fn service(sandbox: &Sandbox, global: &[&str], params: &[&str], env: &[(&str, &str)]) -> Run {
    command(sandbox, global, params, env).run()
}

fn command(
    sandbox: &Sandbox,
    global: &[&str],
    params: &[&str],
    env: &[(&str, &str)],
) -> common::Test {
    let mut test = sandbox.procedure_test(global, "service", params);
    for (k, v) in env {
        test = test.env(k, v);
    }
    test
}

fn run_id(report: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix("| Run | `"))
        .and_then(|l| l.split('`').next())
        .expect("the report names its run")
        .to_string()
}

fn deployment(sandbox: &Sandbox, name: &str) -> Value {
    sandbox.kubectl_json(&["get", "deployment", name])
}

fn image(d: &Value) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The Pushgateway's sample of `metric` for `service`, if it holds one.
fn pushed(sandbox: &Sandbox, metric: &str, service: &str) -> Option<f64> {
    let (status, body) = http_get(&format!("{}/metrics", sandbox.url("pushgateway")));
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| l.contains(&format!("service=\"{service}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn slack_texts(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .notifications("slack")
        .iter()
        .map(|n| n["body"]["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The `*name*\nvalue` fields of a Slack message.
fn slack_field(message: &Value, name: &str) -> Option<String> {
    message["body"]["blocks"]
        .as_array()?
        .iter()
        .filter_map(|b| b["fields"].as_array())
        .flatten()
        .filter_map(|f| f["text"].as_str())
        .find_map(|t| t.strip_prefix(&format!("*{name}*\n")).map(str::to_string))
}

#[test]
fn service_rollback_plans_rolls_back_and_refuses_what_is_unsafe() {
    let sandbox = Sandbox::up();
    let cluster = sandbox.cluster_state();
    let database = sandbox.database_state();

    // The plan: a dry-run reads for real, changes nothing and sends nothing.
    let plan = service(
        &sandbox,
        &["--dry-run"],
        &["--service", "analysis-service"],
        &[],
    );
    plan.success();
    assert_golden("service-dry-run", &plan.report());
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);
    assert!(sandbox.notifications("slack").is_empty());
    assert!(sandbox.notifications("pagerduty").is_empty());
    assert_eq!(
        pushed(&sandbox, "rollback_service_success", "analysis-service"),
        None
    );

    // An unknown service is a usage error that lists the services; nothing is tried.
    let unknown = service(&sandbox, &["--yes"], &["--service", "analysis-svc"], &[]);
    unknown.code(2).stderr_has(
        "unknown service 'analysis-svc': the platform defines analysis-service, file-watcher, notification-service, tracklist-service",
    );
    assert!(sandbox.notifications("slack").is_empty());
    assert_eq!(sandbox.cluster_state(), cluster);

    // The real rollback: Helm revision 1 again, so traffic goes back to blue's v1.2.3.
    let run = service(
        &sandbox,
        &["--yes"],
        &["--service", "analysis-service"],
        &[],
    );
    run.success()
        .stderr_has("analysis-service rolled back to 1.2.3, served by analysis-service-blue");
    assert_eq!(sandbox.selector("analysis-service"), "blue");
    let blue = deployment(&sandbox, "analysis-service-blue");
    assert!(image(&blue).ends_with("/analysis-service:v1.2.3"), "{blue}");
    assert_eq!(blue["status"]["readyReplicas"], 1);
    let labels = &blue["metadata"]["labels"];
    assert_eq!(labels["rollback.io/rolled-back-from"], "v1.2.4");
    let stamp = labels["rollback.io/rolled-back-at"].as_str().unwrap();
    assert!(
        regex::Regex::new(r"^\d{8}T\d{6}Z$")
            .unwrap()
            .is_match(stamp),
        "{stamp}"
    );
    let history = sandbox.helm_history("tracktion-analysis-service");
    let last = history.as_array().unwrap().last().unwrap();
    assert_eq!(last["revision"], 3);
    assert_eq!(last["status"], "deployed");
    assert_eq!(last["app_version"], "1.2.3");
    assert_eq!(last["description"], "Rollback to 1");
    // The other services were left alone.
    assert_eq!(sandbox.selector("file-watcher"), "green");
    assert_eq!(
        sandbox.cluster_state()["releases"]["tracktion-file-watcher"],
        cluster["releases"]["tracktion-file-watcher"]
    );

    let report = run.report();
    let id = run_id(&report);
    let slack = sandbox.notifications("slack");
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert!(slack.iter().all(|n| n["status"] == 200));
    assert_eq!(
        slack_texts(&sandbox),
        [
            "[WARNING] Rollback of analysis-service started: Rollback of analysis-service started on sandbox.",
            "[INFO] Rollback of analysis-service completed: Rollback of analysis-service completed on sandbox.",
        ]
    );
    assert_eq!(
        slack_field(&slack[0], "version").as_deref(),
        Some("v1.2.4 → 1.2.3")
    );
    assert_eq!(slack_field(&slack[0], "method").as_deref(), Some("helm"));
    assert_eq!(slack_field(&slack[1], "slot").as_deref(), Some("blue"));
    assert!(slack_field(&slack[1], "latency").is_some_and(|l| l.ends_with(" ms")));
    let pagerduty = sandbox.notifications("pagerduty");
    assert_eq!(pagerduty.len(), 1, "{pagerduty:?}");
    assert_eq!(pagerduty[0]["body"]["event_action"], "resolve");
    assert_eq!(
        pagerduty[0]["body"]["dedup_key"],
        format!("rollback-sandbox-{id}")
    );
    assert_eq!(
        pushed(&sandbox, "rollback_service_success", "analysis-service"),
        Some(1.0)
    );
    assert!(
        pushed(
            &sandbox,
            "rollback_service_duration_seconds",
            "analysis-service"
        )
        .is_some()
    );
    for text in [
        "# Rollback report: service on sandbox — SUCCEEDED",
        "step **roll back analysis-service v1.2.4 → 1.2.3 by helm revision 1**",
        "`helm_rollback`",
        "milestone **restored**",
        "milestone **validated**",
        "| http://127.0.0.1:",
        "/analysis-service/blue/health | healthy |",
        "| Restore service | 15m 00s |",
        "- 6 action(s); ",
    ] {
        assert!(report.contains(text), "report lacks {text:?}:\n{report}");
    }
    assert!(!report.contains("planned (not sent)"), "{report}");

    // Slack down: the rollback still happens and the report shows the failed delivery.
    let dead = format!("http://127.0.0.1:{}/slack/services/gone", free_port());
    let run = service(
        &sandbox,
        &["--yes"],
        &["--service", "notification-service"],
        &[("ROLLBACK_SANDBOX_SLACK_WEBHOOK_URL", &dead)],
    );
    run.success();
    assert_eq!(sandbox.selector("notification-service"), "blue");
    let report = run.report();
    assert!(
        report.contains("- **2 notification delivery(ies) failed**"),
        "{report}"
    );
    assert!(
        report.contains("| slack (cannot connect: Connection refused (os error 111)) |"),
        "the failed delivery and why: {report}"
    );
    assert_eq!(
        sandbox.notifications("slack").len(),
        2,
        "nothing new reached Slack"
    );
    assert_eq!(sandbox.notifications("pagerduty").len(), 2);
    assert!(!run.all_output().contains("/slack/services/gone"));

    // An unhealthy standby: traffic must not move there, so nothing changes and on-call is paged.
    sandbox.inject(&["--service", "file-watcher", "--slot", "blue", "--down"]);
    let before = sandbox.cluster_state();
    let run = service(
        &sandbox,
        &["--yes"],
        &["--service", "file-watcher", "--health-timeout", "5"],
        &[],
    );
    run.code(1)
        .stderr_has("traffic cannot move to the standby slot: file-watcher (blue) is not healthy")
        .stderr_has("HTTP 503")
        .stderr_has("Nothing was changed");
    assert_eq!(sandbox.cluster_state(), before);
    assert_eq!(sandbox.selector("file-watcher"), "green");
    let page = sandbox.notifications("pagerduty").last().unwrap().clone();
    assert_eq!(page["body"]["event_action"], "trigger");
    assert_eq!(page["body"]["payload"]["severity"], "critical");
    let summary = page["body"]["payload"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("Rollback of file-watcher FAILED on sandbox"),
        "{summary}"
    );
    let report = run.report();
    assert!(report.contains("— FAILED"), "{report}");
    assert!(
        report.contains("/file-watcher/blue/health | **unhealthy** |"),
        "{report}"
    );
    assert!(!report.contains("`helm_rollback`"), "{report}");

    // helm rollback --wait that times out has applied part of the release: the failure says
    // so and reads back where the service stands.
    cordon_every_node(&sandbox);
    let run = service(
        &sandbox,
        &["--yes"],
        &["--service", "tracklist-service", "--rollout-timeout", "8"],
        &[],
    );
    run.code(1)
        .stderr_has("helm rollback of tracktion-tracklist-service to revision 1 failed")
        .stderr_has("the rollback (helm) failed and may be partly applied")
        .stderr_has("tracklist-service now: traffic on blue (tracklist-service-blue: image v1.2.3, 1/1 ready, ")
        .stderr_has("Helm release tracktion-tracklist-service at revision 3 (failed, 1.2.3)");
    assert_eq!(sandbox.selector("tracklist-service"), "blue");
    assert_eq!(
        pushed(&sandbox, "rollback_service_success", "tracklist-service"),
        Some(0.0)
    );
}

/// Nodes cordoned: new pods stay Pending, so no rollout can finish.
fn cordon_every_node(sandbox: &Sandbox) {
    let nodes = sandbox.kubectl_json(&["get", "nodes"]);
    for node in nodes["items"].as_array().unwrap() {
        sandbox.kubectl(&["cordon", node["metadata"]["name"].as_str().unwrap()]);
    }
}

/// A `helm rollback --wait` that cannot finish, killed while it waits: the release is left in
/// pending-rollback, as when helm dies half-way.
fn leave_release_pending(sandbox: &Sandbox, release: &str) {
    let home = sandbox.dir.path().join("helm");
    let mut helm = Command::new(sandbox.bin().join("helm"))
        .env("HELM_CACHE_HOME", &home)
        .env("HELM_CONFIG_HOME", &home)
        .env("HELM_DATA_HOME", &home)
        .arg("--kubeconfig")
        .arg(sandbox.kubeconfig())
        .args([
            "-n",
            NAMESPACE,
            "rollback",
            release,
            "1",
            "--wait",
            "--timeout",
            "10m",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "a pending-rollback revision",
        Duration::from_secs(60),
        || {
            let history = sandbox.helm_history(release);
            (history.as_array().unwrap().last().unwrap()["status"] == "pending-rollback")
                .then_some(())
        },
    );
    helm.kill().unwrap();
    helm.wait().unwrap();
}

#[test]
fn service_rollback_ends_in_a_known_state_when_it_cannot_finish() {
    let sandbox = Sandbox::up();
    cordon_every_node(&sandbox);

    // A release stuck half-way: refused before anything changes, with the way out.
    leave_release_pending(&sandbox, "tracktion-tracklist-service");
    let before = sandbox.cluster_state();
    let run = service(
        &sandbox,
        &["--yes"],
        &["--service", "tracklist-service"],
        &[],
    );
    run.code(1)
        .stderr_has(
            "Helm release tracktion-tracklist-service is stuck in pending-rollback at revision 3",
        )
        .stderr_has(
            "Check that no helm process works on it (helm status tracktion-tracklist-service",
        )
        .stderr_has("run again with --allow-pending true")
        .stderr_has("Nothing was changed");
    assert_eq!(sandbox.cluster_state(), before);
    let report = run.report();
    assert!(report.contains("— FAILED"), "{report}");
    assert!(report.contains("stuck in pending-rollback"), "{report}");
    assert_eq!(
        sandbox.notifications("pagerduty").last().unwrap()["body"]["event_action"],
        "trigger"
    );

    // A rollout that never becomes available: the undo is done, the old pod still serves, and
    // the failure says so.
    let run = service(
        &sandbox,
        &["--yes"],
        &[
            "--service",
            "analysis-service",
            "--method",
            "undo",
            "--rollout-timeout",
            "5",
        ],
        &[],
    );
    run.code(1)
        .stderr_has("analysis-service-green did not roll out")
        .stderr_has("the rollback (undo) was carried out")
        .stderr_has("analysis-service now: traffic on green (analysis-service-green: image v1.2.2, 1/1 ready, ");
    let green = deployment(&sandbox, "analysis-service-green");
    assert!(image(&green).ends_with(":v1.2.2"), "{green}");
    assert_eq!(green["status"]["readyReplicas"], 1);
    assert_eq!(sandbox.selector("analysis-service"), "green");
    assert_eq!(
        pushed(&sandbox, "rollback_service_success", "analysis-service"),
        Some(0.0)
    );
    let report = run.report();
    assert!(report.contains("`rollout_undo`"), "{report}");
    assert!(report.contains("— FAILED"), "{report}");
    assert!(!report.contains("milestone **restored**"), "{report}");

    // Out of time while waiting for the rollout: exit 3, the report says what was done.
    let run = service(
        &sandbox,
        &["--yes", "--timeout", "15s"],
        &["--service", "file-watcher", "--method", "undo"],
        &[],
    );
    run.code(3).stderr_has("out of time");
    let report = run.report();
    assert!(report.contains("— OUT OF TIME"), "{report}");
    assert!(report.contains("`rollout_undo`"), "{report}");
    assert!(
        report.contains("The run stopped before the end"),
        "{report}"
    );
    assert!(image(&deployment(&sandbox, "file-watcher-green")).ends_with(":v1.2.2"));

    // Ctrl-C while waiting for the rollout: exit 3, the report says what was done.
    let files = tempfile::tempdir().unwrap();
    let journal = files.path().join("journal.jsonl");
    let report_file = files.path().join("report.md");
    let test = command(
        &sandbox,
        &[
            "--yes",
            "--journal",
            journal.to_str().unwrap(),
            "--report",
            report_file.to_str().unwrap(),
        ],
        &["--service", "notification-service", "--method", "undo"],
        &[],
    );
    let child = test.spawn();
    wait_for_file(&journal, |text| {
        text.contains("\"function\":\"rollout_undo\"")
    });
    let out = interrupt(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("interrupted by Ctrl-C"), "{stderr}");
    let report = std::fs::read_to_string(&report_file).unwrap();
    assert!(report.contains("— ABORTED"), "{report}");
    assert!(report.contains("`rollout_undo`"), "{report}");
    assert!(image(&deployment(&sandbox, "notification-service-green")).ends_with(":v1.2.2"));
}
