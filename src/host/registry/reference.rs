//! Image references (`host[:port]/path/name[:tag][@sha256:…]`) parsed as Docker does: the
//! first component is a registry only if it has a dot, a port or is `localhost`; otherwise the
//! image is on Docker Hub (`docker.io`, with `library/` for one-component names).

use crate::host::HostError;
use regex::Regex;
use std::sync::LazyLock;

pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's distribution API answers (docker.io itself only redirects).
pub const DOCKER_HUB_API: &str = "https://registry-1.docker.io";

static COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$").expect("valid regex"));
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("valid regex"));
static DIGEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-fA-F0-9]{32,}$").expect("valid regex")
});
static HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?$")
        .expect("valid regex")
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// As written in references: `docker.io`, `registry.example.com:5000`.
    pub host: String,
    /// The repository inside the registry: `tracktion/analysis-service`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// What the manifest is asked for by: the digest when given, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The full reference with defaults filled in.
    pub fn canonical(&self) -> String {
        let mut text = format!("{}/{}", self.host, self.repository);
        if let Some(tag) = &self.tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(digest);
        }
        text
    }
}

pub fn parse(text: &str) -> Result<Reference, HostError> {
    let invalid = |why: &str| {
        HostError::Invalid(format!(
            "'{text}' is not a valid image reference ({why}); write it as host/repository/name:tag or name@sha256:<digest>"
        ))
    };
    if text.is_empty() || text.len() > 512 || text.trim() != text {
        return Err(invalid("empty, too long or with spaces"));
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => {
            if !DIGEST.is_match(digest) {
                return Err(invalid(&format!("'{digest}' is not a digest")));
            }
            (rest, Some(digest.to_string()))
        }
        None => (text, None),
    };
    // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &rest[last_slash + i + 1..];
            if !TAG.is_match(tag) {
                return Err(invalid(&format!("'{tag}' is not a valid tag")));
            }
            (&rest[..last_slash + i], Some(tag.to_string()))
        }
        None => (rest, None),
    };
    let (host, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if !HOST.is_match(first) {
                return Err(invalid(&format!("'{first}' is not a registry host")));
            }
            (first.to_string(), path.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let repository = if host == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if let Some(bad) = repository.split('/').find(|c| !COMPONENT.is_match(c)) {
        return Err(invalid(&format!(
            "'{bad}' is not a valid name component (lowercase letters, digits and . _ -)"
        )));
    }
    let tag = if tag.is_none() && digest.is_none() {
        Some("latest".to_string())
    } else {
        tag
    };
    Ok(Reference {
        host,
        repository,
        tag,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_tags_and_digests() {
        let r = parse("registry.tracktion.local/tracktion/analysis-service:v1.2.3").unwrap();
        assert_eq!(r.host, "registry.tracktion.local");
        assert_eq!(r.repository, "tracktion/analysis-service");
        assert_eq!(r.manifest_reference(), "v1.2.3");
        let r = parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(
            (r.host.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", Some("latest"))
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("localhost/app:1@{digest}")).unwrap();
        assert_eq!(r.manifest_reference(), digest);
        assert_eq!(r.canonical(), format!("localhost/app:1@{digest}"));
        let r = parse("nginx").unwrap();
        assert_eq!(r.canonical(), "docker.io/library/nginx:latest");
        let r = parse("grafana/grafana:10").unwrap();
        assert_eq!(r.repository, "grafana/grafana");
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (text, why) in [
            ("", "empty"),
            ("Registry.local/App:1", "name component"),
            ("host.local/app:bad tag", "not a valid tag"),
            (" host.local/app", "spaces"),
            ("host.local/app:-x", "tag"),
            ("host.local/app@sha256:zz", "digest"),
            ("host.local//app", "name component"),
        ] {
            match parse(text) {
                Err(HostError::Invalid(m)) => assert!(m.contains(why), "{text}: {m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
