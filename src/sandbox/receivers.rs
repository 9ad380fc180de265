//! Local stand-ins for Slack incoming webhooks and the PagerDuty Events API v2, so a
//! rehearsal notifies somewhere real. They validate like the services do (a wrong webhook path,
//! an empty message, a wrong routing key are refused), and every delivery, accepted or not, is
//! recorded as one JSON line in the sandbox's `notifications/` directory.

use serde_json::{Value, json};

/// The path a Slack webhook URL of this sandbox has; the token is random per `up`.
pub fn slack_path(token: &str) -> String {
    format!("/slack/services/{token}")
}

pub const PAGERDUTY_PATH: &str = "/pagerduty/v2/enqueue";

#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

fn text(status: u16, body: &str) -> Reply {
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

fn json_reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

/// Slack answers `ok`, or a plain-text error code.
pub fn slack(expected_path: &str, path: &str, body: &[u8]) -> Reply {
    if path != expected_path {
        return text(404, "no_service");
    }
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return text(400, "invalid_payload");
    };
    let has = |key: &str| match &message[key] {
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    };
    if !(has("text") || has("blocks") || has("attachments")) {
        return text(400, "no_text");
    }
    text(200, "ok")
}

/// PagerDuty Events API v2: 202 with a dedup key, or 400 naming what is invalid.
pub fn pagerduty(routing_key: &str, body: &[u8]) -> Reply {
    let invalid = |errors: Vec<String>| {
        json_reply(
            400,
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
        )
    };
    let Ok(event) = serde_json::from_slice::<Value>(body) else {
        return invalid(vec!["Malformed JSON".into()]);
    };
    let mut errors = Vec::new();
    if event["routing_key"].as_str() != Some(routing_key) {
        errors.push("Invalid routing key".to_string());
    }
    let action = event["event_action"].as_str().unwrap_or_default();
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        errors.push("'event_action' must be one of trigger, acknowledge, resolve".into());
    }
    if action == "trigger" {
        let payload = &event["payload"];
        for field in ["summary", "source"] {
            if payload[field].as_str().is_none_or(|s| s.trim().is_empty()) {
                errors.push(format!("'payload.{field}' is missing or blank"));
            }
        }
        let severity = payload["severity"].as_str().unwrap_or_default();
        if !["critical", "error", "warning", "info"].contains(&severity) {
            errors.push("'payload.severity' must be one of critical, error, warning, info".into());
        }
    } else if !action.is_empty() && event["dedup_key"].as_str().is_none() {
        errors.push(format!("'dedup_key' is required to {action}"));
    }
    if !errors.is_empty() {
        return invalid(errors);
    }
    let dedup_key = event["dedup_key"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    json_reply(
        202,
        json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key}),
    )
}

/// One line of `notifications/<receiver>.jsonl`.
pub fn record(path: &str, body: &[u8], reply: &Reply) -> String {
    let body = serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    json!({
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "path": path,
        "status": reply.status,
        "reply": reply.body,
        "body": body,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_checks_the_path_and_the_message() {
        let path = slack_path("abc");
        assert_eq!(
            slack(&path, &path, br#"{"text":"rollback started"}"#).status,
            200
        );
        assert_eq!(slack(&path, "/slack/services/x", b"{}").body, "no_service");
        assert_eq!(slack(&path, &path, b"not json").body, "invalid_payload");
        assert_eq!(slack(&path, &path, br#"{"text":" "}"#).body, "no_text");
        assert_eq!(slack(&path, &path, br#"{"blocks":[{}]}"#).status, 200);
    }

    #[test]
    fn pagerduty_checks_key_action_and_payload() {
        let ok = pagerduty(
            "key",
            br#"{"routing_key":"key","event_action":"trigger","dedup_key":"d1","payload":{"summary":"s","source":"rollback","severity":"critical"}}"#,
        );
        assert_eq!(ok.status, 202);
        assert!(ok.body.contains(r#""dedup_key":"d1""#));
        let bad = pagerduty(
            "key",
            br#"{"routing_key":"nope","event_action":"trigger","payload":{"summary":"s","source":"x","severity":"bad"}}"#,
        );
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("Invalid routing key"), "{}", bad.body);
        assert!(bad.body.contains("payload.severity"), "{}", bad.body);
        let resolve = pagerduty("key", br#"{"routing_key":"key","event_action":"resolve"}"#);
        assert!(resolve.body.contains("dedup_key"), "{}", resolve.body);
    }
}
