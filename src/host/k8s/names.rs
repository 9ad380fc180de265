//! Kubernetes name and label syntax, checked before any request is sent so a typo in a script
//! is a script error (exit 2) and never reaches the cluster.

use crate::host::HostError;

/// An object name (Deployment, ConfigMap, Secret, Pod…): a DNS-1123 subdomain.
pub fn object(what: &str, name: &str) -> Result<(), HostError> {
    let ok =
        !name.is_empty() && name.len() <= 253 && name.split('.').all(|part| dns_label(part, 63));
    if ok {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "'{name}' is not a valid {what} name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
        )))
    }
}

/// A Service name: a DNS-1035 label (it becomes a DNS name, so it must start with a letter).
pub fn service(name: &str) -> Result<(), HostError> {
    if dns_label(name, 63) && name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "'{name}' is not a valid Service name: use lowercase letters, digits and '-', starting with a letter, at most 63 characters"
        )))
    }
}

fn dns_label(part: &str, max: usize) -> bool {
    !part.is_empty()
        && part.len() <= max
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-')
}

/// A label key: an optional DNS subdomain prefix and '/', then a name of at most 63 characters.
pub fn label_key(key: &str) -> Result<(), HostError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty() && p.len() <= 253 && p.split('.').all(|part| dns_label(part, 63))
    });
    if prefix_ok && label_value_syntax(name) && !name.is_empty() {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "'{key}' is not a valid label key: an optional DNS prefix and '/', then letters, digits, '-', '_' or '.' (at most 63, starting and ending with a letter or digit)"
        )))
    }
}

/// A label value: empty, or at most 63 letters, digits, '-', '_', '.' with alphanumeric ends.
pub fn label_value(value: &str) -> Result<(), HostError> {
    if label_value_syntax(value) {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "'{value}' is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )))
    }
}

fn label_value_syntax(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        for good in [
            "web",
            "web-blue",
            "a.b-c",
            "0abc",
            &format!("{}.{}", "a".repeat(63), "b".repeat(63)),
        ] {
            assert!(object("Deployment", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Web",
            "web_blue",
            "-web",
            "web-",
            "a..b",
            "web blue",
            &"a".repeat(254),
        ] {
            assert!(object("Deployment", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_names_start_with_a_letter() {
        assert!(service("analysis-service").is_ok());
        assert!(service("1web").is_err());
        assert!(service("a.b").is_err());
        assert!(service(&"a".repeat(64)).is_err());
    }

    #[test]
    fn labels() {
        for good in ["version", "app.kubernetes.io/version", "rollback.io/run_id"] {
            assert!(label_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/x", "a/b/c", "-x", "UPPER.COM/x"] {
            assert!(label_key(bad).is_err(), "{bad}");
        }
        for good in ["", "v1.2.3", "blue", "A_b-c"] {
            assert!(label_value(good).is_ok(), "{good}");
        }
        for bad in ["-v", "v1 ", "a/b", &"a".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad}");
        }
    }
}
