//! What a running sandbox is made of, recorded in `$ROLLBACK_HOME/sandbox/sandbox.json` so
//! `status` and `down` (in another process, maybe days later) find every piece `up` started.

use crate::error::{Error, Result, io_context};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Every file and directory of one sandbox, derived from `$ROLLBACK_HOME`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
    /// `$ROLLBACK_HOME/sandbox`: everything `up` creates except the environment file.
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(home: &Path) -> Paths {
        Paths {
            home: home.to_path_buf(),
            dir: home.join("sandbox"),
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("sandbox.json")
    }

    /// Outside `dir`, which `down` removes while holding the lock.
    pub fn lock_file(&self) -> PathBuf {
        self.home.join("sandbox.lock")
    }

    /// The platform overlay that defines the `sandbox` environment.
    pub fn environment_file(&self) -> PathBuf {
        self.home.join("environments").join("sandbox.toml")
    }

    pub fn env_sh(&self) -> PathBuf {
        self.dir.join("env.sh")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn log(&self, component: &str) -> PathBuf {
        self.logs().join(format!("{component}.log"))
    }

    pub fn cluster_workdir(&self) -> PathBuf {
        self.dir.join("cluster")
    }

    pub fn testbed_scripts(&self) -> PathBuf {
        self.dir.join("testbed")
    }

    pub fn helm_home(&self) -> PathBuf {
        self.dir.join("helm")
    }

    pub fn charts(&self) -> PathBuf {
        self.dir.join("charts")
    }

    pub fn server_config(&self) -> PathBuf {
        self.dir.join("server.json")
    }

    /// Written by the server once it listens: `127.0.0.1:PORT`.
    pub fn server_address(&self) -> PathBuf {
        self.dir.join("server.addr")
    }

    pub fn incidents(&self) -> PathBuf {
        self.dir.join("incidents.json")
    }

    pub fn notifications(&self) -> PathBuf {
        self.dir.join("notifications")
    }

    pub fn prometheus(&self) -> PathBuf {
        self.dir.join("prometheus")
    }

    pub fn pushgateway(&self) -> PathBuf {
        self.dir.join("pushgateway")
    }

    pub fn registry(&self) -> PathBuf {
        self.dir.join("registry")
    }

    pub fn redis(&self) -> PathBuf {
        self.dir.join("redis")
    }

    /// Another `up` or `down` holds the lock right now.
    pub fn busy(&self) -> bool {
        File::open(self.lock_file())
            .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
    }

    /// Takes the sandbox lock, so two `up`/`down` never interleave. Released on drop.
    pub fn lock(&self) -> Result<File> {
        std::fs::create_dir_all(&self.home)
            .map_err(|e| io_context(e, format!("cannot create {}", self.home.display())))?;
        let path = self.lock_file();
        let file = File::create(&path)
            .map_err(|e| io_context(e, format!("cannot open {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::failed(format!(
                "another `rollback sandbox` command is starting or stopping this sandbox (lock {} is held); wait for it to finish",
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(io_context(e, format!("cannot lock {}", path.display())))
            }
        }
    }
}

/// A process `up` started and `down` stops, found again by pid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Process {
    pub pid: u32,
    pub port: u16,
    pub log: PathBuf,
}

impl Process {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub workdir: PathBuf,
    pub kubeconfig: PathBuf,
    pub context: String,
    /// The directory holding kubectl's companions: helm, kwokctl, the control plane.
    pub bin: PathBuf,
}

/// A Tracktion service as deployed in the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Service {
    pub name: String,
    pub release: String,
    pub replicas: u32,
}

/// A variable the operator exports so procedures reach the sandbox's local receivers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Export {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    pub started_at: String,
    pub namespace: String,
    pub services: Vec<Service>,
    pub cluster: Option<Cluster>,
    pub server: Option<Process>,
    pub pushgateway: Option<Process>,
    pub prometheus: Option<Process>,
    /// Filled by the database hook (see `up::start_database`).
    #[serde(default)]
    pub database: Option<Process>,
    /// Where the sandbox's PostgreSQL keeps its data, archive and backups, for the environment.
    #[serde(default)]
    pub database_settings: Option<crate::platform::Postgres>,
    /// The container registry holding the services' images (see `up::start_registry`).
    #[serde(default)]
    pub registry: Option<Process>,
    /// Redis with the sessions (see `up::start_redis`).
    #[serde(default)]
    pub redis: Option<Process>,
    pub exports: Vec<Export>,
    /// Set once everything answered and the environment file was written.
    pub complete: bool,
}

impl State {
    pub fn load(paths: &Paths) -> Result<Option<State>> {
        let path = paths.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_context(e, format!("cannot read {}", path.display()))),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::failed(format!(
                "the sandbox state {} is unreadable ({e}); stop what it started with `rollback sandbox down`",
                path.display()
            ))
        })
    }

    /// Written after every step of `up`, so a failed or interrupted `up` can be undone.
    pub fn save(&self, paths: &Paths) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        write_atomic(&paths.state_file(), &text)
    }

    /// Every recorded process with its component name, in the order `down` stops them.
    pub fn processes(&self) -> Vec<(&'static str, &Process)> {
        [
            ("server", &self.server),
            ("prometheus", &self.prometheus),
            ("pushgateway", &self.pushgateway),
            ("database", &self.database),
            ("registry", &self.registry),
            ("redis", &self.redis),
        ]
        .into_iter()
        .filter_map(|(name, p)| p.as_ref().map(|p| (name, p)))
        .collect()
    }
}

/// Replaces `path` in one step, so a reader never sees half a file.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_context(e, format!("cannot create {}", dir.display())))?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)
        .map_err(|e| io_context(e, format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| io_context(e, format!("cannot replace {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_lists_processes_in_stop_order() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert!(State::load(&paths).unwrap().is_none());
        let process = |pid| Process {
            pid,
            port: 1,
            log: PathBuf::from("x"),
        };
        let state = State {
            server: Some(process(1)),
            pushgateway: Some(process(3)),
            prometheus: Some(process(2)),
            ..State::default()
        };
        state.save(&paths).unwrap();
        let loaded = State::load(&paths).unwrap().unwrap();
        let names: Vec<_> = loaded
            .processes()
            .iter()
            .map(|(n, p)| (*n, p.pid))
            .collect();
        assert_eq!(
            names,
            [("server", 1), ("prometheus", 2), ("pushgateway", 3)]
        );
    }

    #[test]
    fn a_second_lock_fails_fast() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let held = paths.lock().unwrap();
        let err = paths.lock().unwrap_err();
        assert!(err.message.contains("lock"), "{}", err.message);
        drop(held);
        paths.lock().unwrap();
    }
}
