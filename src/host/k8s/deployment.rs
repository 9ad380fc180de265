//! Reading a Deployment into the map scripts see, and scaling it through the scale subresource.

use super::client::{Kube, Op};
use super::rollout::{self, Progress};
use super::{names, request};
use crate::console;
use crate::host::HostError;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// Labels that carry the deployed version, in the order they are looked for.
const VERSION_LABELS: [&str; 2] = ["version", "app.kubernetes.io/version"];

#[derive(Debug, Clone, Serialize)]
pub struct Replicas {
    pub desired: i32,
    pub current: i32,
    pub ready: i32,
    pub available: i32,
    pub updated: i32,
    pub unavailable: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentInfo {
    pub name: String,
    pub namespace: String,
    /// The `version` (or `app.kubernetes.io/version`) label; empty when there is none.
    pub version: String,
    pub images: Vec<String>,
    pub replicas: Replicas,
    /// The controller's revision number (`deployment.kubernetes.io/revision`), 0 if unset.
    pub revision: i64,
    pub generation: i64,
    pub observed_generation: i64,
    pub paused: bool,
    pub conditions: Vec<Condition>,
    pub labels: BTreeMap<String, String>,
    /// What `kubectl rollout status` would say now.
    pub rollout: String,
    /// Whether the rollout is complete in kubectl's sense.
    pub rolled_out: bool,
}

pub fn version_of(labels: &BTreeMap<String, String>) -> Option<String> {
    VERSION_LABELS
        .iter()
        .find_map(|key| labels.get(*key).cloned())
}

pub fn describe(d: &Deployment) -> DeploymentInfo {
    let meta = &d.metadata;
    let spec = d.spec.as_ref();
    let status = d.status.clone().unwrap_or_default();
    let template = spec.map(|s| &s.template);
    let labels = meta.labels.clone().unwrap_or_default();
    let template_labels = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let version = version_of(&labels)
        .or_else(|| version_of(&template_labels))
        .unwrap_or_default();
    let images = super::meta::images(template.and_then(|t| t.spec.as_ref()));
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let conditions = status
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| Condition {
            kind: c.type_,
            status: c.status,
            reason: c.reason.unwrap_or_default(),
            message: c.message.unwrap_or_default(),
        })
        .collect();
    let progress = rollout::progress(d);
    DeploymentInfo {
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        version,
        images,
        replicas: Replicas {
            desired,
            current: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            unavailable: status.unavailable_replicas.unwrap_or(0),
        },
        revision: revision(meta.annotations.as_ref()),
        generation: meta.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        paused: spec.and_then(|s| s.paused).unwrap_or(false),
        conditions,
        labels,
        rolled_out: matches!(progress, Progress::Complete(_)),
        rollout: progress.message().to_string(),
    }
}

pub fn revision(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub async fn get(kube: &Kube, name: &str) -> Result<Deployment, HostError> {
    let api = kube.api::<Deployment>();
    kube.call(Op::new("get", "deployments", name), api.get(name))
        .await
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    pub name: String,
    pub from: i32,
    pub to: i32,
    /// The HorizontalPodAutoscaler that targets the Deployment, if any.
    pub hpa: String,
}

/// What scaling needs to know first: the current replicas and the HPA that would undo it.
pub struct ScalePlan {
    pub name: String,
    pub from: i32,
    pub to: i32,
    pub hpa: Option<HpaInfo>,
    pub path: String,
}

pub struct HpaInfo {
    pub name: String,
    pub min: i32,
    pub max: i32,
}

pub async fn plan_scale(
    kube: &Kube,
    name: &str,
    to: i32,
    force: bool,
) -> Result<ScalePlan, HostError> {
    let api = kube.api::<Deployment>();
    let scale = kube
        .call(
            Op::new("get", "deployments/scale", name),
            api.get_scale(name),
        )
        .await?;
    let from = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
    let hpa = hpa_for(kube, name).await?;
    if let Some(h) = &hpa {
        if to == 0 {
            console::warn(&format!(
                "Deployment {name} is autoscaled by HorizontalPodAutoscaler {}; at 0 replicas the autoscaler stands still until something scales it up again",
                h.name
            ));
        } else if force {
            console::warn(&format!(
                "scaling Deployment {name} to {to} although HorizontalPodAutoscaler {} (min {}, max {}) manages it: the autoscaler will move it again",
                h.name, h.min, h.max
            ));
        } else {
            return Err(HostError::Failed(format!(
                "Deployment {name} is autoscaled by HorizontalPodAutoscaler {} (min {}, max {}), which would undo a scale to {to}: change the autoscaler's minReplicas/maxReplicas instead, or pass #{{ force: true }} to scale anyway",
                h.name, h.min, h.max
            )));
        }
    }
    Ok(ScalePlan {
        name: name.to_string(),
        from,
        to,
        hpa,
        path: format!(
            "/apis/apps/v1/namespaces/{}/deployments/{name}/scale",
            kube.namespace
        ),
    })
}

pub fn scale_patch(to: i32) -> Value {
    json!({"spec": {"replicas": to}})
}

impl ScalePlan {
    pub fn request(&self) -> Value {
        request::patch(&self.path, request::MERGE, scale_patch(self.to))
    }

    pub fn result(&self) -> ScaleResult {
        ScaleResult {
            name: self.name.clone(),
            from: self.from,
            to: self.to,
            hpa: self
                .hpa
                .as_ref()
                .map(|h| h.name.clone())
                .unwrap_or_default(),
        }
    }
}

pub async fn scale(kube: &Kube, plan: &ScalePlan) -> Result<ScaleResult, HostError> {
    let api = kube.api::<Deployment>();
    kube.call(
        Op::new("patch", "deployments/scale", &plan.name),
        api.patch_scale(
            &plan.name,
            &PatchParams::default(),
            &Patch::Merge(scale_patch(plan.to)),
        ),
    )
    .await?;
    Ok(plan.result())
}

async fn hpa_for(kube: &Kube, deployment: &str) -> Result<Option<HpaInfo>, HostError> {
    let api = kube.api::<HorizontalPodAutoscaler>();
    let list = kube
        .call(
            Op::all("list", "horizontalpodautoscalers"),
            api.list(&ListParams::default()),
        )
        .await?;
    Ok(list.items.into_iter().find_map(|h| {
        let spec = h.spec;
        let target = &spec.scale_target_ref;
        (target.kind == "Deployment" && target.name == deployment).then(|| HpaInfo {
            name: h.metadata.name.unwrap_or_default(),
            min: spec.min_replicas.unwrap_or(1),
            max: spec.max_replicas,
        })
    }))
}

pub fn check_replicas(n: i64) -> Result<i32, HostError> {
    if (0..=100_000).contains(&n) {
        Ok(n as i32)
    } else {
        Err(HostError::Invalid(format!(
            "replicas must be between 0 and 100000, got {n}"
        )))
    }
}

pub fn check_name(name: &str) -> Result<(), HostError> {
    names::object("Deployment", name)
}
