//! `rollback sandbox`: a local, real Tracktion platform to rehearse procedures against and to
//! test them with — Kubernetes (kwok), the demo's Helm releases, a server standing in for the
//! fake pods' HTTP endpoints, Prometheus and Pushgateway, all on 127.0.0.1.
//!
//! `up` starts the pieces in order and records each in `sandbox.json` as it goes, so `down`
//! (or a failed `up` cleaning after itself) stops exactly what was started.

pub mod chart;
pub mod client;
pub mod cluster;
pub mod cluster_view;
pub mod down;
pub mod environment;
pub mod incidents;
pub mod inject;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod receivers;
pub mod redis;
pub mod registry;
pub mod server;
pub mod state;
pub mod status;
pub mod traffic;
pub mod up;

use crate::cli::GlobalArgs;
use crate::error::Result;
use clap::{ArgGroup, Args, Subcommand};
use state::Paths;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Start the sandbox and write the `sandbox` environment (does nothing if it is already up).
    Up,
    /// Stop everything `up` started and remove the `sandbox` environment.
    Down,
    /// Show each component with its pid and address and whether it answers, and each service's slots.
    Status,
    /// Inject an incident into a service's slot for a rehearsal, or clear incidents.
    Inject(InjectArgs),
    /// Run the sandbox server (started by `up`).
    #[command(hide = true)]
    Serve {
        /// The sandbox directory holding server.json.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
    },
}

#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("incident")
        .required(true)
        .multiple(true)
        .args(["error_rate", "latency_ms", "down", "clear"])
))]
pub struct InjectArgs {
    /// The service (see `rollback sandbox status`); required unless --clear clears everything.
    #[arg(long, value_name = "NAME", required_unless_present = "clear")]
    pub service: Option<String>,
    /// The slot; by default the one serving the service's traffic now.
    #[arg(long, value_parser = ["blue", "green"])]
    pub slot: Option<String>,
    /// Percentage of requests the slot answers with 500.
    #[arg(long, value_name = "PERCENT")]
    pub error_rate: Option<f64>,
    /// Latency added to every request and health check of the slot.
    #[arg(long, value_name = "MS")]
    pub latency_ms: Option<u64>,
    /// The slot answers 503 to every request and health check.
    #[arg(long)]
    pub down: bool,
    /// Remove the slot's incidents (both slots without --slot, every service without --service).
    #[arg(long, conflicts_with_all = ["error_rate", "latency_ms", "down"])]
    pub clear: bool,
}

pub fn run(global: &GlobalArgs, command: SandboxCommand) -> Result<ExitCode> {
    let paths = Paths::new(&crate::cli::home(global));
    match command {
        SandboxCommand::Up => up::up(global, &paths),
        SandboxCommand::Down => down::down(&paths),
        SandboxCommand::Status => status::status(&paths),
        SandboxCommand::Inject(args) => inject::inject(&paths, &args),
        SandboxCommand::Serve { state } => server::serve(&state.join("server.json")),
    }
}
