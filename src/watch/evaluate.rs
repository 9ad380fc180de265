//! One evaluation: every trigger's query against Prometheus, and how long each condition has
//! held without a break.
//!
//! Missing data never counts as a held condition: an unreachable Prometheus, a query error or
//! an empty answer (no traffic, NaN) breaks the run of a condition like a healthy value would,
//! so an outage of the monitoring can neither fire a trigger nor keep one armed.

use super::trigger::Trigger;
use crate::host::prom::api;
use crate::platform::Platform;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// One trigger's value for one service.
#[derive(Debug, Clone)]
pub struct Reading {
    pub trigger: String,
    pub service: String,
    pub query: String,
    /// `Ok(None)`: Prometheus answered with no usable sample.
    pub value: Result<Option<f64>, String>,
}

/// How long a trigger's condition has held for a service, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub value: Option<f64>,
    pub since: Option<DateTime<Utc>>,
    /// This run of the condition already fired; it fires again only after breaking.
    #[serde(default)]
    pub fired: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A condition that held for its trigger's sustained duration.
#[derive(Debug, Clone, Serialize)]
pub struct Firing {
    pub trigger: String,
    pub service: String,
    pub condition: String,
    /// None for an Alertmanager alert, which carries no value of its own.
    pub value: Option<f64>,
    pub threshold: f64,
    pub query: String,
    pub held_since: DateTime<Utc>,
    pub held_s: f64,
    pub sustained_s: f64,
    pub source: &'static str,
}

pub fn key(trigger: &str, service: &str) -> String {
    if service.is_empty() {
        trigger.to_string()
    } else {
        format!("{trigger}/{service}")
    }
}

/// Every trigger × service condition of one environment.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    pub conditions: BTreeMap<String, Condition>,
}

impl Tracker {
    /// Folds one evaluation in; returns the conditions that have now held long enough.
    pub fn update(
        &mut self,
        now: DateTime<Utc>,
        triggers: &[Trigger],
        readings: &[Reading],
    ) -> Vec<Firing> {
        let mut firings = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for reading in readings {
            let Some(trigger) = triggers.iter().find(|t| t.name == reading.trigger) else {
                continue;
            };
            let k = key(&reading.trigger, &reading.service);
            seen.insert(k.clone());
            let condition = self.conditions.entry(k).or_default();
            let (value, error) = match &reading.value {
                Ok(v) => (*v, None),
                Err(e) => (None, Some(e.clone())),
            };
            condition.value = value;
            condition.error = error;
            let holds = value.is_some_and(|v| trigger.comparison().holds(v, trigger.threshold));
            if !holds {
                condition.since = None;
                condition.fired = false;
                continue;
            }
            let since = *condition.since.get_or_insert(now);
            let held = (now - since).to_std().unwrap_or_default();
            if !condition.fired && held >= trigger.sustained() {
                condition.fired = true;
                firings.push(Firing {
                    trigger: trigger.name.clone(),
                    service: reading.service.clone(),
                    condition: trigger.condition(),
                    value,
                    threshold: trigger.threshold,
                    query: reading.query.clone(),
                    held_since: since,
                    held_s: held.as_secs_f64(),
                    sustained_s: trigger.sustained().as_secs_f64(),
                    source: "prometheus",
                });
            }
        }
        self.conditions.retain(|k, _| seen.contains(k));
        firings
    }

    /// Lets a condition that fired fire again at the next evaluation: a follower must not
    /// consume a firing it could not act on, or it would ignore the condition once it leads.
    pub fn rearm(&mut self, trigger: &str, service: &str) {
        if let Some(c) = self.conditions.get_mut(&key(trigger, service)) {
            c.fired = false;
        }
    }

    /// The conditions that hold now, with when they started: what replicas share.
    pub fn holding(&self) -> BTreeMap<String, DateTime<Utc>> {
        self.conditions
            .iter()
            .filter_map(|(k, c)| c.since.map(|s| (k.clone(), s)))
            .collect()
    }
}

/// Queries every trigger for every service it watches, all at once.
pub async fn evaluate(
    http: &reqwest::Client,
    prometheus: &str,
    platform: &Platform,
    triggers: &[Trigger],
    timeout: Duration,
) -> Vec<Reading> {
    let mut pending = Vec::new();
    for trigger in triggers {
        for service in trigger.targets(platform) {
            let query = trigger.query(&platform.metrics, &service);
            let name = trigger.name.clone();
            pending.push(async move {
                let value = match &query {
                    Ok(q) => api::instant_query(http, prometheus, q, "", timeout)
                        .await
                        .map(|samples| {
                            samples
                                .into_iter()
                                .find_map(|s| s.value)
                                .filter(|v| v.is_finite())
                        })
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.clone()),
                };
                Reading {
                    trigger: name,
                    service,
                    query: query.unwrap_or_default(),
                    value,
                }
            });
        }
    }
    futures::future::join_all(pending).await
}

/// `12.5` → `12.5`, `0.1234567` → `0.1235`: values for a log line.
pub fn show(value: Option<f64>) -> String {
    match value {
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{}", (v * 10_000.0).round() / 10_000.0),
        None => "no data".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger() -> Trigger {
        toml::from_str(
            "name='errors'\nmetric='error_rate'\nthreshold=5\nsustained='10s'\nservices=['api']",
        )
        .unwrap()
    }

    fn reading(value: Result<Option<f64>, String>) -> Reading {
        Reading {
            trigger: "errors".into(),
            service: "api".into(),
            query: "q".into(),
            value,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn fires_once_after_the_sustained_duration() {
        let triggers = [trigger()];
        let mut tracker = Tracker::default();
        assert!(
            tracker
                .update(at(0), &triggers, &[reading(Ok(Some(12.0)))])
                .is_empty()
        );
        assert!(
            tracker
                .update(at(9), &triggers, &[reading(Ok(Some(12.0)))])
                .is_empty()
        );
        let fired = tracker.update(at(10), &triggers, &[reading(Ok(Some(11.0)))]);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].held_since, at(0));
        assert_eq!(fired[0].value, Some(11.0));
        assert!(
            tracker
                .update(at(30), &triggers, &[reading(Ok(Some(12.0)))])
                .is_empty(),
            "one firing per run of the condition"
        );
    }

    #[test]
    fn a_break_or_missing_data_restarts_the_clock() {
        let triggers = [trigger()];
        let mut tracker = Tracker::default();
        let breaks = [
            Ok(Some(1.0)),
            Ok(None),
            Err("cannot reach Prometheus".to_string()),
        ];
        let mut t = 0;
        for gap in breaks {
            tracker.update(at(t), &triggers, &[reading(Ok(Some(12.0)))]);
            tracker.update(at(t + 8), &triggers, &[reading(gap)]);
            assert!(
                tracker
                    .update(at(t + 12), &triggers, &[reading(Ok(Some(12.0)))])
                    .is_empty()
            );
            assert_eq!(tracker.holding()["errors/api"], at(t + 12));
            t += 100;
        }
    }
}
