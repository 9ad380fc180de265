//! HTTP health checks: one URL, or many at once (concurrently, inside one call).

use super::{Effect, FnDoc, HostError, Registrar, options};
use crate::session::Session;
use futures::StreamExt;
use rhai::{Array, Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEALTH_CHECK: FnDoc = FnDoc {
    module: None,
    name: "health_check",
    signature: "(url: string, opts?: #{timeout, retries, backoff, expect_status, max_latency_ms, expect_body}) -> #{url, ok, status, latency_ms, attempts, error}",
    summary: "Checks one HTTP endpoint with a timeout, retries with backoff, the expected status and an optional latency limit.",
    example: r#"let h = health_check("http://127.0.0.1:8080/health", #{ timeout: 2, retries: 3 }); if !h.ok { log("warn", h.error); }"#,
    effect: Effect::Read,
};

const HEALTH_CHECK_ALL: FnDoc = FnDoc {
    module: None,
    name: "health_check_all",
    signature: "(urls: array, opts?: map) -> array of #{url, ok, status, latency_ms, attempts, error}",
    summary: "Checks many HTTP endpoints concurrently with the options of health_check, returning results in the order given.",
    example: r#"let results = health_check_all(["http://127.0.0.1:8080/health", "http://127.0.0.1:8081/health"]); let healthy = results.filter(|r| r.ok).len();"#,
    effect: Effect::Read,
};

/// At most this many checks are in flight at once, so a long list cannot exhaust sockets.
const MAX_CONCURRENT_CHECKS: usize = 128;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthOptions {
    /// Seconds for each attempt.
    #[serde(deserialize_with = "options::number")]
    pub timeout: f64,
    /// Attempts after the first one.
    pub retries: i64,
    /// Seconds before the first retry; doubled after each, at most 10 s.
    #[serde(deserialize_with = "options::number")]
    pub backoff: f64,
    pub expect_status: i64,
    /// A response slower than this is a failed attempt; 0 means no limit.
    #[serde(deserialize_with = "options::number")]
    pub max_latency_ms: f64,
    /// Text the body must contain; empty means any body.
    pub expect_body: String,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            timeout: 5.0,
            retries: 2,
            backoff: 0.5,
            expect_status: 200,
            max_latency_ms: 0.0,
            expect_body: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthResult {
    pub url: String,
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub attempts: i64,
    pub error: Option<String>,
}

/// The checked form of the options, built before any request is sent.
#[derive(Debug, Clone)]
struct Plan {
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    expect_status: u16,
    max_latency_ms: f64,
    expect_body: String,
}

fn plan(function: &str, opts: Map) -> Result<(HealthOptions, Plan), HostError> {
    let o: HealthOptions = options::parse(function, opts)?;
    let invalid = |what: &str| HostError::Invalid(what.to_string());
    if !(0..=20).contains(&o.retries) {
        return Err(invalid("retries must be between 0 and 20"));
    }
    if !(100..=599).contains(&o.expect_status) {
        return Err(invalid(
            "expect_status must be an HTTP status code (100-599)",
        ));
    }
    if o.timeout <= 0.0 {
        return Err(invalid("timeout must be more than 0 seconds"));
    }
    let plan = Plan {
        timeout: options::seconds(function, "timeout", o.timeout)?,
        retries: o.retries as u32,
        backoff: options::seconds(function, "backoff", o.backoff)?,
        expect_status: o.expect_status as u16,
        max_latency_ms: o.max_latency_ms,
        expect_body: o.expect_body.clone(),
    };
    Ok((o, plan))
}

/// A URL the client can use, or an error that says what is wrong with it.
pub fn parse_http_url(url: &str) -> Result<reqwest::Url, HostError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        HostError::Invalid(format!(
            "'{url}' is not a valid URL ({e}); write it as http://host:port/path"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(HostError::Invalid(format!(
            "'{url}' is not an http or https URL"
        )));
    }
    Ok(parsed)
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&HEALTH_CHECK, move |url: &str| {
        check_one(&s, url, Map::new())
    });
    let s = session.clone();
    r.func(&HEALTH_CHECK, move |url: &str, opts: Map| {
        check_one(&s, url, opts)
    });
    let s = session.clone();
    r.func(&HEALTH_CHECK_ALL, move |urls: Array| {
        check_all(&s, urls, Map::new())
    });
    let s = session.clone();
    r.func(&HEALTH_CHECK_ALL, move |urls: Array, opts: Map| {
        check_all(&s, urls, opts)
    });
}

fn check_one(session: &Session, url: &str, opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = HEALTH_CHECK.name;
    let (options, plan) = plan(f, opts).map_err(|e| e.into_rhai(f))?;
    let target = parse_http_url(url).map_err(|e| e.into_rhai(f))?;
    let client = session.http();
    let display = url.to_string();
    session.read(f, json!({"url": url, "opts": options}), async move {
        Ok(probe(&client, target, display, &plan).await)
    })
}

fn check_all(session: &Session, urls: Array, opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = HEALTH_CHECK_ALL.name;
    let (options, plan) = plan(f, opts).map_err(|e| e.into_rhai(f))?;
    let mut targets = Vec::with_capacity(urls.len());
    for url in &urls {
        let text = url.clone().into_string().map_err(|t| {
            HostError::Invalid(format!("every URL must be a string, found a {t}")).into_rhai(f)
        })?;
        targets.push((parse_http_url(&text).map_err(|e| e.into_rhai(f))?, text));
    }
    let client = session.http();
    let shown: Vec<&String> = targets.iter().map(|(_, t)| t).collect();
    let args = json!({"urls": shown, "opts": options});
    session.read(f, args, async move {
        let results: Vec<HealthResult> = futures::stream::iter(targets)
            .map(|(target, text)| {
                let client = client.clone();
                let plan = plan.clone();
                async move { probe(&client, target, text, &plan).await }
            })
            .buffered(MAX_CONCURRENT_CHECKS)
            .collect()
            .await;
        Ok(results)
    })
}

/// Tries until an attempt passes or the retries are used up; never fails, it reports.
async fn probe(
    client: &reqwest::Client,
    url: reqwest::Url,
    shown: String,
    plan: &Plan,
) -> HealthResult {
    let mut backoff = plan.backoff;
    let mut last = HealthResult {
        url: shown,
        ok: false,
        status: None,
        latency_ms: 0.0,
        attempts: 0,
        error: None,
    };
    for attempt in 1..=plan.retries + 1 {
        if attempt > 1 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        last.attempts = attempt as i64;
        let started = Instant::now();
        let response = client.get(url.clone()).timeout(plan.timeout).send().await;
        match response {
            Err(e) => {
                last.latency_ms = ms(started);
                last.status = None;
                last.error = Some(describe_request_error(&e, plan.timeout));
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = if plan.expect_body.is_empty() {
                    String::new()
                } else {
                    resp.text().await.unwrap_or_default()
                };
                last.latency_ms = ms(started);
                last.status = Some(status);
                last.error = if status != plan.expect_status {
                    Some(format!("HTTP {status}, expected {}", plan.expect_status))
                } else if plan.max_latency_ms > 0.0 && last.latency_ms > plan.max_latency_ms {
                    Some(format!(
                        "answered in {:.0} ms, above the {:.0} ms limit",
                        last.latency_ms, plan.max_latency_ms
                    ))
                } else if !plan.expect_body.is_empty() && !body.contains(&plan.expect_body) {
                    Some(format!("the body does not contain '{}'", plan.expect_body))
                } else {
                    None
                };
            }
        }
        last.ok = last.error.is_none();
        if last.ok {
            break;
        }
    }
    last
}

fn ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// reqwest's errors, in words an operator can act on.
pub fn describe_request_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!(
            "no answer within {}",
            crate::timefmt::format_duration(timeout)
        )
    } else if e.is_connect() {
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        format!("cannot connect: {cause}")
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    }
}
