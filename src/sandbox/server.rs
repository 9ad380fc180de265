//! The sandbox server: `rollback sandbox serve --state DIR`, started detached by `up`.
//!
//! Fake pods cannot serve HTTP, so this process stands in for them on 127.0.0.1: health
//! endpoints per service and slot, Prometheus metrics of simulated traffic, the Slack and
//! PagerDuty receivers, and a small control API for `inject` and `status`.

use super::cluster_view::{ClusterView, KubeClient};
use super::incidents::Incidents;
use super::receivers;
use super::state::write_atomic;
use super::traffic::Traffic;
use crate::console;
use crate::error::{Error, Result, io_context};
use crate::platform::{Metrics, SLOTS};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Written by `up` as `server.json` in the sandbox directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerConfig {
    pub namespace: String,
    pub kubeconfig: PathBuf,
    pub services: Vec<String>,
    pub metrics: Metrics,
    pub slack_token: String,
    pub pagerduty_routing_key: String,
    pub incidents: PathBuf,
    pub notifications: PathBuf,
    pub address_file: PathBuf,
}

const TICK: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_secs(1);
const MAX_BODY: usize = 1 << 20;

struct App {
    config: ServerConfig,
    traffic: Mutex<Traffic>,
    view: RwLock<ClusterView>,
    cluster_error: RwLock<Option<String>>,
    incidents: RwLock<Incidents>,
    /// Serialises appends to the notification files.
    record_lock: Mutex<()>,
}

type Reply = Response<Full<Bytes>>;

pub fn serve(config_file: &Path) -> Result<ExitCode> {
    let text = std::fs::read_to_string(config_file)
        .map_err(|e| io_context(e, format!("cannot read {}", config_file.display())))?;
    let config: ServerConfig = serde_json::from_str(&text)
        .map_err(|e| Error::failed(format!("{} is invalid: {e}", config_file.display())))?;
    let runtime = crate::cli::runtime()?;
    runtime.block_on(run(config))
}

async fn run(config: ServerConfig) -> Result<ExitCode> {
    let incidents = Incidents::load(&config.incidents)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| io_context(e, "cannot listen on 127.0.0.1"))?;
    let address = listener
        .local_addr()
        .map_err(|e| io_context(e, "cannot read the listening address"))?;
    let app = Arc::new(App {
        traffic: Mutex::new(Traffic::new(&config.services, config.metrics.clone())),
        view: RwLock::new(ClusterView::default()),
        cluster_error: RwLock::new(None),
        incidents: RwLock::new(incidents),
        record_lock: Mutex::new(()),
        config,
    });
    tokio::spawn(watch_cluster(app.clone()));
    tokio::spawn(simulate_traffic(app.clone()));
    // Announced only once everything above runs, so `up` never talks to a half-ready server.
    write_atomic(&app.config.address_file, &address.to_string())?;
    console::info(&format!("sandbox server listening on http://{address}"));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| io_context(e, "cannot watch SIGTERM"))?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let app = app.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&app, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = std::fs::remove_file(&app.config.address_file);
    console::info("sandbox server stopped");
    Ok(ExitCode::SUCCESS)
}

