//! The integration-test builder: a script, arguments and environment in; exit code, stdout
//! and stderr out. Every test runs the real binary in its own temporary directory.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_rollback");

/// A platform definition with one environment, `test`, and nothing external configured.
pub const TEST_PLATFORM: &str = r#"
[environments.test]
namespace = "tracktion-test"
health_url = "http://127.0.0.1:9/{service}/{slot}"

[services.analysis-service]
replicas = { default = 2 }
"#;

pub struct Test {
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<String>,
    script_args: bool,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub dir: PathBuf,
    /// Removes the run's directory when the test is done with it.
    _dir: tempfile::TempDir,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("platform.toml"), TEST_PLATFORM).unwrap();
        Test {
            dir,
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            script_args: false,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `proc.rhai` and runs it: `rollback run <dir>/proc.rhai --env test --yes? ...`.
    pub fn script(mut self, text: &str) -> Self {
        std::fs::write(self.path("proc.rhai"), text).unwrap();
        self.script_args = true;
        self
    }

    pub fn file(self, name: &str, text: &str) -> Self {
        let path = self.path(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, text).unwrap();
        self
    }

    pub fn platform(self, text: &str) -> Self {
        std::fs::write(self.path("platform.toml"), text).unwrap();
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.into());
        self
    }

    pub fn journal(&self) -> PathBuf {
        self.path("journal.jsonl")
    }

    pub fn report(&self) -> PathBuf {
        self.path("report.md")
    }

    /// The command as it will run, for tests that need to drive the process themselves.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("USER", "tester")
            .env("ROLLBACK_HOME", self.path("home"))
            .env("ROLLBACK_PLATFORM", self.path("platform.toml"));
        if self.script_args {
            cmd.arg("run")
                .arg(self.path("proc.rhai"))
                .args(["--env", "test"])
                .arg("--journal")
                .arg(self.journal())
                .arg("--report")
                .arg(self.report());
        }
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The command started and left running, stdin closed and stdout and stderr piped.
    pub fn spawn(&self) -> std::process::Child {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rollback")
    }

    pub fn run(self) -> Run {
        let mut cmd = self.command();
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn rollback");
        if let Some(input) = &self.stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            dir: self.dir.path().to_path_buf(),
            _dir: self.dir,
        }
    }
}

impl Run {
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "exit code {} (expected {expected})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn success(&self) -> &Self {
        self.code(0)
    }

    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    pub fn stderr_lacks(&self, text: &str) -> &Self {
        assert!(
            !self.stderr.contains(text),
            "stderr has {text:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    /// A file the run wrote: beside the test's files, or, when the run used the default
    /// paths, in its run directory (the one its `report:` line names, else the first under
    /// `$ROLLBACK_HOME/runs/`).
    pub fn file(&self, name: &str) -> String {
        let direct = self.dir.join(name);
        let announced = self
            .stderr
            .lines()
            .find_map(|l| l.split_once(" report:"))
            .map(|(_, path)| PathBuf::from(path.trim()))
            .and_then(|report| report.parent().map(|dir| dir.join(name)));
        let path = if direct.exists() {
            direct
        } else if let Some(path) = announced.filter(|p| p.exists()) {
            path
        } else {
            std::fs::read_dir(self.dir.join("home/runs"))
                .ok()
                .and_then(|mut runs| runs.next())
                .and_then(|run| run.ok())
                .map(|run| run.path().join(name))
                .unwrap_or(direct)
        };
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn journal(&self) -> Vec<serde_json::Value> {
        self.file("journal.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn report(&self) -> String {
        self.file("report.md")
    }

    /// Every artifact a run leaves: output, journal, report, and any file under its home.
    pub fn all_output(&self) -> String {
        let mut all = format!("{}\n{}", self.stdout, self.stderr);
        collect_files(&self.dir, &mut all);
        all
    }
}

fn collect_files(dir: &Path, into: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "jsonl" || e == "md") {
            into.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub mod http;

/// Waits (bounded) until `path` exists and `ready` holds for its text; a hang guard, not a timing check.
pub fn wait_for_file(path: &Path, ready: impl Fn(&str) -> bool) -> String {
    for _ in 0..400 {
        if let Ok(text) = std::fs::read_to_string(path)
            && ready(&text)
        {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} did not become ready", path.display());
}

/// One HTTP/1.0 request to a loopback URL (`http://127.0.0.1:PORT/path`): status and body.
/// HTTP/1.0 keeps servers from chunking the reply, so reading to the end is the whole body.
pub fn http_request(method: &str, url: &str, body: &str) -> (u16, String) {
    use std::io::Read;
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = std::net::TcpStream::connect(authority)
        .unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn http_get(url: &str) -> (u16, String) {
    http_request("GET", url, "")
}

/// A Helm release record (`data.release` of its `sh.helm.release.v1.*` Secret: base64 of the
/// base64 of gzipped JSON) with its status set to `status`, as a helm process that died
/// mid-upgrade leaves it.
pub fn helm_release_with_status(record: &str, status: &str) -> String {
    use base64::Engine as _;
    use std::io::Read;
    let b64 = base64::engine::general_purpose::STANDARD;
    let stored = b64.decode(record).unwrap();
    let gz = b64.decode(&stored).unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .unwrap();
    let mut release: serde_json::Value = serde_json::from_str(&json).unwrap();
    release["info"]["status"] = serde_json::Value::String(status.into());
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(release.to_string().as_bytes()).unwrap();
    b64.encode(b64.encode(encoder.finish().unwrap()))
}

/// Sends SIGINT (Ctrl-C) to a spawned run and waits for it to exit, for at most 30 s (a hang
/// guard, not a timing check): its output.
pub fn interrupt(mut child: std::process::Child) -> Output {
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no stop on SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Polls `check` until it returns Some, for at most `limit`; a hang guard, not a timing check.
pub fn wait_until<T>(
    what: &str,
    limit: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
pub mod golden;
pub mod pg;
pub mod restore;
pub mod sandbox;
