//! Blue/green slots: which slot a Service sends traffic to, and switching it safely.
//!
//! The layout: for a service S, Deployments `S-blue` and `S-green` whose pods carry
//! `app=S, slot=blue|green, version=<v>`, and a ClusterIP Service `S` whose selector includes
//! `slot`. The active slot is the value of `slot` in that selector. A per-slot Service
//! `S-blue`/`S-green`, when it exists, gives each slot's own endpoints.

use super::client::{Kube, Op};
use super::{meta, names, request};
use crate::host::HostError;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchOptions {
    /// The selector key that names the slot.
    pub slot_key: String,
    /// Ready pods (and endpoints) the target slot must have; 0 means as many as its
    /// Deployment `S-<slot>` wants, at least 1.
    pub min_ready: i64,
}

impl Default for SwitchOptions {
    fn default() -> Self {
        SwitchOptions {
            slot_key: "slot".into(),
            min_ready: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SwitchResult {
    pub service: String,
    pub from: String,
    pub to: String,
    /// From the first read to the verified read-back.
    pub took_ms: u64,
    pub ready_pods: i64,
    pub endpoints: i64,
    /// False when the Service already selected the target slot.
    pub changed: bool,
}

pub struct SwitchPlan {
    started: Instant,
    service: String,
    path: String,
    patch: Value,
    selector: BTreeMap<String, String>,
    pub result: SwitchResult,
}

pub async fn selector(kube: &Kube, service: &str) -> Result<BTreeMap<String, String>, HostError> {
    let svc = get_service(kube, service).await?;
    Ok(svc.spec.and_then(|s| s.selector).unwrap_or_default())
}

async fn get_service(kube: &Kube, name: &str) -> Result<Service, HostError> {
    let api = kube.api::<Service>();
    kube.call(Op::new("get", "services", name), api.get(name))
        .await
}

/// Reads the current slot and checks the target one before anything is sent: it must have
/// enough ready pods and endpoints, or the call refuses and changes nothing.
pub async fn plan(
    kube: &Kube,
    service: &str,
    to: Option<&str>,
    options: &SwitchOptions,
) -> Result<SwitchPlan, HostError> {
    plan_with(kube, service, to, options, None).await
}

/// `plan` for one target of a batch: the target slot is checked against `listed`, read once
/// for the whole batch, instead of three reads of its own.
pub async fn plan_in(
    kube: &Kube,
    service: &str,
    to: Option<&str>,
    options: &SwitchOptions,
    listed: &Listed,
) -> Result<SwitchPlan, HostError> {
    plan_with(kube, service, to, options, Some(listed)).await
}

async fn plan_with(
    kube: &Kube,
    service: &str,
    to: Option<&str>,
    options: &SwitchOptions,
    listed: Option<&Listed>,
) -> Result<SwitchPlan, HostError> {
    let started = Instant::now();
    let key = options.slot_key.as_str();
    names::label_key(key)?;
    if let Some(to) = to {
        names::label_value(to)?;
    }
    let svc = get_service(kube, service).await?;
    let resource_version = svc.metadata.resource_version.clone().unwrap_or_default();
    let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
    let Some(from) = selector.get(key).cloned() else {
        return Err(HostError::Failed(format!(
            "the selector of Service {service} has no '{key}' key ({}), so it has no active slot; switch_slot works on blue/green Services whose selector picks a slot",
            show(&selector)
        )));
    };
    let to = match to {
        Some(to) => to.to_string(),
        None => other_slot(&from).ok_or_else(|| {
            HostError::Invalid(format!(
                "Service {service} is on slot '{from}', which is neither blue nor green; name the target slot: switch_slot(\"{service}\", \"<slot>\")"
            ))
        })?,
    };
    let mut target = selector.clone();
    target.insert(key.to_string(), to.clone());
    let slot_deployment = format!("{service}-{to}");
    let seen = match listed {
        Some(listed) => listed.slot(&slot_deployment, &target),
        None => Slot::read(kube, &slot_deployment, &target).await?,
    };
    let (ready_pods, endpoints) = check_target(service, &to, &target, options, seen)?;
    let changed = to != from;
    Ok(SwitchPlan {
        started,
        service: service.to_string(),
        path: format!("/api/v1/namespaces/{}/services/{service}", kube.namespace),
        patch: json!({
            "metadata": {"resourceVersion": resource_version},
            "spec": {"selector": {key: to}},
        }),
        selector: target,
        result: SwitchResult {
            service: service.to_string(),
            from,
            to,
            took_ms: 0,
            ready_pods,
            endpoints,
            changed,
        },
    })
}

fn other_slot(slot: &str) -> Option<String> {
    match slot {
        "blue" => Some("green".into()),
        "green" => Some("blue".into()),
        _ => None,
    }
}

fn show(selector: &BTreeMap<String, String>) -> String {
    if selector.is_empty() {
        return "empty".into();
    }
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What the check of a target slot looks at: its Deployment `S-<slot>` (None when missing),
/// the pods its selector picks, and the ready endpoints of its per-slot Service (None when it
/// has no EndpointSlices).
pub struct Slot {
    desired: Option<Deployment>,
    pods: Vec<Pod>,
    endpoints: Option<i64>,
}

impl Slot {
    /// Three independent reads, sent together: this check sits on the switch's critical path.
    async fn read(
        kube: &Kube,
        slot_deployment: &str,
        selector: &BTreeMap<String, String>,
    ) -> Result<Slot, HostError> {
        let deployments = kube.api::<Deployment>();
        let pods_api = kube.api::<Pod>();
        let pod_list = ListParams::default().labels(&show(selector));
        let endpoints =
            ListParams::default().labels(&format!("kubernetes.io/service-name={slot_deployment}"));
        let slices_api = kube.api::<EndpointSlice>();
        let (desired, pods, slices) = tokio::try_join!(
            kube.call_opt(
                Op::new("get", "deployments", slot_deployment),
                deployments.get(slot_deployment),
            ),
            kube.call(Op::all("list", "pods"), pods_api.list(&pod_list)),
            kube.call(
                Op::all("list", "endpointslices"),
                slices_api.list(&endpoints)
            ),
        )?;
        Ok(Slot {
            desired,
            pods: pods.items,
            endpoints: ready_endpoints(slices.items.iter()),
        })
    }
}

/// The namespace's Deployments, pods and EndpointSlices, listed once for a batch of switches:
/// three requests whatever the number of targets, instead of three per target.
pub struct Listed {
    deployments: Vec<Deployment>,
    pods: Vec<Pod>,
    slices: Vec<EndpointSlice>,
}

impl Listed {
    pub async fn read(kube: &Kube) -> Result<Listed, HostError> {
        let all = ListParams::default();
        let (deployments, pods, slices) = (
            kube.api::<Deployment>(),
            kube.api::<Pod>(),
            kube.api::<EndpointSlice>(),
        );
        let (deployments, pods, slices) = tokio::try_join!(
            kube.call(Op::all("list", "deployments"), deployments.list(&all)),
            kube.call(Op::all("list", "pods"), pods.list(&all)),
            kube.call(Op::all("list", "endpointslices"), slices.list(&all)),
        )?;
        Ok(Listed {
            deployments: deployments.items,
            pods: pods.items,
            slices: slices.items,
        })
    }

    /// What `Slot::read` would have read, picked from the lists.
    fn slot(&self, slot_deployment: &str, selector: &BTreeMap<String, String>) -> Slot {
        let labelled = |labels: Option<&BTreeMap<String, String>>, key: &str, value: &str| {
            labels.and_then(|l| l.get(key)).is_some_and(|v| v == value)
        };
        let selected = |pod: &&Pod| {
            selector
                .iter()
                .all(|(k, v)| labelled(pod.metadata.labels.as_ref(), k, v))
        };
        Slot {
            desired: self
                .deployments
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(slot_deployment))
                .cloned(),
            pods: self.pods.iter().filter(selected).cloned().collect(),
            endpoints: ready_endpoints(self.slices.iter().filter(|s| {
                labelled(
                    s.metadata.labels.as_ref(),
                    "kubernetes.io/service-name",
                    slot_deployment,
                )
            })),
        }
    }
}

/// Ready endpoints in the EndpointSlices of a per-slot Service, None when it has none.
fn ready_endpoints<'a>(slices: impl Iterator<Item = &'a EndpointSlice>) -> Option<i64> {
    let mut any = false;
    let mut ready = 0;
    for slice in slices {
        any = true;
        ready += slice
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .count() as i64;
    }
    any.then_some(ready)
}

/// Counts the target slot's ready pods and endpoints and refuses when there are too few.
fn check_target(
    service: &str,
    slot: &str,
    selector: &BTreeMap<String, String>,
    options: &SwitchOptions,
    seen: Slot,
) -> Result<(i64, i64), HostError> {
    let slot_deployment = format!("{service}-{slot}");
    let Slot {
        desired,
        pods,
        endpoints: slot_endpoints,
    } = seen;
    let wanted = if options.min_ready > 0 {
        options.min_ready
    } else {
        let desired = desired
            .and_then(|d| d.spec.and_then(|s| s.replicas))
            .unwrap_or(1);
        i64::from(desired.max(1))
    };
    let ready: Vec<&Pod> = pods.iter().filter(|p| meta::pod_ready(p)).collect();
    let ready_pods = ready.len() as i64;
    let endpoints = match slot_endpoints {
        Some(count) => count,
        // Without a per-slot Service (or before its EndpointSlices exist), the ready pods'
        // addresses are the endpoints the Service will have once it selects them.
        None => ready
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
            .count() as i64,
    };
    if ready_pods >= wanted && endpoints >= wanted {
        return Ok((ready_pods, endpoints));
    }
    let why = meta::not_ready_reasons(&pods);
    Err(HostError::Failed(format!(
        "slot {slot} of {service} is not ready to take traffic: {ready_pods} ready pods and {endpoints} endpoints, {wanted} needed ({} pods selected by {}{}); nothing was changed. Fix the standby first: k8s::deployment(\"{slot_deployment}\"), k8s::events(\"Deployment\", \"{slot_deployment}\")",
        pods.len(),
        show(selector),
        if why.is_empty() {
            String::new()
        } else {
            format!("; {why}")
        }
    )))
}

impl SwitchPlan {
    pub fn request(&self) -> Value {
        if self.result.changed {
            request::patch(&self.path, request::MERGE, self.patch.clone())
        } else {
            json!({"none": format!("Service {} already selects {}", self.service, self.result.to)})
        }
    }
}

/// Patches the selector with the resourceVersion read in `plan`, then reads it back.
pub async fn switch(kube: &Kube, plan: SwitchPlan) -> Result<SwitchResult, HostError> {
    let mut result = plan.result;
    if result.changed {
        let api = kube.api::<Service>();
        let service = plan.service.clone();
        let patched = kube
            .call_cas(
                Op::new("patch", "services", &plan.service),
                api.patch(&plan.service, &PatchParams::default(), &Patch::Merge(&plan.patch)),
                || format!(
                    "Service {service} changed after it was read (someone else modified it at the same moment), so nothing was changed by this call; read it again with k8s::service_selector(\"{service}\") and decide"
                ),
            )
            .await?;
        // The answer is the Service as stored, after admission: no second read needed.
        let now = patched.spec.and_then(|s| s.selector).unwrap_or_default();
        if now != plan.selector {
            return Err(HostError::Failed(format!(
                "the selector of Service {} reads back as {} instead of {}: something changed it at the same moment; check it now",
                plan.service,
                show(&now),
                show(&plan.selector)
            )));
        }
    }
    result.took_ms = plan.started.elapsed().as_millis() as u64;
    Ok(result)
}
