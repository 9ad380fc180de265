//! Pushgateway pushes, built as data (URL and body) before anything is sent, so a dry-run can
//! journal exactly what a real run sends.

use super::promql::{is_label_name, is_metric_name};
use crate::host::HostError;
use base64::Engine as _;
use std::collections::BTreeMap;

/// The text exposition format Prometheus and the Pushgateway read.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

#[derive(Debug, Clone, PartialEq)]
pub struct PushRequest {
    pub url: reqwest::Url,
    pub body: String,
}

/// A metric value as the script gave it: integers stay integers in the body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn exposition(self) -> String {
        match self {
            Number::Int(i) => i.to_string(),
            Number::Float(f) if f.is_nan() => "NaN".into(),
            Number::Float(f) if f == f64::INFINITY => "+Inf".into(),
            Number::Float(f) if f == f64::NEG_INFINITY => "-Inf".into(),
            Number::Float(f) => format!("{f:?}"),
        }
    }
}

/// One URL path segment pair: `name/value`, or `name@base64/…` for values a path cannot
/// carry (a '/' would split the path, and an empty segment would vanish).
fn grouping_segments(name: &str, value: &str) -> [String; 2] {
    if value.is_empty() || value.contains('/') {
        [
            format!("{name}@base64"),
            if value.is_empty() {
                // The Pushgateway's spelling of an empty value.
                "=".to_string()
            } else {
                base64::engine::general_purpose::URL_SAFE.encode(value)
            },
        ]
    } else {
        [name.to_string(), value.to_string()]
    }
}

/// Checks names and builds `POST <base>/metrics/job/<job>/<label>/<value>…` with its body.
pub fn build(
    base: &str,
    job: &str,
    labels: &BTreeMap<String, String>,
    metrics: &BTreeMap<String, Number>,
) -> Result<PushRequest, HostError> {
    if job.is_empty() {
        return Err(HostError::Invalid(
            "the job name is empty: name the job that pushes, e.g. \"rollback\"".into(),
        ));
    }
    if metrics.is_empty() {
        return Err(HostError::Invalid(
            "no metrics to push: pass a map of metric name to number".into(),
        ));
    }
    for name in metrics.keys() {
        if !is_metric_name(name) {
            return Err(HostError::Invalid(format!(
                "'{name}' is not a valid Prometheus metric name: use letters, digits, '_' and ':', not starting with a digit"
            )));
        }
    }
    for name in labels.keys() {
        if name == "job" {
            return Err(HostError::Invalid(
                "'job' cannot be a grouping label: it is the job argument".into(),
            ));
        }
        if !is_label_name(name) {
            return Err(HostError::Invalid(format!(
                "'{name}' is not a valid Prometheus label name: use letters, digits and '_', not starting with a digit or '__'"
            )));
        }
    }
    let mut url = reqwest::Url::parse(base).map_err(|e| {
        HostError::Invalid(format!(
            "pushgateway_url '{base}' is not a valid URL ({e}); fix it in the platform definition"
        ))
    })?;
    {
        let mut path = url.path_segments_mut().map_err(|()| {
            HostError::Invalid(format!(
                "pushgateway_url '{base}' cannot have a path; fix it in the platform definition"
            ))
        })?;
        path.pop_if_empty().push("metrics");
        path.extend(grouping_segments("job", job));
        for (name, value) in labels {
            path.extend(grouping_segments(name, value));
        }
    }
    let body = metrics
        .iter()
        .map(|(name, value)| format!("{name} {}\n", value.exposition()))
        .collect();
    Ok(PushRequest { url, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> BTreeMap<String, Number> {
        BTreeMap::from([
            ("rollback_duration_seconds".to_string(), Number::Float(12.5)),
            ("rollback_runs_total".to_string(), Number::Int(1)),
        ])
    }

    #[test]
    fn url_and_body() {
        let labels = BTreeMap::from([
            ("environment".to_string(), "production".to_string()),
            ("path".to_string(), "a/b".to_string()),
            ("empty".to_string(), String::new()),
            ("note".to_string(), "x y%".to_string()),
        ]);
        let req = build("http://pgw:9091/", "roll back", &labels, &metrics()).unwrap();
        assert_eq!(
            req.url.as_str(),
            "http://pgw:9091/metrics/job/roll%20back/empty@base64/=/environment/production/note/x%20y%25/path@base64/YS9i"
        );
        assert_eq!(
            req.body,
            "rollback_duration_seconds 12.5\nrollback_runs_total 1\n"
        );
    }

    #[test]
    fn keeps_a_path_prefix_and_encodes_odd_jobs() {
        let req = build(
            "http://proxy/pushgateway",
            "a/b",
            &BTreeMap::new(),
            &metrics(),
        )
        .unwrap();
        assert_eq!(
            req.url.as_str(),
            "http://proxy/pushgateway/metrics/job@base64/YS9i"
        );
    }

    #[test]
    fn special_values() {
        assert_eq!(Number::Float(f64::NAN).exposition(), "NaN");
        assert_eq!(Number::Float(f64::NEG_INFINITY).exposition(), "-Inf");
        assert_eq!(Number::Float(1e-9).exposition(), "1e-9");
    }

    #[test]
    fn names_are_checked() {
        let bad_metric = BTreeMap::from([("rollback-runs".to_string(), Number::Int(1))]);
        let e = build("http://p", "j", &BTreeMap::new(), &bad_metric).unwrap_err();
        assert!(e.to_string().contains("'rollback-runs'"), "{e}");
        let bad_label = BTreeMap::from([("__x".to_string(), "v".to_string())]);
        let e = build("http://p", "j", &bad_label, &metrics()).unwrap_err();
        assert!(e.to_string().contains("'__x'"), "{e}");
        let job_label = BTreeMap::from([("job".to_string(), "v".to_string())]);
        assert!(build("http://p", "j", &job_label, &metrics()).is_err());
        assert!(build("http://p", "", &BTreeMap::new(), &metrics()).is_err());
    }
}
