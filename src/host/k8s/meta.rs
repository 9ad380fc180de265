//! Objects by kind: pods, events, labels, and whether a GitOps tool manages an object.

use super::client::{Kube, Op};
use super::{names, request};
use crate::console;
use crate::host::HostError;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, PodSpec, Secret, Service};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A kind scripts may name, with its API coordinates.
pub struct Kind {
    pub name: &'static str,
    pub resource: ApiResource,
}

/// `deployment`, `Deployment`, `deploy` and `deployments` all name the Deployment kind.
pub fn kind(text: &str) -> Result<Kind, HostError> {
    let lower = text.to_ascii_lowercase();
    let (name, resource) = match lower.as_str() {
        "deployment" | "deployments" | "deploy" => {
            ("Deployment", ApiResource::erase::<Deployment>(&()))
        }
        "service" | "services" | "svc" => ("Service", ApiResource::erase::<Service>(&())),
        "configmap" | "configmaps" | "cm" => ("ConfigMap", ApiResource::erase::<ConfigMap>(&())),
        "secret" | "secrets" => ("Secret", ApiResource::erase::<Secret>(&())),
        "pod" | "pods" | "po" => ("Pod", ApiResource::erase::<Pod>(&())),
        "replicaset" | "replicasets" | "rs" => {
            ("ReplicaSet", ApiResource::erase::<ReplicaSet>(&()))
        }
        "statefulset" | "statefulsets" | "sts" => {
            ("StatefulSet", ApiResource::erase::<StatefulSet>(&()))
        }
        "daemonset" | "daemonsets" | "ds" => ("DaemonSet", ApiResource::erase::<DaemonSet>(&())),
        _ => {
            return Err(HostError::Invalid(format!(
                "unknown kind '{text}': use Deployment, Service, ConfigMap, Secret, Pod, ReplicaSet, StatefulSet or DaemonSet"
            )));
        }
    };
    Ok(Kind { name, resource })
}

impl Kube {
    pub fn dynamic(&self, kind: &Kind) -> kube::Api<DynamicObject> {
        kube::Api::namespaced_with(self.client.clone(), &self.namespace, &kind.resource)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PodInfo {
    pub name: String,
    pub phase: String,
    pub ready: bool,
    pub node: String,
    pub ip: String,
    pub restarts: i64,
    pub images: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub created: String,
    /// Why it is not ready (unschedulable, crash loop, …); empty when ready.
    pub reason: String,
}

/// Ready in the sense endpoints use: the Ready condition is true and it is not terminating.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn not_ready_reason(pod: &Pod) -> String {
    if pod_ready(pod) {
        return String::new();
    }
    let Some(status) = &pod.status else {
        return "no status yet".into();
    };
    let waiting = status
        .container_statuses
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    if let Some(reason) = waiting {
        return reason;
    }
    let unscheduled = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        return format!(
            "unschedulable: {}",
            c.message
                .clone()
                .unwrap_or_else(|| c.reason.clone().unwrap_or_default())
        );
    }
    status.phase.clone().unwrap_or_else(|| "not ready".into())
}

/// The distinct reasons why pods are not ready, with counts: `2 Pending (unschedulable: …)`.
pub fn not_ready_reasons(pods: &[Pod]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for pod in pods.iter().filter(|p| !pod_ready(p)) {
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into());
        *counts
            .entry(format!("{phase} ({})", not_ready_reason(pod)))
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(what, n)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The container images of a pod spec, in order.
pub fn images(spec: Option<&PodSpec>) -> Vec<String> {
    spec.map(|s| {
        s.containers
            .iter()
            .filter_map(|c| c.image.clone())
            .collect()
    })
    .unwrap_or_default()
}

pub fn describe_pod(pod: &Pod) -> PodInfo {
    let status = pod.status.clone().unwrap_or_default();
    PodInfo {
        name: pod.metadata.name.clone().unwrap_or_default(),
        phase: status.phase.clone().unwrap_or_default(),
        ready: pod_ready(pod),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        ip: status.pod_ip.clone().unwrap_or_default(),
        restarts: status
            .container_statuses
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|c| i64::from(c.restart_count))
            .sum(),
        images: images(pod.spec.as_ref()),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        reason: not_ready_reason(pod),
    }
}

