//! The sandbox's container registry (Debian's `docker-registry`, the CNCF distribution
//! server) and pushing images into it without docker: a layer blob, a config blob and an OCI
//! manifest, over the distribution API. The tests push their images with the same functions.

use super::state::Process;
use super::{process, prometheus};
use crate::error::{Error, Result, io_context};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub const BINARY: &str = "docker-registry";
pub const PACKAGE: &str = "docker-registry";
/// How the sandbox's images are named in its Deployments (`values.yaml` of the chart); the
/// environment maps this host to the local registry's address.
pub const HOST: &str = "registry.tracktion.local";
pub const REPOSITORY: &str = "tracktion";
/// Every version the sandbox's Helm revisions deploy.
pub const VERSIONS: [&str; 3] = ["v1.2.2", "v1.2.3", "v1.2.4"];

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The registry's configuration: filesystem storage under `root`, deletes on (so a test can
/// make an image disappear), loopback only, and htpasswd users when `htpasswd` is given.
pub fn config_yaml(root: &Path, port: u16, htpasswd: Option<&Path>) -> String {
    let auth = htpasswd
        .map(|p| {
            format!(
                "auth:\n  htpasswd:\n    realm: rollback\n    path: {}\n",
                yaml_string(p)
            )
        })
        .unwrap_or_default();
    format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: rollback-local-only\n{auth}",
        yaml_string(root),
    )
}

fn yaml_string(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("a string serializes")
}

/// The `docker-registry` binary, or an error naming the package.
pub fn binary() -> Result<PathBuf> {
    prometheus::find_on_path(&[BINARY]).ok_or_else(|| {
        Error::failed(format!(
            "{BINARY} is not installed (not found on PATH); install the Debian package: apt-get install -y {PACKAGE}"
        ))
    })
}

/// Starts the sandbox's registry in `dir` (config, storage) on a free port and waits until it
/// answers `/v2/`.
pub fn start(dir: &Path, log: &Path, interrupted: &AtomicBool) -> Result<Process> {
    let binary = binary()?;
    let port = prometheus::free_port()?;
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage)
        .map_err(|e| io_context(e, format!("cannot create {}", storage.display())))?;
    let config = dir.join("config.yml");
    std::fs::write(&config, config_yaml(&storage, port, None))
        .map_err(|e| io_context(e, format!("cannot write {}", config.display())))?;
    let mut command = std::process::Command::new(binary);
    command.arg("serve").arg(&config);
    let mut child = process::spawn_detached(command, log)?;
    let started = Process {
        pid: child.id(),
        port,
        log: log.to_path_buf(),
    };
    let url = format!("{}/v2/", started.url());
    process::wait_ready(
        &mut child,
        "the registry",
        log,
        Duration::from_secs(20),
        interrupted,
        || {
            (std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && answers(&url))
                .then_some(())
        },
    )?;
    Ok(started)
}

/// A plain HTTP/1.0 GET on loopback: whether `/v2/` answers 200.
fn answers(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut stream) = std::net::TcpStream::connect(authority) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200")
}

/// Basic-auth credentials for pushing to a registry with users.
pub struct Login<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

/// Pushes a small, distinct image `repository:tag` to the registry at `base` and returns its
/// manifest digest.
pub async fn push_image(
    client: &reqwest::Client,
    base: &str,
    repository: &str,
    tag: &str,
    login: Option<&Login<'_>>,
) -> std::result::Result<String, String> {
    let layer = format!("rollback sandbox layer of {repository}:{tag}\n").into_bytes();
    let layer_digest = upload_blob(client, base, repository, &layer, login).await?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"org.opencontainers.image.version": tag}},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string()
    .into_bytes();
    let config_digest = upload_blob(client, base, repository, &config, login).await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    })
    .to_string()
    .into_bytes();
    let digest = sha256(&manifest);
    let url = format!("{base}/v2/{repository}/manifests/{tag}");
    let request = authorized(client.put(&url), login)
        .header(reqwest::header::CONTENT_TYPE, OCI_MANIFEST)
        .body(manifest);
    let status = send(request, &url).await?;
    if status != StatusCode::CREATED {
        return Err(format!("PUT {url} answered HTTP {status}"));
    }
    Ok(digest)
}

/// Deletes a manifest by digest (the registry needs deletes enabled).
pub async fn delete_manifest(
    client: &reqwest::Client,
    base: &str,
    repository: &str,
    digest: &str,
    login: Option<&Login<'_>>,
) -> std::result::Result<(), String> {
    let url = format!("{base}/v2/{repository}/manifests/{digest}");
    let status = send(authorized(client.delete(&url), login), &url).await?;
    if status != StatusCode::ACCEPTED {
        return Err(format!("DELETE {url} answered HTTP {status}"));
    }
    Ok(())
}

/// A monolithic upload: POST opens the session, PUT with the digest sends the bytes.
async fn upload_blob(
    client: &reqwest::Client,
    base: &str,
    repository: &str,
    bytes: &[u8],
    login: Option<&Login<'_>>,
) -> std::result::Result<String, String> {
    let digest = sha256(bytes);
    let url = format!("{base}/v2/{repository}/blobs/uploads/");
    let response = authorized(client.post(&url), login)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if response.status() != StatusCode::ACCEPTED {
        return Err(format!("POST {url} answered HTTP {}", response.status()));
    }
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("POST {url} gave no Location"))?;
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_string()
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{separator}digest={digest}");
    let request = authorized(client.put(&put), login)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec());
    let status = send(request, &url).await?;
    if status != StatusCode::CREATED {
        return Err(format!("the blob upload to {url} answered HTTP {status}"));
    }
    Ok(digest)
}

fn authorized(
    request: reqwest::RequestBuilder,
    login: Option<&Login<'_>>,
) -> reqwest::RequestBuilder {
    match login {
        Some(l) => request.basic_auth(l.username, Some(l.password)),
        None => request,
    }
}

async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> std::result::Result<StatusCode, String> {
    request
        .send()
        .await
        .map(|r| r.status())
        .map_err(|e| format!("{url}: {e}"))
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The reference the sandbox's Deployments use for a service's version.
pub fn image_ref(service: &str, version: &str) -> String {
    format!("{HOST}/{REPOSITORY}/{service}:{version}")
}

/// Pushes every service at every version the sandbox deploys.
pub fn seed(runtime: &tokio::runtime::Runtime, base: &str, services: &[String]) -> Result<usize> {
    let client = reqwest::Client::new();
    runtime.block_on(async {
        let mut pushed = 0;
        for service in services {
            for version in VERSIONS {
                push_image(
                    &client,
                    base,
                    &format!("{REPOSITORY}/{service}"),
                    version,
                    None,
                )
                .await
                .map_err(|e| {
                    Error::failed(format!("cannot push {}: {e}", image_ref(service, version)))
                })?;
                pushed += 1;
            }
        }
        Ok(pushed)
    })
}
