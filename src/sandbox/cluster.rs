//! The sandbox's Kubernetes: the test bed scripts (`testbed/provision.sh`, `testbed/cluster.sh`)
//! are compiled into the binary and run from the sandbox directory, so the sandbox and the
//! tests start clusters the same way and an installed `rollback` needs no source checkout.

use super::process;
use super::state::{Cluster, Paths};
use crate::console;
use crate::error::{Error, Result, io_context};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

const PROVISION_SH: &str = include_str!("../../testbed/provision.sh");
const CLUSTER_SH: &str = include_str!("../../testbed/cluster.sh");

pub const NAME: &str = "rollback-sandbox";

/// What provision.sh builds; the directory name it prints carries every version, so a
/// complete directory is a complete, correctly versioned set.
const BINARIES: [&str; 7] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kwokctl",
    "helm",
];

/// Writes both scripts executable (cluster.sh re-runs itself and calls provision.sh beside it).
fn write_scripts(paths: &Paths) -> Result<PathBuf> {
    let dir = paths.testbed_scripts();
    std::fs::create_dir_all(&dir)
        .map_err(|e| io_context(e, format!("cannot create {}", dir.display())))?;
    for (name, text) in [("provision.sh", PROVISION_SH), ("cluster.sh", CLUSTER_SH)] {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| io_context(e, format!("cannot write {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io_context(e, format!("cannot make {} executable", path.display())))?;
    }
    Ok(dir)
}

/// Where provision.sh keeps the binaries, without building anything.
pub fn bin_dir(paths: &Paths) -> Result<PathBuf> {
    let scripts = write_scripts(paths)?;
    let printed = Command::new("bash")
        .arg(scripts.join("provision.sh"))
        .arg("--print-bin")
        .output()
        .map_err(|e| Error::failed(format!("cannot run bash: {e}")))?;
    Ok(last_line(&printed.stdout))
}

/// The directory of the pinned Kubernetes, kwok and Helm binaries, built first if any is
/// missing (from Go modules, once per machine).
pub fn binaries(paths: &Paths, interrupted: &AtomicBool) -> Result<PathBuf> {
    let bin = bin_dir(paths)?;
    let provision = paths.testbed_scripts().join("provision.sh");
    if !bin.as_os_str().is_empty() && BINARIES.iter().all(|b| bin.join(b).is_file()) {
        return Ok(bin);
    }
    console::info(&format!(
        "building the Kubernetes, kwok and Helm binaries from Go modules into {} (once per machine; 15-30 minutes on 2 cores)",
        bin.display()
    ));
    let log = paths.log("provision");
    let status = process::run_logged(
        {
            let mut c = Command::new("bash");
            c.arg(&provision);
            c
        },
        &log,
        interrupted,
    )?;
    if !status.success() || !BINARIES.iter().all(|b| bin.join(b).is_file()) {
        return Err(Error::failed(format!(
            "building the test bed binaries failed ({status}); it needs Go (on PATH or /usr/local/go/bin), jq and flock, and the Go module proxy. Log {}:\n{}",
            log.display(),
            process::log_tail(&log, 15)
        )));
    }
    Ok(bin)
}

fn last_line(bytes: &[u8]) -> PathBuf {
    PathBuf::from(
        String::from_utf8_lossy(bytes)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    )
}

/// Where the cluster lives and how to reach it; nothing is started.
pub fn describe(paths: &Paths, bin: &Path) -> Cluster {
    let workdir = paths.cluster_workdir();
    Cluster {
        name: NAME.into(),
        kubeconfig: workdir.join("kubeconfig"),
        context: format!("kwok-{NAME}"),
        workdir,
        bin: bin.to_path_buf(),
    }
}

fn cluster_sh(paths: &Paths, cluster: &Cluster, action: &str) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(paths.testbed_scripts().join("cluster.sh"))
        .args([action, &cluster.name])
        .arg(&cluster.workdir)
        .env("TESTBED_BIN", &cluster.bin);
    command
}

pub fn up(paths: &Paths, cluster: &Cluster, interrupted: &AtomicBool) -> Result<()> {
    let log = paths.log("cluster");
    let status = process::run_logged(cluster_sh(paths, cluster, "up"), &log, interrupted)?;
    if !status.success() || !cluster.kubeconfig.is_file() {
        return Err(Error::failed(format!(
            "the Kubernetes cluster did not come up ({status}). Log {}:\n{}",
            log.display(),
            process::log_tail(&log, 15)
        )));
    }
    Ok(())
}

/// True while kwokctl's directory for the cluster exists (cluster.sh removes it on `down`).
pub fn exists(cluster: &Cluster) -> bool {
    cluster
        .workdir
        .join("clusters")
        .join(&cluster.name)
        .is_dir()
}

pub fn down(paths: &Paths, cluster: &Cluster) -> Result<()> {
    if !exists(cluster) {
        return Ok(());
    }
    write_scripts(paths)?;
    let log = paths.log("cluster");
    let never = AtomicBool::new(false);
    let status = process::run_logged(cluster_sh(paths, cluster, "down"), &log, &never)?;
    if !status.success() {
        return Err(Error::failed(format!(
            "stopping the Kubernetes cluster failed ({status}). Log {}:\n{}",
            log.display(),
            process::log_tail(&log, 10)
        )));
    }
    Ok(())
}

/// Pids of the control plane's running components (etcd, apiserver, …), from kwokctl's files.
pub fn component_pids(cluster: &Cluster) -> Vec<u32> {
    let dir = cluster
        .workdir
        .join("clusters")
        .join(&cluster.name)
        .join("pids");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .filter(|pid| process::is_running(*pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// The API server URL from the kubeconfig (kwokctl writes it as `server: https://…`).
pub fn api_server(cluster: &Cluster) -> Option<String> {
    let text = std::fs::read_to_string(&cluster.kubeconfig).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(|s| s.trim().to_string())
}

/// The API server answers `/readyz`.
pub fn ready(cluster: &Cluster) -> bool {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["--context", &cluster.context, "get", "--raw", "/readyz"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
