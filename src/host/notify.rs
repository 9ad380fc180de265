//! `notify`: one message to every channel the environment configures (Slack, PagerDuty), sent
//! at once. A channel that fails never stops the procedure: the failure is in the result, the
//! journal and the report, and the operator is told to reach the team another way.
//!
//! Channel secrets (the webhook URL, the routing key) are read from the variables the platform
//! names and registered for redaction as they are read.

mod pagerduty;
mod slack;

use super::{Effect, FnDoc, HostError, Registrar, options};
use crate::console;
use crate::host::http::describe_request_error;
use crate::platform::Notify as NotifyConfig;
use crate::session::Session;
use pagerduty::Action;
use rhai::{Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const NOTIFY: FnDoc = FnDoc {
    module: None,
    name: "notify",
    signature: "(message: string, opts?: #{severity, title, event, dedup_key, mention, fields}) -> #{delivered, failed, skipped, dedup_key}",
    summary: "Sends a message to the environment's Slack and PagerDuty at once; a failed delivery is listed in the result and the run goes on.",
    example: r#"let r = notify("analysis-service rolled back to 1.4.2", #{ severity: "warning", fields: #{ service: "analysis-service" } }); if r.failed.len() > 0 { log("warn", "call the team"); }"#,
    effect: Effect::Mutate,
};

const DEFAULT_TIMEOUT_SECS: f64 = 10.0;
/// PagerDuty's limit on `dedup_key`.
const DEDUP_KEY_MAX: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    fn parse(text: &str) -> Result<Severity, HostError> {
        match text {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            "critical" => Ok(Severity::Critical),
            other => Err(HostError::Invalid(format!(
                "unknown severity '{other}': use info, warning, error or critical"
            ))),
        }
    }

    /// Also PagerDuty's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// Who sends, from where: shown with every message so it can be traced to the journal.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub environment: String,
    pub run_id: String,
    pub operator: String,
    pub procedure: String,
    pub host: String,
}

/// A message with its options checked.
pub struct Notice<'a> {
    pub message: &'a str,
    pub title: String,
    pub severity: Severity,
    pub mention: bool,
    pub fields: BTreeMap<String, Value>,
    pub context: &'a RunContext,
}

/// A field as people read it: strings as they are, anything else as JSON.
pub fn field_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct NotifyOptions {
    severity: String,
    /// Empty: "Rollback <procedure> on <environment>".
    title: String,
    /// auto, trigger, resolve or none: what PagerDuty is asked to do.
    event: String,
    /// Empty: `rollback-<environment>-<run id>`, so a run resolves what it triggered.
    dedup_key: String,
    /// Slack `<!channel>`.
    mention: bool,
    fields: BTreeMap<String, Value>,
}

