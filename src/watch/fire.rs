//! A trigger fired: record the incident (the cooldown), then run its procedure as an ordinary
//! run — lock, journal, report — with the firing journaled and announced first.

use super::Watcher;
use super::evaluate::{Firing, key, show};
use super::state::{self, Incident};
use crate::cli::{self, Cause};
use crate::console;
use crate::journal::{Entry, Outcome};
use crate::timefmt::format_duration;
use serde_json::json;
use std::time::Duration;

impl Watcher {
    pub(super) async fn fire(&self, firing: Firing) {
        let name = key(&firing.trigger, &firing.service);
        let Some(trigger) = self.triggers.iter().find(|t| t.name == firing.trigger) else {
            return;
        };
        let what = match firing.value {
            Some(value) => format!(
                "{name}: {} (value {}, held {})",
                firing.condition,
                show(Some(value)),
                format_duration(Duration::from_secs_f64(firing.held_s))
            ),
            None => format!("{name}: {}", firing.condition),
        };
        if !self.election.is_leader() {
            console::debug(&format!(
                "{what}; not the leader (leader: {}), so not acting",
                self.election
                    .view()
                    .holder
                    .unwrap_or_else(|| "none yet".into())
            ));
            return;
        }
        let args = trigger.procedure_args(&firing.service);
        let incident = Incident::new(&firing, &self.election.identity, &trigger.procedure, args);
        let command = format!(
            "rollback --env {} run {} {}",
            self.env,
            trigger.procedure,
            incident.args.join(" ")
        );
        let active = if self.session.dry_run() {
            let mut held = self
                .dry_run_incident
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let active = held.clone();
            if active.is_none() {
                *held = Some(incident.clone());
            }
            Ok(active)
        } else {
            state::claim(&self.kube, &incident).await
        };
        match active {
            Err(e) => {
                console::error(&format!(
                    "{what}; NOT running {}: cannot record the incident, so a cooldown could not be guaranteed: {e}",
                    trigger.procedure
                ));
                self.journal("watch.fire", &incident, "error", Some(e.to_string()));
                return;
            }
            Ok(Some(active)) => {
                console::warn(&format!(
                    "{what}; cooldown: incident {} awaits acknowledgement, so no automatic rollback (acknowledge with `rollback watch ack --env {}`)",
                    active.describe(),
                    self.env
                ));
                self.journal("watch.cooldown", &incident, "skipped", None);
                return;
            }
            Ok(None) => {}
        }
        if self.session.dry_run() {
            console::warn(&format!(
                "dry-run: {what}; would notify and run `{command}` (nothing done)"
            ));
            self.journal("watch.fire", &incident, "planned", None);
            return;
        }
        console::warn(&format!("fired {what}; notifying and running `{command}`"));
        self.journal("watch.fire", &incident, "ok", None);
        let run_id = crate::session::new_run_id();
        let (run, outcome) = self.run_procedure(&incident, run_id.clone()).await;
        match &run {
            Ok(()) => console::info(&format!(
                "{} run {run_id} for {name} {outcome}; automatic rollbacks are paused until `rollback watch ack --env {}`",
                trigger.procedure, self.env
            )),
            Err(e) => console::error(&format!(
                "{} run {run_id} for {name} {outcome}: {e}; automatic rollbacks are paused until `rollback watch ack --env {}`",
                trigger.procedure, self.env
            )),
        }
        if let Err(e) = state::conclude(&self.kube, incident.fired_at, &run_id, &outcome).await {
            console::warn(&format!("cannot record how run {run_id} ended: {e}"));
        }
    }

    /// Runs the procedure on a thread of its own: a run owns its runtime and engine, exactly
    /// as `rollback run` does.
    async fn run_procedure(
        &self,
        incident: &Incident,
        run_id: String,
    ) -> (Result<(), String>, String) {
        let mut global = self.global.clone();
        global.env = Some(self.env.clone());
        global.yes = true;
        global.dry_run = false;
        global.journal = None;
        global.report = None;
        global.operator = Some(format!("rollback-watch@{}", self.election.identity));
        let procedure = incident.procedure.clone();
        let args = incident.args.clone();
        let cause = Cause {
            record: json!({
                "source": "rollback watch",
                "leader": self.election.identity,
                "incident": incident,
            }),
            message: format!(
                "Automatic rollback: trigger {} fired ({}{}); running {}",
                key(&incident.trigger, &incident.service),
                incident.cause["condition"].as_str().unwrap_or_default(),
                incident.cause["value"]
                    .as_f64()
                    .map(|v| format!(", value {}", show(Some(v))))
                    .unwrap_or_default(),
                procedure
            ),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let result = cli::run_with(global, &procedure, args, run_id, Some(cause));
            let _ = tx.send(result);
        });
        match rx.await {
            Ok(Ok(code)) if code == std::process::ExitCode::SUCCESS => (Ok(()), "succeeded".into()),
            Ok(Ok(_)) => (
                Err("the procedure failed (see its report)".into()),
                "failed".into(),
            ),
            Ok(Err(e)) => (Err(e.message), "failed".into()),
            Err(_) => (
                Err("the run ended without an answer".into()),
                "failed".into(),
            ),
        }
    }

    fn journal(&self, function: &str, incident: &Incident, status: &str, error: Option<String>) {
        let _ = self.session.append(Entry {
            step: None,
            function: function.into(),
            args: json!({"trigger": incident.trigger, "service": incident.service, "procedure": incident.procedure, "params": incident.args}),
            outcome: Outcome::status(status, json!({"cause": incident.cause, "leader": incident.by}), error),
            duration_ms: 0,
            dry_run: self.session.dry_run(),
            mutating: false,
        });
    }
}
