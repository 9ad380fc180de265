//! The stdlib `rolling` strategy on the sandbox, through a small procedure that calls
//! `rolling::rollback` the way `full` does: batches, abort on the first failure, and an exact
//! account of what was rolled back and what was not.

mod common;
use common::Run;
use common::http_get;
use common::sandbox::Sandbox;

/// The procedure under test: the account goes to the notification and, on failure, the error.
const ROLLING: &str = r#"//! Rolling rollback of the given services.
//!
//! @param services: list          Services, in order.
//! @param batch_size: int = 1     Services per batch.
//! @param grace: int = 0          Grace period, seconds.
//! @param check_timeout: int = 10 Health-check timeout, seconds.
//! @timeout 10m

import "rolling" as rolling;

let r = rolling::rollback(services, #{ batch_size: batch_size, grace: grace, timeout: check_timeout });
notify(r.summary, #{
    severity: if r.ok { "info" } else { "error" },
    fields: #{ rolled_back: r.rolled_back, not_rolled_back: r.not_rolled_back },
});
if !r.ok {
    throw r.summary;
}
milestone("restored");
milestone("validated");
"#;

fn rolling(sandbox: &Sandbox, params: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rolling.rhai");
    std::fs::write(&script, ROLLING).unwrap();
    sandbox.procedure(&["--yes"], script.to_str().unwrap(), params)
}

fn last_revision(sandbox: &Sandbox, service: &str) -> (u64, String) {
    let history = sandbox.helm_history(&format!("tracktion-{service}"));
    let last = history.as_array().unwrap().last().unwrap().clone();
    (
        last["revision"].as_u64().unwrap(),
        last["description"].as_str().unwrap().to_string(),
    )
}

fn pushed_success(sandbox: &Sandbox, service: &str) -> Option<String> {
    let (_, body) = http_get(&format!("{}/metrics", sandbox.url("pushgateway")));
    body.lines()
        .filter(|l| l.starts_with("rollback_service_success{"))
        .find(|l| l.contains(&format!("service=\"{service}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_string)
}

#[test]
fn rolling_rollback_stops_at_the_first_failure_and_says_what_was_rolled_back() {
    let sandbox = Sandbox::up();
    // The third service's standby is where its rollback would send traffic: it is down.
    sandbox.inject(&["--service", "tracklist-service", "--slot", "blue", "--down"]);
    let before = sandbox.cluster_state();

    let run = rolling(
        &sandbox,
        &[
            "--services",
            "analysis-service,file-watcher,tracklist-service,notification-service",
        ],
    );
    run.code(1).stderr_has(
        "rolled back: analysis-service, file-watcher; not rolled back: tracklist-service, notification-service; not attempted: notification-service; tracklist-service failed, unchanged: traffic cannot move to the standby slot: tracklist-service (blue) is not healthy",
    );

    // Rolled back: Helm revision 1 again, traffic on blue.
    for service in ["analysis-service", "file-watcher"] {
        assert_eq!(sandbox.selector(service), "blue", "{service}");
        assert_eq!(
            last_revision(&sandbox, service),
            (3, "Rollback to 1".to_string())
        );
        assert_eq!(pushed_success(&sandbox, service).as_deref(), Some("1"));
    }
    // Not rolled back: exactly as before.
    let after = sandbox.cluster_state();
    for service in ["tracklist-service", "notification-service"] {
        assert_eq!(sandbox.selector(service), "green", "{service}");
        let release = format!("tracktion-{service}");
        assert_eq!(after["releases"][&release], before["releases"][&release]);
        for slot in ["blue", "green"] {
            let name = format!("{service}-{slot}");
            assert_eq!(
                after["deployments"][&name], before["deployments"][&name],
                "{name}"
            );
        }
        assert_eq!(pushed_success(&sandbox, service), None);
    }

    let report = run.report();
    for text in [
        "— FAILED",
        "step **batch 1/4: analysis-service** | ",
        "step **batch 2/4: file-watcher** | ",
        "step **batch 3/4: tracklist-service** | ",
        "| error: tracklist-service: traffic cannot move to the standby slot",
        "Cause: the procedure failed: rolled back: analysis-service, file-watcher; not rolled back: tracklist-service, notification-service; not attempted: notification-service;",
    ] {
        assert!(report.contains(text), "report lacks {text:?}:\n{report}");
    }
    assert!(!report.contains("batch 4/4"), "{report}");
    assert_eq!(report.matches("| `helm_rollback` |").count(), 2, "{report}");
    let page = sandbox.notifications("pagerduty").last().unwrap().clone();
    assert_eq!(page["body"]["event_action"], "trigger");
    assert_eq!(
        page["body"]["payload"]["custom_details"]["rolled_back"],
        serde_json::json!(["analysis-service", "file-watcher"]),
        "{page}"
    );
    assert_eq!(
        page["body"]["payload"]["custom_details"]["not_rolled_back"],
        serde_json::json!(["tracklist-service", "notification-service"]),
        "{page}"
    );

    // Fixed, the rest goes in one batch of two, rolled out side by side.
    sandbox.inject(&["--service", "tracklist-service", "--clear"]);
    let run = rolling(
        &sandbox,
        &[
            "--services",
            "tracklist-service,notification-service",
            "--batch-size",
            "2",
        ],
    );
    run.success();
    for service in ["tracklist-service", "notification-service"] {
        assert_eq!(sandbox.selector(service), "blue", "{service}");
        assert_eq!(
            last_revision(&sandbox, service),
            (3, "Rollback to 1".to_string())
        );
    }
    let report = run.report();
    assert!(
        report.contains("step **batch 1/1: tracklist-service, notification-service** | "),
        "{report}"
    );
    assert!(
        report.contains(
            "| rolled back: tracklist-service, notification-service; not rolled back: none |"
        ),
        "{report}"
    );
}