pub async fn pods(kube: &Kube, selector: &str) -> Result<Vec<PodInfo>, HostError> {
    let api = kube.api::<Pod>();
    let list = kube
        .call(
            Op::all("list", "pods"),
            api.list(&ListParams::default().labels(selector)),
        )
        .await?;
    let mut pods: Vec<PodInfo> = list.items.iter().map(describe_pod).collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pods)
}

/// `app=web,slot=blue` from a script map; keys and values are checked.
pub fn selector_from_map(map: &rhai::Map) -> Result<String, HostError> {
    let mut parts = Vec::new();
    for (k, v) in map {
        let value = v.to_string();
        names::label_key(k)?;
        names::label_value(&value)?;
        parts.push(format!("{k}={value}"));
    }
    Ok(parts.join(","))
}

#[derive(Debug, Clone, Serialize)]
pub struct EventInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    pub message: String,
    pub count: i64,
    pub first: String,
    pub last: String,
    pub source: String,
}

pub async fn events(kube: &Kube, kind: &Kind, name: &str) -> Result<Vec<EventInfo>, HostError> {
    let api = kube.api::<Event>();
    let fields = format!(
        "involvedObject.kind={},involvedObject.name={name}",
        kind.name
    );
    let list = kube
        .call(
            Op::all("list", "events"),
            api.list(&ListParams::default().fields(&fields)),
        )
        .await?;
    let mut events: Vec<EventInfo> = list
        .items
        .into_iter()
        .map(|e| {
            let last = e
                .last_timestamp
                .map(|t| t.0.to_string())
                .or_else(|| e.event_time.map(|t| t.0.to_string()))
                .unwrap_or_default();
            EventInfo {
                kind: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
                count: i64::from(e.count.unwrap_or(1)),
                first: e
                    .first_timestamp
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| last.clone()),
                last,
                source: e
                    .reporting_component
                    .filter(|c| !c.is_empty())
                    .or_else(|| e.source.and_then(|s| s.component))
                    .unwrap_or_default(),
            }
        })
        .collect();
    events.sort_by(|a, b| a.last.cmp(&b.last));
    Ok(events)
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelResult {
    pub kind: String,
    pub name: String,
    pub key: String,
    pub value: String,
    /// The value before, or empty when the label was not set.
    pub previous: String,
}

pub struct LabelPlan {
    path: String,
    kind: &'static str,
    resource: ApiResource,
    patch: Value,
    pub result: LabelResult,
}

pub async fn plan_label(
    kube: &Kube,
    kind: Kind,
    name: &str,
    key: &str,
    value: &str,
) -> Result<LabelPlan, HostError> {
    let api = kube.dynamic(&kind);
    let current = kube
        .call(
            Op::new("get", &kind.resource.plural, name),
            api.get_metadata(name),
        )
        .await?;
    let previous = current
        .metadata
        .labels
        .and_then(|l| l.get(key).cloned())
        .unwrap_or_default();
    let group = if kind.resource.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}", kind.resource.api_version)
    };
    Ok(LabelPlan {
        path: format!(
            "{group}/namespaces/{}/{}/{name}",
            kube.namespace, kind.resource.plural
        ),
        kind: kind.name,
        patch: json!({"metadata": {"labels": {key: value}}}),
        resource: kind.resource,
        result: LabelResult {
            kind: kind.name.to_string(),
            name: name.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            previous,
        },
    })
}

impl LabelPlan {
    pub fn request(&self) -> Value {
        request::patch(&self.path, request::MERGE, self.patch.clone())
    }
}

pub async fn label(kube: &Kube, plan: LabelPlan) -> Result<LabelResult, HostError> {
    let kind = Kind {
        name: plan.kind,
        resource: plan.resource,
    };
    let api = kube.dynamic(&kind);
    kube.call(
        Op::new("patch", &kind.resource.plural, &plan.result.name),
        api.patch(
            &plan.result.name,
            &PatchParams::default(),
            &Patch::Merge(&plan.patch),
        ),
    )
    .await?;
    Ok(plan.result)
}

