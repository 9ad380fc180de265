//! `rollback watch`: evaluates the environment's rollback triggers against Prometheus (and
//! takes Alertmanager's webhook), and when one fires runs its procedure as an ordinary run —
//! once per incident, until a person acknowledges it.
//!
//! Replicas elect a leader through a Lease; only the leader acts. The cooldown lives in a
//! ConfigMap of the namespace, so it survives the leader and is shared by every replica.

pub mod alertmanager;
pub mod evaluate;
mod fire;
pub mod leader;
pub mod server;
pub mod state;
pub mod status;
pub mod trigger;

use crate::cli::{self, GlobalArgs};
use crate::console;
use crate::error::{Error, Result};
use crate::host::k8s::client::{self, Kube};
use crate::platform::Platform;
use crate::session::{self, Session};
use clap::{Args, Subcommand};
use evaluate::{Firing, Tracker};
use leader::Election;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use trigger::Trigger;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WatchArgs {
    #[command(subcommand)]
    pub command: Option<WatchCommand>,
    /// How often the triggers are evaluated against Prometheus (5s, 15s, 1m).
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = duration)]
    pub interval: Duration,
    /// How long a leader that stops renewing keeps the lead before another replica takes it.
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = duration)]
    pub lease_duration: Duration,
    /// Serve Alertmanager's webhook (POST /alertmanager), /healthz and /readyz here.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

#[derive(Subcommand, Debug)]
pub enum WatchCommand {
    /// Show the triggers, their current values, how long each has held, the leader and the
    /// incident awaiting acknowledgement.
    Status,
    /// Acknowledge the incident an automatic rollback handled, re-arming automatic rollbacks.
    Ack,
}

fn duration(text: &str) -> std::result::Result<Duration, String> {
    let d = crate::timefmt::parse_duration(text)?;
    if d < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(d)
}

pub fn run(global: GlobalArgs, args: WatchArgs) -> Result<ExitCode> {
    let setup = Setup::load(&global, args.command.is_none())?;
    match args.command {
        Some(WatchCommand::Status) => status::show_status(&setup),
        Some(WatchCommand::Ack) => acknowledge(&setup),
        None => watch(global, setup, args),
    }
}

/// What every `watch` command needs: the environment, its triggers, a session and a client.
pub struct Setup {
    pub env: String,
    pub platform: Platform,
    pub triggers: Vec<Trigger>,
    pub prometheus: String,
    pub session: Arc<Session>,
    pub kube: Kube,
    pub runtime: Arc<tokio::runtime::Runtime>,
}

impl Setup {
    fn load(global: &GlobalArgs, journaled: bool) -> Result<Setup> {
        let catalog = cli::catalog(global);
        let platform = cli::load_platform(global, &catalog)?;
        let env = cli::require_env(global, &platform)?;
        let misdeclared = |e: String| {
            Error::usage(format!(
                "environment '{env}': {e}\nfix [[triggers]] in the platform definition"
            ))
        };
        let triggers = trigger::for_environment(&platform, &env).map_err(misdeclared)?;
        if journaled {
            check_procedures(&catalog, &triggers).map_err(misdeclared)?;
        }
        let config = platform.environment(&env)?.clone();
        let prometheus = config.prometheus_url.clone().ok_or_else(|| {
            Error::usage(format!(
                "environment '{env}' has no prometheus_url: the watcher evaluates its triggers there; add it to the platform definition"
            ))
        })?;
        if !client::configured(&config) {
            return Err(Error::usage(format!(
                "environment '{env}' has no Kubernetes API configured: the watcher keeps its leader Lease and cooldown there; set kubeconfig for it in the platform definition"
            )));
        }
        let runtime = cli::runtime()?;
        let id = session::new_run_id();
        let journal = journaled.then(|| {
            cli::home(global)
                .join("watch")
                .join(&env)
                .join(format!("{id}.jsonl"))
        });
        let session = Session::start(
            session::Options {
                id,
                procedure: "watch".into(),
                environment: env.clone(),
                operator: cli::operator(global),
                dry_run: global.dry_run,
                yes: false,
                timeout: None,
                journal,
                report: None,
                params: serde_json::json!({}),
            },
            platform.clone(),
            runtime.clone(),
        )?;
        let kube = runtime
            .block_on(client::connect(&session))
            .map_err(|e| Error::failed(e.to_string()))?;
        Ok(Setup {
            env,
            platform,
            triggers,
            prometheus,
            session,
            kube,
            runtime,
        })
    }
}

