//! One Kubernetes client per environment, built from the platform definition, and the
//! translation of API errors into messages an operator can act on.

use crate::host::{HostError, chain};
use crate::platform::Environment;
use crate::session::Session;
use kube::config::{KubeConfigOptions, Kubeconfig};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// One API request that gets no answer in this time fails (a stopped or wedged API server must
/// not hold a rollback until the whole budget is gone).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Requests in flight at once per client. The client speaks HTTP/1.1, so every concurrent
/// request beyond the idle connections opens a new TLS connection: a batch over 40 services
/// sent all at once spent most of its time in handshakes. Queued requests reuse these
/// connections instead, so a batch's time hardly grows with its size.
const IN_FLIGHT: usize = 8;

/// A client for one environment: the API, its namespace, and where it points (for messages).
#[derive(Clone)]
pub struct Kube {
    pub client: kube::Client,
    pub namespace: String,
    /// `https://127.0.0.1:6443 (context production)`: what an error message names.
    pub server: String,
    in_flight: Arc<Semaphore>,
}

/// Where an environment's kubeconfig comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `kubeconfig = "…"` in the platform definition.
    Platform(PathBuf),
    /// `$KUBECONFIG` (one path or several separated by ':').
    EnvVar(String),
    /// `~/.kube/config`, which exists.
    Home(PathBuf),
    /// Running in a pod: its service account's token and the cluster's CA.
    InCluster,
    /// Nothing: this environment has no Kubernetes API configured.
    Missing,
}

/// Finds the kubeconfig of an environment without reading it.
pub fn source(env: &Environment) -> Source {
    if let Some(path) = &env.kubeconfig {
        return Source::Platform(expand_home(path));
    }
    if let Ok(var) = std::env::var("KUBECONFIG")
        && !var.trim().is_empty()
    {
        return Source::EnvVar(var);
    }
    match std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")) {
        Some(path) if path.is_file() => Source::Home(path),
        _ if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => Source::InCluster,
        _ => Source::Missing,
    }
}

/// Whether the environment names a Kubernetes API at all (the run lock needs one).
pub fn configured(env: &Environment) -> bool {
    source(env) != Source::Missing || env.kube_context.is_some()
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

static CLIENTS: LazyLock<Mutex<HashMap<String, Kube>>> = LazyLock::new(Default::default);

/// The client of the session's current environment, built once per process and environment.
pub async fn connect(session: &Session) -> Result<Kube, HostError> {
    let env_name = session.environment();
    if let Some(kube) = CLIENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&env_name)
    {
        return Ok(kube.clone());
    }
    let kube = build(&env_name, session.env_config()).await?;
    CLIENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(env_name, kube.clone());
    Ok(kube)
}

async fn build(env_name: &str, env: &Environment) -> Result<Kube, HostError> {
    let (kubeconfig, shown) = match source(env) {
        Source::Platform(path) => (Kubeconfig::read_from(&path), path.display().to_string()),
        Source::EnvVar(var) => (Kubeconfig::read(), format!("$KUBECONFIG ({var})")),
        Source::Home(path) => (Kubeconfig::read_from(&path), path.display().to_string()),
        Source::InCluster => return in_cluster(env_name, &env.namespace).await,
        Source::Missing => {
            return Err(HostError::Failed(format!(
                "environment '{env_name}' has no kubeconfig: set `kubeconfig` for it in the platform definition, or KUBECONFIG"
            )));
        }
    };
    let kubeconfig = kubeconfig.map_err(|e| {
        HostError::Failed(format!(
            "cannot read the kubeconfig {shown} of environment '{env_name}': {}",
            chain(&e)
        ))
    })?;
    from_kubeconfig(
        kubeconfig,
        &shown,
        env.kube_context.as_deref(),
        &env.namespace,
    )
    .await
    .map_err(|e| match e {
        HostError::Failed(m) => HostError::Failed(format!("environment '{env_name}': {m}")),
        other => other,
    })
}

/// A client from the pod's service account (`Config::infer` reads its token and CA, and keeps
/// the token fresh as the kubelet rotates it).
async fn in_cluster(env_name: &str, namespace: &str) -> Result<Kube, HostError> {
    let config = kube::Config::infer().await.map_err(|e| {
        HostError::Failed(format!(
            "environment '{env_name}': cannot use the pod's service account: {}",
            chain(&e)
        ))
    })?;
    let server = format!("{} (in-cluster)", config.cluster_url);
    client_for(config, server, namespace)
}

