//! The shipped `validate` procedure against real health endpoints and a real Prometheus.

mod common;
mod obs_support;

use common::Test;
use common::http::{HttpServer, Reply};
use obs_support::Prometheus;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// 2 of every 100 requests fail: a 2.0% error rate, below the runbook's 5% trigger.
fn exposition(scrape: u64) -> String {
    let mut out = String::from("# TYPE http_requests_total counter\n");
    for (service, status, step) in [
        ("analysis-service", "200", 98),
        ("analysis-service", "500", 2),
    ] {
        out.push_str(&format!(
            "http_requests_total{{service=\"{service}\",status=\"{status}\"}} {}\n",
            step * scrape
        ));
    }
    out
}

fn prometheus() -> &'static Prometheus {
    static STACK: OnceLock<(Prometheus, HttpServer)> = OnceLock::new();
    &STACK
        .get_or_init(|| {
            let scrapes = AtomicU64::new(0);
            let metrics = HttpServer::start(move |_| {
                Reply::ok(&exposition(scrapes.fetch_add(1, Ordering::SeqCst) + 1))
            });
            let prometheus = Prometheus::start(&format!("127.0.0.1:{}", metrics.port));
            prometheus.wait_for_value(
                r#"count_over_time(http_requests_total{status="500"}[1m])"#,
                3.0,
            );
            (prometheus, metrics)
        })
        .0
}

/// Health endpoints for two services; `down` answers 503.
fn platform(health: &HttpServer, down: &str, prometheus_url: Option<&str>) -> (String, String) {
    let prom = prometheus_url
        .map(|u| format!("prometheus_url = \"{u}\"\n"))
        .unwrap_or_default();
    let toml = format!(
        "[environments.test]\nnamespace = \"tracktion-test\"\n{prom}health_url = \"{}/{{service}}/{{slot}}/health\"\n\n[services.analysis-service]\n[services.file-watcher]\n",
        health.url()
    );
    (toml, down.to_string())
}

fn health_server(down: &'static str) -> HttpServer {
    HttpServer::start(move |req| {
        if !down.is_empty() && req.path.starts_with(down) {
            Reply::status(503)
        } else {
            Reply::ok("ok")
        }
    })
}

fn validate(toml: &str, args: &[&str]) -> common::Run {
    Test::new()
        .platform(toml)
        .args(["run", "validate", "--env", "test"])
        .args(args)
        .run()
}

#[test]
fn healthy_platform_validates_and_marks_the_milestone() {
    let health = health_server("");
    let (toml, _) = platform(&health, "", Some(&prometheus().url));
    let run = validate(&toml, &[]);
    run.success()
        .stderr_has("validated: 2/2 services healthy")
        .stderr_has("file-watcher: no request metrics in the last 5m, error rate not judged");
    let journal = run.journal();
    let rates = journal
        .iter()
        .find(|r| r["function"] == "prom::error_rates")
        .unwrap();
    let value = rates["outcome"]["result"]["analysis-service"]["value"]
        .as_f64()
        .unwrap();
    assert!((value - 2.0).abs() < 1e-6, "error rate {value}");
    assert!(
        journal
            .iter()
            .any(|r| r["function"] == "milestone" && r["args"]["name"] == "validated")
    );
    let paths: Vec<String> = health.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.contains(&"/analysis-service/blue/health".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/file-watcher/blue/health".to_string()),
        "{paths:?}"
    );
}

#[test]
fn an_unhealthy_service_fails_validation_naming_it() {
    let health = health_server("/file-watcher/green");
    let (toml, _) = platform(&health, "", Some(&prometheus().url));
    let run = validate(&toml, &["--slot", "green"]);
    run.code(1)
        .stderr_has("validation failed: [\"1/2 services healthy; unhealthy: [\\\"file-watcher\\\"]; at least 2 must be healthy\"]");
    assert!(run.report().contains("**unhealthy**"));
    // With one service allowed down, the same platform passes.
    validate(&toml, &["--slot", "green", "--min-healthy", "1"]).success();
}

#[test]
fn error_rate_above_the_limit_fails_validation() {
    let health = health_server("");
    let (toml, _) = platform(&health, "", Some(&prometheus().url));
    validate(&toml, &["--max-error-rate", "1.5"])
        .code(1)
        .stderr_has("analysis-service: error rate 2.0% is above 1.5%");
}

#[test]
fn without_prometheus_only_health_is_judged_and_the_gap_is_said() {
    let health = health_server("");
    let (toml, _) = platform(&health, "", None);
    validate(&toml, &[])
        .success()
        .stderr_has("no prometheus_url in this environment: error rate and latency not checked");
}

#[test]
fn an_unknown_slot_is_refused() {
    let health = health_server("");
    let (toml, _) = platform(&health, "", None);
    validate(&toml, &["--slot", "purple"])
        .code(1)
        .stderr_has("unknown slot 'purple': use \"blue\" or \"green\"");
}
