//! `rollback sandbox down`: stop everything `up` started, verify nothing is left, remove the
//! environment file and the sandbox directory.

use super::state::{Paths, Process, State};
use super::{cluster, process};
use crate::console;
use crate::error::{Error, Result, io_context};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long a process gets to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

pub fn down(paths: &Paths) -> Result<ExitCode> {
    let started = Instant::now();
    let _lock = paths.lock()?;
    let state = State::load(paths)?;
    let running = state.is_some()
        || paths.environment_file().exists()
        || !leftover_pids(paths).is_empty()
        || paths.cluster_workdir().join("clusters").exists();
    if !running {
        let _ = std::fs::remove_dir_all(&paths.dir);
        console::out("the sandbox is not running; nothing to stop");
        return Ok(ExitCode::SUCCESS);
    }
    stop(paths, &state.unwrap_or_default(), false)?;
    console::out(&format!(
        "sandbox stopped in {:.1}s; environment `sandbox` removed",
        started.elapsed().as_secs_f64()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Stops every piece, last started first, then checks that no process of the sandbox is left.
/// With `keep_logs` (a failed `up`), the logs stay for diagnosis; everything else is removed.
pub fn stop(paths: &Paths, state: &State, keep_logs: bool) -> Result<()> {
    remove_file(&paths.environment_file())?;
    let mut survivors = Vec::new();
    for (name, p) in state.processes() {
        if name == "database" {
            stop_database(paths, p)?;
        } else if process::is_ours(p.pid, &paths.dir) {
            if process::stop(p.pid, GRACE) {
                console::info(&format!("stopped {name} (pid {})", p.pid));
            } else {
                survivors.push(format!("{name} (pid {})", p.pid));
            }
        }
    }
    let kube = match &state.cluster {
        Some(kube) => Some(kube.clone()),
        // The state is gone but a cluster directory is not: take it down all the same.
        None if paths.cluster_workdir().join("clusters").exists() => {
            Some(cluster::describe(paths, &cluster::bin_dir(paths)?))
        }
        None => None,
    };
    if let Some(kube) = kube.as_ref().filter(|k| cluster::exists(k)) {
        cluster::down(paths, kube)?;
        console::info(&format!("stopped Kubernetes cluster {}", kube.name));
    }
    // Anything still running from the sandbox directory (a server whose pid was never
    // recorded, a component that outlived kwokctl) is ours to stop too.
    for pid in leftover_pids(paths) {
        process::stop(pid, GRACE);
    }
    let left = leftover_pids(paths);
    if !left.is_empty() || !survivors.is_empty() {
        let described: Vec<String> = left
            .iter()
            .map(|pid| {
                format!(
                    "{pid} ({})",
                    process::cmdline(*pid)
                        .unwrap_or_default()
                        .chars()
                        .take(80)
                        .collect::<String>()
                )
            })
            .chain(survivors)
            .collect();
        return Err(Error::failed(format!(
            "some sandbox processes are still running: {}; stop them (kill PID) and run `rollback sandbox down` again",
            described.join(", ")
        )));
    }
    remove_directory(paths, keep_logs)
}

/// Hook for the sandbox's PostgreSQL (see `up::start_database`): it is stopped with its own
/// tools (a fast shutdown), not by signalling the postmaster blindly.
fn stop_database(paths: &Paths, database: &Process) -> Result<()> {
    let dir = paths.dir.join("postgres");
    if !dir.join("data").exists() && !process::is_running(database.pid) {
        return Ok(());
    }
    // Attaching to the existing cluster and dropping it runs pg_ctl stop -m fast.
    let pg = super::postgres::LocalPostgres::attach(&dir, database.port)?;
    drop(pg);
    if process::is_running(database.pid) {
        return Err(Error::failed(format!(
            "PostgreSQL (pid {}) did not stop; its log: {}",
            database.pid,
            database.log.display()
        )));
    }
    Ok(())
}

/// Processes of the sandbox: its own executables, started with the sandbox directory on their
/// command line. Matching the executable as well spares an operator's `tail -f` of a log.
fn leftover_pids(paths: &Paths) -> Vec<u32> {
    let rollback = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "rollback".into());
    let executables = [
        rollback.as_str(),
        "prometheus",
        "prometheus-pushgateway",
        "pushgateway",
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "kwokctl",
        "postgres",
        "docker-registry",
        "redis-server",
        // Debian's redis-server is a link to this one binary.
        "redis-check-rdb",
    ];
    process::pids_mentioning(&paths.dir)
        .into_iter()
        .filter(|pid| {
            process::executable_name(*pid).is_some_and(|name| executables.contains(&name.as_str()))
        })
        .collect()
}

fn remove_file(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_context(e, format!("cannot remove {}", path.display()))),
    }
}

fn remove_directory(paths: &Paths, keep_logs: bool) -> Result<()> {
    let entries = match std::fs::read_dir(&paths.dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io_context(
                e,
                format!("cannot read {}", paths.dir.display()),
            ));
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if keep_logs && path == paths.logs() {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| io_context(e, format!("cannot remove {}", path.display())))?;
    }
    if !keep_logs {
        let _ = std::fs::remove_dir(&paths.dir);
    }
    Ok(())
}
