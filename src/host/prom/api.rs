//! Prometheus' HTTP API: one instant query, its answer decoded into samples or an error that
//! says whose fault it is (the query's, or the connection's).

use crate::host::HostError;
use crate::host::http::describe_request_error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// One series of an instant vector, or the single value of a scalar (with no labels).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    pub metric: BTreeMap<String, String>,
    /// `None` (a script sees `()`) for NaN and ±Inf, which JSON and so the journal cannot hold.
    pub value: Option<f64>,
    /// Evaluation time, Unix seconds.
    pub time: f64,
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum QueryData {
    Vector(Vec<VectorSample>),
    Scalar((f64, String)),
    String((f64, String)),
    Matrix(Vec<serde_json::Value>),
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    /// Absent for native-histogram samples, which carry `histogram` instead.
    #[serde(default)]
    value: Option<(f64, String)>,
}

/// `base` joined with an API path, keeping any path prefix Prometheus is served under.
pub fn endpoint(base: &str, path: &str) -> Result<reqwest::Url, HostError> {
    let joined = format!("{}/{path}", base.trim_end_matches('/'));
    reqwest::Url::parse(&joined).map_err(|e| {
        HostError::Invalid(format!(
            "prometheus_url '{base}' is not a valid URL ({e}); fix it in the platform definition"
        ))
    })
}

pub fn unreachable(base: &str, e: reqwest::Error, timeout: Duration) -> HostError {
    HostError::Failed(format!(
        "cannot reach Prometheus at {base}: {} — check prometheus_url and that Prometheus is up",
        describe_request_error(&e.without_url(), timeout)
    ))
}

/// Runs `promql` at `time` (RFC 3339 or Unix seconds; empty for now).
pub async fn instant_query(
    client: &reqwest::Client,
    base: &str,
    promql: &str,
    time: &str,
    timeout: Duration,
) -> Result<Vec<Sample>, HostError> {
    let mut url = endpoint(base, "api/v1/query")?;
    url.query_pairs_mut().append_pair("query", promql);
    if !time.is_empty() {
        url.query_pairs_mut().append_pair("time", time);
    }
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| unreachable(base, e, timeout))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| unreachable(base, e, timeout))?;
    decode(base, status.as_u16(), &body)
}

/// Turns an API answer into samples; public for unit tests of every answer shape.
pub fn decode(base: &str, status: u16, body: &str) -> Result<Vec<Sample>, HostError> {
    let answer: ApiResponse = serde_json::from_str(body).map_err(|_| {
        HostError::Failed(format!(
            "Prometheus at {base} answered HTTP {status} with something that is not a Prometheus API response ({}) — check that prometheus_url points at Prometheus itself",
            excerpt(body)
        ))
    })?;
    for warning in &answer.warnings {
        crate::console::warn(&format!("Prometheus warns about the query: {warning}"));
    }
    if answer.status != "success" {
        let kind = answer.error_type.unwrap_or_else(|| "unknown".into());
        let text = answer.error.unwrap_or_else(|| "no error text".into());
        // bad_data is a query Prometheus cannot parse; execution one it cannot evaluate (such
        // as many-to-many matching): both are the script's to fix. The rest are server-side.
        return Err(match kind.as_str() {
            "bad_data" | "execution" => HostError::Invalid(format!(
                "Prometheus rejected the query: {text} — fix the PromQL"
            )),
            _ => HostError::Failed(format!(
                "Prometheus at {base} could not run the query ({kind}): {text} — retry, or check Prometheus' load and logs"
            )),
        });
    }
    let data: QueryData = answer
        .data
        .ok_or_else(|| {
            HostError::Failed(format!(
                "Prometheus at {base} answered success without data"
            ))
        })
        .and_then(|d| {
            serde_json::from_value(d).map_err(|e| {
                HostError::Failed(format!(
                    "Prometheus at {base} answered with a result this tool does not understand: {e}"
                ))
            })
        })?;
    match data {
        QueryData::Vector(samples) => samples
            .into_iter()
            .map(|s| {
                let (time, text) = s.value.ok_or_else(|| {
                    HostError::Invalid(
                        "the result holds native histograms, which have no single value — wrap the query in histogram_quantile() or histogram_count()".into(),
                    )
                })?;
                Ok(Sample {
                    metric: s.metric,
                    value: parse_value(&text)?,
                    time,
                })
            })
            .collect(),
        QueryData::Scalar((time, text)) => Ok(vec![Sample {
            metric: BTreeMap::new(),
            value: parse_value(&text)?,
            time,
        }]),
        QueryData::String((_, text)) => Err(HostError::Invalid(format!(
            "the query evaluates to the string {text:?}, not a number — query a metric or a number"
        ))),
        QueryData::Matrix(series) => Err(HostError::Invalid(format!(
            "the query returns a range vector ({} series of samples over time): use an instant query — drop the [range], or wrap it in a function such as rate() or max_over_time()",
            series.len()
        ))),
    }
}

/// Prometheus writes sample values as strings: "0.5", "NaN", "+Inf".
fn parse_value(text: &str) -> Result<Option<f64>, HostError> {
    let value: f64 = text.parse().map_err(|_| {
        HostError::Failed(format!("Prometheus sent '{text}' where a number belongs"))
    })?;
    Ok(value.is_finite().then_some(value))
}

fn excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "an empty body".into();
    }
    let first: String = trimmed.chars().take(80).collect();
    let more = if trimmed.chars().count() > 80 {
        "…"
    } else {
        ""
    };
    format!("it starts with {:?}{more}", first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://prom:9090";

    #[test]
    fn vector_and_scalar() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"service":"a"},"value":[1700000000.5,"6"]},
            {"metric":{},"value":[1700000000.5,"NaN"]}]}}"#;
        let samples = decode(BASE, 200, body).unwrap();
        assert_eq!(samples[0].metric["service"], "a");
        assert_eq!(samples[0].value, Some(6.0));
        assert_eq!(samples[0].time, 1700000000.5);
        assert_eq!(samples[1].value, None);
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1.0,"+Inf"]}}"#;
        assert_eq!(decode(BASE, 200, scalar).unwrap()[0].value, None);
    }

    #[test]
    fn matrix_and_errors() {
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let e = decode(BASE, 200, matrix).unwrap_err();
        assert!(matches!(e, HostError::Invalid(ref m) if m.contains("use an instant query")));
        let bad = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}"#;
        let e = decode(BASE, 400, bad).unwrap_err();
        assert!(matches!(e, HostError::Invalid(ref m) if m.contains("unclosed left parenthesis")));
        let busy = r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#;
        assert!(matches!(decode(BASE, 503, busy), Err(HostError::Failed(_))));
        let e = decode(BASE, 200, "<html>hello</html>").unwrap_err();
        assert!(
            matches!(e, HostError::Failed(ref m) if m.contains("not a Prometheus API response") && m.contains(BASE))
        );
    }
}
