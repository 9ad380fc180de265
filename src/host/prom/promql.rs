//! PromQL built as text from checked parts: names validated against Prometheus' rules, label
//! values quoted as PromQL string literals, so no script input can change a query's meaning.

use crate::host::HostError;
use crate::platform::Metrics;
use regex::Regex;
use std::sync::LazyLock;

static METRIC_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$").expect("valid regex"));
static LABEL_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z_][a-zA-Z0-9_]*$").expect("valid regex"));
static WINDOW: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$").expect("valid regex"));

pub fn is_metric_name(name: &str) -> bool {
    METRIC_NAME.is_match(name)
}

/// A label name a client may set: names starting with `__` are reserved for Prometheus.
pub fn is_label_name(name: &str) -> bool {
    LABEL_NAME.is_match(name) && !name.starts_with("__")
}

/// A range such as `5m`: one number and one unit, as the helpers document.
pub fn check_window(window: &str) -> Result<(), HostError> {
    if WINDOW.is_match(window) {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "window '{window}' is not a Prometheus duration: write a whole number and a unit (ms, s, m, h, d, w, y), e.g. \"5m\""
        )))
    }
}

/// A PromQL string literal: double-quoted, with the escapes Prometheus' lexer understands.
pub fn string_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The platform's `[metrics]` names, checked before they are put into a query.
fn check_metrics(m: &Metrics) -> Result<(), HostError> {
    let fix = "fix [metrics] in the platform definition";
    for (key, name) in [
        ("requests_total", &m.requests_total),
        ("duration_bucket", &m.duration_bucket),
    ] {
        if !is_metric_name(name) {
            return Err(HostError::Invalid(format!(
                "metrics.{key} '{name}' is not a valid Prometheus metric name; {fix}"
            )));
        }
    }
    for (key, name) in [
        ("service_label", &m.service_label),
        ("status_label", &m.status_label),
    ] {
        if !is_label_name(name) {
            return Err(HostError::Invalid(format!(
                "metrics.{key} '{name}' is not a valid Prometheus label name; {fix}"
            )));
        }
    }
    Ok(())
}

/// `name{matchers}[window]`, leaving out the braces when there is no matcher.
fn selector(metric: &str, matchers: &[String], window: &str) -> String {
    if matchers.is_empty() {
        format!("{metric}[{window}]")
    } else {
        format!("{metric}{{{}}}[{window}]", matchers.join(","))
    }
}

fn service_matcher(m: &Metrics, service: &str) -> Vec<String> {
    if service.is_empty() {
        Vec::new()
    } else {
        vec![format!("{}={}", m.service_label, string_literal(service))]
    }
}

/// One regex matcher for every name in `services`, each matched literally.
fn services_matcher(m: &Metrics, services: &[String]) -> Result<Vec<String>, HostError> {
    if services.is_empty() {
        return Err(HostError::Invalid(
            "no services given: pass at least one service name".into(),
        ));
    }
    let alternatives: Vec<String> = services.iter().map(|s| quote_meta(s)).collect();
    Ok(vec![format!(
        "{}=~{}",
        m.service_label,
        string_literal(&alternatives.join("|"))
    )])
}

