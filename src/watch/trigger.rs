//! Rollback triggers: which condition, held for how long, starts which procedure.
//!
//! Declared in the platform definition (`[[triggers]]` for every environment, or
//! `[[environments.X.triggers]]` to replace them for one); without any, the runbook's
//! immediate triggers apply (see `defaults`).

use crate::host::prom::promql;
use crate::platform::{Metrics, Platform};
use crate::timefmt::parse_duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The procedure a trigger runs when it names none: the fastest way back to a known state.
pub const DEFAULT_PROCEDURE: &str = "emergency";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Percentage of requests answered 5xx over `window`.
    ErrorRate,
    /// 95th percentile latency over `window`, in milliseconds.
    P95Latency,
    /// p95 latency now divided by p95 latency `baseline` ago (1d by default).
    LatencyRatio,
    /// Requests per second answered without a 5xx; fires at or below `threshold` (0).
    ServiceDown,
    /// Any PromQL (`query`); `{service}` in it becomes each service's name, quoted.
    Promql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Comparison {
    #[serde(rename = ">")]
    Above,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<")]
    Below,
    #[serde(rename = "<=")]
    AtMost,
}

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
        }
    }
}

/// One `[[triggers]]` table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub name: String,
    pub metric: Metric,
    /// The PromQL of a `promql` trigger.
    #[serde(default)]
    pub query: Option<String>,
    pub threshold: f64,
    /// How the value compares with the threshold; `<=` for service_down, `>` otherwise.
    #[serde(default)]
    pub comparison: Option<Comparison>,
    /// How long the condition must hold without a break (`5m`, `3s`).
    pub sustained: String,
    /// Prometheus rate window of the built-in metrics.
    #[serde(default = "default_window")]
    pub window: String,
    /// How far back the baseline of `latency_ratio` is taken.
    #[serde(default = "default_baseline")]
    pub baseline: String,
    /// Services watched, each on its own; empty: every critical service of the platform.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default = "default_procedure")]
    pub procedure: String,
    /// The procedure's parameters; in a value, `{service}` becomes the affected service and
    /// `{trigger}` this trigger's name.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// The Alertmanager alert name that fires this trigger at once (default: `name`).
    #[serde(default)]
    pub alertname: Option<String>,
}

fn default_window() -> String {
    "1m".into()
}
fn default_baseline() -> String {
    "1d".into()
}
fn default_procedure() -> String {
    DEFAULT_PROCEDURE.into()
}

/// The runbook's "Immediate Rollback Triggers" with numbers an evaluator can check. They pass
/// `force` to `emergency`: the trigger has already judged the incident severe enough.
pub const DEFAULTS: &str = r#"
[[triggers]]
name = "service-unavailable"
metric = "service_down"
threshold = 0
sustained = "5m"
params = { reason = "{service} answered no request for 5 minutes (trigger {trigger})", force = true }

[[triggers]]
name = "high-error-rate"
metric = "error_rate"
threshold = 5
sustained = "5m"
params = { reason = "{service} error rate above 5% for 5 minutes (trigger {trigger})", force = true }

[[triggers]]
name = "slow-responses"
metric = "latency_ratio"
threshold = 3
sustained = "10m"
window = "5m"
params = { reason = "{service} p95 latency above 3x its baseline for 10 minutes (trigger {trigger})", force = true }
"#;

#[derive(Deserialize)]
struct DefaultsFile {
    triggers: Vec<Trigger>,
}

pub fn defaults() -> Vec<Trigger> {
    toml::from_str::<DefaultsFile>(DEFAULTS)
        .expect("the built-in triggers parse")
        .triggers
}

impl Trigger {
    pub fn comparison(&self) -> Comparison {
        self.comparison.unwrap_or(match self.metric {
            Metric::ServiceDown => Comparison::AtMost,
            _ => Comparison::Above,
        })
    }

