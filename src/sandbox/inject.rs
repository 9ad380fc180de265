//! `rollback sandbox inject`: put a slot into trouble for a rehearsal (errors, latency, down),
//! or clear it. The change is saved to the incident file, then the server is asked to re-read
//! it; the command returns once the server applies it.

use super::InjectArgs;
use super::client::Http;
use super::incidents::Incidents;
use super::state::{Paths, State};
use crate::console;
use crate::error::{Error, Result};
use crate::platform::SLOTS;
use std::process::ExitCode;

pub fn inject(paths: &Paths, args: &InjectArgs) -> Result<ExitCode> {
    if let Some(rate) = args.error_rate
        && !(0.0..=100.0).contains(&rate)
    {
        return Err(Error::usage(format!(
            "--error-rate {rate} is not a percentage; give a number from 0 to 100"
        )));
    }
    if args.latency_ms.is_some_and(|ms| ms > 600_000) {
        return Err(Error::usage("--latency-ms is at most 600000 (10 minutes)"));
    }
    let state = State::load(paths)?.filter(|s| s.complete).ok_or_else(|| {
        Error::failed("the sandbox is not running; start it with `rollback sandbox up`")
    })?;
    let server = state
        .server
        .clone()
        .expect("a complete sandbox has a server");
    let http = Http::new(crate::cli::runtime()?);
    let mut incidents = Incidents::load(&paths.incidents())?;
    match &args.service {
        None => incidents = Incidents::default(),
        Some(service) => {
            check_service(&state, service)?;
            let slots: Vec<String> = match (&args.slot, args.clear) {
                (Some(slot), _) => vec![slot.clone()],
                (None, true) => SLOTS.iter().map(|s| s.to_string()).collect(),
                (None, false) => vec![active_slot(&http, &server.url(), service)?],
            };
            for slot in slots {
                let mut incident = if args.clear {
                    Default::default()
                } else {
                    incidents.get(service, &slot)
                };
                if let Some(rate) = args.error_rate {
                    incident.error_rate = rate;
                }
                if let Some(ms) = args.latency_ms {
                    incident.latency_ms = ms;
                }
                if args.down {
                    incident.down = true;
                }
                incidents.set(service, &slot, incident);
            }
        }
    }
    incidents.save(&paths.incidents())?;
    match http.post(&format!("{}/_sandbox/reload", server.url())) {
        Ok((200, _)) => {}
        Ok((status, body)) => {
            return Err(Error::failed(format!(
                "the incident is saved in {} but the sandbox server refused it (HTTP {status}): {body}",
                paths.incidents().display()
            )));
        }
        Err(e) => {
            return Err(Error::failed(format!(
                "the incident is saved in {} but the sandbox server at {} did not answer ({e}); check `rollback sandbox status`",
                paths.incidents().display(),
                server.url()
            )));
        }
    }
    let list = incidents.list();
    if list.is_empty() {
        console::out("no incidents: every slot is healthy");
    }
    for (service, slot, incident) in list {
        console::out(&format!("{service} {slot}: {}", incident.describe()));
    }
    Ok(ExitCode::SUCCESS)
}

fn check_service(state: &State, service: &str) -> Result<()> {
    let names: Vec<&str> = state.services.iter().map(|s| s.name.as_str()).collect();
    if names.contains(&service) {
        return Ok(());
    }
    let hint = crate::engine::suggest::did_you_mean(service, names.iter().copied())
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default();
    Err(Error::usage(format!(
        "unknown service '{service}'{hint}; the sandbox runs: {}",
        names.join(", ")
    )))
}

/// The slot the service's Service selects now, as the server last read it.
fn active_slot(http: &Http, server: &str, service: &str) -> Result<String> {
    let (_, body) = http.get(&format!("{server}/_sandbox/state")).map_err(|e| {
        Error::failed(format!(
            "the sandbox server at {server} did not answer ({e}); check `rollback sandbox status`"
        ))
    })?;
    let view: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    view["services"][service]["active"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            Error::failed(format!(
                "the sandbox server does not know which slot serves {service}; pass --slot blue or --slot green"
            ))
        })
}
