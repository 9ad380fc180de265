//! Helpers for the traffic-restoring procedures' end-to-end tests (emergency, full, rehearse):
//! slot switches done behind the procedures' back, waits for an incident to show in
//! Prometheus, and the Deployments' images and replicas.
#![allow(dead_code)]

use super::sandbox::Sandbox;
use super::wait_until;
use std::time::Duration;

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
