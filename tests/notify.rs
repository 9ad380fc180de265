//! `notify` against local Slack and PagerDuty receivers that record what they get: exact
//! payloads, failures that never stop the run, dry-runs that send nothing, and secrets that
//! never leave the process.

mod common;
mod obs_support;

use common::{Run, Test};
use obs_support::{
    HttpServer, Reply, Request, journal_record, journal_result, poll, session_start,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The receivers and the secrets that reach them.
struct Channels {
    slack: HttpServer,
    pagerduty: HttpServer,
    /// The secret last segment of the webhook URL path, as Slack's are.
    hook_secret: String,
    webhook: String,
    routing_key: String,
}

impl Channels {
    fn start(slack: Reply, pagerduty: Reply) -> Channels {
        Channels::start_with(|_| replay(slack), replay(pagerduty))
    }

    /// `slack` makes the Slack receiver's handler from the webhook's secret path.
    fn start_with<S, P>(slack: impl FnOnce(&str) -> S, pagerduty: P) -> Channels
    where
        S: Fn(&Request) -> Reply + Send + Sync + 'static,
        P: Fn(&Request) -> Reply + Send + Sync + 'static,
    {
        let hook_secret = format!("hk{}", uuid::Uuid::new_v4().simple());
        let hook_path = format!("/services/T0001/B0002/{hook_secret}");
        let slack = HttpServer::start(slack(&hook_path));
        let pagerduty = HttpServer::start(pagerduty);
        let webhook = format!("{}{hook_path}", slack.url());
        Channels {
            slack,
            pagerduty,
            hook_secret,
            webhook,
            routing_key: format!("R{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn test(&self, timeout_secs: u32) -> Test {
        Test::new()
            .platform(&platform(&self.pagerduty.url(), timeout_secs))
            .env("SLACK_WEBHOOK_URL", &self.webhook)
            .env("PAGERDUTY_ROUTING_KEY", &self.routing_key)
    }

    /// No secret appears anywhere the run wrote: terminal, journal, report.
    fn assert_no_secret_in(&self, run: &Run) {
        let all = run.all_output();
        for secret in [&self.hook_secret, &self.webhook, &self.routing_key] {
            assert!(
                !all.contains(secret.as_str()),
                "secret {secret} leaked:\n{all}"
            );
        }
    }
}

/// The same answer to every request.
fn replay(reply: Reply) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    move |_| reply.clone()
}

fn slack_ok() -> Reply {
    Reply::text(200, "ok")
}

fn pagerduty_accepted() -> Reply {
    Reply::Respond {
        status: 202,
        content_type: "application/json",
        body: r#"{"status":"success","message":"Event processed"}"#.into(),
    }
}

fn platform(pagerduty_url: &str, timeout_secs: u32) -> String {
    format!(
        r#"
[environments.test]
namespace = "tracktion-test"

[environments.test.notify]
slack_webhook_env = "SLACK_WEBHOOK_URL"
pagerduty_routing_key_env = "PAGERDUTY_ROUTING_KEY"
pagerduty_events_url = "{pagerduty_url}/v2/enqueue"
timeout_secs = {timeout_secs}
"#
    )
}

/// What identifies the run in the payloads, read back from its journal.
struct RunFacts {
    id: String,
    host: String,
    operator: String,
    procedure: String,
}

fn facts(run: &Run) -> RunFacts {
    let start = session_start(run);
    let text = |v: &Value| v.as_str().unwrap().to_string();
    RunFacts {
        id: text(&start["run"]),
        host: text(&start["args"]["host"]),
        operator: text(&start["args"]["operator"]),
        procedure: text(&start["args"]["procedure"]),
    }
}

fn context_block(f: &RunFacts) -> Value {
    json!({
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "*Environment:* test"},
            {"type": "mrkdwn", "text": format!("*Run:* `{}`", f.id)},
            {"type": "mrkdwn", "text": format!("*Operator:* {}", f.operator)},
            {"type": "mrkdwn", "text": format!("*Procedure:* {}", f.procedure)},
        ],
    })
}

