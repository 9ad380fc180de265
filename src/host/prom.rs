//! Prometheus: instant queries, the platform's error rate and p95 latency, Pushgateway pushes.
//!
//! The server addresses come from the session's environment (`prometheus_url`,
//! `pushgateway_url`) and the metric names from the platform's `[metrics]`, so procedures never
//! spell either.

pub mod api;
pub mod promql;
mod push;

use super::{Effect, FnDoc, HostError, Registrar, options};
use crate::host::http::describe_request_error;
use crate::session::Session;
use api::Sample;
use push::Number;
use rhai::{Array, Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const QUERY: FnDoc = FnDoc {
    module: Some("prom"),
    name: "query",
    signature: "(promql: string, opts?: #{time, timeout}) -> array of #{metric, value, time}",
    summary: "Runs an instant PromQL query on the environment's Prometheus and returns one entry per series (value is () for NaN or Inf; a scalar gives one entry without labels).",
    example: r#"for s in prom::query("sum by (service) (rate(http_requests_total[5m]))") { log(`${s.metric.service}: ${s.value}`); }"#,
    effect: Effect::Read,
};

const ERROR_RATE: FnDoc = FnDoc {
    module: Some("prom"),
    name: "error_rate",
    signature: "(opts?: #{service, window}) -> #{value, has_data, query}",
    summary: "Returns the percentage of requests answered with a 5xx status over a window (default 5m), for one service or, with no service, all of them.",
    example: r#"let e = prom::error_rate(#{ service: "analysis-service", window: "5m" }); if e.has_data && e.value > 5.0 { log("warn", `error rate ${e.value}%`); }"#,
    effect: Effect::Read,
};

const P95_LATENCY: FnDoc = FnDoc {
    module: Some("prom"),
    name: "p95_latency",
    signature: "(opts?: #{service, window}) -> #{value, has_data, query}",
    summary: "Returns the 95th percentile of request durations in milliseconds over a window (default 5m), for one service or all of them.",
    example: r#"let p = prom::p95_latency(#{ service: "analysis-service" }); if p.has_data && p.value > 500.0 { log("warn", `p95 is ${p.value} ms`); }"#,
    effect: Effect::Read,
};

const ERROR_RATES: FnDoc = FnDoc {
    module: Some("prom"),
    name: "error_rates",
    signature: "(services: array, opts?: #{window}) -> #{service: #{value, has_data, query}}",
    summary: "Returns prom::error_rate for each service from one query grouped by service, so its time does not grow with the platform; a service without requests has has_data false.",
    example: r#"let rates = prom::error_rates(["analysis-service", "file-watcher"], #{ window: "2m" }); for name in rates.keys() { if rates[name].value > 5.0 { log("warn", `${name}: ${rates[name].value}%`); } }"#,
    effect: Effect::Read,
};

const P95_LATENCIES: FnDoc = FnDoc {
    module: Some("prom"),
    name: "p95_latencies",
    signature: "(services: array, opts?: #{window}) -> #{service: #{value, has_data, query}}",
    summary: "Returns prom::p95_latency for each service from one query grouped by service; a service without requests has has_data false.",
    example: r#"let p95 = prom::p95_latencies(["analysis-service"]); if p95["analysis-service"].value > 500.0 { log("warn", "slow"); }"#,
    effect: Effect::Read,
};

const PUSH: FnDoc = FnDoc {
    module: Some("prom"),
    name: "push",
    signature: "(job: string, metrics: map, opts?: #{labels, timeout}) -> #{url, job, metrics}",
    summary: "Pushes numbers to the environment's Pushgateway under a job and grouping labels, replacing the metrics of the same names in that group.",
    example: r#"prom::push("rollback", #{ rollback_last_success_timestamp_seconds: 1700000000 }, #{ labels: #{ service: "analysis-service" } });"#,
    effect: Effect::Mutate,
};

/// Seconds a query or push may take unless the script says otherwise.
const DEFAULT_TIMEOUT_SECS: f64 = 10.0;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct QueryOptions {
    /// Evaluation time, RFC 3339 or Unix seconds; empty means now.
    time: String,
    #[serde(deserialize_with = "options::number")]
    timeout: f64,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            time: String::new(),
            timeout: DEFAULT_TIMEOUT_SECS,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct SliOptions {
    /// Empty means every service.
    service: String,
    window: String,
}

impl Default for SliOptions {
    fn default() -> Self {
        SliOptions {
            service: String::new(),
            window: "5m".into(),
        }
    }
}

/// The options of the many-service forms: the services are an argument.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct WindowOptions {
    window: String,
}

impl Default for WindowOptions {
    fn default() -> Self {
        WindowOptions {
            window: SliOptions::default().window,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct PushOptions {
    /// Grouping labels; numbers and booleans are written as text.
    labels: BTreeMap<String, Value>,
    #[serde(deserialize_with = "options::number")]
    timeout: f64,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            labels: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT_SECS,
        }
    }
}

/// An error rate or a latency: `has_data` is false when Prometheus has no samples to say.
#[derive(Debug, Clone, Serialize)]
struct Indicator {
    value: f64,
    has_data: bool,
    query: String,
}

#[derive(Debug, Clone, Serialize)]
struct PushResult {
    url: String,
    job: String,
    metrics: usize,
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&QUERY, move |promql: &str| query(&s, promql, Map::new()));
    let s = session.clone();
    r.func(&QUERY, move |promql: &str, opts: Map| {
        query(&s, promql, opts)
    });

    let s = session.clone();
    r.func(&ERROR_RATE, move || indicator(&s, &ERROR_RATE, Map::new()));
    let s = session.clone();
    r.func(&ERROR_RATE, move |opts: Map| {
        indicator(&s, &ERROR_RATE, opts)
    });

    let s = session.clone();
    r.func(&P95_LATENCY, move || {
        indicator(&s, &P95_LATENCY, Map::new())
    });
    let s = session.clone();
    r.func(&P95_LATENCY, move |opts: Map| {
        indicator(&s, &P95_LATENCY, opts)
    });

    for doc in [&ERROR_RATES, &P95_LATENCIES] {
        let s = session.clone();
        r.func(doc, move |services: Array| {
            indicators(&s, doc, services, Map::new())
        });
        let s = session.clone();
        r.func(doc, move |services: Array, opts: Map| {
            indicators(&s, doc, services, opts)
        });
    }

    let s = session.clone();
    r.func(&PUSH, move |job: &str, metrics: Map| {
        push(&s, job, metrics, Map::new())
    });
    let s = session.clone();
    r.func(&PUSH, move |job: &str, metrics: Map, opts: Map| {
        push(&s, job, metrics, opts)
    });
}

/// The environment's Prometheus, or an error telling where to configure it.
fn prometheus_url(session: &Session) -> Result<String, HostError> {
    configured_url(
        session,
        session.env_config().prometheus_url.as_deref(),
        "prometheus_url",
        "http://prometheus:9090",
    )
}

fn configured_url(
    session: &Session,
    value: Option<&str>,
    key: &str,
    example: &str,
) -> Result<String, HostError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(url) => Ok(url.to_string()),
        None => {
            let env = session.environment();
            Err(HostError::Invalid(format!(
                "environment '{env}' has no {key}: add it to the platform definition ([environments.{env}] {key} = \"{example}\")"
            )))
        }
    }
}

