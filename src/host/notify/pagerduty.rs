//! PagerDuty Events API v2 bodies: trigger (with the incident's details) and resolve.

use super::Notice;
use serde_json::{Map, Value, json};

/// The API's limit on `summary`.
const SUMMARY_MAX: usize = 1024;

/// What the PagerDuty event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Trigger,
    Resolve,
}

pub fn payload(n: &Notice, action: Action, routing_key: &str, dedup_key: &str) -> Value {
    if action == Action::Resolve {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let c = n.context;
    // The script's fields first, then the run's facts, which a field cannot overwrite.
    let mut details: Map<String, Value> = n.fields.clone().into_iter().collect();
    details.insert("message".into(), Value::String(n.message.to_string()));
    details.insert("run_id".into(), Value::String(c.run_id.clone()));
    details.insert("operator".into(), Value::String(c.operator.clone()));
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": super::slack::truncate(&format!("{}: {}", n.title, n.message), SUMMARY_MAX),
            "source": format!("rollback@{}", c.host),
            "severity": n.severity.name(),
            "component": c.procedure,
            "group": c.environment,
            "custom_details": details,
        },
    })
}