const CRITICAL_SCRIPT: &str = r#"
let r = notify("analysis-service rolled back to 1.4.2 <blue> & healthy", #{
    severity: "critical",
    title: "Traffic switched back",
    mention: true,
    fields: #{ service: "analysis-service", version: "1.4.2", replicas: 3 },
});
log(`delivered to ${r.delivered.len()} channels`);
notify("analysis-service is healthy again", #{ event: "resolve" });
"#;

fn critical_slack(f: &RunFacts) -> Value {
    json!({
        "text": "<!channel> [CRITICAL] Traffic switched back: analysis-service rolled back to 1.4.2 &lt;blue&gt; &amp; healthy",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": ":rotating_light: Traffic switched back", "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "<!channel> analysis-service rolled back to 1.4.2 &lt;blue&gt; &amp; healthy"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": "*replicas*\n3"},
                {"type": "mrkdwn", "text": "*service*\nanalysis-service"},
                {"type": "mrkdwn", "text": "*version*\n1.4.2"},
            ]},
            context_block(f),
        ],
    })
}

fn critical_pagerduty(f: &RunFacts, routing_key: &str) -> Value {
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": format!("rollback-test-{}", f.id),
        "payload": {
            "summary": "Traffic switched back: analysis-service rolled back to 1.4.2 <blue> & healthy",
            "source": format!("rollback@{}", f.host),
            "severity": "critical",
            "component": f.procedure,
            "group": "test",
            "custom_details": {
                "service": "analysis-service",
                "version": "1.4.2",
                "replicas": 3,
                "message": "analysis-service rolled back to 1.4.2 <blue> & healthy",
                "run_id": f.id,
                "operator": f.operator,
            },
        },
    })
}

#[test]
fn slack_and_pagerduty_get_the_exact_payloads() {
    let channels = Channels::start(slack_ok(), pagerduty_accepted());
    let run = channels.test(10).script(CRITICAL_SCRIPT).run();
    run.success().stderr_has("delivered to 2 channels");
    let f = facts(&run);

    let slack = channels.slack.requests();
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert_eq!(slack[0].method, "POST");
    assert_eq!(
        slack[0].path,
        format!("/services/T0001/B0002/{}", channels.hook_secret)
    );
    assert_eq!(slack[0].header("content-type"), Some("application/json"));
    assert_eq!(slack[0].json(), critical_slack(&f));
    let title = format!("Rollback {} on test", f.procedure);
    assert_eq!(
        slack[1].json(),
        json!({
            "text": format!("[INFO] {title}: analysis-service is healthy again"),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": format!(":information_source: {title}"), "emoji": true}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "analysis-service is healthy again"}},
                context_block(&f),
            ],
        })
    );

    let pagerduty = channels.pagerduty.requests();
    assert_eq!(pagerduty.len(), 2, "{pagerduty:?}");
    assert_eq!(pagerduty[0].path, "/v2/enqueue");
    assert_eq!(
        pagerduty[0].json(),
        critical_pagerduty(&f, &channels.routing_key)
    );
    // The resolve closes what the trigger opened: same dedup key.
    assert_eq!(
        pagerduty[1].json(),
        json!({
            "routing_key": channels.routing_key,
            "event_action": "resolve",
            "dedup_key": format!("rollback-test-{}", f.id),
        })
    );

    assert_eq!(
        journal_result(&run, "notify", 0),
        json!({
            "delivered": ["slack", "pagerduty"],
            "failed": [],
            "skipped": [],
            "dedup_key": format!("rollback-test-{}", f.id),
            "planned": false,
        })
    );
    let report = run.report();
    assert!(
        report.contains(
            "| analysis-service rolled back to 1.4.2 <blue> & healthy | slack, pagerduty |  |  |"
        ),
        "{report}"
    );
    channels.assert_no_secret_in(&run);
}

