//! `rollback sandbox status`: each component with its pid and address and whether it answers,
//! then each service's slots as the sandbox server sees them.

use super::client::Http;
use super::state::{Paths, Process, State};
use super::{cluster, incidents::Incident, process};
use crate::console;
use crate::error::{Error, Result};
use serde_json::Value;
use std::process::ExitCode;

pub struct Row {
    pub component: &'static str,
    pub pids: String,
    pub address: String,
    pub condition: String,
    pub ok: bool,
}

impl Row {
    pub fn describe(&self) -> String {
        format!("{} {}", self.component, self.condition)
    }
}

/// Probes every recorded component; nothing is changed.
pub fn probe(paths: &Paths, state: &State, http: &Http) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(kube) = &state.cluster {
        let pids = cluster::component_pids(kube);
        let ready = cluster::exists(kube) && !pids.is_empty() && cluster::ready(kube);
        rows.push(Row {
            component: "cluster",
            pids: join(&pids),
            address: cluster::api_server(kube).unwrap_or_default(),
            condition: if ready {
                format!("ready ({}, {} processes)", kube.name, pids.len())
            } else if pids.is_empty() {
                "not running".into()
            } else {
                "not answering".into()
            },
            ok: ready,
        });
    }
    let probes: [(&'static str, &Option<Process>, &str); 6] = [
        ("server", &state.server, "/_sandbox/ready"),
        ("prometheus", &state.prometheus, "/-/ready"),
        ("pushgateway", &state.pushgateway, "/-/ready"),
        ("database", &state.database, ""),
        ("registry", &state.registry, "/v2/"),
        ("redis", &state.redis, ""),
    ];
    for (component, process, ready_path) in probes {
        let Some(p) = process else { continue };
        let running = process::is_ours(p.pid, &paths.dir);
        let answers =
            running && (ready_path.is_empty() || http.answers(&format!("{}{ready_path}", p.url())));
        rows.push(Row {
            component,
            pids: p.pid.to_string(),
            address: p.url(),
            condition: match (running, answers) {
                (true, true) => "answering".into(),
                (true, false) => "running but not answering".into(),
                (false, _) => "not running".into(),
            },
            ok: answers,
        });
    }
    rows
}

fn join(pids: &[u32]) -> String {
    if pids.is_empty() {
        return "-".into();
    }
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn status(paths: &Paths) -> Result<ExitCode> {
    let Some(state) = State::load(paths)? else {
        return Err(Error::failed(
            "the sandbox is not running; start it with `rollback sandbox up`",
        ));
    };
    let http = Http::new(crate::cli::runtime()?);
    let rows = probe(paths, &state, &http);
    let mut out = vec![format!(
        "sandbox in {} (started {})",
        paths.dir.display(),
        state.started_at
    )];
    out.push(format!(
        "{:<12} {:<32} {:<24} {}",
        "COMPONENT", "PID", "ADDRESS", "STATE"
    ));
    for r in &rows {
        out.push(format!(
            "{:<12} {:<32} {:<24} {}",
            r.component, r.pids, r.address, r.condition
        ));
    }
    let server_answers = rows.iter().any(|r| r.component == "server" && r.ok);
    if let Some(server) = state.server.as_ref().filter(|_| server_answers)
        && let Ok((200, body)) = http.get(&format!("{}/_sandbox/state", server.url()))
    {
        let view: Value = serde_json::from_str(&body).unwrap_or_default();
        out.push(String::new());
        out.extend(services_table(&view));
    }
    if paths.environment_file().is_file() {
        out.push(format!(
            "\nenvironment `sandbox`: {}",
            paths.environment_file().display()
        ));
    }
    out.push(format!("notifications: {}", notification_counts(paths)));
    console::out(&out.join("\n"));
    let silent: Vec<String> = rows.iter().filter(|r| !r.ok).map(Row::describe).collect();
    if paths.busy() {
        return Err(Error::failed(
            "the sandbox is being started or stopped by another `rollback sandbox` command; check again when it is done",
        ));
    }
    if !silent.is_empty() || !state.complete {
        return Err(Error::failed(format!(
            "the sandbox is only partly up ({}); restart it with `rollback sandbox down` then `rollback sandbox up`",
            if silent.is_empty() {
                "its `up` did not finish".to_string()
            } else {
                silent.join("; ")
            }
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn services_table(view: &Value) -> Vec<String> {
    let mut out = vec![format!(
        "{:<22} {:<7} {:<46} {}",
        "SERVICE", "ACTIVE", "BLUE", "GREEN"
    )];
    let Some(services) = view["services"].as_object() else {
        return out;
    };
    for (name, svc) in services {
        let slot = |slot: &str| {
            let s = &svc["slots"][slot];
            let incident: Incident =
                serde_json::from_value(s["incident"].clone()).unwrap_or_default();
            let mut text = match (
                s["version"].as_str(),
                s["ready"].as_u64(),
                s["desired"].as_u64(),
            ) {
                (Some(v), Some(r), Some(d)) => format!("{v} {r}/{d} ready"),
                _ => "no Deployment".into(),
            };
            if !incident.is_clear() {
                text.push_str(&format!(", {}", incident.describe()));
            }
            text
        };
        out.push(format!(
            "{:<22} {:<7} {:<46} {}",
            name,
            svc["active"].as_str().unwrap_or("?"),
            slot("blue"),
            slot("green")
        ));
    }
    out
}

fn notification_counts(paths: &Paths) -> String {
    let count = |name: &str| {
        std::fs::read_to_string(paths.notifications().join(format!("{name}.jsonl")))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    format!(
        "{} Slack, {} PagerDuty recorded in {}",
        count("slack"),
        count("pagerduty"),
        paths.notifications().display()
    )
}
