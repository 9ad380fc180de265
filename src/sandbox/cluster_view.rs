//! The sandbox server's view of the cluster: which slot each Service selects and how many
//! replicas of each slot are ready. Traffic follows the Services, so a `switch_slot` or a
//! `helm rollback` shows in the metrics; health follows readiness, so a scaled-down slot
//! fails its health check.
//!
//! Polled from the API server with the credentials of the sandbox's kubeconfig (the fake pods
//! themselves cannot be reached).

use base64::Engine as _;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Label every object of the demo carries; the view reads nothing else.
pub const PART_OF: &str = "app.kubernetes.io/part-of=tracktion";

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub version: String,
    pub ready: u32,
    pub desired: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// False until the API server answered once; until then every slot counts as ready.
    pub loaded: bool,
    /// Service → slot its Service selects.
    pub active: BTreeMap<String, String>,
    /// (service, slot) → its Deployment.
    pub deployments: BTreeMap<(String, String), Deployment>,
}

impl ClusterView {
    pub fn active_slot(&self, service: &str) -> Option<&str> {
        self.active.get(service).map(String::as_str)
    }

    pub fn deployment(&self, service: &str, slot: &str) -> Option<&Deployment> {
        self.deployments
            .get(&(service.to_string(), slot.to_string()))
    }

    /// Why the slot cannot serve, if it cannot: no Deployment, or none of its replicas ready.
    pub fn unavailable(&self, service: &str, slot: &str) -> Option<String> {
        if !self.loaded {
            return None;
        }
        match self.deployment(service, slot) {
            None => Some(format!("no Deployment {service}-{slot}")),
            Some(d) if d.ready == 0 => Some(format!(
                "no ready replicas ({}/{} ready)",
                d.ready, d.desired
            )),
            Some(_) => None,
        }
    }

    /// Builds the view from a ServiceList and a DeploymentList (API JSON).
    pub fn from_lists(services: &Value, deployments: &Value) -> ClusterView {
        let mut view = ClusterView {
            loaded: true,
            ..ClusterView::default()
        };
        for item in items(services) {
            let selector = &item["spec"]["selector"];
            // The umbrella `tracktion` Service selects every app; only per-service ones count.
            if let (Some(app), Some(slot)) = (selector["app"].as_str(), selector["slot"].as_str()) {
                view.active.insert(app.to_string(), slot.to_string());
            }
        }
        for item in items(deployments) {
            let labels = &item["metadata"]["labels"];
            let (Some(app), Some(slot)) = (labels["app"].as_str(), labels["slot"].as_str()) else {
                continue;
            };
            let count = |v: &Value| v.as_u64().unwrap_or(0) as u32;
            view.deployments.insert(
                (app.to_string(), slot.to_string()),
                Deployment {
                    version: labels["version"].as_str().unwrap_or_default().to_string(),
                    ready: count(&item["status"]["readyReplicas"]),
                    desired: count(&item["spec"]["replicas"]),
                },
            );
        }
        view
    }
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list["items"].as_array().into_iter().flatten()
}

/// A client for the sandbox's API server.
pub struct KubeClient {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl KubeClient {
    /// Reads the kubeconfig through `kubectl config view --flatten`, which resolves the
    /// current context and inlines certificate files, so only one shape has to be parsed.
    pub fn from_kubeconfig(kubeconfig: &Path) -> Result<KubeClient, String> {
        let output = std::process::Command::new("kubectl")
            .args([
                "config",
                "view",
                "--raw",
                "--minify",
                "--flatten",
                "-o",
                "json",
            ])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .output()
            .map_err(|e| format!("cannot run kubectl: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "kubectl config view failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let config: Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("kubectl config view printed no JSON: {e}"))?;
        let cluster = &config["clusters"][0]["cluster"];
        let user = &config["users"][0]["user"];
        let server = cluster["server"]
            .as_str()
            .ok_or("the kubeconfig names no server")?
            .trim_end_matches('/')
            .to_string();
        let decode = |v: &Value| -> Result<Option<Vec<u8>>, String> {
            v.as_str()
                .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
                .transpose()
                .map_err(|e| format!("bad base64 in the kubeconfig: {e}"))
        };
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5));
        if let Some(ca) = decode(&cluster["certificate-authority-data"])? {
            let ca = reqwest::Certificate::from_pem(&ca).map_err(|e| e.to_string())?;
            builder = builder.tls_certs_only([ca]);
        }
        if let (Some(mut cert), Some(key)) = (
            decode(&user["client-certificate-data"])?,
            decode(&user["client-key-data"])?,
        ) {
            cert.push(b'\n');
            cert.extend_from_slice(&key);
            let identity = reqwest::Identity::from_pem(&cert).map_err(|e| e.to_string())?;
            builder = builder.identity(identity);
        }
        let token = user["token"].as_str().map(str::to_string);
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(KubeClient {
            http,
            server,
            token,
        })
    }

    async fn list(&self, path: &str) -> Result<Value, String> {
        let selector: String = url::form_urlencoded::byte_serialize(PART_OF.as_bytes()).collect();
        let url = format!("{}{path}?labelSelector={selector}", self.server);
        let mut request = self.http.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{url}: HTTP {status}"));
        }
        response.json().await.map_err(|e| format!("{url}: {e}"))
    }

    pub async fn view(&self, namespace: &str) -> Result<ClusterView, String> {
        let services = self
            .list(&format!("/api/v1/namespaces/{namespace}/services"))
            .await?;
        let deployments = self
            .list(&format!("/apis/apps/v1/namespaces/{namespace}/deployments"))
            .await?;
        Ok(ClusterView::from_lists(&services, &deployments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn per_service_services_set_the_active_slot_and_deployments_readiness() {
        let services = json!({"items": [
            {"metadata": {"name": "tracktion"}, "spec": {"selector": {"app.kubernetes.io/part-of": "tracktion", "slot": "green"}}},
            {"metadata": {"name": "file-watcher"}, "spec": {"selector": {"app": "file-watcher", "slot": "blue"}}},
        ]});
        let deployments = json!({"items": [
            {"metadata": {"labels": {"app": "file-watcher", "slot": "blue", "version": "v1.2.3"}},
             "spec": {"replicas": 2}, "status": {"readyReplicas": 2}},
            {"metadata": {"labels": {"app": "file-watcher", "slot": "green", "version": "v1.2.4"}},
             "spec": {"replicas": 0}, "status": {}},
        ]});
        let view = ClusterView::from_lists(&services, &deployments);
        assert_eq!(view.active_slot("file-watcher"), Some("blue"));
        assert_eq!(view.active.len(), 1);
        assert_eq!(
            view.deployment("file-watcher", "blue").unwrap().version,
            "v1.2.3"
        );
        assert_eq!(view.unavailable("file-watcher", "blue"), None);
        assert_eq!(
            view.unavailable("file-watcher", "green").unwrap(),
            "no ready replicas (0/0 ready)"
        );
        assert_eq!(
            view.unavailable("analysis-service", "blue").unwrap(),
            "no Deployment analysis-service-blue"
        );
        assert_eq!(ClusterView::default().unavailable("x", "blue"), None);
    }
}