/// A client for one namespace from a parsed kubeconfig (`shown` names it in messages).
pub async fn from_kubeconfig(
    kubeconfig: Kubeconfig,
    shown: &str,
    context: Option<&str>,
    namespace: &str,
) -> Result<Kube, HostError> {
    // Credentials of the kubeconfig must never reach a message, the journal or the report.
    for auth in kubeconfig
        .auth_infos
        .iter()
        .filter_map(|a| a.auth_info.as_ref())
    {
        for secret in [&auth.token, &auth.password].into_iter().flatten() {
            crate::redact::register(secret.expose_secret());
        }
    }
    if let Some(context) = context
        && !kubeconfig.contexts.iter().any(|c| c.name == context)
    {
        let known: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(HostError::Failed(format!(
            "context '{context}' is not in {shown} (it has: {}); fix kube_context in the platform definition",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    if context.is_none()
        && kubeconfig
            .current_context
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    {
        return Err(HostError::Failed(format!(
            "the kubeconfig {shown} has no current context: set kube_context for the environment in the platform definition"
        )));
    }
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| {
            HostError::Failed(format!("the kubeconfig {shown} is unusable: {}", chain(&e)))
        })?;
    let server = format!(
        "{}{}",
        config.cluster_url,
        context
            .map(|c| format!(" (context {c})"))
            .unwrap_or_default()
    );
    client_for(config, server, namespace)
}

/// The client of a finished config; `server` is what messages call it.
fn client_for(
    mut config: kube::Config,
    server: String,
    namespace: &str,
) -> Result<Kube, HostError> {
    config.connect_timeout = Some(Duration::from_secs(5));
    let client = kube::Client::try_from(config).map_err(|e| {
        HostError::Failed(format!(
            "cannot create a Kubernetes client for {server}: {}",
            chain(&e)
        ))
    })?;
    Ok(Kube {
        client,
        namespace: namespace.to_string(),
        server,
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
    })
}

const UNREACHABLE: &str = "cannot reach the Kubernetes API";
const UNANSWERED: &str = "the Kubernetes API";

/// Whether an error says the API could not be reached at all (down, wedged, unroutable), as
/// opposed to an answer such as forbidden or not found.
pub fn unreachable(e: &HostError) -> bool {
    matches!(e, HostError::Failed(m) if m.contains(UNREACHABLE)
        || (m.contains(UNANSWERED) && m.contains("did not answer within")))
}

/// A request that failed, with a lost compare-and-swap kept apart.
pub enum CallError {
    Conflict,
    Other(HostError),
}

/// What a request was doing, for its error message.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// The RBAC verb: get, list, watch, patch, update, create, delete.
    pub verb: &'a str,
    /// The plural resource: deployments, services, leases, …
    pub resource: &'a str,
    pub name: Option<&'a str>,
}

impl<'a> Op<'a> {
    pub fn new(verb: &'a str, resource: &'a str, name: &'a str) -> Self {
        Op {
            verb,
            resource,
            name: Some(name),
        }
    }

    pub fn all(verb: &'a str, resource: &'a str) -> Self {
        Op {
            verb,
            resource,
            name: None,
        }
    }

    fn object(&self) -> String {
        match self.name {
            Some(name) => format!("{}/{name}", self.resource),
            None => self.resource.to_string(),
        }
    }
}

impl Kube {
    /// Runs one API request with the request timeout and turns its error into an operator
    /// message. A missing object in a missing namespace says that the namespace is missing.
    pub async fn call<T>(
        &self,
        op: Op<'_>,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, HostError> {
        match self.send(request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.explain(op, e).await),
            Err(_) => Err(self.timed_out(op)),
        }
    }

    /// Like `call`, but a missing object is `None` instead of an error.
    pub async fn call_opt<T>(
        &self,
        op: Op<'_>,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Option<T>, HostError> {
        match self.send(request).await {
            Ok(Ok(value)) => Ok(Some(value)),
            // No namespace check here: a missing namespace shows up in the caller's next
            // request (a create answers 404 for it, which `call` explains).
            Ok(Err(e)) if status_code(&e) == Some(404) => Ok(None),
            Ok(Err(e)) => Err(self.explain(op, e).await),
            Err(_) => Err(self.timed_out(op)),
        }
    }

    /// Like `call` for a request carrying a resourceVersion precondition: a 409 Conflict means
    /// someone changed the object after it was read, which `conflict` explains.
    pub async fn call_cas<T>(
        &self,
        op: Op<'_>,
        request: impl Future<Output = Result<T, kube::Error>>,
        conflict: impl FnOnce() -> String,
    ) -> Result<T, HostError> {
        self.call_checked(op, request).await.map_err(|e| match e {
            CallError::Conflict => HostError::Failed(conflict()),
            CallError::Other(e) => e,
        })
    }

    /// Like `call`, keeping a 409 (Conflict or AlreadyExists) apart for callers that retry.
    pub async fn call_checked<T>(
        &self,
        op: Op<'_>,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CallError> {
        match self.send(request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if status_code(&e) == Some(409) => Err(CallError::Conflict),
            Ok(Err(e)) => Err(CallError::Other(self.explain(op, e).await)),
            Err(_) => Err(CallError::Other(self.timed_out(op))),
        }
    }

    /// Sends `request` once a slot is free (see `IN_FLIGHT`), within the request timeout. The
    /// slot is given back before the caller explains an error, which may send a request too.
    async fn send<T>(
        &self,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, tokio::time::error::Elapsed> {
        // Never closed, so acquiring only waits.
        let _slot = self.in_flight.acquire().await.ok();
        tokio::time::timeout(REQUEST_TIMEOUT, request).await
    }

    fn timed_out(&self, op: Op<'_>) -> HostError {
        HostError::Failed(format!(
            "{UNANSWERED} at {} did not answer within {} while trying to {} {} in namespace {}; check that the API server is up",
            self.server,
            crate::timefmt::format_duration(REQUEST_TIMEOUT),
            op.verb,
            op.object(),
            self.namespace
        ))
    }

    async fn namespace_exists(&self) -> Option<bool> {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.client.clone());
        match tokio::time::timeout(REQUEST_TIMEOUT, api.get_metadata_opt(&self.namespace)).await {
            Ok(Ok(found)) => Some(found.is_some()),
            _ => None,
        }
    }

    fn missing_namespace(&self) -> HostError {
        HostError::Failed(format!(
            "namespace '{}' does not exist on {}; check the environment's namespace in the platform definition",
            self.namespace, self.server
        ))
    }

    async fn explain(&self, op: Op<'_>, e: kube::Error) -> HostError {
        let ns = &self.namespace;
        let object = op.object();
        match &e {
            kube::Error::Api(status) => match status.code {
                403 => HostError::Failed(format!(
                    "forbidden: the credentials for {} may not {} {} in namespace {ns} (RBAC: {}); grant the '{}' verb on '{}' to this account with a Role, or use a kubeconfig that has it",
                    self.server, op.verb, object, status.message, op.verb, op.resource
                )),
                401 => HostError::Failed(format!(
                    "unauthorized: {} rejected the credentials of the kubeconfig ({}); refresh them (an expired token?)",
                    self.server, status.message
                )),
                404 => {
                    if self.namespace_exists().await == Some(false) {
                        self.missing_namespace()
                    } else {
                        HostError::Failed(format!("{object} not found in namespace {ns}"))
                    }
                }
                409 => HostError::Failed(format!(
                    "conflict on {object} in namespace {ns}: {}",
                    status.message
                )),
                422 | 400 => HostError::Invalid(format!(
                    "the API refused to {} {object}: {}",
                    op.verb, status.message
                )),
                code => HostError::Failed(format!(
                    "cannot {} {object} in namespace {ns}: the API answered {code} {}: {}",
                    op.verb, status.reason, status.message
                )),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => HostError::Failed(format!(
                "{UNREACHABLE} at {} to {} {object}: {}; check that the cluster is up and that the kubeconfig points at it",
                self.server,
                op.verb,
                chain(&e)
            )),
            _ => HostError::Failed(format!(
                "cannot {} {object} in namespace {ns}: {}",
                op.verb,
                chain(&e)
            )),
        }
    }

    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// The HTTP status of an API error.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
