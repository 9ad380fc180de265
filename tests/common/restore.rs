//! Helpers for the traffic-restoring procedures' end-to-end tests (emergency, full, rehearse):
//! runs with the sandbox's helm, slot switches done behind the procedures' back, and waits
//! for an incident to show in Prometheus.
#![allow(dead_code)]

use super::sandbox::Sandbox;
use super::{Run, Test, wait_until};
use std::process::{Child, Stdio};
use std::time::Duration;

/// The sandbox's `Test` with `ROLLBACK_HELM` pointing at the testbed's helm.
pub fn test(sandbox: &Sandbox) -> Test {
    sandbox.test().env(
        "ROLLBACK_HELM",
        &sandbox.bin().join("helm").display().to_string(),
    )
}

fn args<'a>(global: &[&'a str], procedure: &'a str, params: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--env", "sandbox", "--operator", "sre"];
    all.extend_from_slice(global);
    all.extend(["run", procedure]);
    all.extend_from_slice(params);
    all
}

/// `rollback --env sandbox --operator sre [global…] run <procedure> [params…]` with helm.
pub fn run(sandbox: &Sandbox, global: &[&str], procedure: &str, params: &[&str]) -> Run {
    test(sandbox).args(args(global, procedure, params)).run()
}

/// The same run, started and left running (stdout and stderr piped), for signal tests. The
/// `Test` owns the run's home and platform file: keep it until the child has exited.
pub fn spawn(
    sandbox: &Sandbox,
    global: &[&str],
    procedure: &str,
    params: &[&str],
) -> (Test, Child) {
    let test = test(sandbox).args(args(global, procedure, params));
    let child = test
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (test, child)
}

/// Points every platform Service at `slot` directly, as a deploy would have left it.
pub fn select_all(sandbox: &Sandbox, slot: &str) {
    let patch = format!(r#"{{"spec":{{"selector":{{"slot":"{slot}"}}}}}}"#);
    for service in sandbox.platform_services() {
        sandbox.kubectl(&["patch", "service", &service, "-p", &patch]);
    }
}

/// Every platform Service's selected slot, by service.
pub fn selectors(sandbox: &Sandbox) -> Vec<(String, String)> {
    sandbox
        .platform_services()
        .into_iter()
        .map(|s| {
            let slot = sandbox.selector(&s);
            (s, slot)
        })
        .collect()
}

/// Waits until Prometheus sees `service` answer more than `ratio` of its requests with 5xx.
pub fn wait_for_errors(sandbox: &Sandbox, service: &str, ratio: f64) {
    wait_until(
        &format!("Prometheus to show {service}'s errors"),
        Duration::from_secs(60),
        || sandbox.error_ratio(service).filter(|r| *r > ratio),
    );
}

/// The `name` Deployment's container image.
pub fn image(sandbox: &Sandbox, deployment: &str) -> String {
    sandbox.kubectl_json(&["get", "deployment", deployment])["spec"]["template"]["spec"]
        ["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The `name` Deployment's desired replicas.
pub fn replicas(sandbox: &Sandbox, deployment: &str) -> i64 {
    sandbox.kubectl_json(&["get", "deployment", deployment])["spec"]["replicas"]
        .as_i64()
        .unwrap()
}
