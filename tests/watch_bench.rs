//! `rollback watch` figures on the sandbox; ignored by default:
//! `cargo test --release --test watch_bench -- --ignored --nocapture`.
//!
//! - time from a trigger's sustained duration elapsing to traffic restored (goal < 5 s),
//!   from the run's own journal: the condition's start plus its sustained duration, to the
//!   `restored` milestone of the `emergency` run it started;
//! - the watcher's resident memory (goal < 30 MB) and CPU while idle (goal < 1% of a core),
//!   read from /proc over 30 s.

mod common;
use common::sandbox::{SHIPPED_PLATFORM, Sandbox};
use common::wait_until;
use std::process::Stdio;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

fn platform() -> String {
    format!(
        r#"{SHIPPED_PLATFORM}
[[triggers]]
name = "high-error-rate"
metric = "error_rate"
threshold = 5
sustained = "3s"
window = "5s"
services = ["analysis-service"]
procedure = "emergency"
params = {{ reason = "benchmark", force = true, window = "5s" }}
"#
    )
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A `/proc/<pid>/status` memory line, in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// Resident memory that is the process's own, not pages of the binary mapped from disk.
fn anon_kb(pid: u32) -> u64 {
    status_kb(pid, "RssAnon:")
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

fn idle(pid: u32, seconds: u64) -> (f64, u64, u64) {
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(seconds));
    let used = (cpu_ticks(pid) - c0) as f64 / ticks_per_second();
    (
        used / t0.elapsed().as_secs_f64() * 100.0,
        rss_kb(pid),
        anon_kb(pid),
    )
}

fn start(sandbox: &Sandbox, interval: &str) -> (common::Test, std::process::Child) {
    let test = sandbox.test().args([
        "--env",
        "sandbox",
        "watch",
        "--interval",
        interval,
        "--lease-duration",
        "15s",
    ]);
    let log = test.path("watch.log");
    let child = test
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("the watcher to lead", LIMIT, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("leading:")
            .then_some(())
    });
    (test, child)
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn watch_figures() {
    let sandbox = Sandbox::up_with(&platform());

    for interval in ["15s", "1s"] {
        let (_test, mut child) = start(&sandbox, interval);
        std::thread::sleep(Duration::from_secs(3));
        let (cpu, rss, anon) = idle(child.id(), 30);
        println!(
            "idle, --interval {interval:>3}: CPU {cpu:.2}% of a core over 30 s (goal < 1%), RSS {:.1} MB (goal < 30 MB), of which anonymous {:.1} MB",
            rss as f64 / 1024.0,
            anon as f64 / 1024.0
        );
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }

    let (_test, mut child) = start(&sandbox, "1s");
    sandbox.inject(&[
        "--service",
        "analysis-service",
        "--slot",
        "green",
        "--error-rate",
        "12",
    ]);
    let run = wait_until("the emergency run", LIMIT, || {
        let dir = std::fs::read_dir(sandbox.home().join("runs"))
            .ok()?
            .next()?
            .ok()?
            .path();
        let journal = std::fs::read_to_string(dir.join("journal.jsonl")).ok()?;
        journal.contains("session.end").then_some(journal)
    });
    let (after, after_anon) = (rss_kb(child.id()), anon_kb(child.id()));
    let records: Vec<serde_json::Value> = run
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let time = |r: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap()).unwrap()
    };
    let cause =
        &records.iter().find(|r| r["function"] == "trigger").unwrap()["args"]["incident"]["cause"];
    let since =
        chrono::DateTime::parse_from_rfc3339(cause["held_since"].as_str().unwrap()).unwrap();
    let due = since
        + chrono::Duration::milliseconds((cause["sustained_s"].as_f64().unwrap() * 1000.0) as i64);
    let restored = records
        .iter()
        .find(|r| r["function"] == "milestone" && r["args"]["name"] == "restored")
        .map(time)
        .unwrap();
    let start = records
        .iter()
        .find(|r| r["function"] == "session.start")
        .map(time)
        .unwrap();
    let latency = (restored - due).num_milliseconds() as f64 / 1000.0;
    println!(
        "sustained duration elapsed → traffic restored: {latency:.2} s (goal < 5 s; of which evaluation to run start {:.2} s, with --interval 1s)",
        (start - due).num_milliseconds() as f64 / 1000.0
    );
    println!(
        "RSS after the run: {:.1} MB, of which anonymous {:.1} MB",
        after as f64 / 1024.0,
        after_anon as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
}