    pub fn sustained(&self) -> Duration {
        parse_duration(&self.sustained).unwrap_or_default()
    }

    pub fn alertname(&self) -> &str {
        self.alertname.as_deref().unwrap_or(&self.name)
    }

    /// `error_rate > 5 for 5m`.
    pub fn condition(&self) -> String {
        format!(
            "{} {} {} for {}",
            self.metric_name(),
            self.comparison().symbol(),
            self.threshold,
            self.sustained
        )
    }

    pub fn metric_name(&self) -> &'static str {
        match self.metric {
            Metric::ErrorRate => "error_rate",
            Metric::P95Latency => "p95_latency",
            Metric::LatencyRatio => "latency_ratio",
            Metric::ServiceDown => "service_down",
            Metric::Promql => "promql",
        }
    }

    /// The services this trigger watches separately; `[""]` for a query about no service.
    pub fn targets(&self, platform: &Platform) -> Vec<String> {
        if !self.services.is_empty() {
            return self.services.clone();
        }
        if self.metric == Metric::Promql
            && !self
                .query
                .as_deref()
                .unwrap_or_default()
                .contains("{service}")
        {
            return vec![String::new()];
        }
        platform
            .services
            .iter()
            .filter(|(_, s)| s.critical)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The PromQL whose first sample is this trigger's value for `service`.
    pub fn query(&self, metrics: &Metrics, service: &str) -> Result<String, String> {
        let built = match self.metric {
            Metric::ErrorRate => promql::error_rate(metrics, service, &self.window),
            Metric::P95Latency => promql::p95_latency(metrics, service, &self.window),
            Metric::LatencyRatio => {
                promql::check_window(&self.baseline).map_err(|e| e.to_string())?;
                promql::p95_latency(metrics, service, &self.window)
                    .map(|now| format!("({now}) / ({now} offset {})", self.baseline))
            }
            Metric::ServiceDown => promql::check_window(&self.window).map(|()| {
                let mut matchers = vec![format!("{}!~\"5..\"", metrics.status_label)];
                if !service.is_empty() {
                    matchers.insert(
                        0,
                        format!(
                            "{}={}",
                            metrics.service_label,
                            promql::string_literal(service)
                        ),
                    );
                }
                format!(
                    "sum(rate({}{{{}}}[{}]))",
                    metrics.requests_total,
                    matchers.join(","),
                    self.window
                )
            }),
            Metric::Promql => {
                let query = self.query.clone().unwrap_or_default();
                return Ok(query.replace("{service}", &promql::string_literal(service)));
            }
        };
        built.map_err(|e| e.to_string())
    }

    /// The procedure's arguments for `service`: `--name value` pairs.
    pub fn procedure_args(&self, service: &str) -> Vec<String> {
        let mut args = Vec::new();
        for (name, value) in &self.params {
            let text = match value {
                toml::Value::String(s) => s
                    .replace("{service}", service)
                    .replace("{trigger}", &self.name),
                other => other.to_string(),
            };
            args.push(format!("--{}", name.replace('_', "-")));
            args.push(text);
        }
        args
    }
}

