//! Container registries: does the image a rollback targets still exist?
//!
//! Read over the OCI distribution API (a HEAD on the manifest), with the environment's
//! `[environments.X.registry]`: `host` (as image references write it), `url` (where the API
//! answers, default `https://<host>`), `repository` (the services' path under the host) and the
//! variables holding credentials (`username_env`, `password_env`). Credentials are only sent to
//! that registry; images elsewhere are checked anonymously.

mod client;
pub mod reference;

use super::{Effect, FnDoc, HostError, Registrar, options};
use crate::platform::Registry;
use crate::session::Session;
use client::{Credentials, Endpoint};
use futures::StreamExt;
use rhai::{Array, Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

pub use client::MANIFEST_TYPES;

const IMAGE_EXISTS: FnDoc = FnDoc {
    module: Some("registry"),
    name: "image_exists",
    signature: "(image: string, opts?: #{timeout}) -> #{exists, digest, media_type, reference, registry}",
    summary: "Asks the image's registry whether its manifest exists (HEAD, OCI and Docker v2 manifests and indexes), returning its digest when it does.",
    example: r#"let img = registry::image_exists("registry.tracktion.local/tracktion/analysis-service:v1.2.3"); if !img.exists { throw `image ${img.reference} is gone`; }"#,
    effect: Effect::Read,
};

const IMAGES_EXIST: FnDoc = FnDoc {
    module: Some("registry"),
    name: "images_exist",
    signature: "(images: array, opts?: #{timeout}) -> array of #{exists, digest, media_type, reference, registry}",
    summary: "registry::image_exists for many images at once (in the order given), so the time hardly grows with their number; throws one error naming every image that could not be checked.",
    example: r#"let found = registry::images_exist(["registry.tracktion.local/tracktion/analysis-service:v1.2.3"]); if !found[0].exists { throw "gone"; }"#,
    effect: Effect::Read,
};

const IMAGE_REF: FnDoc = FnDoc {
    module: Some("registry"),
    name: "image_ref",
    signature: "(service: string, version: string) -> string",
    summary: "Builds a service's image reference from the environment's registry settings: <host>/<repository>/<service>:<version>.",
    example: r#"let image = registry::image_ref("analysis-service", "v1.2.3"); log(image);"#,
    effect: Effect::Read,
};

const DEFAULT_TIMEOUT_SECS: f64 = 10.0;

/// Checks in flight at once in `images_exist`: enough that 80 images take a few round trips,
/// few enough that a public registry's rate limit and connection pool are not flooded.
const CONCURRENT_CHECKS: usize = 8;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct ExistsOptions {
    /// Seconds for each request (the challenge, the token, the manifest).
    #[serde(deserialize_with = "options::number")]
    timeout: f64,
}

impl Default for ExistsOptions {
    fn default() -> Self {
        ExistsOptions {
            timeout: DEFAULT_TIMEOUT_SECS,
        }
    }
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&IMAGE_EXISTS, move |image: &str| {
        image_exists(&s, image, Map::new())
    });
    let s = session.clone();
    r.func(&IMAGE_EXISTS, move |image: &str, opts: Map| {
        image_exists(&s, image, opts)
    });
    let s = session.clone();
    r.func(&IMAGES_EXIST, move |images: Array| {
        images_exist(&s, images, Map::new())
    });
    let s = session.clone();
    r.func(&IMAGES_EXIST, move |images: Array, opts: Map| {
        images_exist(&s, images, opts)
    });
    let s = session.clone();
    r.func(&IMAGE_REF, move |service: &str, version: &str| {
        image_ref(&s, service, version).map_err(|e| e.into_rhai(&IMAGE_REF.qualified_name()))
    });
}

fn image_exists(session: &Session, image: &str, opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = IMAGE_EXISTS.qualified_name();
    let prepared = (|| -> Result<_, HostError> {
        let o: ExistsOptions = options::parse(&f, opts)?;
        let timeout = options::timeout(&f, o.timeout)?;
        let reference = reference::parse(image)?;
        let endpoint = endpoint(session, &reference.host)?;
        Ok((o, timeout, reference, endpoint))
    })();
    let (o, timeout, reference, endpoint) = prepared.map_err(|e| e.into_rhai(&f))?;
    let http = session.http();
    session.read(&f, json!({"image": image, "opts": o}), async move {
        client::image_exists(&http, &endpoint, &reference, timeout).await
    })
}

