//! Prometheus and Pushgateway (the Debian packages), each with its own configuration and data
//! in the sandbox directory, listening on a free loopback port.

use super::client::Http;
use super::process;
use super::state::{Paths, Process};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Both binaries, found on PATH before anything is started.
pub struct Binaries {
    pub prometheus: PathBuf,
    pub pushgateway: PathBuf,
}

pub fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|candidate| candidate.is_file())
}

pub fn binaries() -> Result<Binaries> {
    let missing = |what: &str| {
        Error::failed(format!(
            "{what} is not installed (not found on PATH); install it with: apt-get install -y prometheus prometheus-pushgateway"
        ))
    };
    Ok(Binaries {
        prometheus: find_on_path(&["prometheus"]).ok_or_else(|| missing("prometheus"))?,
        // Debian names the binary prometheus-pushgateway; upstream releases call it pushgateway.
        pushgateway: find_on_path(&["prometheus-pushgateway", "pushgateway"])
            .ok_or_else(|| missing("the Prometheus Pushgateway"))?,
    })
}

/// Scrapes the sandbox server and the Pushgateway every second, so a rehearsal sees an
/// injected incident within seconds.
pub fn config(server_port: u16, pushgateway_port: u16) -> String {
    format!(
        r#"# Written by `rollback sandbox up`.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tracktion
    static_configs:
      - targets: ["127.0.0.1:{server_port}"]
        labels:
          namespace: tracktion
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:{pushgateway_port}"]
"#
    )
}

pub fn start_pushgateway(
    paths: &Paths,
    binary: &Path,
    http: &Http,
    interrupted: &AtomicBool,
) -> Result<Process> {
    let dir = paths.pushgateway();
    start_on_free_port(
        "pushgateway",
        |port| {
            let mut c = Command::new(binary);
            c.arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!(
                    "--persistence.file={}",
                    dir.join("metrics.store").display()
                ));
            c
        },
        &dir,
        paths,
        http,
        interrupted,
    )
}

pub fn start_prometheus(
    paths: &Paths,
    binary: &Path,
    server_port: u16,
    pushgateway_port: u16,
    http: &Http,
    interrupted: &AtomicBool,
) -> Result<Process> {
    let dir = paths.prometheus();
    let config_file = dir.join("prometheus.yml");
    super::state::write_atomic(&config_file, &config(server_port, pushgateway_port))?;
    start_on_free_port(
        "prometheus",
        |port| {
            let mut c = Command::new(binary);
            c.arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg("--storage.tsdb.retention.time=2d")
                .arg(format!("--web.listen-address=127.0.0.1:{port}"));
            c
        },
        &dir,
        paths,
        http,
        interrupted,
    )
}

/// A port the kernel just had free on loopback. Another process could take it before ours
/// binds, so a start that fails on a taken address is retried with a new port.
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::failed(format!("cannot find a free port on 127.0.0.1: {e}")))
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn start_on_free_port(
    name: &str,
    command: impl Fn(u16) -> Command,
    dir: &Path,
    paths: &Paths,
    http: &Http,
    interrupted: &AtomicBool,
) -> Result<Process> {
    std::fs::create_dir_all(dir)
        .map_err(|e| crate::error::io_context(e, format!("cannot create {}", dir.display())))?;
    let log = paths.log(name);
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let port = free_port()?;
        let mut child = process::spawn_detached(command(port), &log)?;
        let process = Process {
            pid: child.id(),
            port,
            log: log.clone(),
        };
        let ready_url = format!("{}/-/ready", process.url());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_error = format!(
                    "{name} exited at start ({status}). Log {}:\n{}",
                    log.display(),
                    process::log_tail(&log, 10)
                );
                break;
            }
            if http.answers(&ready_url) {
                return Ok(process);
            }
            if interrupted.load(Ordering::SeqCst) || Instant::now() > deadline {
                process::stop(process.pid, Duration::from_secs(5));
                let _ = child.wait();
                return Err(Error::failed(format!(
                    "{name} did not become ready on 127.0.0.1:{port}. Log {}:\n{}",
                    log.display(),
                    process::log_tail(&log, 10)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !process::log_tail(&log, 5).contains("address already in use") {
            break;
        }
    }
    Err(Error::failed(last_error))
}
