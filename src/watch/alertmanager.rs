//! Alertmanager's webhook (payload version 4) mapped to triggers by alert name: a firing
//! alert fires its trigger at once (Alertmanager's `for:` already judged how long it held).

use super::evaluate::Firing;
use super::trigger::Trigger;
use crate::platform::Platform;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    version: Option<String>,
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    starts_at: Option<DateTime<Utc>>,
}

/// What to do with one alert of a payload.
#[derive(Debug)]
pub enum Decision {
    Fire(Box<Firing>),
    /// Nothing to do, and why (logged).
    Ignore(String),
}

/// Reads a webhook body; `Err` (HTTP 400) when it is not an Alertmanager version 4 payload.
pub fn interpret(
    body: &[u8],
    triggers: &[Trigger],
    platform: &Platform,
    now: DateTime<Utc>,
) -> Result<Vec<Decision>, String> {
    let payload: Payload = serde_json::from_slice(body)
        .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if let Some(version) = payload.version.as_deref()
        && version != "4"
    {
        return Err(format!(
            "Alertmanager webhook payload version {version} is not supported (version 4 is)"
        ));
    }
    Ok(payload
        .alerts
        .iter()
        .map(|alert| decide(alert, triggers, platform, now))
        .collect())
}

fn decide(
    alert: &Alert,
    triggers: &[Trigger],
    platform: &Platform,
    now: DateTime<Utc>,
) -> Decision {
    let Some(name) = alert.labels.get("alertname") else {
        return Decision::Ignore("an alert without an alertname label".into());
    };
    let Some(trigger) = triggers.iter().find(|t| t.alertname() == name) else {
        let known: Vec<&str> = triggers.iter().map(Trigger::alertname).collect();
        return Decision::Ignore(format!(
            "alert '{name}' matches no trigger (known alert names: {})",
            known.join(", ")
        ));
    };
    if alert.status != "firing" {
        return Decision::Ignore(format!("alert '{name}' is {}: nothing to do", alert.status));
    }
    let service = match alert.labels.get("service") {
        Some(s) if !platform.services.contains_key(s) => {
            return Decision::Ignore(format!(
                "alert '{name}' names service '{s}', which is not in the platform definition"
            ));
        }
        Some(s) if !trigger.services.is_empty() && !trigger.services.contains(s) => {
            return Decision::Ignore(format!(
                "alert '{name}' is about '{s}', which trigger '{}' does not watch",
                trigger.name
            ));
        }
        Some(s) => s.clone(),
        None => trigger.services.first().cloned().unwrap_or_default(),
    };
    let since = alert.starts_at.unwrap_or(now);
    Decision::Fire(Box::new(Firing {
        trigger: trigger.name.clone(),
        service,
        condition: format!("Alertmanager alert {name} firing"),
        value: None,
        threshold: trigger.threshold,
        query: String::new(),
        held_since: since,
        held_s: (now - since).to_std().unwrap_or_default().as_secs_f64(),
        sustained_s: 0.0,
        source: "alertmanager",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Vec<Trigger>, Platform) {
        let platform = Platform::load(
            "p.toml",
            "[environments.x]\nnamespace='a'\n[services.api]\n[services.web]\n\
             [[triggers]]\nname='errors'\nmetric='error_rate'\nthreshold=5\nsustained='1m'\nalertname='HighErrorRate'\n",
            None,
        )
        .unwrap();
        let triggers = super::super::trigger::for_environment(&platform, "x").unwrap();
        (triggers, platform)
    }

    fn payload(status: &str, name: &str) -> String {
        format!(
            r#"{{"version":"4","groupKey":"{{}}:{{}}","status":"{status}","receiver":"rollback","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://am","truncatedAlerts":0,
            "alerts":[{{"status":"{status}","labels":{{"alertname":"{name}","service":"api"}},"annotations":{{}},"startsAt":"2026-11-25T20:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"abc"}}]}}"#
        )
    }

    #[test]
    fn a_firing_alert_fires_its_trigger_for_its_service() {
        let (triggers, platform) = setup();
        let now = Utc::now();
        let decisions = interpret(
            payload("firing", "HighErrorRate").as_bytes(),
            &triggers,
            &platform,
            now,
        )
        .unwrap();
        match &decisions[..] {
            [Decision::Fire(f)] => {
                assert_eq!((f.trigger.as_str(), f.service.as_str()), ("errors", "api"));
                assert_eq!(f.source, "alertmanager");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resolved_unknown_and_malformed_do_not_fire() {
        let (triggers, platform) = setup();
        let now = Utc::now();
        for (body, reason) in [
            (payload("resolved", "HighErrorRate"), "is resolved"),
            (payload("firing", "DiskFull"), "matches no trigger"),
        ] {
            let d = interpret(body.as_bytes(), &triggers, &platform, now).unwrap();
            assert!(
                matches!(&d[..], [Decision::Ignore(r)] if r.contains(reason)),
                "{d:?}"
            );
        }
        for bad in ["{", "[]", r#"{"version":"3","alerts":[]}"#] {
            assert!(interpret(bad.as_bytes(), &triggers, &platform, now).is_err());
        }
    }
}
