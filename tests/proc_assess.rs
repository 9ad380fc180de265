//! `assess` on the sandbox: the decision from the runbook's matrix and live health, rollback
//! readiness, the exit status that carries the decision, and the failure paths.

mod common;
use common::golden::assert_golden;
use common::sandbox::{SERVICES, Sandbox};
use common::{TEST_PLATFORM, Test, free_port, helm_release_with_status, wait_until};
use std::time::Duration;

const MONITOR: i32 = 0;
const CONSIDER: i32 = 10;
const RECOMMENDED: i32 = 11;
const IMMEDIATE: i32 = 12;

/// The decision levels `stdlib/decision.rhai` returns for `cases`, run through the real binary.
fn levels(script: &str) -> Vec<String> {
    let run = Test::new()
        .script(&format!("import \"decision\" as d;\n{script}"))
        .run();
    run.success();
    run.stdout.lines().map(String::from).collect()
}

#[test]
fn the_decision_matrix_follows_the_runbook() {
    // (severity, minutes, affected services, level)
    let table: [(&str, i64, usize, &str); 13] = [
        ("critical", 0, 0, "immediate"),
        ("critical", 0, 4, "immediate"),
        ("high", 11, 0, "recommended"),
        ("high", 10, 0, "monitor"),
        ("high", 5, 3, "recommended"),
        ("low", 0, 3, "recommended"),
        ("low", 0, 2, "monitor"),
        ("medium", 31, 0, "consider"),
        ("medium", 30, 0, "monitor"),
        ("medium", 31, 3, "recommended"),
        ("medium", 31, 2, "consider"),
        ("low", 600, 1, "monitor"),
        ("low", 0, 0, "monitor"),
    ];
    let cases: Vec<String> = table
        .iter()
        .map(|(severity, minutes, n, _)| {
            let services: Vec<String> = (0..*n).map(|i| format!("\"svc-{i}\"")).collect();
            format!(
                "finding(d::matrix(\"{severity}\", {minutes}, [{}]).level);",
                services.join(", ")
            )
        })
        .collect();
    let got = levels(&cases.join("\n"));
    for (case, level) in table.iter().zip(&got) {
        assert_eq!(level, case.3, "{case:?}");
    }
    assert_eq!(got.len(), table.len());
}

#[test]
fn live_health_triggers_follow_the_runbook() {
    // (services as Rhai rows, duration, baseline p95, expected most urgent level, reason part)
    let row = |name: &str, healthy: bool, critical: bool, rate: f64, p95: f64| {
        format!(
            "#{{ name: \"{name}\", slot: \"green\", healthy: {healthy}, critical: {critical}, error_rate: #{{ has_data: true, value: {rate:?} }}, p95: #{{ has_data: true, value: {p95:?} }} }}"
        )
    };
    let ok = |name: &str| row(name, true, true, 0.0, 100.0);
    let table: Vec<(Vec<String>, i64, f64, &str, &str)> = vec![
        (
            vec![ok("a"), ok("b"), ok("c"), ok("d")],
            0,
            0.0,
            "monitor",
            "calm",
        ),
        (
            vec![row("a", true, true, 12.0, 100.0), ok("b")],
            0,
            0.0,
            "immediate",
            "a error rate 12.0% over 5m on green (above 5%)",
        ),
        (
            vec![row("a", true, true, 3.5, 100.0), ok("b")],
            0,
            0.0,
            "consider",
            "a error rate 3.5% over 5m on green (above 2%)",
        ),
        (
            vec![row("a", true, true, 2.0, 100.0), ok("b")],
            0,
            0.0,
            "monitor",
            "calm",
        ),
        (
            vec![
                row("a", false, false, 0.0, 1.0),
                row("b", false, false, 0.0, 1.0),
                ok("c"),
                ok("d"),
            ],
            0,
            0.0,
            "consider",
            "only 2/4 services healthy (under 75%)",
        ),
        (
            vec![
                row("a", false, false, 0.0, 1.0),
                row("b", false, false, 0.0, 1.0),
                row("c", false, false, 0.0, 1.0),
                ok("d"),
            ],
            0,
            0.0,
            "immediate",
            "only 1/4 services healthy (under 50%)",
        ),
        (
            vec![row("a", false, true, 0.0, 1.0), ok("b"), ok("c"), ok("d")],
            2,
            0.0,
            "recommended",
            "a (critical) is down on its live slot green",
        ),
        (
            vec![row("a", false, true, 0.0, 1.0), ok("b"), ok("c"), ok("d")],
            6,
            0.0,
            "immediate",
            "for 6 minutes (more than 5)",
        ),
        (
            vec![row("a", true, true, 0.0, 400.0)],
            0,
            100.0,
            "immediate",
            "a p95 latency 400 ms is more than 3x its 100.0 ms baseline",
        ),
        (
            vec![row("a", true, true, 0.0, 400.0)],
            0,
            0.0,
            "monitor",
            "calm",
        ),
    ];
    let script: Vec<String> = table
        .iter()
        .map(|(rows, duration, baseline, _, _)| {
            format!(
                "let t = d::most_urgent(d::live([{}], #{{ window: \"5m\", baseline_p95_ms: {baseline:?}, duration: {duration} }}), \"calm\"); finding(t.level + \"|\" + t.reason);",
                rows.join(", ")
            )
        })
        .collect();
    let got = levels(&script.join("\n"));
    assert_eq!(got.len(), table.len(), "{got:?}");
    for (case, line) in table.iter().zip(&got) {
        let (level, reason) = line.split_once('|').unwrap();
        assert_eq!(level, case.3, "{line}");
        assert!(reason.contains(case.4), "{line} lacks {:?}", case.4);
    }
}

