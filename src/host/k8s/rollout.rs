//! Rollouts with kubectl's semantics: status (`kubectl rollout status`), undo (`kubectl rollout
//! undo`, here as a compare-and-swap) and restart (`kubectl rollout restart`).

use super::client::{Kube, Op};
use super::deployment::{self, REVISION_ANNOTATION};
use super::request;
use crate::console;
use crate::host::HostError;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Where a rollout stands, as `kubectl rollout status` judges it.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Waiting(String),
    Complete(String),
    Failed(String),
}

impl Progress {
    pub fn message(&self) -> &str {
        match self {
            Progress::Waiting(m) | Progress::Complete(m) | Progress::Failed(m) => m,
        }
    }
}

/// kubectl's DeploymentStatusViewer: the spec must be observed, every replica updated, no old
/// replica left, every updated replica available; ProgressDeadlineExceeded is a failure.
pub fn progress(d: &Deployment) -> Progress {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    if generation > status.observed_generation.unwrap_or(0) {
        return Progress::Waiting("waiting for the controller to observe the new spec".into());
    }
    let progressing = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Progressing");
    if let Some(c) = progressing
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return Progress::Failed(format!(
            "Deployment {name} exceeded its progress deadline ({})",
            c.message.as_deref().unwrap_or("no progress")
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let current = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if let Some(desired) = d.spec.as_ref().and_then(|s| s.replicas)
        && updated < desired
    {
        return Progress::Waiting(format!(
            "{updated} of {desired} new replicas have been updated"
        ));
    }
    if current > updated {
        return Progress::Waiting(format!(
            "{} old replicas are pending termination",
            current - updated
        ));
    }
    if available < updated {
        return Progress::Waiting(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    Progress::Complete(format!("Deployment {name} successfully rolled out"))
}

#[derive(Debug, Clone, Serialize)]
pub struct WaitResult {
    pub name: String,
    pub revision: i64,
    pub version: String,
    pub images: Vec<String>,
    pub ready: i32,
    pub took_ms: u64,
}

/// Follows the Deployment through a watch until kubectl would call the rollout done, reporting
/// each change of state; fails on ProgressDeadlineExceeded, deletion or `timeout`.
pub async fn wait(kube: &Kube, name: &str, timeout: Duration) -> Result<WaitResult, HostError> {
    let started = Instant::now();
    let current = deployment::get(kube, name).await?;
    let mut last = String::new();
    let watched = tokio::time::timeout(timeout, async {
        if let Some(done) = judge(name, &current, &mut last, started)? {
            return Ok(done);
        }
        let api = kube.api::<Deployment>();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let mut failing_since: Option<Instant> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(d) | Event::InitApply(d)) => {
                    failing_since = None;
                    if let Some(done) = judge(name, &d, &mut last, started)? {
                        return Ok(done);
                    }
                }
                Ok(Event::Delete(_)) => {
                    return Err(HostError::Failed(format!(
                        "Deployment {name} was deleted while its rollout was awaited"
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > LOST_API_GRACE {
                        return Err(HostError::Failed(format!(
                            "lost the Kubernetes API at {} while waiting for Deployment {name} ({}); its rollout state is unknown: check the cluster, then k8s::deployment(\"{name}\")",
                            kube.server,
                            crate::host::chain(&e)
                        )));
                    }
                }
            }
        }
        Err(HostError::Failed(format!(
            "the watch of Deployment {name} ended unexpectedly"
        )))
    })
    .await;
    watched.unwrap_or_else(|_| {
        Err(HostError::Failed(format!(
            "Deployment {name} did not finish rolling out within {}: {}; see k8s::events(\"Deployment\", \"{name}\") and its pods",
            crate::timefmt::format_duration(timeout),
            if last.is_empty() { "no status seen" } else { &last }
        )))
    })
}

/// A watch that keeps failing this long means the API is gone, not blinking.
const LOST_API_GRACE: Duration = Duration::from_secs(10);

fn judge(
    name: &str,
    d: &Deployment,
    last: &mut String,
    started: Instant,
) -> Result<Option<WaitResult>, HostError> {
    match progress(d) {
        Progress::Complete(_) => {
            let info = deployment::describe(d);
            console::info(&format!("{name}: rolled out (revision {})", info.revision));
            Ok(Some(WaitResult {
                name: name.to_string(),
                revision: info.revision,
                version: info.version,
                images: info.images,
                ready: info.replicas.ready,
                took_ms: started.elapsed().as_millis() as u64,
            }))
        }
        Progress::Failed(message) => Err(HostError::Failed(format!(
            "rollout failed: {message}; roll back with k8s::rollout_undo(\"{name}\") or fix what blocks its pods (k8s::events(\"Deployment\", \"{name}\"))"
        ))),
        Progress::Waiting(message) => {
            if *last != message {
                console::info(&format!("{name}: {message}"));
                *last = message;
            }
            Ok(None)
        }
    }
}

/// Annotations `kubectl rollout undo` keeps from the Deployment instead of copying them from the
/// ReplicaSet it restores.
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

const HASH_LABEL: &str = "pod-template-hash";

#[derive(Debug, Clone, Serialize)]
pub struct UndoResult {
    pub name: String,
    /// The revision the Deployment was at.
    pub from_revision: i64,
    /// The revision whose pod template was restored.
    pub to_revision: i64,
    pub images: Vec<String>,
    /// Why nothing was sent, when nothing was (the template already matches); else empty.
    pub skipped: String,
}

pub struct UndoPlan {
    pub name: String,
    pub path: String,
    pub patch: Value,
    pub result: UndoResult,
}

/// Finds the revision to restore and builds kubectl's patch, plus a resourceVersion so the
/// patch fails if the Deployment changed after it was read.
pub async fn plan_undo(kube: &Kube, name: &str, to_revision: i64) -> Result<UndoPlan, HostError> {
    let d = deployment::get(kube, name).await?;
    if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
        return Err(HostError::Failed(format!(
            "Deployment {name} is paused and a paused Deployment cannot be rolled back; resume it first (kubectl rollout resume deployment/{name}) and try again"
        )));
    }
    let sets = owned_replica_sets(kube, &d).await?;
    let target = choose_revision(&sets, to_revision).map_err(|e| match e {
        Choice::NoHistory => HostError::Failed(format!(
            "Deployment {name} has no earlier revision to go back to"
        )),
        Choice::Missing(known) => HostError::Failed(format!(
            "Deployment {name} has no revision {to_revision}; its revisions are {}",
            known
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })?;
    let from_revision = deployment::revision(d.metadata.annotations.as_ref());
    let to = deployment::revision(target.metadata.annotations.as_ref());
    let mut template = target
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let current = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let images = super::meta::images(template.spec.as_ref());
    let skipped = if same_ignoring_hash(&template, &current) {
        format!("the current template already matches revision {to}")
    } else {
        String::new()
    };
    strip_hash(&mut template);
    let mut annotations = BTreeMap::new();
    let deployment_annotations = d.metadata.annotations.clone().unwrap_or_default();
    for key in ANNOTATIONS_TO_SKIP {
        if let Some(v) = deployment_annotations.get(key) {
            annotations.insert(key.to_string(), v.clone());
        }
    }
    for (k, v) in target.metadata.annotations.clone().unwrap_or_default() {
        if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
            annotations.insert(k, v);
        }
    }
    let patch = json!([
        {"op": "replace", "path": "/metadata/resourceVersion", "value": d.metadata.resource_version},
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]);
    Ok(UndoPlan {
        name: name.to_string(),
        path: format!(
            "/apis/apps/v1/namespaces/{}/deployments/{name}",
            kube.namespace
        ),
        patch,
        result: UndoResult {
            name: name.to_string(),
            from_revision,
            to_revision: to,
            images,
            skipped,
        },
    })
}

impl UndoPlan {
    pub fn request(&self) -> Value {
        if self.result.skipped.is_empty() {
            request::patch(&self.path, request::JSON_PATCH, self.patch.clone())
        } else {
            json!({"none": self.result.skipped})
        }
    }
}

pub async fn undo(kube: &Kube, plan: UndoPlan) -> Result<UndoResult, HostError> {
    if !plan.result.skipped.is_empty() {
        return Ok(plan.result);
    }
    let patch: json_patch::Patch = serde_json::from_value(plan.patch)
        .map_err(|e| HostError::Failed(format!("internal error building the patch: {e}")))?;
    let api = kube.api::<Deployment>();
    let name = plan.name.clone();
    kube.call_cas(
        Op::new("patch", "deployments", &plan.name),
        api.patch(&plan.name, &PatchParams::default(), &Patch::Json::<()>(patch)),
        || format!(
            "Deployment {name} changed after it was read, so nothing was changed (another rollout or controller touched it); check k8s::deployment(\"{name}\") and call rollout_undo again"
        ),
    )
    .await?;
    Ok(plan.result)
}

async fn owned_replica_sets(kube: &Kube, d: &Deployment) -> Result<Vec<ReplicaSet>, HostError> {
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let selector = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let api = kube.api::<ReplicaSet>();
    let list = kube
        .call(
            Op::all("list", "replicasets"),
            api.list(&ListParams::default().labels(&selector)),
        )
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect())
}

#[derive(Debug, PartialEq)]
pub enum Choice {
    NoHistory,
    /// The asked revision is not there; these are.
    Missing(Vec<i64>),
}

/// kubectl's choice: the exact revision when one is asked (non-zero), else the second newest.
pub fn choose_revision(sets: &[ReplicaSet], to_revision: i64) -> Result<&ReplicaSet, Choice> {
    let mut by_revision: Vec<(i64, &ReplicaSet)> = sets
        .iter()
        .filter_map(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION))
                .and_then(|r| r.parse().ok())
                .map(|r| (r, rs))
        })
        .collect();
    by_revision.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
    if to_revision != 0 {
        return by_revision
            .iter()
            .find(|(r, _)| *r == to_revision)
            .map(|(_, rs)| *rs)
            .ok_or_else(|| Choice::Missing(by_revision.iter().rev().map(|(r, _)| *r).collect()));
    }
    by_revision
        .get(1)
        .map(|(_, rs)| *rs)
        .ok_or(Choice::NoHistory)
}

