//! `redis::` against real `redis-server`s started by this file on free loopback ports: one
//! open server holding 100 000 `session:*` keys among others, one with a password.

mod common;

use common::{Run, Test, free_port};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SESSIONS: usize = 100_000;
const JOBS: usize = 20_000;
const PASSWORD: &str = "redis-secret-pw-42";

/// A `redis-server` with no persistence, in its own temp dir; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(password: Option<&str>) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pw) = password {
            command.args(["--requirepass", pw]);
        }
        let child = command
            .spawn()
            .expect("redis-server (apt-get install -y redis-server)");
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        common::wait_until("redis-server", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        redis
    }

    fn url(&self, password: Option<&str>) -> String {
        match password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Sends commands in one pipeline and returns the first line of each reply.
    fn pipeline(&self, commands: &[Vec<String>]) -> Vec<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut out = Vec::new();
        for args in commands {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        stream.write_all(&out).unwrap();
        let mut reader = BufReader::new(stream);
        commands
            .iter()
            .map(|_| {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                // Bulk replies: read the payload line too.
                if line.starts_with('$') && !line.starts_with("$-1") {
                    let len: usize = line[1..].trim().parse().unwrap();
                    let mut payload = vec![0; len + 2];
                    std::io::Read::read_exact(&mut reader, &mut payload).unwrap();
                    return String::from_utf8_lossy(&payload).trim_end().to_string();
                }
                line.trim_end().to_string()
            })
            .collect()
    }

    /// `count` keys `prefix:N`, 1000 per MSET.
    fn fill(&self, prefix: &str, count: usize) {
        let commands: Vec<Vec<String>> = (0..count)
            .collect::<Vec<_>>()
            .chunks(1000)
            .map(|chunk| {
                let mut args = vec!["MSET".to_string()];
                for i in chunk {
                    args.push(format!("{prefix}:{i}"));
                    args.push("1".into());
                }
                args
            })
            .collect();
        assert!(self.pipeline(&commands).iter().all(|r| r == "+OK"));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server holding 100 000 sessions, 20 000 jobs, and 5 sessions in db 1.
fn filled() -> Redis {
    let redis = Redis::start(None);
    redis.fill("session", SESSIONS);
    redis.fill("job", JOBS);
    let db1: Vec<Vec<String>> = std::iter::once(vec!["SELECT".to_string(), "1".into()])
        .chain((0..5).map(|i| vec!["SET".to_string(), format!("session:{i}"), "1".into()]))
        .collect();
    redis.pipeline(&db1);
    redis
}

fn platform() -> &'static str {
    "[environments.test]\nnamespace = \"tracktion-test\"\nredis_url_env = \"TEST_REDIS_URL\"\n"
}

fn run(url: &str, script: &str, extra: &[&str]) -> Run {
    Test::new()
        .platform(platform())
        .env("TEST_REDIS_URL", url)
        .script(script)
        .args(extra)
        .run()
}

fn results(run: &Run, function: &str) -> Vec<Value> {
    run.journal()
        .into_iter()
        .filter(|r| r["function"] == function)
        .map(|r| r["outcome"]["result"].clone())
        .collect()
}

#[test]
fn ping_answers_and_count_scans_every_matching_key_without_keys() {
    let redis = filled();
    let script = r#"
        let p = redis::ping();
        print(`pong from ${p.address} version=${p.version}`);
        redis::count("session:*");
        redis::count("job:*", #{ batch: 5000 });
        redis::count("nothing:*");
    "#;
    // A dry-run: both are reads and run for real.
    let r = run(&redis.url(None), script, &["--dry-run"]);
    r.success()
        .stdout_has(&format!("pong from 127.0.0.1:{} version=7.", redis.port));
    let counts = results(&r, "redis::count");
    assert_eq!(counts[0]["count"], SESSIONS as i64, "{counts:?}");
    assert_eq!(counts[0]["pattern"], "session:*");
    assert_eq!(counts[1]["count"], JOBS as i64);
    assert_eq!(counts[2]["count"], 0);
    // SCAN walks the whole keyspace in batches: many calls of 1000, fewer of 5000.
    let scans = |i: usize| counts[i]["scans"].as_i64().unwrap();
    assert!(scans(0) > 50, "{counts:?}");
    assert!(scans(1) < scans(0), "{counts:?}");
    assert_eq!(results(&r, "redis::ping")[0]["ok"], true);

    // The database in the URL is selected.
    let r = run(
        &format!("{}/1", redis.url(None)),
        r#"redis::count("session:*");"#,
        &[],
    );
    r.success();
    assert_eq!(results(&r, "redis::count")[0]["count"], 5);

    let stats = redis.pipeline(&[vec!["INFO".into(), "commandstats".into()]]);
    assert!(stats[0].contains("cmdstat_scan:"), "{}", stats[0]);
    assert!(
        !stats[0].contains("cmdstat_keys:"),
        "KEYS was used: {}",
        stats[0]
    );
}

#[test]
fn a_scan_that_outlasts_its_timeout_fails_with_what_it_found() {
    let redis = Redis::start(None);
    redis.fill("session", 10);
    let r = run(
        &redis.url(None),
        r#"redis::count("session:*", #{ timeout: 0.000001 });"#,
        &[],
    );
    r.code(1)
        .stderr_has("did not finish within")
        .stderr_has("raise timeout or narrow the pattern");
}

#[test]
fn a_server_that_is_down_is_a_clear_error() {
    let port = free_port();
    let r = run(&format!("redis://127.0.0.1:{port}"), "redis::ping();", &[]);
    r.code(1)
        .stderr_has(&format!("cannot talk to Redis at 127.0.0.1:{port}"))
        .stderr_has("check that it is up and the URL in TEST_REDIS_URL");
}

#[test]
fn passwords_are_used_refused_clearly_and_never_printed() {
    let redis = Redis::start(Some(PASSWORD));
    redis.pipeline(&[
        vec!["AUTH".into(), PASSWORD.into()],
        vec!["SET".into(), "session:a".into(), "1".into()],
    ]);
    let r = run(
        &redis.url(Some(PASSWORD)),
        r#"redis::ping(); redis::count("session:*");"#,
        &[],
    );
    r.success();
    assert_eq!(results(&r, "redis::count")[0]["count"], 1);
    assert!(!r.all_output().contains(PASSWORD));

    let wrong = "not-the-redis-password";
    let r = run(&redis.url(Some(wrong)), "redis::ping();", &[]);
    r.code(1)
        .stderr_has("refused the credentials (WRONGPASS)")
        .stderr_has("TEST_REDIS_URL");
    assert!(!r.all_output().contains(wrong));

    let r = run(&redis.url(None), r#"redis::count("session:*");"#, &[]);
    r.code(1)
        .stderr_has("requires a password; put it in the URL in TEST_REDIS_URL");
}

#[test]
fn missing_or_invalid_settings_say_what_to_fix() {
    let r = Test::new()
        .platform(platform())
        .script("redis::ping();")
        .run();
    r.code(1)
        .stderr_has("the variable TEST_REDIS_URL (redis_url_env of environment 'test') is not set");
    let r = Test::new().script("redis::ping();").run();
    r.code(2)
        .stderr_has("environment 'test' has no Redis: set redis_url_env");
    let r = run("http://:pw1234@127.0.0.1:1", "redis::ping();", &[]);
    r.code(2)
        .stderr_has("the Redis URL in TEST_REDIS_URL is invalid");
    assert!(!r.all_output().contains("pw1234"));
    let r = run("redis://127.0.0.1:1", r#"redis::count("");"#, &[]);
    r.code(2).stderr_has("the pattern is empty");
}