/// `s` as a regex matching exactly itself, escaping what Go's `regexp.QuoteMeta` escapes (the
/// queries are RE2, and names such as `analysis-service` stay readable).
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `sum(errors) / sum(all) * 100` over the requests `matchers` select, summed `by` ("" for
/// one series, " by (label) " for one series per label value).
fn ratio(m: &Metrics, matchers: Vec<String>, by: &str, window: &str) -> Result<String, HostError> {
    check_metrics(m)?;
    check_window(window)?;
    let mut errors = matchers.clone();
    errors.push(format!("{}=~\"5..\"", m.status_label));
    Ok(format!(
        "sum{by}(rate({})) / sum{by}(rate({})) * 100",
        selector(&m.requests_total, &errors, window),
        selector(&m.requests_total, &matchers, window)
    ))
}

/// `histogram_quantile` of the durations `matchers` select, summed `by (labels)`, in ms.
fn quantile(
    m: &Metrics,
    matchers: Vec<String>,
    by: &str,
    window: &str,
) -> Result<String, HostError> {
    check_metrics(m)?;
    check_window(window)?;
    Ok(format!(
        "histogram_quantile(0.95, sum by ({by}) (rate({}))) * 1000",
        selector(&m.duration_bucket, &matchers, window)
    ))
}

/// Percentage of requests answered 5xx over `window`, for one service or (with "") all.
pub fn error_rate(m: &Metrics, service: &str, window: &str) -> Result<String, HostError> {
    ratio(m, service_matcher(m, service), "", window)
}

/// `error_rate` for each of `services` in one query: one series per service, labelled with
/// the service label. A service without requests has no series.
pub fn error_rates(m: &Metrics, services: &[String], window: &str) -> Result<String, HostError> {
    let by = format!(" by ({}) ", m.service_label);
    ratio(m, services_matcher(m, services)?, &by, window)
}

/// The 95th percentile of request durations over `window`, in milliseconds.
pub fn p95_latency(m: &Metrics, service: &str, window: &str) -> Result<String, HostError> {
    quantile(m, service_matcher(m, service), "le", window)
}

/// `p95_latency` for each of `services` in one query, one series per service.
pub fn p95_latencies(m: &Metrics, services: &[String], window: &str) -> Result<String, HostError> {
    let by = format!("{}, le", m.service_label);
    quantile(m, services_matcher(m, services)?, &by, window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_for_one_service_and_for_all() {
        let m = Metrics::default();
        assert_eq!(
            error_rate(&m, "analysis-service", "5m").unwrap(),
            r#"sum(rate(http_requests_total{service="analysis-service",status=~"5.."}[5m])) / sum(rate(http_requests_total{service="analysis-service"}[5m])) * 100"#
        );
        assert_eq!(
            error_rate(&m, "", "1h").unwrap(),
            r#"sum(rate(http_requests_total{status=~"5.."}[1h])) / sum(rate(http_requests_total[1h])) * 100"#
        );
    }

    #[test]
    fn p95_uses_the_bucket_metric() {
        let m = Metrics::default();
        assert_eq!(
            p95_latency(&m, "file-watcher", "10m").unwrap(),
            r#"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{service="file-watcher"}[10m]))) * 1000"#
        );
    }

    #[test]
    fn one_query_for_many_services_matches_each_name_literally() {
        let m = Metrics::default();
        let names = ["analysis-service".to_string(), "svc.01".to_string()];
        assert_eq!(
            error_rates(&m, &names, "2m").unwrap(),
            r#"sum by (service) (rate(http_requests_total{service=~"analysis-service|svc\\.01",status=~"5.."}[2m])) / sum by (service) (rate(http_requests_total{service=~"analysis-service|svc\\.01"}[2m])) * 100"#
        );
        assert_eq!(
            p95_latencies(&m, &names[..1], "5m").unwrap(),
            r#"histogram_quantile(0.95, sum by (service, le) (rate(http_request_duration_seconds_bucket{service=~"analysis-service"}[5m]))) * 1000"#
        );
        let err = error_rates(&m, &[], "5m").unwrap_err().to_string();
        assert!(err.contains("no services given"), "{err}");
    }

    #[test]
    fn label_values_cannot_escape_their_string() {
        assert_eq!(string_literal(r#"a"}b\"#), r#""a\"}b\\""#);
        assert_eq!(string_literal("x\ny"), r#""x\ny""#);
    }

    #[test]
    fn windows_and_names_are_checked() {
        for ok in ["5m", "30s", "1h", "2d", "500ms"] {
            assert!(check_window(ok).is_ok(), "{ok}");
        }
        for bad in ["", "5", "m", "0m", "5 m", "5m]) or vector(1", "-1m"] {
            assert!(check_window(bad).is_err(), "{bad}");
        }
        let m = Metrics {
            status_label: "status code".into(),
            ..Metrics::default()
        };
        let err = error_rate(&m, "", "5m").unwrap_err().to_string();
        assert!(err.contains("metrics.status_label 'status code'"), "{err}");
        assert!(!is_label_name("__name__"));
        assert!(is_metric_name("rollback:runs_total"));
        assert!(!is_metric_name("1abc"));
    }
}