fn strip_hash(template: &mut PodTemplateSpec) {
    if let Some(meta) = template.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(HASH_LABEL);
    }
}

fn same_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    strip_hash(&mut a);
    strip_hash(&mut b);
    normalize(serde_json::to_value(a).unwrap_or_default())
        == normalize(serde_json::to_value(b).unwrap_or_default())
}

/// Drops empty maps and lists, which the API and serde treat as absent.
fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalize(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn is_empty(v: &Value) -> bool {
    matches!(v, Value::Null)
        || v.as_object().is_some_and(|m| m.is_empty())
        || v.as_array().is_some_and(|a| a.is_empty())
}

pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

#[derive(Debug, Clone, Serialize)]
pub struct RestartResult {
    pub name: String,
    pub restarted_at: String,
}

pub struct RestartPlan {
    pub name: String,
    pub path: String,
    pub patch: Value,
    pub result: RestartResult,
}

pub async fn plan_restart(kube: &Kube, name: &str) -> Result<RestartPlan, HostError> {
    let d = deployment::get(kube, name).await?;
    if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
        return Err(HostError::Failed(format!(
            "Deployment {name} is paused, so a restart would not roll out; resume it first (kubectl rollout resume deployment/{name})"
        )));
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(RestartPlan {
        name: name.to_string(),
        path: format!(
            "/apis/apps/v1/namespaces/{}/deployments/{name}",
            kube.namespace
        ),
        patch: json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}),
        result: RestartResult {
            name: name.to_string(),
            restarted_at: now,
        },
    })
}

