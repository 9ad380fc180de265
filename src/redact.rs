//! Central secret redaction. Every byte that leaves the process for the journal, the report,
//! the log or the terminal passes through `scrub`, so no host function has to remember to.

use regex::Regex;
use serde_json::Value;
use std::sync::{LazyLock, RwLock};

pub const MASK: &str = "[REDACTED]";

/// Values shorter than this are not registered: masking "1" or "on" everywhere would garble
/// output without protecting anything.
const MIN_SECRET_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*):([^@\s/]+)@").expect("valid regex")
});
static SECRET_QUERY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)([?&](?:token|access_token|api_key|apikey|key|password|passwd|secret|sig|signature|routing_key)=)[^&\s#]+",
    )
    .expect("valid regex")
});
static SLACK_HOOK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_\-]+")
        .expect("valid regex")
});
static AUTH_HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer|token token=|basic)\s*[A-Za-z0-9._~+/=\-]{8,}").expect("valid regex")
});

/// Environment variable names whose values are treated as secrets wherever they show up.
static SECRET_ENV_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(password|passwd|secret|token|api_?key|routing_?key|webhook|credential|database_url|dsn)")
        .expect("valid regex")
});

/// Remembers a secret value so it is masked from now on.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_string());
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers the value of every environment variable whose name says it holds a secret, and
/// the password part of any URL-valued variable.
pub fn register_secret_env() {
    for (name, value) in std::env::vars() {
        if SECRET_ENV_NAME.is_match(&name) {
            register(&value);
        }
        register_url_password(&value);
    }
}

/// Registers the password inside a URL such as `postgres://user:pw@host/db`.
pub fn register_url_password(text: &str) {
    if let Ok(url) = url::Url::parse(text)
        && let Some(password) = url.password()
    {
        register(password);
        if let Ok(decoded) = urlencoding_decode(password) {
            register(&decoded);
        }
    }
}

fn urlencoding_decode(s: &str) -> Result<String, ()> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .ok_or(())?;
    String::from_utf8(bytes).map_err(|_| ())
}

/// Returns `text` with every known secret and every secret-shaped fragment masked.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    {
        let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
    }
    let out = URL_PASSWORD.replace_all(&out, format!("$1:{MASK}@").as_str());
    let out = SECRET_QUERY.replace_all(&out, format!("${{1}}{MASK}").as_str());
    let out = SLACK_HOOK.replace_all(&out, format!("${{1}}{MASK}").as_str());
    let out = AUTH_HEADER.replace_all(&out, format!("$1 {MASK}").as_str());
    out.into_owned()
}

/// Keys whose values are secrets whatever they look like.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "routing_key",
        "api_key",
        "authorization",
        "webhook",
    ]
    .iter()
    .any(|k| key.contains(k))
}

/// Scrubs every string in a JSON value, masking whole values under secret-looking keys.
pub fn scrub_json(value: &mut Value) {
    match value {
        Value::String(s) => *s = scrub(s),
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_key(key) && !v.is_null() && !v.is_boolean() {
                    *v = Value::String(MASK.to_string());
                } else {
                    scrub_json(v);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_passwords_and_tokens() {
        assert_eq!(
            scrub("postgres://app:hunter22@db:5432/x"),
            "postgres://app:[REDACTED]@db:5432/x"
        );
        assert_eq!(
            scrub("http://h/api?token=abc123&x=1"),
            "http://h/api?token=[REDACTED]&x=1"
        );
        assert_eq!(
            scrub("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com/services/[REDACTED]"
        );
        assert_eq!(
            scrub("Authorization: Bearer abcdefghijkl"),
            "Authorization: Bearer [REDACTED]"
        );
    }

    #[test]
    fn masks_registered_values_longest_first() {
        register("s3cr3t-value");
        register("s3cr3t-value-and-more");
        assert_eq!(scrub("a s3cr3t-value-and-more b"), "a [REDACTED] b");
        assert_eq!(scrub("c s3cr3t-value d"), "c [REDACTED] d");
    }

    #[test]
    fn short_values_are_not_registered() {
        register("on");
        assert_eq!(scrub("turn it on"), "turn it on");
    }

    #[test]
    fn json_secret_keys_are_masked_whole() {
        let mut v =
            serde_json::json!({"password": "x", "nested": {"url": "http://u:p@h/"}, "n": 1});
        scrub_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"password": MASK, "nested": {"url": "http://u:[REDACTED]@h/"}, "n": 1})
        );
    }
}
