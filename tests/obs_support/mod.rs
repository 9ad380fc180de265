//! Servers for the Prometheus and notification tests: real Prometheus and Pushgateway
//! processes on loopback, and small HTTP servers the tests script (a metrics endpoint,
//! Slack and PagerDuty receivers).
#![allow(dead_code)]

#[allow(unused_imports)]
pub use crate::common::http::{HttpServer, Reply, Request, http_get};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SETUP: &str =
    "run the test setup first: apt-get install -y prometheus prometheus-pushgateway";

/// How long a server may take to come up or Prometheus to gather samples before a test fails.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(90);

/// The path of a program the tests need, or a failure that says how to install it.
pub fn require_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed (not found on PATH): {SETUP}"))
}

/// Polls `check` until it returns `Some`, failing with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll(limit, check).unwrap_or_else(|| panic!("gave up after {limit:?} waiting for {what}"))
}

/// Polls `check` until it returns `Some`, or `None` after `limit`.
pub fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if started.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server process that cannot outlive the test process: a shell starts it and kills it
/// (then removes its data directory) when the pipe from this process closes, which the kernel
/// does when the tests end, however they end.
pub struct Guarded {
    shell: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
}

const GUARD_SCRIPT: &str = r#"
"$@" >"$GUARD_LOG" 2>&1 </dev/null &
server=$!
read _ignored || true
kill "$server" 2>/dev/null
wait "$server" 2>/dev/null
rm -rf "$GUARD_DIR"
"#;

impl Guarded {
    pub fn spawn(program: &Path, args: &[String], dir: PathBuf) -> Guarded {
        let log = dir.join("server.log");
        let shell = Command::new("sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("guard")
            .arg(program)
            .args(args)
            .env("GUARD_LOG", &log)
            .env("GUARD_DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Guarded { shell, dir, log }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `GET url` answers 200, failing with the server's log otherwise.
    pub fn wait_ready(&mut self, url: &str) {
        let started = Instant::now();
        loop {
            if matches!(http_get(url), Ok((200, _))) {
                return;
            }
            if let Ok(Some(status)) = self.shell.try_wait() {
                panic!(
                    "the server exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < STARTUP_LIMIT,
                "{url} not ready after {STARTUP_LIMIT:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A data directory that the guard shell removes when the server stops.
pub fn server_dir(name: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("rollback-{name}-"))
        .tempdir()
        .unwrap()
        .keep()
}

/// A Prometheus on a free loopback port, scraping `target` (host:port) every second.
pub struct Prometheus {
    pub url: String,
    pub server: Guarded,
}

impl Prometheus {
    pub fn start(target: &str) -> Prometheus {
        let binary = require_binary("prometheus");
        let dir = server_dir("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tracktion\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = crate::common::free_port();
        let args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        let mut server = Guarded::spawn(&binary, &args, dir);
        let url = format!("http://127.0.0.1:{port}");
        server.wait_ready(&format!("{url}/-/ready"));
        Prometheus { url, server }
    }

    /// An instant query straight to the API (not through the tool under test).
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .finish();
        let (status, body) = http_get(&format!("{}/api/v1/query?{query}", self.url))
            .unwrap_or_else(|e| panic!("Prometheus query failed: {e}"));
        assert_eq!(status, 200, "{promql}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `promql` gives a first sample of at least `at_least`.
    pub fn wait_for_value(&self, promql: &str, at_least: f64) {
        wait_for(&format!("{promql} >= {at_least}"), STARTUP_LIMIT, || {
            let answer = self.query(promql);
            let value: f64 = answer["data"]["result"][0]["value"][1]
                .as_str()?
                .parse()
                .ok()?;
            (value >= at_least).then_some(())
        })
    }
}

/// A Pushgateway on a free loopback port.
pub struct Pushgateway {
    pub url: String,
    pub server: Guarded,
}

impl Pushgateway {
    pub fn start() -> Pushgateway {
        let binary = require_binary("prometheus-pushgateway");
        let port = crate::common::free_port();
        let args = vec![format!("--web.listen-address=127.0.0.1:{port}")];
        let mut server = Guarded::spawn(&binary, &args, server_dir("pushgateway"));
        let url = format!("http://127.0.0.1:{port}");
        server.wait_ready(&format!("{url}/-/ready"));
        Pushgateway { url, server }
    }

    /// Every group the Pushgateway holds, from its API.
    pub fn groups(&self) -> Vec<serde_json::Value> {
        let (status, body) = http_get(&format!("{}/api/v1/metrics", self.url)).unwrap();
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        answer["data"].as_array().cloned().unwrap_or_default()
    }

    pub fn group(&self, job: &str) -> Option<serde_json::Value> {
        self.groups()
            .into_iter()
            .find(|g| g["labels"]["job"] == job)
    }
}

/// The result a run's journal recorded for the `nth` call of `function` (0-based).
pub fn journal_result(run: &crate::common::Run, function: &str, nth: usize) -> serde_json::Value {
    journal_record(run, function, nth)["outcome"]["result"].clone()
}

pub fn journal_record(run: &crate::common::Run, function: &str, nth: usize) -> serde_json::Value {
    run.journal()
        .into_iter()
        .filter(|r| r["function"] == function)
        .nth(nth)
        .unwrap_or_else(|| {
            panic!(
                "no call {nth} of {function} in the journal\n--- stderr\n{}",
                run.stderr
            )
        })
}

/// The first record of the run, which names it: run id, host, operator, procedure.
pub fn session_start(run: &crate::common::Run) -> serde_json::Value {
    run.journal().into_iter().next().expect("a journal")
}