impl RestartPlan {
    pub fn request(&self) -> Value {
        request::patch(&self.path, request::STRATEGIC, self.patch.clone())
    }
}

pub async fn restart(kube: &Kube, plan: RestartPlan) -> Result<RestartResult, HostError> {
    let api = kube.api::<Deployment>();
    kube.call(
        Op::new("patch", "deployments", &plan.name),
        api.patch(
            &plan.name,
            &PatchParams::default(),
            &Patch::Strategic(plan.patch),
        ),
    )
    .await?;
    Ok(plan.result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(generation: i64, spec: i32, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(spec),
                ..Default::default()
            }),
            status: Some(status),
        }
    }

    fn status(observed: i64, replicas: i32, updated: i32, available: i32) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..Default::default()
        }
    }

    #[test]
    fn progress_follows_kubectl() {
        let p = progress(&deployment(2, 3, status(1, 3, 3, 3)));
        assert!(matches!(p, Progress::Waiting(m) if m.contains("observe")));
        let p = progress(&deployment(2, 3, status(2, 3, 1, 1)));
        assert_eq!(
            p,
            Progress::Waiting("1 of 3 new replicas have been updated".into())
        );
        let p = progress(&deployment(2, 3, status(2, 4, 3, 3)));
        assert_eq!(
            p,
            Progress::Waiting("1 old replicas are pending termination".into())
        );
        let p = progress(&deployment(2, 3, status(2, 3, 3, 2)));
        assert_eq!(
            p,
            Progress::Waiting("2 of 3 updated replicas are available".into())
        );
        assert!(matches!(
            progress(&deployment(2, 3, status(2, 3, 3, 3))),
            Progress::Complete(_)
        ));
        let mut s = status(2, 3, 1, 1);
        s.conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet \"web-1\" has timed out progressing.".into()),
            ..Default::default()
        }]);
        assert!(
            matches!(progress(&deployment(2, 3, s)), Progress::Failed(m) if m.contains("progress deadline"))
        );
    }

    fn rs(revision: &str) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("web-{revision}")),
                annotations: Some([(REVISION_ANNOTATION.to_string(), revision.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn undo_picks_previous_or_exact_revision() {
        let sets = vec![rs("3"), rs("1"), rs("4"), rs("2")];
        let name = |r: &ReplicaSet| r.metadata.name.clone().unwrap();
        assert_eq!(name(choose_revision(&sets, 0).unwrap()), "web-3");
        assert_eq!(name(choose_revision(&sets, 1).unwrap()), "web-1");
        assert_eq!(
            choose_revision(&sets, 9).unwrap_err(),
            Choice::Missing(vec![1, 2, 3, 4])
        );
        assert_eq!(
            choose_revision(&[rs("1")], 0).unwrap_err(),
            Choice::NoHistory
        );
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let mut a = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(
                    [
                        ("app".to_string(), "web".to_string()),
                        (HASH_LABEL.to_string(), "abc".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            spec: None,
        };
        let b = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                annotations: Some(BTreeMap::new()),
                ..Default::default()
            }),
            spec: None,
        };
        assert!(same_ignoring_hash(&a, &b));
        a.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("v".into(), "2".into());
        assert!(!same_ignoring_hash(&a, &b));
    }
}
