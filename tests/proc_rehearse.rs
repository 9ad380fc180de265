//! `rehearse` on the sandbox: inject an incident, run a procedure as its own run, check the
//! platform recovered and show the time to recover per step; refused off the sandbox.

mod common;
use common::restore::{self, selectors};
use common::sandbox::Sandbox;
use common::{TEST_PLATFORM, Test};

#[test]
fn rehearse_recovers_from_a_down_slot_and_reports_the_time_per_step() {
    let sandbox = Sandbox::up();
    let run = sandbox.procedure(
        &["--yes"],
        "rehearse",
        &[
            "--procedure",
            "emergency",
            "--incident",
            "down",
            "--service",
            "file-watcher",
        ],
    );
    run.success()
        .stderr_has("rehearsal of emergency passed: traffic restored at");
    for (service, slot) in selectors(&sandbox) {
        assert_eq!(slot, "blue", "{service}");
    }
    let report = run.report();
    for text in [
        "step **inject down into file-watcher (green)**",
        "step **run emergency**",
        "step **emergency: attempt 1: switch traffic to the standby slots — done at +",
        "step **time to recover: restored at ",
        "step **platform healthy again**",
        "step **clear incidents**",
    ] {
        assert!(report.contains(text), "{text} not in:\n{report}");
    }
    // The rehearsed run left its own journal and report, as a real incident would.
    let rehearsed = run.file("rehearsed-emergency/report.md");
    assert!(rehearsed.contains("# Rollback report: emergency on sandbox — SUCCEEDED"));
    let incidents = sandbox.rollback(&["sandbox", "status"]);
    assert!(
        !incidents.stdout.contains("down (503)"),
        "{}",
        incidents.stdout
    );

    // The standby down as well: the rehearsal fails and says so.
    restore::select_all(&sandbox, "green");
    let run = sandbox.procedure(
        &["--yes"],
        "rehearse",
        &[
            "--procedure",
            "emergency",
            "--incident",
            "standby-down",
            "--service",
            "analysis-service",
            "--args",
            "--min-healthy-ratio 1.0",
        ],
    );
    run.code(1)
        .stderr_has("emergency did not recover the platform: failed (exit 1)");
}

#[test]
fn rehearse_refuses_any_environment_but_the_sandbox() {
    Test::new()
        .platform(TEST_PLATFORM)
        .args(["--env", "test", "--yes", "run", "rehearse"])
        .run()
        .code(1)
        .stderr_has("rehearsals run on the sandbox only, not on test");
}