/// The triggers of an environment, checked: its own, else the platform's, else the runbook's.
pub fn for_environment(platform: &Platform, env: &str) -> Result<Vec<Trigger>, String> {
    let triggers = platform
        .environments
        .get(env)
        .and_then(|e| e.triggers.clone())
        .or_else(|| platform.triggers.clone())
        .unwrap_or_else(defaults);
    let mut names = std::collections::BTreeSet::new();
    for t in &triggers {
        let at = format!("trigger '{}'", t.name);
        if t.name.is_empty() || !names.insert(t.name.clone()) {
            return Err(format!("{at}: every trigger needs a name of its own"));
        }
        parse_duration(&t.sustained).map_err(|e| format!("{at}: sustained: {e}"))?;
        if !t.threshold.is_finite() {
            return Err(format!("{at}: threshold must be a number"));
        }
        match (t.metric, &t.query) {
            (Metric::Promql, None) => {
                return Err(format!("{at}: a promql trigger needs `query`"));
            }
            (Metric::Promql, Some(_)) => {}
            (_, Some(_)) => {
                return Err(format!(
                    "{at}: `query` is only for metric = \"promql\"; {} builds its own",
                    t.metric_name()
                ));
            }
            (_, None) => {}
        }
        for service in &t.services {
            if !platform.services.contains_key(service) {
                return Err(format!(
                    "{at}: service '{service}' is not in the platform definition"
                ));
            }
        }
        for target in t.targets(platform) {
            t.query(&platform.metrics, &target)
                .map_err(|e| format!("{at}: {e}"))?;
        }
    }
    Ok(triggers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(extra: &str) -> Platform {
        Platform::load(
            "p.toml",
            &format!(
                "[environments.x]\nnamespace='a'\n[services.api]\n[services.batch]\ncritical=false\n{extra}"
            ),
            None,
        )
        .unwrap()
    }

    #[test]
    fn runbook_defaults_watch_critical_services() {
        let p = platform("");
        let triggers = for_environment(&p, "x").unwrap();
        let names: Vec<&str> = triggers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["service-unavailable", "high-error-rate", "slow-responses"]
        );
        assert_eq!(triggers[1].sustained(), Duration::from_secs(300));
        assert_eq!(triggers[1].condition(), "error_rate > 5 for 5m");
        assert_eq!(triggers[0].comparison(), Comparison::AtMost);
        assert_eq!(triggers[1].targets(&p), ["api"]);
        assert_eq!(triggers[1].procedure, "emergency");
        assert_eq!(
            triggers[1].procedure_args("api"),
            [
                "--force",
                "true",
                "--reason",
                "api error rate above 5% for 5 minutes (trigger high-error-rate)"
            ]
        );
        assert_eq!(
            triggers[0].query(&p.metrics, "api").unwrap(),
            r#"sum(rate(http_requests_total{service="api",status!~"5.."}[1m]))"#
        );
        assert!(
            triggers[2]
                .query(&p.metrics, "api")
                .unwrap()
                .ends_with("* 1000 offset 1d)")
        );
    }

    #[test]
    fn environment_triggers_replace_the_platform_ones() {
        let p = platform(
            "[[triggers]]\nname='a'\nmetric='error_rate'\nthreshold=1\nsustained='2s'\n\
             [[environments.x.triggers]]\nname='b'\nmetric='promql'\nquery='up{job={service}}'\nthreshold=0.5\ncomparison='<'\nsustained='3s'\nservices=['api']\nparams={service='{service}', dry_limit=2}\n",
        );
        let t = &for_environment(&p, "x").unwrap()[0];
        assert_eq!(t.name, "b");
        assert_eq!(t.query(&p.metrics, "api").unwrap(), r#"up{job="api"}"#);
        assert!(t.comparison().holds(0.0, 0.5));
        assert_eq!(
            t.procedure_args("api"),
            ["--dry-limit", "2", "--service", "api"]
        );
    }

    #[test]
    fn bad_triggers_are_refused_with_the_reason() {
        let cases = [
            (
                "metric='promql'\nthreshold=1\nsustained='1s'",
                "needs `query`",
            ),
            (
                "metric='error_rate'\nthreshold=1\nsustained='soon'",
                "sustained",
            ),
            (
                "metric='error_rate'\nthreshold=1\nsustained='1s'\nservices=['nope']",
                "'nope' is not in the platform",
            ),
            (
                "metric='error_rate'\nthreshold=1\nsustained='1s'\nwindow='5 minutes'",
                "window",
            ),
        ];
        for (body, expected) in cases {
            let p = platform(&format!("[[triggers]]\nname='t'\n{body}\n"));
            let err = for_environment(&p, "x").unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