impl Default for NotifyOptions {
    fn default() -> Self {
        NotifyOptions {
            severity: "info".into(),
            title: String::new(),
            event: "auto".into(),
            dedup_key: String::new(),
            mention: false,
            fields: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Failure {
    channel: String,
    error: String,
}

#[derive(Debug, Clone, Serialize)]
struct Skipped {
    channel: String,
    reason: String,
}

#[derive(Debug, Clone, Serialize)]
struct NotifyResult {
    delivered: Vec<String>,
    failed: Vec<Failure>,
    skipped: Vec<Skipped>,
    dedup_key: String,
}

/// One request ready to send.
struct Delivery {
    channel: &'static str,
    url: reqwest::Url,
    body: Value,
}

/// Everything decided before sending: what goes where, and what will not go and why.
struct Plan {
    deliveries: Vec<Delivery>,
    failed: Vec<Failure>,
    skipped: Vec<Skipped>,
    dedup_key: String,
    timeout: Duration,
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&NOTIFY, move |message: &str| {
        notify(&s, message, Map::new())
    });
    let s = session.clone();
    r.func(&NOTIFY, move |message: &str, opts: Map| {
        notify(&s, message, opts)
    });
}

fn notify(session: &Session, message: &str, opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = NOTIFY.name;
    let parsed: NotifyOptions = options::parse(f, opts).map_err(|e| e.into_rhai(f))?;
    let plan = plan(session, message, &parsed).map_err(|e| e.into_rhai(f))?;
    let request: serde_json::Map<String, Value> = plan
        .deliveries
        .iter()
        .map(|d| {
            (
                d.channel.to_string(),
                json!({"url": d.url.as_str(), "body": d.body}),
            )
        })
        .collect();
    let channels: Vec<String> = plan.deliveries.iter().map(|d| d.channel.into()).collect();
    let planned = NotifyResult {
        delivered: channels.clone(),
        failed: plan.failed.clone(),
        skipped: plan.skipped.clone(),
        dedup_key: plan.dedup_key.clone(),
    };
    if session.dry_run() {
        if !channels.is_empty() {
            console::info(&format!(
                "dry-run: notification to {} planned, not sent",
                channels.join(", ")
            ));
        }
        warn_undelivered(&planned, &session.environment());
    }
    let args = json!({"message": message, "opts": parsed});
    let client = session.http();
    let environment = session.environment();
    session.mutate(
        f,
        args,
        Value::Object(request),
        move || planned,
        async move {
            let result = send(&client, plan).await;
            if !result.delivered.is_empty() {
                console::info(&format!("notified {}", result.delivered.join(", ")));
            }
            warn_undelivered(&result, &environment);
            Ok(result)
        },
    )
}

fn plan(session: &Session, message: &str, o: &NotifyOptions) -> Result<Plan, HostError> {
    if message.trim().is_empty() {
        return Err(HostError::Invalid(
            "the message is empty: say what happened".into(),
        ));
    }
    let severity = Severity::parse(&o.severity)?;
    let action = match o.event.as_str() {
        "auto" => {
            matches!(severity, Severity::Error | Severity::Critical).then_some(Action::Trigger)
        }
        "trigger" => Some(Action::Trigger),
        "resolve" => Some(Action::Resolve),
        "none" => None,
        other => {
            return Err(HostError::Invalid(format!(
                "unknown event '{other}': use auto, trigger, resolve or none"
            )));
        }
    };
    let environment = session.environment();
    let config = &session.env_config().notify;
    let timeout = config.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(HostError::Invalid(format!(
            "notify.timeout_secs of environment '{environment}' must be more than 0 seconds; fix the platform definition"
        )));
    }
    let dedup_key = if o.dedup_key.is_empty() {
        format!("rollback-{environment}-{}", session.id)
    } else {
        o.dedup_key.clone()
    };
    if dedup_key.len() > DEDUP_KEY_MAX {
        return Err(HostError::Invalid(format!(
            "dedup_key is longer than PagerDuty's {DEDUP_KEY_MAX} characters"
        )));
    }
    let context = RunContext {
        environment: environment.clone(),
        run_id: session.id.clone(),
        operator: session.operator.clone(),
        procedure: session.procedure.clone(),
        host: session.host.clone(),
    };
    let notice = Notice {
        message,
        title: if o.title.is_empty() {
            format!("Rollback {} on {environment}", session.procedure)
        } else {
            o.title.clone()
        },
        severity,
        mention: o.mention,
        fields: o.fields.clone(),
        context: &context,
    };
    let mut plan = Plan {
        deliveries: Vec::new(),
        failed: Vec::new(),
        skipped: Vec::new(),
        dedup_key,
        timeout: Duration::from_secs_f64(timeout),
    };

    plan.add_slack(config, &notice);
    plan.add_pagerduty(config, &notice, action, &o.event);
    Ok(plan)
}

impl Plan {
    fn add_slack(&mut self, config: &NotifyConfig, notice: &Notice) {
        let environment = &notice.context.environment;
        let (var, webhook) = match secret(
            &config.slack_webhook_env,
            "Slack webhook",
            "slack_webhook_env",
            environment,
        ) {
            Ok(found) => found,
            Err(reason) => return self.skip("slack", reason),
        };
        let Some(url) = http_url(&webhook) else {
            return self.fail(
                "slack",
                format!(
                    "{var} does not hold an http(s) URL; set it to the Slack incoming-webhook URL"
                ),
            );
        };
        // The path is the webhook's secret part: mask it wherever it shows up on its own.
        crate::redact::register(url.as_str());
        crate::redact::register(url.path());
        self.deliveries.push(Delivery {
            channel: "slack",
            url,
            body: slack::payload(notice),
        });
    }