/// Keeps the cluster view fresh; logs when the active slot or readiness changes, and when the
/// API server stops or starts answering (not every failed poll).
async fn watch_cluster(app: Arc<App>) {
    let mut client = None;
    loop {
        // The server starts before the cluster; until its kubeconfig exists there is nothing
        // to read and nothing worth logging.
        if client.is_none() && app.config.kubeconfig.is_file() {
            match KubeClient::from_kubeconfig(&app.config.kubeconfig) {
                Ok(c) => client = Some(c),
                Err(e) => note_cluster_error(&app, e),
            }
        }
        if let Some(c) = &client {
            match c.view(&app.config.namespace).await {
                Ok(view) => {
                    if app.cluster_error.write().unwrap().take().is_some() {
                        console::info("cluster answers again");
                    }
                    let mut current = app.view.write().unwrap();
                    for change in changes(&current, &view) {
                        console::info(&change);
                    }
                    *current = view;
                }
                Err(e) => note_cluster_error(&app, e),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn note_cluster_error(app: &App, error: String) {
    let mut last = app.cluster_error.write().unwrap();
    if last.as_deref() != Some(error.as_str()) {
        console::warn(&format!("cannot read the cluster: {error}"));
    }
    *last = Some(error);
}

fn changes(before: &ClusterView, after: &ClusterView) -> Vec<String> {
    let mut out = Vec::new();
    for (service, slot) in &after.active {
        if before.active.get(service) != Some(slot) {
            out.push(format!("{service}: traffic now goes to {slot}"));
        }
    }
    for ((service, slot), d) in &after.deployments {
        let old = before.deployments.get(&(service.clone(), slot.clone()));
        if old.map(|o| (o.ready, &o.version)) != Some((d.ready, &d.version)) {
            out.push(format!(
                "{service}-{slot}: {} {}/{} ready",
                d.version, d.ready, d.desired
            ));
        }
    }
    out
}

async fn simulate_traffic(app: Arc<App>) {
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        let view = app.view.read().unwrap().clone();
        let incidents = app.incidents.read().unwrap().clone();
        app.traffic
            .lock()
            .unwrap()
            .advance(now - last, &view, &incidents);
        last = now;
    }
}

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("valid response")
}

fn json_reply(status: u16, value: serde_json::Value) -> Reply {
    reply(status, "application/json", value.to_string())
}

async fn handle(app: &App, req: Request<Incoming>) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => {
            let view = app.view.read().unwrap().clone();
            let text = app.traffic.lock().unwrap().render(&view);
            reply(200, "text/plain; version=0.0.4; charset=utf-8", text)
        }
        (&Method::GET, [service, slot, "health"]) => health(app, service, slot).await,
        (&Method::GET, ["_sandbox", "ready"]) => reply(200, "text/plain", "ok"),
        (&Method::GET, ["_sandbox", "state"]) => json_reply(200, state(app)),
        (&Method::POST, ["_sandbox", "reload"]) => match Incidents::load(&app.config.incidents) {
            Ok(incidents) => {
                for (service, slot, incident) in incidents.list() {
                    console::info(&format!(
                        "incident on {service}-{slot}: {}",
                        incident.describe()
                    ));
                }
                *app.incidents.write().unwrap() = incidents;
                json_reply(200, state(app))
            }
            Err(e) => json_reply(500, json!({"error": e.message})),
        },
        (&Method::POST, ["slack", ..]) => {
            let body = read_body(req).await;
            let expected = receivers::slack_path(&app.config.slack_token);
            let r = receivers::slack(&expected, &path, &body);
            record(app, "slack", &path, &body, &r);
            reply(r.status, r.content_type, r.body)
        }
        (&Method::POST, _) if path == receivers::PAGERDUTY_PATH => {
            let body = read_body(req).await;
            let r = receivers::pagerduty(&app.config.pagerduty_routing_key, &body);
            record(app, "pagerduty", &path, &body, &r);
            reply(r.status, r.content_type, r.body)
        }
        _ => reply(404, "text/plain", format!("no route for {method} {path}")),
    }
}

async fn read_body(req: Request<Incoming>) -> Bytes {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    }
}

fn record(app: &App, receiver: &str, path: &str, body: &[u8], r: &receivers::Reply) {
    let line = receivers::record(path, body, r);
    let file = app.config.notifications.join(format!("{receiver}.jsonl"));
    let _guard = app.record_lock.lock().unwrap();
    let written = std::fs::create_dir_all(&app.config.notifications).and_then(|_| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| writeln!(f, "{line}"))
    });
    match written {
        Ok(()) => console::info(&format!("{receiver}: recorded a delivery ({})", r.status)),
        Err(e) => console::warn(&format!("cannot record to {}: {e}", file.display())),
    }
}

async fn health(app: &App, service: &str, slot: &str) -> Reply {
    if !app.config.services.iter().any(|s| s == service) || !SLOTS.contains(&slot) {
        return json_reply(
            404,
            json!({"status": "unknown", "error": format!("no service slot {service}/{slot} in this sandbox")}),
        );
    }
    let incident = app.incidents.read().unwrap().get(service, slot);
    if incident.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(incident.latency_ms)).await;
    }
    let view = app.view.read().unwrap().clone();
    let version = view
        .deployment(service, slot)
        .map(|d| d.version.clone())
        .unwrap_or_default();
    let body = |status: &str, reason: Option<String>| json!({"status": status, "service": service, "slot": slot, "version": version, "reason": reason});
    if incident.down {
        return json_reply(503, body("down", Some("incident injected".into())));
    }
    if let Some(reason) = view.unavailable(service, slot) {
        return json_reply(503, body("unavailable", Some(reason)));
    }
    json_reply(200, body("ok", None))
}

fn state(app: &App) -> serde_json::Value {
    let view = app.view.read().unwrap().clone();
    let incidents = app.incidents.read().unwrap().clone();
    let services: BTreeMap<&str, serde_json::Value> = app
        .config
        .services
        .iter()
        .map(|service| {
            let slots: BTreeMap<&str, serde_json::Value> = SLOTS
                .iter()
                .map(|slot| {
                    let d = view.deployment(service, slot);
                    (
                        *slot,
                        json!({
                            "version": d.map(|d| d.version.clone()),
                            "ready": d.map(|d| d.ready),
                            "desired": d.map(|d| d.desired),
                            "incident": incidents.get(service, slot),
                        }),
                    )
                })
                .collect();
            (
                service.as_str(),
                json!({"active": view.active_slot(service), "slots": slots}),
            )
        })
        .collect();
    json!({
        "cluster": {"loaded": view.loaded, "error": *app.cluster_error.read().unwrap()},
        "services": services,
    })
}
