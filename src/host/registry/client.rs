//! The OCI distribution API, as far as `image_exists` needs it: a HEAD on the manifest,
//! answering the registry's `WWW-Authenticate` challenge with basic auth or a bearer token
//! fetched from its token endpoint.

use super::reference::Reference;
use crate::host::HostError;
use crate::host::http::describe_request_error;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Client, Method, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Every manifest kind a tag can point at: single-platform images and multi-platform indexes,
/// in their OCI and Docker v2 forms. A registry answers 404 for a kind it is not offered.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Where to ask and with what credentials.
pub struct Endpoint {
    /// The API's base URL, without a trailing slash.
    pub base: String,
    pub credentials: Option<Credentials>,
    /// How to fix refused or missing credentials, for messages.
    pub hint: String,
    /// Where the address comes from, for messages: the platform table or the image's host.
    pub origin: String,
}

pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageStatus {
    pub exists: bool,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub reference: String,
    pub registry: String,
}

pub async fn image_exists(
    client: &Client,
    endpoint: &Endpoint,
    reference: &Reference,
    timeout: Duration,
) -> Result<ImageStatus, HostError> {
    let url = format!(
        "{}/v2/{}/manifests/{}",
        endpoint.base,
        reference.repository,
        reference.manifest_reference()
    );
    let mut status = ImageStatus {
        exists: false,
        digest: None,
        media_type: None,
        reference: reference.canonical(),
        registry: reference.host.clone(),
    };
    let ask = Asker {
        client,
        endpoint,
        timeout,
        registry: &reference.host,
    };
    let (code, headers) = ask.manifest(Method::HEAD, &url, None).await?;
    let (code, headers, authorization) = if code == StatusCode::UNAUTHORIZED {
        let authorization = ask.authorize(&headers, reference).await?;
        let (code, headers) = ask
            .manifest(Method::HEAD, &url, Some(&authorization))
            .await?;
        (code, headers, Some(authorization))
    } else {
        (code, headers, None)
    };
    match code {
        StatusCode::OK => {
            status.exists = true;
            status.media_type = header(&headers, CONTENT_TYPE.as_str());
            status.digest = match header(&headers, "docker-content-digest") {
                Some(digest) => Some(digest),
                // The header is optional in the specification: hash the manifest instead.
                None => Some(ask.digest_by_get(&url, authorization.as_deref()).await?),
            };
            Ok(status)
        }
        StatusCode::NOT_FOUND => Ok(status),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(ask.refused(code)),
        other => Err(HostError::Failed(format!(
            "the registry {} answered HTTP {} for {}; check that {} is its distribution API (a /v2/ endpoint)",
            reference.host,
            other.as_u16(),
            reference.canonical(),
            endpoint.base
        ))),
    }
}

struct Asker<'a> {
    client: &'a Client,
    endpoint: &'a Endpoint,
    timeout: Duration,
    registry: &'a str,
}

impl Asker<'_> {
    async fn manifest(
        &self,
        method: Method,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap), HostError> {
        let response = self.send(method, url, authorization).await?;
        Ok((response.status(), response.headers().clone()))
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response, HostError> {
        let mut request = self
            .client
            .request(method, url)
            .header(ACCEPT, MANIFEST_TYPES)
            .timeout(self.timeout);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        request.send().await.map_err(|e| self.unreachable(e))
    }

    fn unreachable(&self, e: reqwest::Error) -> HostError {
        HostError::Failed(format!(
            "cannot reach the registry {} at {}: {}; check that it is up and {}",
            self.registry,
            self.endpoint.base,
            describe_request_error(&e.without_url(), self.timeout),
            self.endpoint.origin
        ))
    }

    fn refused(&self, code: StatusCode) -> HostError {
        HostError::Failed(format!(
            "the registry {} refused access (HTTP {}); {}",
            self.registry,
            code.as_u16(),
            self.endpoint.hint
        ))
    }

    /// The `Authorization` value that answers the challenge of a 401.
    async fn authorize(
        &self,
        headers: &HeaderMap,
        reference: &Reference,
    ) -> Result<String, HostError> {
        let challenge = header(headers, WWW_AUTHENTICATE.as_str()).unwrap_or_default();
        let (scheme, params) = parse_challenge(&challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => self.bearer(&params, reference).await,
            _ => match &self.endpoint.credentials {
                Some(c) => Ok(basic(c)),
                None => Err(self.refused(StatusCode::UNAUTHORIZED)),
            },
        }
    }

    /// The token flow: GET the realm with service and scope (with basic auth when there are
    /// credentials; anonymous pulls of public images get a token without).
    async fn bearer(
        &self,
        params: &[(String, String)],
        reference: &Reference,
    ) -> Result<String, HostError> {
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let realm = param("realm").ok_or_else(|| {
            HostError::Failed(format!(
                "the registry {} asked for a bearer token without saying where to get one (no realm in WWW-Authenticate)",
                self.registry
            ))
        })?;
        let mut url = reqwest::Url::parse(&realm).map_err(|e| {
            HostError::Failed(format!(
                "the registry {} named an invalid token endpoint '{realm}': {e}",
                self.registry
            ))
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = param("service") {
                query.append_pair("service", &service);
            }
            let scope = param("scope")
                .unwrap_or_else(|| format!("repository:{}:pull", reference.repository));
            query.append_pair("scope", &scope);
        }
        let mut request = self.client.get(url).timeout(self.timeout);
        if let Some(c) = &self.endpoint.credentials {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let response = request.send().await.map_err(|e| {
            HostError::Failed(format!(
                "cannot reach the token endpoint of the registry {}: {}",
                self.registry,
                describe_request_error(&e.without_url(), self.timeout)
            ))
        })?;
        let code = response.status();
        if code == StatusCode::UNAUTHORIZED || code == StatusCode::FORBIDDEN {
            return Err(self.refused(code));
        }
        if !code.is_success() {
            return Err(HostError::Failed(format!(
                "the token endpoint of the registry {} answered HTTP {}",
                self.registry,
                code.as_u16()
            )));
        }
        let body: serde_json::Value = response.json().await.map_err(|e| {
            HostError::Failed(format!(
                "the token endpoint of the registry {} sent no JSON: {e}",
                self.registry
            ))
        })?;
        let token = body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                HostError::Failed(format!(
                    "the token endpoint of the registry {} answered without a token",
                    self.registry
                ))
            })?;
        crate::redact::register(token);
        Ok(format!("Bearer {token}"))
    }

    async fn digest_by_get(
        &self,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<String, HostError> {
        let response = self.send(Method::GET, url, authorization).await?;
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))))
    }
}

fn basic(c: &Credentials) -> String {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    crate::redact::register(&encoded);
    format!("Basic {encoded}")
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Bearer realm="…",service="…",scope="…"` → ("Bearer", [(realm, …), …]).
pub fn parse_challenge(text: &str) -> (String, Vec<(String, String)>) {
    let text = text.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.push((key, value.to_string()));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_split_into_scheme_and_parameters() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            [
                (
                    "realm".to_string(),
                    "https://auth.example.com/token".to_string()
                ),
                ("service".to_string(), "registry.example.com".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
            ]
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!((scheme.as_str(), params.len()), ("Basic", 1));
    }
}
