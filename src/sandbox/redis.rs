//! The sandbox's Redis: a `redis-server` on a free loopback port with a random password, no
//! persistence, and some `session:*` keys so `redis::count` has something to count.

use super::state::Process;
use super::{process, prometheus};
use crate::error::{Error, Result, io_context};
use crate::host::redis::resp::{Connection, Failure, Target};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub const BINARY: &str = "redis-server";
pub const PACKAGE: &str = "redis-server";
/// Open user sessions the sandbox starts with.
pub const SESSIONS: usize = 250;

pub fn binary() -> Result<PathBuf> {
    prometheus::find_on_path(&[BINARY]).ok_or_else(|| {
        Error::failed(format!(
            "{BINARY} is not installed (not found on PATH); install the Debian package: apt-get install -y {PACKAGE}"
        ))
    })
}

/// The server's configuration. The process keeps its command line (`set-proc-title no`), which
/// names this file in the sandbox directory: that is how `down` recognises it.
fn config(dir: &Path, port: u16, password: &str) -> String {
    format!(
        "bind 127.0.0.1\nport {port}\nprotected-mode yes\nset-proc-title no\nsave \"\"\nappendonly no\ndir {}\nrequirepass {password}\n",
        serde_json::to_string(&dir.display().to_string()).expect("a string serializes")
    )
}

/// A started Redis and the URL (with its password) that reaches it.
pub struct Started {
    pub process: Process,
    pub url: String,
}

pub fn start(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    log: &Path,
    interrupted: &AtomicBool,
) -> Result<Started> {
    let binary = binary()?;
    let port = prometheus::free_port()?;
    let password = uuid::Uuid::new_v4().simple().to_string();
    std::fs::create_dir_all(dir)
        .map_err(|e| io_context(e, format!("cannot create {}", dir.display())))?;
    let conf = dir.join("redis.conf");
    write_private(&conf, &config(dir, port, &password))?;
    let mut command = std::process::Command::new(binary);
    command.arg(&conf);
    let mut child = process::spawn_detached(command, log)?;
    let started = Started {
        process: Process {
            pid: child.id(),
            port,
            log: log.to_path_buf(),
        },
        url: format!("redis://:{password}@127.0.0.1:{port}"),
    };
    let target = target(port, &password);
    process::wait_ready(
        &mut child,
        "Redis",
        log,
        Duration::from_secs(20),
        interrupted,
        || runtime.block_on(ping(&target)).then_some(()),
    )?;
    Ok(started)
}

fn target(port: u16, password: &str) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port,
        username: None,
        password: Some(password.into()),
        db: 0,
    }
}

async fn ping(target: &Target) -> bool {
    match Connection::open(target, Duration::from_secs(2)).await {
        Ok(mut conn) => conn.ok(&[b"PING"]).await.is_ok(),
        Err(_) => false,
    }
}

/// Writes `SESSIONS` `session:<n>` keys (with a TTL, as real sessions have) and a few others.
pub fn seed(runtime: &tokio::runtime::Runtime, url: &str) -> Result<usize> {
    let target = crate::host::redis::resp::parse_url(url)
        .map_err(|why| Error::failed(format!("the sandbox Redis URL is invalid: {why}")))?;
    runtime.block_on(async {
        let describe = |f: Failure| Error::failed(format!("cannot seed the sandbox Redis: {f:?}"));
        let mut conn = Connection::open(&target, Duration::from_secs(5))
            .await
            .map_err(describe)?;
        for i in 0..SESSIONS {
            let key = format!("session:{i:04}");
            let user = format!("{{\"user\":\"user-{}\"}}", i % 40);
            conn.ok(&[b"SET", key.as_bytes(), user.as_bytes(), b"EX", b"86400"])
                .await
                .map_err(describe)?;
        }
        for key in ["cache:tracklists", "cache:analysis", "queue:notifications"] {
            conn.ok(&[b"SET", key.as_bytes(), b"1"])
                .await
                .map_err(describe)?;
        }
        Ok(SESSIONS)
    })
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_context(e, format!("cannot write {}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(|e| io_context(e, format!("cannot write {}", path.display())))
}