#[test]
fn failed_deliveries_are_reported_and_the_run_goes_on() {
    // Slack fails and echoes the webhook's secret path; PagerDuty never answers.
    let channels = Channels::start_with(
        |path| replay(Reply::text(500, &format!("internal_error for {path}"))),
        replay(Reply::Hang),
    );
    let run = channels
        .test(1)
        .script(
            r#"
            let r = notify("switching traffic to blue", #{ severity: "error" });
            log(`after notify: ${r.failed.len()} failed, ${r.delivered.len()} delivered`);
            "#,
        )
        .run();
    run.success()
        .stderr_has("after notify: 2 failed, 0 delivered")
        .stderr_has("notification to slack failed: HTTP 500: internal_error for [REDACTED] — the team was not told through slack; tell them by another channel")
        .stderr_has("notification to pagerduty failed: no answer within 1.0s — the team was not told through pagerduty; tell them by another channel");
    assert_eq!(channels.slack.requests().len(), 1);
    assert_eq!(channels.pagerduty.requests().len(), 1);
    let f = facts(&run);
    assert_eq!(
        journal_result(&run, "notify", 0),
        json!({
            "delivered": [],
            "failed": [
                {"channel": "slack", "error": "HTTP 500: internal_error for [REDACTED]"},
                {"channel": "pagerduty", "error": "no answer within 1.0s"},
            ],
            "skipped": [],
            "dedup_key": format!("rollback-test-{}", f.id),
            "planned": false,
        })
    );
    let report = run.report();
    assert!(
        report.contains("| switching traffic to blue |  | slack (HTTP 500: internal_error for [REDACTED]), pagerduty (no answer within 1.0s) |  |"),
        "{report}"
    );
    assert!(
        report.contains("not reached (no first delivered notification)"),
        "{report}"
    );
    channels.assert_no_secret_in(&run);
}

#[test]
fn dry_run_sends_nothing_and_journals_the_payloads() {
    let channels = Channels::start(slack_ok(), pagerduty_accepted());
    let run = channels
        .test(10)
        .script(CRITICAL_SCRIPT)
        .args(["--dry-run"])
        .run();
    run.success()
        .stderr_has("dry-run: notification to slack, pagerduty planned, not sent");
    assert_eq!(channels.slack.requests().len(), 0);
    assert_eq!(channels.pagerduty.requests().len(), 0);
    let f = facts(&run);
    let record = journal_record(&run, "notify", 0);
    assert_eq!(record["outcome"]["status"], "planned");
    let mut pagerduty = critical_pagerduty(&f, "[REDACTED]");
    pagerduty["routing_key"] = json!("[REDACTED]");
    assert_eq!(
        record["args"]["request"],
        json!({
            "slack": {"url": "[REDACTED]", "body": critical_slack(&f)},
            "pagerduty": {"url": format!("{}/v2/enqueue", channels.pagerduty.url()), "body": pagerduty},
        })
    );
    assert_eq!(record["outcome"]["result"]["planned"], true);
    assert!(
        run.report().contains("planned, not sent: slack, pagerduty"),
        "{}",
        run.report()
    );
    channels.assert_no_secret_in(&run);
}

/// Each receiver holds its answer until the other receiver has its request too: sent one
/// after the other, the first would wait for a request that cannot come, and fail.
#[test]
fn channels_are_sent_concurrently() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let meet = |arrived: Arc<AtomicUsize>, reply: Reply| {
        let reply = replay(reply);
        move |request: &Request| {
            arrived.fetch_add(1, Ordering::SeqCst);
            let both = poll(Duration::from_secs(4), || {
                (arrived.load(Ordering::SeqCst) >= 2).then_some(())
            });
            match both {
                Some(()) => reply(request),
                None => Reply::text(503, "the other channel was not contacted meanwhile"),
            }
        }
    };
    let channels = Channels::start_with(
        |_| meet(arrived.clone(), slack_ok()),
        meet(arrived.clone(), pagerduty_accepted()),
    );
    let run = channels
        .test(10)
        .script(r#"notify("rollback started", #{ severity: "critical" });"#)
        .run();
    run.success();
    assert_eq!(
        journal_result(&run, "notify", 0)["delivered"],
        json!(["slack", "pagerduty"])
    );
}

#[test]
fn unconfigured_channels_are_skipped_with_the_reason() {
    let run = Test::new()
        .platform(
            "[environments.test]\nnamespace = \"tracktion-test\"\n[environments.test.notify]\nslack_webhook_env = \"SLACK_WEBHOOK_URL\"\n",
        )
        .script(r#"let r = notify("rollback started", #{ severity: "critical" }); log(`skipped ${r.skipped.len()}`);"#)
        .run();
    run.success()
        .stderr_has("skipped 2")
        .stderr_has("the notification went to no channel of environment 'test'")
        .stderr_has("tell the team by another channel");
    let result = journal_result(&run, "notify", 0);
    assert_eq!(
        result["skipped"],
        json!([
            {"channel": "slack", "reason": "SLACK_WEBHOOK_URL is not set"},
            {"channel": "pagerduty", "reason": "no PagerDuty routing key is configured for environment 'test' (notify.pagerduty_routing_key_env in the platform definition)"},
        ])
    );
    assert!(
        run.report()
            .contains("slack (SLACK_WEBHOOK_URL is not set)"),
        "{}",
        run.report()
    );
}

#[test]
fn info_goes_to_slack_without_paging() {
    let channels = Channels::start(slack_ok(), pagerduty_accepted());
    let run = channels
        .test(10)
        .script(r#"notify("rollback rehearsal finished");"#)
        .run();
    run.success();
    assert_eq!(channels.slack.requests().len(), 1);
    assert_eq!(channels.pagerduty.requests().len(), 0);
    let result = journal_result(&run, "notify", 0);
    assert_eq!(result["delivered"], json!(["slack"]));
    assert_eq!(
        result["skipped"],
        json!([{"channel": "pagerduty", "reason": "severity info does not page (auto pages for error and critical; set event: \"trigger\" to page)"}])
    );
    channels.assert_no_secret_in(&run);
}

#[test]
fn bad_options_are_script_errors() {
    let channels = Channels::start(slack_ok(), pagerduty_accepted());
    let run = channels
        .test(10)
        .script(r#"notify("x", #{ severity: "urgent" });"#)
        .run();
    run.code(2).stderr_has(
        "`notify` failed: unknown severity 'urgent': use info, warning, error or critical",
    );
    let run = channels
        .test(10)
        .script(r#"notify("x", #{ channel: "ops" });"#)
        .run();
    run.code(2).stderr_has("unknown field `channel`");
    let run = channels
        .test(10)
        .script(r#"notify("x", #{ event: "page" });"#)
        .run();
    run.code(2).stderr_has("unknown event 'page'");
    assert_eq!(channels.slack.requests().len(), 0);
}

#[test]
fn docs_show_notify() {
    Test::new()
        .args(["docs", "notify"])
        .run()
        .success()
        .stdout_has(
            "notify(message: string, opts?: #{severity, title, event, dedup_key, mention, fields})",
        );
}

#[test]
fn the_documented_example_runs() {
    let docs = Test::new().args(["docs", "notify"]).run();
    let example = docs
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("example: "))
        .expect("an example")
        .to_string();
    let channels = Channels::start(slack_ok(), pagerduty_accepted());
    let run = channels.test(10).script(&example).run();
    run.success();
    assert_eq!(channels.slack.requests().len(), 1);
    assert_eq!(
        journal_result(&run, "notify", 0)["delivered"],
        json!(["slack"])
    );
}