#[test]
fn bad_parameters_are_usage_errors() {
    let assess = |params: &[&str]| {
        Test::new()
            .platform(TEST_PLATFORM)
            .args(["run", "assess", "--env", "test"])
            .args(params)
            .run()
    };
    assess(&["--severity", "severe"])
        .code(2)
        .stderr_has("--severity")
        .stderr_has("expects one of [\"critical\", \"high\", \"medium\", \"low\"], got 'severe'")
        .stderr_has("rollback run assess --help");
    assess(&["--severity", "high", "--duration", "-5"])
        .code(2)
        .stderr_has("expects minutes (0 or more), got -5");
    assess(&[
        "--severity",
        "high",
        "--services",
        "analysis-service,billing",
    ])
    .code(2)
    .stderr_has("unknown service 'billing'");
    assess(&["--duration", "5"])
        .code(2)
        .stderr_has("--severity");
    assess(&["--severity", "high", "--duration", "ten"])
        .code(2)
        .stderr_has("expects a whole number");
}

/// Marks a release's last revision as stuck in pending-upgrade, as a helm process that died
/// mid-upgrade leaves it: Helm keeps the release in a Secret, base64 of gzipped JSON.
fn stick_release(sandbox: &Sandbox, release: &str, revision: u32) {
    let name = format!("sh.helm.release.v1.{release}.v{revision}");
    let secret = sandbox.kubectl_json(&["get", "secret", &name]);
    let encoded = helm_release_with_status(
        secret["data"]["release"].as_str().unwrap(),
        "pending-upgrade",
    );
    let patch = serde_json::json!({
        "metadata": {"labels": {"status": "pending-upgrade"}},
        "data": {"release": encoded},
    });
    sandbox.kubectl(&[
        "patch",
        "secret",
        &name,
        "--type",
        "merge",
        "-p",
        &patch.to_string(),
    ]);
}

