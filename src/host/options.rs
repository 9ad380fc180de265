//! Script arguments: option maps (`#{ timeout: 5, retries: 3 }`) turned into typed structs that
//! reject unknown keys, and arrays whose items must be strings.

use super::HostError;
use serde::de::DeserializeOwned;

/// Deserializes a script's option map; an unknown or mistyped key is an `Invalid` error that
/// names the function, the key and the valid ones.
pub fn parse<T: DeserializeOwned>(function: &str, opts: rhai::Map) -> Result<T, HostError> {
    rhai::serde::from_dynamic(&rhai::Dynamic::from_map(opts)).map_err(|e| {
        let detail = e.to_string();
        let detail = detail
            .trim_start_matches("Runtime error: ")
            .trim_start_matches("Syntax error: ")
            .trim_end_matches(" (line 0, position 0)")
            .to_string();
        let _ = function;
        HostError::Invalid(format!("invalid options: {detail}"))
    })
}

/// Accepts `5` as well as `5.0` where seconds or milliseconds are expected: scripts write both.
pub fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Float(f64),
    }
    Ok(match serde::Deserialize::deserialize(d)? {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
    })
}

/// Seconds given as a script number, checked to be finite and not negative.
pub fn seconds(function: &str, what: &str, value: f64) -> Result<std::time::Duration, HostError> {
    if value.is_finite() && value >= 0.0 {
        Ok(std::time::Duration::from_secs_f64(value))
    } else {
        let _ = function;
        Err(HostError::Invalid(format!(
            "{what} must be a number of seconds, 0 or more (got {value})"
        )))
    }
}

/// A request timeout given as a script number of seconds: more than 0.
pub fn timeout(function: &str, value: f64) -> Result<std::time::Duration, HostError> {
    if value <= 0.0 {
        return Err(HostError::Invalid(
            "timeout must be more than 0 seconds".into(),
        ));
    }
    seconds(function, "timeout", value)
}

/// The items of a script array that must all be strings; `what` names one item in the error
/// ("service", "image reference", "Helm release").
pub fn strings(list: rhai::Array, what: &str) -> Result<Vec<String>, HostError> {
    list.into_iter()
        .map(|item| {
            item.into_string().map_err(|t| {
                HostError::Invalid(format!("every {what} must be a string, found a {t}"))
            })
        })
        .collect()
}