/// A trigger naming a missing procedure or parameter would fail only when it fires, in the
/// middle of an incident: the watcher refuses to start with it instead.
fn check_procedures(
    catalog: &crate::engine::catalog::Catalog,
    triggers: &[Trigger],
) -> std::result::Result<(), String> {
    for t in triggers {
        let at = |e: Error| format!("trigger '{}': {}", t.name, e.message);
        let source = catalog.procedure(&t.procedure).map_err(at)?;
        let header = crate::engine::params::parse_header(&source).map_err(at)?;
        for key in t.params.keys() {
            if !header.params.iter().any(|p| p.name == *key) {
                let known: Vec<&str> = header.params.iter().map(|p| p.name.as_str()).collect();
                return Err(format!(
                    "trigger '{}': procedure {} has no parameter '{key}' (it has: {})",
                    t.name,
                    t.procedure,
                    known.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// The running watcher, shared by the evaluation loop and the HTTP server.
pub struct Watcher {
    pub global: GlobalArgs,
    pub env: String,
    pub platform: Platform,
    pub triggers: Vec<Trigger>,
    pub prometheus: String,
    pub session: Arc<Session>,
    pub kube: Kube,
    pub election: Arc<Election>,
    pub interval: Duration,
    pub alerts: tokio::sync::mpsc::Sender<Firing>,
    tracker: Mutex<Tracker>,
    published: Mutex<Option<BTreeMap<String, chrono::DateTime<chrono::Utc>>>>,
    prometheus_error: Mutex<Option<String>>,
    evaluated: AtomicBool,
    /// A dry-run's cooldown: nothing is written to the cluster.
    dry_run_incident: Mutex<Option<state::Incident>>,
}

impl Watcher {
    /// Why this replica should not get traffic yet, if it should not.
    pub fn not_ready(&self) -> Option<String> {
        if !self.evaluated.load(Ordering::Relaxed) {
            return Some("no evaluation has run yet".into());
        }
        self.election
            .view()
            .error
            .map(|e| format!("leader election: {e}"))
    }

    async fn evaluate_once(&self) {
        // The values are Prometheus' view at the moment of asking: held durations count from
        // there, not from whenever the slowest query came back.
        let now = chrono::Utc::now();
        let readings = evaluate::evaluate(
            &self.session.http(),
            &self.prometheus,
            &self.platform,
            &self.triggers,
            self.interval
                .clamp(Duration::from_secs(1), Duration::from_secs(10)),
        )
        .await;
        self.note_prometheus(&readings);
        let (firings, holding, conditions) = {
            let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            let firings = tracker.update(now, &self.triggers, &readings);
            (firings, tracker.holding(), tracker.conditions.clone())
        };
        for reading in &readings {
            let key = evaluate::key(&reading.trigger, &reading.service);
            let trigger = self.triggers.iter().find(|t| t.name == reading.trigger);
            let held = conditions
                .get(&key)
                .and_then(|c| c.since)
                .map(|s| {
                    format!(
                        ", held {}",
                        crate::timefmt::format_duration((now - s).to_std().unwrap_or_default())
                    )
                })
                .unwrap_or_default();
            let value = match &reading.value {
                Ok(v) => evaluate::show(*v),
                Err(e) => format!("error ({e})"),
            };
            console::debug(&format!(
                "{key}: {} = {value} ({}){held}",
                trigger.map(Trigger::metric_name).unwrap_or("?"),
                trigger.map(Trigger::condition).unwrap_or_default(),
            ));
        }
        self.evaluated.store(true, Ordering::Relaxed);
        if self.election.is_leader() && !self.session.dry_run() {
            self.publish(holding).await;
        }
        if !self.election.is_leader() {
            let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            for firing in &firings {
                tracker.rearm(&firing.trigger, &firing.service);
            }
        }
        for firing in firings {
            self.fire(firing).await;
        }
    }

    /// Says once when Prometheus stops answering, and once when it answers again.
    fn note_prometheus(&self, readings: &[evaluate::Reading]) {
        let error = readings
            .iter()
            .find_map(|r| r.value.as_ref().err())
            .cloned();
        let mut last = self
            .prometheus_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match (&*last, &error) {
            (None, Some(e)) => console::warn(&format!(
                "cannot evaluate triggers: {e}; nothing fires on missing data, and a condition's sustained time starts again once Prometheus answers"
            )),
            (Some(_), None) => console::info(&format!(
                "Prometheus at {} answers again; evaluating triggers",
                self.prometheus
            )),
            _ => {}
        }
        *last = error;
    }

    async fn publish(&self, holding: BTreeMap<String, chrono::DateTime<chrono::Utc>>) {
        if self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&holding)
        {
            return;
        }
        match state::publish(&self.kube, &holding).await {
            Ok(()) => {
                *self.published.lock().unwrap_or_else(|e| e.into_inner()) = Some(holding);
            }
            Err(e) => console::warn(&format!(
                "cannot publish the conditions for `rollback watch status`: {e}"
            )),
        }
    }
}

fn watch(global: GlobalArgs, setup: Setup, args: WatchArgs) -> Result<ExitCode> {
    let Setup {
        env,
        platform,
        triggers,
        prometheus,
        session,
        kube,
        runtime,
    } = setup;
    let identity = format!("{}/{}", session.host, std::process::id());
    let election = Election::new(
        kube.clone(),
        identity.clone(),
        args.lease_duration,
        session.dry_run(),
    );
    let (alerts, mut alert_rx) = tokio::sync::mpsc::channel(64);
    let watcher = Arc::new(Watcher {
        global,
        env: env.clone(),
        platform,
        triggers,
        prometheus,
        session: session.clone(),
        kube,
        election: election.clone(),
        interval: args.interval,
        alerts,
        tracker: Mutex::default(),
        published: Mutex::default(),
        prometheus_error: Mutex::default(),
        evaluated: AtomicBool::new(false),
        dry_run_incident: Mutex::default(),
    });
    let stop = CancellationToken::new();
    console::info(&format!(
        "watching environment '{env}' as {identity}{}: {} trigger(s) every {}, leader lease {}",
        if session.dry_run() {
            " (dry-run: firings are announced, nothing is run)"
        } else {
            ""
        },
        watcher.triggers.len(),
        crate::timefmt::format_duration(args.interval),
        crate::timefmt::format_duration(args.lease_duration),
    ));
    for t in &watcher.triggers {
        console::info(&format!(
            "trigger {}: {} on {} → {}",
            t.name,
            t.condition(),
            t.targets(&watcher.platform).join(", "),
            t.procedure
        ));
    }
    let result = runtime.block_on(async {
        if let Some(address) = args.listen {
            let listener = server::bind(address).await?;
            console::info(&format!(
                "listening on http://{}: POST /alertmanager, GET /healthz, /readyz",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            ));
            tokio::spawn(server::serve(watcher.clone(), listener, stop.clone()));
        }
        let elected = tokio::spawn(election.clone().run(stop.clone()));
        let signals = stop.clone();
        tokio::spawn(async move {
            let mut stops = crate::stop_signals::StopSignals::listen();
            stops.next().await;
            console::info("stopping: handing the lead over");
            signals.cancel();
        });
        let mut tick = tokio::time::interval(args.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => watcher.evaluate_once().await,
                Some(firing) = alert_rx.recv() => watcher.fire(firing).await,
            }
        }
        let _ = elected.await;
        Ok::<_, Error>(())
    });
    let _ = session.finish("stopped", None);
    result.map(|()| ExitCode::SUCCESS)
}

fn acknowledge(setup: &Setup) -> Result<ExitCode> {
    let by = setup.session.operator.clone();
    let acked = setup
        .runtime
        .block_on(state::acknowledge(&setup.kube, &by))
        .map_err(|e| Error::failed(e.to_string()))?;
    match acked {
        Some(incident) => console::info(&format!(
            "acknowledged by {by}: {}; automatic rollbacks are armed again on '{}'",
            incident.describe(),
            setup.env
        )),
        None => console::info(&format!(
            "no incident awaits acknowledgement on '{}': automatic rollbacks are armed",
            setup.env
        )),
    }
    let _ = setup.session.finish("ok", None);
    Ok(ExitCode::SUCCESS)
}
