//! `full` on the sandbox: snapshot, every service switched to its standby at once (or, when a
//! standby is not ready, every release rolled back with Helm), verification and smoke checks.

mod common;
use common::golden::assert_golden;
use common::restore::{image, select_all, selectors};
use common::sandbox::{SERVICES, Sandbox};

#[test]
fn full_switches_every_service_or_falls_back_to_helm_and_its_plan_changes_nothing() {
    let sandbox = Sandbox::up();
    sandbox.inject(&["--service", "analysis-service", "--slot", "green", "--down"]);
    let cluster = sandbox.cluster_state();
    let database = sandbox.database_state();

    let plan = sandbox.procedure(&["--dry-run"], "full", &[]);
    plan.success();
    assert_golden("full-dry-run", &plan.report());
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);
    assert!(sandbox.notifications("slack").is_empty());
    // The rolling strategy's plan: batches of one, nothing changed either.
    let rolling = sandbox.procedure(&["--dry-run"], "full", &["--strategy", "rolling"]);
    rolling.success();
    let report = rolling.report();
    for text in [
        "step **rolling rollback of 4 services, 1 at a time**",
        "step **batch 1/4: analysis-service**",
        "step **batch 4/4: tracklist-service**",
        "milestone **restored**",
    ] {
        assert!(report.contains(text), "{text} not in:\n{report}");
    }
    assert_eq!(sandbox.cluster_state(), cluster);

    let run = sandbox.procedure(&["--yes"], "full", &[]);
    run.success();
    for (service, slot) in selectors(&sandbox) {
        assert_eq!(slot, "blue", "{service}");
        assert!(image(&sandbox, &format!("{service}-blue")).ends_with(":v1.2.3"));
    }
    let report = run.report();
    for text in [
        "— SUCCEEDED",
        "step **snapshot live: green v1.2.4, 1/1 ready — all 4 services**",
        "step **snapshot standby: blue v1.2.3, 1/1 ready — all 4 services**",
        "step **snapshot database: schema version 3 (analysis_status)**",
        "step **switch every service to its standby**",
        "milestone **restored**",
        "step **verify every service**",
        "step **smoke checks**",
        "milestone **validated**",
        "step **result: blue v1.2.3, 1/1 ready — all 4 services**",
    ] {
        assert!(report.contains(text), "{text} not in:\n{report}");
    }
    assert!(!report.contains("helm_rollback"), "{report}");
    let slack: Vec<String> = sandbox
        .notifications("slack")
        .iter()
        .map(|n| n["body"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert!(slack[0].contains("Full application rollback started on sandbox"));
    assert!(slack[1].contains("Full application rollback completed on sandbox"));

    // A standby without ready pods: no Service is switched, every release goes back with Helm.
    sandbox.inject(&["--clear"]);
    select_all(&sandbox, "green");
    sandbox.kubectl(&["scale", "deployment", "file-watcher-blue", "--replicas=0"]);
    common::wait_until(
        "file-watcher-blue to have no ready pods",
        std::time::Duration::from_secs(60),
        || {
            let d = sandbox.kubectl_json(&["get", "deployment", "file-watcher-blue"]);
            d["status"]["readyReplicas"]
                .as_i64()
                .unwrap_or(0)
                .eq(&0)
                .then_some(())
        },
    );
    // The sandbox's health endpoints follow the cluster by polling it: wait until they do.
    let health = sandbox.health_url("file-watcher", "blue");
    common::wait_until(
        "the sandbox to see file-watcher-blue down",
        std::time::Duration::from_secs(60),
        || (common::http_get(&health).0 != 200).then_some(()),
    );
    let run = sandbox.procedure(&["--yes"], "full", &[]);
    run.success()
        .stderr_has("blue/green switch not possible, rolling back with Helm")
        .stderr_has("1 of 4 standby slots failed their health check, so no service was switched: file-watcher");
    let report = run.report();
    assert!(
        report.contains("step **Helm rollback of 4 release(s)**"),
        "{report}"
    );
    assert!(!report.contains("`switch_slots`"), "{report}");
    for service in SERVICES {
        assert_eq!(sandbox.selector(service), "blue", "{service}");
        let history = sandbox.helm_history(&format!("tracktion-{service}"));
        let last = history.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["description"], "Rollback to 1", "{history}");
    }
    assert_eq!(
        sandbox.kubectl_json(&["get", "deployment", "file-watcher-blue"])["spec"]["replicas"],
        1
    );
}
