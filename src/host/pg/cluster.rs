//! A self-managed PostgreSQL cluster on this machine: its data directory, driven by pg_ctl as
//! the cluster's OS user. PostgreSQL refuses to run as root, so when `rollback` is root every
//! server program runs through `runuser -u <user>`; files it writes are handed to that user.

use super::tools::{Cmd, Finished, is_root};
use crate::host::HostError;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Cluster {
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    /// The OS user that owns the data directory (used only when we are root).
    pub run_as: Option<String>,
    /// Where pg_ctl sends the server's output when it starts it.
    pub log_file: PathBuf,
}

impl Cluster {
    /// A cluster whose server log goes to `<data_dir>.log` beside it.
    pub fn new(bin_dir: &Path, data_dir: &Path, run_as: Option<String>) -> Cluster {
        Cluster {
            bin_dir: bin_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            run_as,
            log_file: super::backup::with_suffix(data_dir, ".log"),
        }
    }

    fn tool(&self, name: &str) -> Cmd {
        // runuser keeps our working directory, which the cluster's user may not be allowed
        // to enter; "/" always is.
        Cmd::new(self.bin_dir.join(name))
            .run_as(self.run_as.as_deref())
            .cwd("/")
    }

    pub fn start_command(&self, timeout: Duration) -> Cmd {
        self.tool("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(self.data_dir.as_os_str().to_owned())
            .arg("-l")
            .arg(self.log_file.as_os_str().to_owned())
            .arg("-w")
            .arg("-t")
            .arg(timeout.as_secs().max(1).to_string())
    }

    pub fn stop_command(&self, timeout: Duration) -> Cmd {
        self.tool("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir.as_os_str().to_owned())
            .arg("-m")
            .arg("fast")
            .arg("-w")
            .arg("-t")
            .arg(timeout.as_secs().max(1).to_string())
    }

    fn status_command(&self) -> Cmd {
        self.tool("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(self.data_dir.as_os_str().to_owned())
    }

    /// Whether a server runs on this data directory (pg_ctl status exits 3 when none does).
    pub async fn is_running(&self) -> Result<bool, HostError> {
        let done = self.status_command().run().await?;
        Ok(done.success)
    }

    /// The same, blocking, for callers outside a runtime (the sandbox).
    pub fn is_running_blocking(&self) -> Result<bool, HostError> {
        Ok(self.status_command().run_blocking()?.success)
    }

    pub async fn start(&self, timeout: Duration) -> Result<(), HostError> {
        let done = self.start_command(timeout).run().await?;
        if done.success {
            return Ok(());
        }
        Err(HostError::Failed(format!(
            "the server on {} did not start: {}; server log {}: {}",
            self.data_dir.display(),
            done.tail(),
            self.log_file.display(),
            self.log_tail()
        )))
    }

    pub async fn stop(&self, timeout: Duration) -> Result<(), HostError> {
        if !self.is_running().await? {
            return Ok(());
        }
        self.stop_command(timeout)
            .run_ok(&format!(
                "cannot stop the server on {}",
                self.data_dir.display()
            ))
            .await
            .map(|_| ())
    }

    /// The last lines of the server log, where recovery explains itself.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }

    /// `pg_controldata` of a data directory (or a plain base backup), as key → value.
    pub async fn control_data(&self, dir: &Path) -> Result<Vec<(String, String)>, HostError> {
        let done: Finished = self
            .tool("pg_controldata")
            .arg(dir.as_os_str().to_owned())
            .run_ok(&format!(
                "cannot read the control file of {}",
                dir.display()
            ))
            .await?;
        Ok(done
            .stdout
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect())
    }
}

/// The user to run the cluster's programs as: the configured one, or — when we are root — the
/// owner of the data directory.
pub fn cluster_user(
    configured: Option<&str>,
    data_dir: &Path,
) -> Result<Option<String>, HostError> {
    if let Some(user) = configured {
        return Ok(Some(user.to_string()));
    }
    if !is_root() {
        return Ok(None);
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(data_dir)
        .map_err(|e| {
            HostError::Invalid(format!(
                "cannot read the data directory {}: {e}",
                data_dir.display()
            ))
        })?
        .uid();
    // SAFETY: getpwuid returns NULL or a pointer to static storage, copied out at once.
    let name = unsafe {
        let entry = libc::getpwuid(uid);
        if entry.is_null() {
            None
        } else {
            Some(
                std::ffi::CStr::from_ptr((*entry).pw_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    };
    match name {
        Some(n) if n != "root" => Ok(Some(n)),
        _ => Err(HostError::Invalid(format!(
            "{} belongs to root, and PostgreSQL does not run as root: set run_as in [environments.X.postgres]",
            data_dir.display()
        ))),
    }
}
