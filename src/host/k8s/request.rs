//! The requests mutating calls send, as data: what a dry-run journals is exactly what a real run
//! sends.

use serde_json::{Value, json};

pub const MERGE: &str = "application/merge-patch+json";
pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";

pub fn patch(path: &str, content_type: &str, body: Value) -> Value {
    json!({"method": "PATCH", "path": path, "content_type": content_type, "body": body})
}

pub fn put(path: &str, body: Value) -> Value {
    json!({"method": "PUT", "path": path, "content_type": "application/json", "body": body})
}

pub fn post(path: &str, body: Value) -> Value {
    json!({"method": "POST", "path": path, "content_type": "application/json", "body": body})
}