#[test]
fn assess_on_the_sandbox() {
    let sandbox = Sandbox::up();
    let cluster = sandbox.cluster_state();
    let database = sandbox.database_state();

    // Healthy: the plan and the run agree on "monitor", and nothing changes, not even a lock.
    let plan = sandbox.procedure(&["--dry-run"], "assess", &["--severity", "low"]);
    plan.code(MONITOR);
    assert_golden("assess-dry-run", &plan.report());
    let run = sandbox.procedure(&[], "assess", &["--severity", "low"]);
    run.code(MONITOR)
        .stdout_has(
            "**MONITOR AND FIX** — low severity for 0 minutes does not meet the rollback criteria",
        )
        .stdout_has(&format!("{0}/{0} services healthy", SERVICES.len()))
        .stdout_has("- Ready: a traffic switch or Helm rollback can start now")
        .stdout_has("database: no safety backup on disk");
    for service in SERVICES {
        run.stdout_has(&format!(
            "✅ {service}: green (v1.2.4) healthy; error rate "
        ));
        run.stdout_has(&format!(
            "✅ {service}: standby blue runs v1.2.3, 1/1 pods ready"
        ));
    }
    assert!(run.journal().iter().all(|r| r["mutating"] != true));
    assert!(run.report().contains("## Findings"));
    assert!(run.report().contains("- Exit status 0: MONITOR AND FIX"));
    let leases = sandbox.kubectl_json(&["get", "leases"]);
    assert!(leases["items"].as_array().unwrap().is_empty(), "{leases}");
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);
    assert!(sandbox.notifications("slack").is_empty());

    // The matrix alone decides when live health is calm; the exit status carries it.
    sandbox
        .procedure(&[], "assess", &["--severity", "high", "--duration", "15"])
        .code(RECOMMENDED)
        .stdout_has(
            "**ROLLBACK RECOMMENDED** — high severity incident lasting 15 minutes (more than 10)",
        );
    sandbox
        .procedure(&[], "assess", &["--severity", "medium", "--duration", "45"])
        .code(CONSIDER);

    // Prometheus unreachable: a clear note, never a 0% error rate and a "monitor".
    let overlay = std::fs::read_to_string(sandbox.environment_file()).unwrap();
    let prometheus = sandbox.url("prometheus");
    let closed = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(
        sandbox.environment_file(),
        overlay.replace(&prometheus, &closed),
    )
    .unwrap();
    let blind = sandbox.procedure(&[], "assess", &["--severity", "low"]);
    blind
        .code(1)
        .stdout_has("Prometheus unreachable, error rate and latency UNKNOWN (not taken as 0%)")
        .stderr_has("assessment incomplete: [\"error rate and latency\"] unknown, so a rollback cannot be ruled out");
    assert!(!blind.stdout.contains("error rate 0"), "{}", blind.stdout);
    // What is known can still decide: a critical incident needs no metrics.
    sandbox
        .procedure(&[], "assess", &["--severity", "critical"])
        .code(IMMEDIATE)
        .stdout_has("Prometheus unreachable");
    std::fs::write(sandbox.environment_file(), &overlay).unwrap();

    // 12% errors on the live slot of one service: immediate, whatever the reported severity.
    sandbox.inject(&["--service", "analysis-service", "--error-rate", "12"]);
    wait_until(
        "a 12% error ratio over 15s",
        Duration::from_secs(90),
        || {
            sandbox
            .prometheus(r#"sum(rate(http_requests_total{service="analysis-service",status=~"5.."}[15s])) / sum(rate(http_requests_total{service="analysis-service"}[15s]))"#)
            .filter(|r| *r > 0.10)
        },
    );
    let hot = sandbox.procedure(&[], "assess", &["--severity", "low", "--window", "15s"]);
    hot.code(IMMEDIATE)
        .stdout_has("**IMMEDIATE ROLLBACK** — analysis-service error rate ")
        .stdout_has("% over 15s on green (above 5%)")
        .stderr_has("exit status 12: IMMEDIATE ROLLBACK: analysis-service error rate");
    let decision = hot
        .stdout
        .lines()
        .find(|l| l.starts_with("**IMMEDIATE ROLLBACK**"))
        .unwrap();
    let rate: f64 = decision
        .split("error rate ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((10.0..=14.0).contains(&rate), "{decision}");
    assert!(
        hot.report()
            .contains("- Exit status 12: IMMEDIATE ROLLBACK: analysis-service")
    );
    sandbox.inject(&["--clear"]);
    wait_until("no errors over 15s", Duration::from_secs(90), || {
        sandbox
            .prometheus(
                r#"sum(rate(http_requests_total{service="analysis-service",status=~"5.."}[15s]))"#,
            )
            .filter(|r| *r == 0.0)
    });

    // The standby slot down: readiness says so, and names the slot and its version.
    sandbox.inject(&["--service", "file-watcher", "--slot", "blue", "--down"]);
    sandbox
        .procedure(&[], "assess", &["--severity", "low", "--window", "15s"])
        .code(MONITOR)
        .stdout_has("❌ file-watcher: standby blue (v1.2.3) fails its health check: HTTP 503")
        .stdout_has("- NOT READY: 1 blocker(s) above must be cleared first");
    sandbox.inject(&["--clear"]);

    // A Helm release stuck mid-upgrade blocks a Helm rollback.
    stick_release(&sandbox, "tracktion-tracklist-service", 2);
    sandbox
        .procedure(&[], "assess", &["--severity", "high", "--duration", "30"])
        .code(RECOMMENDED)
        .stdout_has("❌ tracklist-service: Helm release tracktion-tracklist-service is stuck in pending-upgrade at revision 2")
        .stdout_has("- NOT READY: 1 blocker(s)")
        .stdout_has("Readiness blockers above");
}