fn query(session: &Session, promql: &str, opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = "prom::query";
    let prepared = (|| -> Result<_, HostError> {
        let o: QueryOptions = options::parse(f, opts)?;
        let timeout = options::timeout(f, o.timeout)?;
        if promql.trim().is_empty() {
            return Err(HostError::Invalid("the query is empty".into()));
        }
        Ok((o, timeout, prometheus_url(session)?))
    })();
    let (o, timeout, base) = prepared.map_err(|e| e.into_rhai(f))?;
    let client = session.http();
    let promql = promql.to_string();
    let args = json!({"promql": promql, "opts": o});
    session.read(f, args, async move {
        api::instant_query(&client, &base, &promql, &o.time, timeout).await
    })
}

/// `prom::error_rate` and `prom::p95_latency`: one query, one number.
fn indicator(session: &Session, doc: &FnDoc, opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = doc.qualified_name();
    let prepared = (|| -> Result<_, HostError> {
        let o: SliOptions = options::parse(&f, opts)?;
        let metrics = &session.platform.metrics;
        let promql = if doc.name == ERROR_RATE.name {
            promql::error_rate(metrics, &o.service, &o.window)?
        } else {
            promql::p95_latency(metrics, &o.service, &o.window)?
        };
        Ok((o, promql, prometheus_url(session)?))
    })();
    let (o, promql, base) = prepared.map_err(|e| e.into_rhai(&f))?;
    let client = session.http();
    let timeout = Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS);
    session.read(&f, json!({"opts": o}), async move {
        let samples = api::instant_query(&client, &base, &promql, "", timeout).await?;
        Ok(first_value(samples, promql.clone()))
    })
}