#[derive(Debug, Clone, Serialize)]
pub struct GitOps {
    pub managed: bool,
    /// `argocd`, `flux`, or empty.
    pub tool: String,
    /// The Argo CD Application or Flux Kustomization/HelmRelease that owns the object.
    pub owner: String,
    /// What to do before rolling back, when managed.
    pub advice: String,
}

/// Reads the markers Argo CD and Flux leave on what they apply.
pub fn gitops_of(
    kind: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> GitOps {
    let argo = annotations
        .get("argocd.argoproj.io/tracking-id")
        .and_then(|id| id.split(':').next().map(str::to_string))
        .or_else(|| labels.get("argocd.argoproj.io/instance").cloned());
    if let Some(app) = argo {
        let app_name = app.rsplit('_').next().unwrap_or(&app).to_string();
        return GitOps {
            managed: true,
            tool: "argocd".into(),
            advice: format!(
                "{kind} {name} is managed by Argo CD application {app}: if it self-heals it will re-apply the bad version; disable auto-sync first (argocd app set {app_name} --sync-policy none) and fix the version in Git"
            ),
            owner: app,
        };
    }
    for (tool_label, what) in [
        ("kustomize.toolkit.fluxcd.io/name", "Kustomization"),
        ("helm.toolkit.fluxcd.io/name", "HelmRelease"),
    ] {
        if let Some(owner) = labels.get(tool_label) {
            let ns_label = tool_label.replace("/name", "/namespace");
            let ns = labels.get(&ns_label).cloned().unwrap_or_default();
            let cmd = if what == "Kustomization" {
                "kustomization"
            } else {
                "helmrelease"
            };
            return GitOps {
                managed: true,
                tool: "flux".into(),
                advice: format!(
                    "{kind} {name} is managed by Flux {what} {owner}: its next reconciliation will re-apply the bad version; suspend it first (flux suspend {cmd} {owner}{}) and fix the version in Git",
                    if ns.is_empty() {
                        String::new()
                    } else {
                        format!(" -n {ns}")
                    }
                ),
                owner: if ns.is_empty() {
                    owner.clone()
                } else {
                    format!("{ns}/{owner}")
                },
            };
        }
    }
    GitOps {
        managed: false,
        tool: String::new(),
        owner: String::new(),
        advice: String::new(),
    }
}

pub async fn gitops_managed(kube: &Kube, kind: Kind, name: &str) -> Result<GitOps, HostError> {
    let api = kube.dynamic(&kind);
    let meta = kube
        .call(
            Op::new("get", &kind.resource.plural, name),
            api.get_metadata(name),
        )
        .await?
        .metadata;
    let found = gitops_of(
        kind.name,
        name,
        &meta.labels.unwrap_or_default(),
        &meta.annotations.unwrap_or_default(),
    );
    if found.managed {
        console::warn(&found.advice);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn gitops_markers() {
        let none = gitops_of("Deployment", "web", &map(&[("app", "web")]), &map(&[]));
        assert!(!none.managed);
        let argo = gitops_of(
            "Deployment",
            "web",
            &map(&[]),
            &map(&[(
                "argocd.argoproj.io/tracking-id",
                "shop:apps/Deployment:prod/web",
            )]),
        );
        assert_eq!(
            (argo.tool.as_str(), argo.owner.as_str()),
            ("argocd", "shop")
        );
        assert!(
            argo.advice.contains("--sync-policy none"),
            "{}",
            argo.advice
        );
        let flux = gitops_of(
            "Deployment",
            "web",
            &map(&[
                ("kustomize.toolkit.fluxcd.io/name", "apps"),
                ("kustomize.toolkit.fluxcd.io/namespace", "flux-system"),
            ]),
            &map(&[]),
        );
        assert_eq!(flux.owner, "flux-system/apps");
        assert!(
            flux.advice
                .contains("flux suspend kustomization apps -n flux-system")
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(kind("deploy").unwrap().name, "Deployment");
        assert_eq!(kind("ConfigMap").unwrap().resource.plural, "configmaps");
        assert!(kind("Widget").is_err());
    }
}
