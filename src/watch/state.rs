//! What every replica must agree on, kept in the ConfigMap `rollback-watch` of the
//! environment's namespace: the incident awaiting acknowledgement (the cooldown), the last
//! acknowledgement, and since when each condition has held.
//!
//! The incident is recorded (compare-and-swap on the resourceVersion) before the procedure
//! starts, so a leader that dies mid-rollback leaves a cooldown its successor respects.

use super::evaluate::Firing;
use crate::host::HostError;
use crate::host::k8s::client::{CallError, Kube, Op};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const CONFIGMAP: &str = "rollback-watch";

/// One automatic rollback, from firing until someone acknowledges it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Incident {
    pub trigger: String,
    pub service: String,
    pub fired_at: DateTime<Utc>,
    /// The replica that acted.
    pub by: String,
    pub procedure: String,
    pub args: Vec<String>,
    /// The firing with the values that caused it.
    pub cause: Value,
    #[serde(default)]
    pub run: Option<String>,
    /// How the procedure ended: succeeded, failed (exit N), or running.
    #[serde(default)]
    pub outcome: Option<String>,
}

impl Incident {
    pub fn new(firing: &Firing, by: &str, procedure: &str, args: Vec<String>) -> Incident {
        Incident {
            trigger: firing.trigger.clone(),
            service: firing.service.clone(),
            fired_at: Utc::now(),
            by: by.to_string(),
            procedure: procedure.to_string(),
            args,
            cause: serde_json::to_value(firing).unwrap_or_default(),
            run: None,
            outcome: Some("running".into()),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} fired at {}{} by {}: {} {}{}",
            super::evaluate::key(&self.trigger, &self.service),
            self.fired_at.format("%Y-%m-%d %H:%M:%S UTC"),
            match self.cause.get("source").and_then(Value::as_str) {
                Some("alertmanager") => " (Alertmanager alert)",
                _ => "",
            },
            self.by,
            self.procedure,
            self.run
                .as_ref()
                .map(|r| format!("run {r}"))
                .unwrap_or_default(),
            self.outcome
                .as_ref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default()
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Acknowledgement {
    pub by: String,
    pub at: DateTime<Utc>,
    pub incident: Incident,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shared {
    pub incident: Option<Incident>,
    pub acknowledged: Option<Acknowledgement>,
    /// Condition key → since when it has held, as the leader last published.
    pub conditions: BTreeMap<String, DateTime<Utc>>,
}

fn decode(cm: &ConfigMap) -> Shared {
    let data = cm.data.clone().unwrap_or_default();
    Shared {
        incident: field(&data, "incident"),
        acknowledged: field(&data, "acknowledged"),
        conditions: field(&data, "conditions").unwrap_or_default(),
    }
}

fn field<T: serde::de::DeserializeOwned>(data: &BTreeMap<String, String>, key: &str) -> Option<T> {
    data.get(key).and_then(|t| serde_json::from_str(t).ok())
}

fn encode(shared: &Shared, previous: Option<&ConfigMap>) -> ConfigMap {
    let mut data = BTreeMap::new();
    if let Some(i) = &shared.incident {
        data.insert("incident".to_string(), json(i));
    }
    if let Some(a) = &shared.acknowledged {
        data.insert("acknowledged".to_string(), json(a));
    }
    data.insert("conditions".to_string(), json(&shared.conditions));
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP.into()),
            resource_version: previous.and_then(|c| c.metadata.resource_version.clone()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "rollback-watch".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

pub async fn load(kube: &Kube) -> Result<Shared, HostError> {
    let api = kube.api::<ConfigMap>();
    Ok(kube
        .call_opt(Op::new("get", "configmaps", CONFIGMAP), api.get(CONFIGMAP))
        .await?
        .map(|cm| decode(&cm))
        .unwrap_or_default())
}

/// Reads, changes and writes the state until no other replica wrote in between. `change`
/// returns false to leave it as it is.
pub async fn modify<T>(
    kube: &Kube,
    mut change: impl FnMut(&mut Shared) -> (bool, T),
) -> Result<T, HostError> {
    let api = kube.api::<ConfigMap>();
    for _ in 0..10 {
        let current = kube
            .call_opt(Op::new("get", "configmaps", CONFIGMAP), api.get(CONFIGMAP))
            .await?;
        let mut shared = current.as_ref().map(decode).unwrap_or_default();
        let (write, answer) = change(&mut shared);
        if !write {
            return Ok(answer);
        }
        let object = encode(&shared, current.as_ref());
        let sent = match &current {
            None => {
                kube.call_checked(
                    Op::new("create", "configmaps", CONFIGMAP),
                    api.create(&PostParams::default(), &object),
                )
                .await
            }
            Some(_) => {
                kube.call_checked(
                    Op::new("update", "configmaps", CONFIGMAP),
                    api.replace(CONFIGMAP, &PostParams::default(), &object),
                )
                .await
            }
        };
        match sent {
            Ok(_) => return Ok(answer),
            Err(CallError::Conflict) => continue,
            Err(CallError::Other(e)) => return Err(e),
        }
    }
    Err(HostError::Failed(format!(
        "ConfigMap {}/{CONFIGMAP} kept changing while being written; try again",
        kube.namespace
    )))
}

/// Records `incident` unless one awaits acknowledgement: `Ok(None)` means it is ours to act
/// on, `Ok(Some(active))` that the cooldown holds.
pub async fn claim(kube: &Kube, incident: &Incident) -> Result<Option<Incident>, HostError> {
    modify(kube, |shared| match &shared.incident {
        Some(active) => (false, Some(active.clone())),
        None => {
            shared.incident = Some(incident.clone());
            (true, None)
        }
    })
    .await
}

/// Adds the run and its outcome to the recorded incident.
pub async fn conclude(
    kube: &Kube,
    fired_at: DateTime<Utc>,
    run: &str,
    outcome: &str,
) -> Result<(), HostError> {
    modify(kube, |shared| match shared.incident.as_mut() {
        Some(i) if i.fired_at == fired_at => {
            i.run = Some(run.to_string());
            i.outcome = Some(outcome.to_string());
            (true, ())
        }
        _ => (false, ()),
    })
    .await
}

/// Ends the cooldown; returns the incident acknowledged, if there was one.
pub async fn acknowledge(kube: &Kube, by: &str) -> Result<Option<Incident>, HostError> {
    modify(kube, |shared| match shared.incident.take() {
        Some(incident) => {
            shared.acknowledged = Some(Acknowledgement {
                by: by.to_string(),
                at: Utc::now(),
                incident: incident.clone(),
            });
            (true, Some(incident))
        }
        None => (false, None),
    })
    .await
}

/// Publishes since when each condition holds, when that changed.
pub async fn publish(
    kube: &Kube,
    conditions: &BTreeMap<String, DateTime<Utc>>,
) -> Result<(), HostError> {
    modify(kube, |shared| {
        let changed = shared.conditions != *conditions;
        shared.conditions = conditions.clone();
        (changed, ())
    })
    .await
}