/// `prom::error_rates` and `prom::p95_latencies`: one query grouped by service, one number
/// per service.
fn indicators(
    session: &Session,
    doc: &FnDoc,
    services: Array,
    opts: Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = doc.qualified_name();
    let prepared = (|| -> Result<_, HostError> {
        let o: WindowOptions = options::parse(&f, opts)?;
        let names = options::strings(services, "service")?;
        let metrics = &session.platform.metrics;
        let promql = if doc.name == ERROR_RATES.name {
            promql::error_rates(metrics, &names, &o.window)?
        } else {
            promql::p95_latencies(metrics, &names, &o.window)?
        };
        Ok((o, names, promql, prometheus_url(session)?))
    })();
    let (o, names, promql, base) = prepared.map_err(|e| e.into_rhai(&f))?;
    let client = session.http();
    let label = session.platform.metrics.service_label.clone();
    let args = json!({"services": names, "opts": o});
    let timeout = Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS);
    session.read(&f, args, async move {
        let samples = api::instant_query(&client, &base, &promql, "", timeout).await?;
        Ok(by_service(&names, samples, &label, &promql))
    })
}

/// Each requested service's value among `samples`, or no data when it has no series.
fn by_service(
    names: &[String],
    samples: Vec<Sample>,
    label: &str,
    query: &str,
) -> BTreeMap<String, Indicator> {
    let mut values: BTreeMap<String, Option<f64>> = BTreeMap::new();
    for sample in samples {
        if let Some(service) = sample.metric.get(label) {
            values.entry(service.clone()).or_insert(sample.value);
        }
    }
    names
        .iter()
        .map(|name| {
            let value = values.get(name).copied().flatten();
            (name.clone(), indicator_of(value, query.to_string()))
        })
        .collect()
}

/// No series, or NaN (0/0 when nothing was requested), means there is nothing to judge by.
fn first_value(samples: Vec<Sample>, query: String) -> Indicator {
    indicator_of(samples.first().and_then(|s| s.value), query)
}

fn indicator_of(value: Option<f64>, query: String) -> Indicator {
    match value {
        Some(value) => Indicator {
            value,
            has_data: true,
            query,
        },
        None => Indicator {
            value: 0.0,
            has_data: false,
            query,
        },
    }
}

fn push(
    session: &Session,
    job: &str,
    metrics: Map,
    opts: Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = "prom::push";
    let prepared = (|| -> Result<_, HostError> {
        let o: PushOptions = options::parse(f, opts)?;
        let timeout = options::timeout(f, o.timeout)?;
        let labels = label_texts(&o.labels)?;
        let numbers = metric_numbers(&metrics)?;
        let base = configured_url(
            session,
            session.env_config().pushgateway_url.as_deref(),
            "pushgateway_url",
            "http://pushgateway:9091",
        )?;
        let request = push::build(&base, job, &labels, &numbers)?;
        Ok((o, timeout, base, request, numbers.len()))
    })();
    let (o, timeout, base, request, count) = prepared.map_err(|e| e.into_rhai(f))?;
    let args = json!({"job": job, "metrics": crate::host::dynamic_to_json(&Dynamic::from_map(metrics)), "opts": o});
    let planned_request = json!({
        "method": "POST",
        "url": request.url.as_str(),
        "content_type": push::CONTENT_TYPE,
        "body": request.body,
    });
    let result = PushResult {
        url: request.url.to_string(),
        job: job.to_string(),
        metrics: count,
    };
    let planned = result.clone();
    let client = session.http();
    session.mutate(f, args, planned_request, move || planned, async move {
        let response = client
            .post(request.url)
            .header(reqwest::header::CONTENT_TYPE, push::CONTENT_TYPE)
            .body(request.body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                HostError::Failed(format!(
                    "cannot reach the Pushgateway at {base}: {} — check pushgateway_url and that the Pushgateway is up",
                    describe_request_error(&e.without_url(), timeout)
                ))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(result);
        }
        let text = response.text().await.unwrap_or_default();
        let hint = if status == reqwest::StatusCode::BAD_REQUEST {
            "the metrics clash with what the group already holds (a name with another type?)"
        } else {
            "check pushgateway_url and the Pushgateway's log"
        };
        Err(HostError::Failed(format!(
            "the Pushgateway at {base} answered HTTP {}: {} — {hint}",
            status.as_u16(),
            text.trim().chars().take(300).collect::<String>()
        )))
    })
}

fn label_texts(labels: &BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, HostError> {
    labels
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(HostError::Invalid(format!(
                        "label '{name}' must be a string or a number, not {other}"
                    )));
                }
            };
            Ok((name.clone(), text))
        })
        .collect()
}

fn metric_numbers(metrics: &Map) -> Result<BTreeMap<String, Number>, HostError> {
    metrics
        .iter()
        .map(|(name, value)| {
            let number = if let Ok(i) = value.as_int() {
                Number::Int(i)
            } else if let Ok(f) = value.as_float() {
                Number::Float(f)
            } else {
                return Err(HostError::Invalid(format!(
                    "metric '{name}' must be a number, not a {}",
                    value.type_name()
                )));
            };
            Ok((name.to_string(), number))
        })
        .collect()
}
