//! The watcher's HTTP side: Alertmanager's webhook, `/healthz` and `/readyz`.
//!
//! Every replica answers. Only the leader acts on an alert; the others answer 503 naming the
//! leader, and Alertmanager retries, reaching the leader through the Service.

use super::Watcher;
use super::alertmanager::{self, Decision};
use crate::console;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Webhook bodies above this are refused: Alertmanager's payloads are a few kilobytes.
const MAX_BODY: usize = 1024 * 1024;

pub async fn serve(
    watcher: Arc<Watcher>,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let watcher = watcher.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let watcher = watcher.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&watcher, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

pub async fn bind(address: SocketAddr) -> crate::error::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| crate::error::io_context(e, format!("cannot listen on {address}")))
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(watcher: &Watcher, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => match watcher.not_ready() {
            None => reply(
                StatusCode::OK,
                serde_json::json!({"status": "ready", "leader": watcher.election.is_leader()}),
            ),
            Some(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "not ready", "reason": why}),
            ),
        },
        (&Method::POST, "/" | "/alertmanager") => webhook(watcher, req).await,
        (_, "/" | "/alertmanager" | "/healthz" | "/readyz") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "POST Alertmanager webhooks to /alertmanager; GET /healthz and /readyz"}),
        ),
        (_, path) => reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no such endpoint {path}: use /alertmanager, /healthz or /readyz")}),
        ),
    }
}

async fn webhook(watcher: &Watcher, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            console::warn(&format!(
                "Alertmanager webhook: unreadable request body: {e}"
            ));
            return reply(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("unreadable body: {e}")}),
            );
        }
    };
    let decisions = match alertmanager::interpret(
        &body,
        &watcher.triggers,
        &watcher.platform,
        chrono::Utc::now(),
    ) {
        Ok(d) => d,
        Err(e) => {
            console::warn(&format!("Alertmanager webhook refused: {e}"));
            return reply(StatusCode::BAD_REQUEST, serde_json::json!({"error": e}));
        }
    };
    let fires = decisions.iter().any(|d| matches!(d, Decision::Fire(_)));
    if fires && !watcher.election.is_leader() {
        let leader = watcher
            .election
            .view()
            .holder
            .unwrap_or_else(|| "none yet".into());
        console::info(&format!(
            "Alertmanager webhook: not the leader (leader: {leader}); answering 503 so Alertmanager retries"
        ));
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "this replica is not the leader; retry", "leader": leader}),
        );
    }
    let mut accepted = Vec::new();
    let mut ignored = Vec::new();
    for decision in decisions {
        match decision {
            Decision::Fire(firing) => {
                console::info(&format!(
                    "Alertmanager webhook: {}: firing trigger {}",
                    firing.condition,
                    super::evaluate::key(&firing.trigger, &firing.service)
                ));
                accepted.push(super::evaluate::key(&firing.trigger, &firing.service));
                let _ = watcher.alerts.send(*firing).await;
            }
            Decision::Ignore(why) => {
                console::info(&format!("Alertmanager webhook: ignored {why}"));
                ignored.push(why);
            }
        }
    }
    reply(
        StatusCode::OK,
        serde_json::json!({"fired": accepted, "ignored": ignored}),
    )
}
