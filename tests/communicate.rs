//! The shipped `communicate` procedure against local Slack and PagerDuty receivers.

mod common;

use common::Test;
use common::http::{HttpServer, Reply};

fn platform(pagerduty: &HttpServer) -> String {
    format!(
        "[environments.test]\nnamespace = \"tracktion-test\"\n\n[environments.test.notify]\nslack_webhook_env = \"SLACK_WEBHOOK_URL\"\npagerduty_routing_key_env = \"PAGERDUTY_ROUTING_KEY\"\npagerduty_events_url = \"{}/v2/enqueue\"\ntimeout_secs = 2\n",
        pagerduty.url()
    )
}

fn receivers() -> (HttpServer, HttpServer) {
    (
        HttpServer::start(|_| Reply::ok("ok")),
        HttpServer::start(|_| Reply::text(202, "{\"status\":\"success\"}")),
    )
}

fn communicate(slack: &HttpServer, pagerduty: &HttpServer, args: &[&str]) -> common::Run {
    Test::new()
        .platform(&platform(pagerduty))
        .env(
            "SLACK_WEBHOOK_URL",
            &format!("{}/services/T1/B2/secretpath123", slack.url()),
        )
        .env("PAGERDUTY_ROUTING_KEY", "routingkey0123456789")
        .args(["run", "communicate", "--env", "test"])
        .args(args)
        .run()
}

#[test]
fn start_update_reaches_slack_without_paging() {
    let (slack, pagerduty) = receivers();
    let run = communicate(
        &slack,
        &pagerduty,
        &["--phase", "start", "--message", "switching traffic to blue"],
    );
    run.success().stderr_has("update delivered to [\"slack\"]");
    let sent = slack.requests();
    assert_eq!(sent.len(), 1);
    let body = sent[0].json();
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("Rollback started on test."),
        "{body}"
    );
    assert!(
        pagerduty.requests().is_empty(),
        "a start update must not page"
    );
    let notify_line = run
        .report()
        .lines()
        .find(|l| l.starts_with("| Notify stakeholders"))
        .unwrap()
        .to_string();
    assert!(notify_line.ends_with("| **met** |"), "{notify_line}");
}

#[test]
fn failure_update_pages_and_mentions_the_channel() {
    let (slack, pagerduty) = receivers();
    communicate(
        &slack,
        &pagerduty,
        &["--phase", "failed", "--message", "helm rollback timed out"],
    )
    .success();
    let page = pagerduty.requests()[0].json();
    assert_eq!(page["event_action"], "trigger");
    assert_eq!(page["payload"]["severity"], "critical");
    assert!(
        page["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("helm rollback timed out")
    );
    assert!(slack.requests()[0].body.contains("<!channel>"));
}

#[test]
fn an_update_nobody_received_fails_and_says_what_to_do() {
    let slack = HttpServer::start(|_| Reply::status(500));
    let pagerduty = HttpServer::start(|_| Reply::status(500));
    let run = communicate(&slack, &pagerduty, &["--phase", "failed", "--message", "x"]);
    run.code(1)
        .stderr_has("no channel received the update")
        .stderr_has("tell stakeholders by phone or another channel");
    assert!(!run.all_output().contains("secretpath123"));
    assert!(!run.all_output().contains("routingkey0123456789"));
}

#[test]
fn dry_run_sends_nothing() {
    let (slack, pagerduty) = receivers();
    communicate(
        &slack,
        &pagerduty,
        &["--phase", "failed", "--message", "x", "--dry-run"],
    )
    .success();
    assert!(slack.requests().is_empty());
    assert!(pagerduty.requests().is_empty());
}

#[test]
fn unknown_phase_is_refused() {
    let (slack, pagerduty) = receivers();
    communicate(&slack, &pagerduty, &["--phase", "middle", "--message", "x"])
        .code(1)
        .stderr_has("unknown phase 'middle': use start, progress, end or failed");
    assert!(slack.requests().is_empty());
}