    /// PagerDuty is paged for errors (or when asked); the key is read even when it is not,
    /// so a missing key shows up in the result before the day it is needed.
    fn add_pagerduty(
        &mut self,
        config: &NotifyConfig,
        notice: &Notice,
        action: Option<Action>,
        event: &str,
    ) {
        let key = secret(
            &config.pagerduty_routing_key_env,
            "PagerDuty routing key",
            "pagerduty_routing_key_env",
            &notice.context.environment,
        );
        let (routing_key, action) = match (key, action) {
            (Err(reason), _) => return self.skip("pagerduty", reason),
            (Ok(_), None) if event == "none" => {
                return self.skip("pagerduty", "event is \"none\"".into());
            }
            (Ok(_), None) => {
                return self.skip(
                    "pagerduty",
                    format!(
                        "severity {} does not page (auto pages for error and critical; set event: \"trigger\" to page)",
                        notice.severity.name()
                    ),
                );
            }
            (Ok((_, routing_key)), Some(action)) => (routing_key, action),
        };
        let events_url = config
            .pagerduty_events_url
            .as_deref()
            .unwrap_or(crate::platform::DEFAULT_PAGERDUTY_EVENTS_URL);
        let Some(url) = http_url(events_url) else {
            return self.fail(
                "pagerduty",
                format!("notify.pagerduty_events_url '{events_url}' is not an http(s) URL; fix the platform definition"),
            );
        };
        let body = pagerduty::payload(notice, action, &routing_key, &self.dedup_key);
        self.deliveries.push(Delivery {
            channel: "pagerduty",
            url,
            body,
        });
    }

    fn skip(&mut self, channel: &str, reason: String) {
        self.skipped.push(Skipped {
            channel: channel.into(),
            reason,
        });
    }

    fn fail(&mut self, channel: &str, error: String) {
        self.failed.push(Failure {
            channel: channel.into(),
            error,
        });
    }
}

/// The secret in the variable `var` names, registered for redaction; or why there is none.
fn secret(
    var: &Option<String>,
    what: &str,
    key: &str,
    environment: &str,
) -> Result<(String, String), String> {
    let Some(var) = var else {
        return Err(format!(
            "no {what} is configured for environment '{environment}' (notify.{key} in the platform definition)"
        ));
    };
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => {
            crate::redact::register(&value);
            crate::redact::register_url_password(&value);
            Ok((var.clone(), value.trim().to_string()))
        }
        _ => Err(format!("{var} is not set")),
    }
}

fn http_url(text: &str) -> Option<reqwest::Url> {
    reqwest::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

/// Sends every delivery concurrently; each ends delivered or failed, never as an error.
async fn send(client: &reqwest::Client, plan: Plan) -> NotifyResult {
    let timeout = plan.timeout;
    let outcomes = futures::future::join_all(
        plan.deliveries
            .into_iter()
            .map(|d| async move { (d.channel, deliver(client, d.url, &d.body, timeout).await) }),
    )
    .await;
    let mut result = NotifyResult {
        delivered: Vec::new(),
        failed: plan.failed,
        skipped: plan.skipped,
        dedup_key: plan.dedup_key,
    };
    for (channel, outcome) in outcomes {
        match outcome {
            Ok(()) => result.delivered.push(channel.into()),
            Err(error) => result.failed.push(Failure {
                channel: channel.into(),
                error,
            }),
        }
    }
    result
}

/// Slack answers 200 "ok", PagerDuty 202: any 2xx is delivered.
async fn deliver(
    client: &reqwest::Client,
    url: reqwest::Url,
    body: &Value,
    timeout: Duration,
) -> Result<(), String> {
    let response = client
        .post(url)
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| describe_request_error(&e.without_url(), timeout))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let text = slack::truncate(text.trim(), 200);
    Err(if text.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {}: {text}", status.as_u16())
    })
}

/// Tells the operator, on the terminal, about every channel the message did not reach.
fn warn_undelivered(result: &NotifyResult, environment: &str) {
    for f in &result.failed {
        console::warn(&format!(
            "notification to {} failed: {} — the team was not told through {}; tell them by another channel",
            f.channel, f.error, f.channel
        ));
    }
    if result.delivered.is_empty() && result.failed.is_empty() {
        let reasons: Vec<String> = result
            .skipped
            .iter()
            .map(|s| format!("{}: {}", s.channel, s.reason))
            .collect();
        console::warn(&format!(
            "the notification went to no channel of environment '{environment}' ({}) — tell the team by another channel",
            reasons.join("; ")
        ));
    }
}
