//! Foundation benchmark: start-up, `check`, concurrent health checks and peak memory, measured
//! side by side in one run and printed as figures and ratios (never asserted: machines are
//! shared and noisy). Run with `cargo bench --bench foundation`.

#[path = "../tests/common/http.rs"]
mod http;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rollback");

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Runs a command `n` times and returns the median wall time; fails loudly on a non-zero exit.
fn time_command(n: usize, build: impl Fn() -> Command) -> Duration {
    let samples = (0..n)
        .map(|_| {
            let started = Instant::now();
            let status = build()
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "benchmark command failed: {status}");
            started.elapsed()
        })
        .collect();
    median(samples)
}

/// Peak resident memory (KiB) of one child run, from the kernel's accounting of that child.
#[allow(clippy::zombie_processes)] // wait4 below reaps it; clippy only knows Child::wait.
fn peak_rss_kib(mut cmd: Command) -> (i64, bool) {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child pid with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (
        usage.ru_maxrss,
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let platform = dir.path().join("platform.toml");
    std::fs::write(&platform, "[environments.bench]\nnamespace = \"bench\"\n").unwrap();
    let rollback = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("ROLLBACK_HOME", dir.path().join("home"))
            .env("ROLLBACK_PLATFORM", &platform);
        cmd
    };

    println!("rollback foundation benchmark ({BIN})\n");
    let baseline = time_command(21, || Command::new("true"));
    let version = time_command(21, || rollback(&["--version"]));
    let check = time_command(11, || rollback(&["check"]));
    println!("{:<44} {:>10} {:>10}", "start-up", "median", "target");
    println!(
        "{:<44} {:>8.1}ms {:>10}",
        "spawn of `true` (process baseline)",
        ms(baseline),
        "-"
    );
    println!(
        "{:<44} {:>8.1}ms {:>10}",
        "rollback --version",
        ms(version),
        "< 50 ms"
    );
    println!(
        "{:<44} {:>8.1}ms {:>10}",
        "rollback check (all shipped scripts)",
        ms(check),
        "< 50 ms"
    );

    // 50 endpoints that each answer after 200 ms.
    let server =
        http::HttpServer::start(|_| http::Reply::ok("ok").after(Duration::from_millis(200)));
    let urls: Vec<String> = (0..50)
        .map(|i| format!("\"{}/svc{i}\"", server.url()))
        .collect();
    let list = urls.join(", ");
    let concurrent = dir.path().join("concurrent.rhai");
    std::fs::write(
        &concurrent,
        format!("let r = health_check_all([{list}], #{{ retries: 0 }});\nif r.filter(|x| x.ok).len() != 50 {{ throw \"unhealthy\"; }}\n"),
    )
    .unwrap();
    let sequential = dir.path().join("sequential.rhai");
    std::fs::write(
        &sequential,
        format!("for u in [{list}] {{ if !health_check(u, #{{ retries: 0 }}).ok {{ throw \"unhealthy\"; }} }}\n"),
    )
    .unwrap();
    let run_script = |path: &std::path::Path| {
        let mut cmd = rollback(&["run", path.to_str().unwrap(), "--env", "bench", "-qq"]);
        cmd.arg("--journal")
            .arg(dir.path().join(format!("j-{}.jsonl", uuid_like())));
        cmd
    };
    let all = time_command(5, || run_script(&concurrent));
    let one_by_one = time_command(3, || run_script(&sequential));
    println!(
        "\n{:<44} {:>10} {:>10}",
        "50 endpoints answering after 200 ms", "median", "target"
    );
    println!(
        "{:<44} {:>9.2}s {:>10}",
        "health_check_all (one call, concurrent)",
        all.as_secs_f64(),
        "< 0.5 s"
    );
    println!(
        "{:<44} {:>9.2}s {:>10}",
        "health_check one by one (runbook style)",
        one_by_one.as_secs_f64(),
        "~10 s"
    );
    println!(
        "{:<44} {:>9.1}x",
        "speed-up",
        one_by_one.as_secs_f64() / all.as_secs_f64()
    );

    let (rss, ok) = peak_rss_kib(run_script(&concurrent));
    assert!(ok, "the memory run failed");
    println!(
        "\n{:<44} {:>8.1}MB {:>10}",
        "peak RSS of a procedure run (50 checks)",
        rss as f64 / 1024.0,
        "< 30 MB"
    );
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        Instant::now().elapsed().as_nanos() ^ std::process::id() as u128 ^ rand_seed()
    )
}

fn rand_seed() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
