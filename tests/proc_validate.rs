//! `validate` and `communicate` on the sandbox: the real platform, real Prometheus, the
//! sandbox's Slack and PagerDuty receivers.

mod common;
use common::golden::assert_golden;
use common::sandbox::{SERVICES, Sandbox};

#[test]
fn validate_passes_on_a_healthy_sandbox_and_its_dry_run_changes_nothing() {
    let sandbox = Sandbox::up();
    let cluster = sandbox.cluster_state();
    let database = sandbox.database_state();

    let plan = sandbox.procedure(&["--dry-run"], "validate", &["--slot", "green"]);
    plan.success();
    assert_golden("validate-dry-run", &plan.report());
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);

    let run = sandbox.procedure(&[], "validate", &["--slot", "green"]);
    run.success().stderr_has(&format!(
        "validated: {0}/{0} services healthy",
        SERVICES.len()
    ));
    assert!(sandbox.notifications("slack").is_empty());
}

#[test]
fn communicate_dry_run_plans_the_update_and_sends_nothing() {
    let sandbox = Sandbox::up();
    let plan = sandbox.procedure(
        &["--dry-run"],
        "communicate",
        &[
            "--phase",
            "start",
            "--message",
            "Switching analysis-service back to v1.2.3",
        ],
    );
    plan.success();
    assert_golden("communicate-dry-run", &plan.report());
    assert!(sandbox.notifications("slack").is_empty());
    assert!(sandbox.notifications("pagerduty").is_empty());
}