fn images_exist(
    session: &Session,
    images: Array,
    opts: Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = IMAGES_EXIST.qualified_name();
    let prepared = (|| -> Result<_, HostError> {
        let o: ExistsOptions = options::parse(&f, opts)?;
        let timeout = options::timeout(&f, o.timeout)?;
        let mut names = Vec::new();
        let mut checks = Vec::new();
        for image in options::strings(images, "image reference")? {
            let reference = reference::parse(&image)?;
            checks.push((endpoint(session, &reference.host)?, reference));
            names.push(image);
        }
        Ok((o, timeout, names, checks))
    })();
    let (o, timeout, names, checks) = prepared.map_err(|e| e.into_rhai(&f))?;
    let http = session.http();
    let args = json!({"images": names, "opts": o});
    session.read(&f, args, async move {
        let heads = checks
            .iter()
            .map(|(endpoint, reference)| client::image_exists(&http, endpoint, reference, timeout));
        let outcomes: Vec<_> = futures::stream::iter(heads)
            .buffered(CONCURRENT_CHECKS)
            .collect()
            .await;
        super::all_or_failed(&names, outcomes, "images could not be checked")
    })
}

/// The API address and credentials for `host`: the environment's registry when it is that
/// host, else the host itself, anonymously.
fn endpoint(session: &Session, host: &str) -> Result<Endpoint, HostError> {
    let env_name = session.environment();
    let configured = session
        .env_config()
        .registry
        .as_ref()
        .filter(|r| r.host.eq_ignore_ascii_case(host));
    let Some(registry) = configured else {
        let base = if host == reference::DOCKER_HUB {
            reference::DOCKER_HUB_API.to_string()
        } else {
            format!("https://{host}")
        };
        return Ok(Endpoint {
            base,
            credentials: None,
            origin: format!(
                "the image's registry host (set [environments.{env_name}.registry] url to reach {host} elsewhere)"
            ),
            hint: format!(
                "images on {host} are checked without credentials: to log in, set [environments.{env_name}.registry] host = \"{host}\" with username_env and password_env"
            ),
        });
    };
    let base = registry
        .url
        .clone()
        .unwrap_or_else(|| format!("https://{host}"))
        .trim_end_matches('/')
        .to_string();
    let (credentials, hint) = credentials(&env_name, registry)?;
    Ok(Endpoint {
        base,
        credentials,
        hint,
        origin: format!("the url in [environments.{env_name}.registry]"),
    })
}

fn credentials(
    env_name: &str,
    registry: &Registry,
) -> Result<(Option<Credentials>, String), HostError> {
    let table = format!("[environments.{env_name}.registry]");
    let (Some(user_var), Some(password_var)) = (&registry.username_env, &registry.password_env)
    else {
        return Ok((
            None,
            format!(
                "it needs credentials: set username_env and password_env in {table} to the variables that hold them"
            ),
        ));
    };
    let read = |var: &str, key: &str| {
        std::env::var(var).map_err(|_| {
            HostError::Failed(format!(
                "the variable {var} ({key} of {table}) is not set; export it before running"
            ))
        })
    };
    let username = read(user_var, "username_env")?;
    let password = read(password_var, "password_env")?;
    crate::redact::register(&password);
    Ok((
        Some(Credentials { username, password }),
        format!(
            "check the user name in {user_var} and the password or token in {password_var} (username_env and password_env of {table})"
        ),
    ))
}

/// `<host>/<repository>/<service>:<version>`, checked like any reference.
fn image_ref(session: &Session, service: &str, version: &str) -> Result<String, HostError> {
    if !session.platform.services.contains_key(service) {
        let known: Vec<&str> = session
            .platform
            .services
            .keys()
            .map(String::as_str)
            .collect();
        return Err(HostError::Invalid(format!(
            "unknown service '{service}'; the platform defines {}",
            known.join(", ")
        )));
    }
    let env_name = session.environment();
    let registry = session.env_config().registry.as_ref().ok_or_else(|| {
        HostError::Invalid(format!(
            "environment '{env_name}' has no registry: add [environments.{env_name}.registry] with host and repository to the platform definition"
        ))
    })?;
    let path = match registry.repository.as_deref().map(|r| r.trim_matches('/')) {
        Some(repo) if !repo.is_empty() => format!("{}/{repo}/{service}", registry.host),
        _ => format!("{}/{service}", registry.host),
    };
    let text = format!("{path}:{version}");
    reference::parse(&text)?;
    Ok(text)
}
