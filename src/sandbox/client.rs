//! Blocking HTTP for the `sandbox` commands (readiness checks, Prometheus queries, the
//! server's control API), run on a small tokio runtime.

use std::sync::Arc;
use std::time::Duration;

pub struct Http {
    runtime: Arc<tokio::runtime::Runtime>,
    client: reqwest::Client,
}

impl Http {
    pub fn new(runtime: Arc<tokio::runtime::Runtime>) -> Http {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client without TLS options builds");
        Http { runtime, client }
    }

    pub fn runtime(&self) -> &Arc<tokio::runtime::Runtime> {
        &self.runtime
    }

    /// Status and body, or why no answer came.
    pub fn get(&self, url: &str) -> Result<(u16, String), String> {
        self.send(self.client.get(url))
    }

    pub fn post(&self, url: &str) -> Result<(u16, String), String> {
        self.send(self.client.post(url))
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, String), String> {
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response.text().await.map_err(|e| e.to_string())?;
            Ok((status, body))
        })
    }

    /// True when `url` answers 200.
    pub fn answers(&self, url: &str) -> bool {
        matches!(self.get(url), Ok((200, _)))
    }

    /// The value of an instant PromQL query's first sample, if any.
    pub fn prometheus_value(&self, prometheus_url: &str, query: &str) -> Option<f64> {
        let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let (status, body) = self
            .get(&format!("{prometheus_url}/api/v1/query?query={encoded}"))
            .ok()?;
        if status != 200 {
            return None;
        }
        let value: serde_json::Value = serde_json::from_str(&body).ok()?;
        value["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}
