//! Benchmark, not a test (ignored, so `cargo test` skips it): wall time to traffic restored and
//! to verified healthy, for the runbook's way (benches/runbook_traffic_rollback.sh: kubectl,
//! jq, one service after another, fixed sleeps) against `rollback run emergency` and
//! `rollback run full`, on a sandbox of 4 and of 40 services, with the same incident (the
//! first service's live slot down). Run it with
//!
//! ```text
//! cargo test --release --test restore_bench -- --ignored --nocapture
//! ```
//!
//! `BENCH_SIZES=4,40` (default) picks the platform sizes; `SWITCH_SETTLE` (default 5, the
//! runbook's `sleep 5`) is passed to the baseline.

mod common;
use common::restore::select_all;
use common::sandbox::{SHIPPED_PLATFORM, Sandbox};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The shipped platform for 4 services, else the same environments with `n` generated ones.
fn platform(n: usize) -> String {
    if n == 4 {
        return SHIPPED_PLATFORM.to_string();
    }
    let head = &SHIPPED_PLATFORM[..SHIPPED_PLATFORM.find("[services.").unwrap()];
    let mut text = head.to_string();
    for i in 1..=n {
        text.push_str(&format!(
            "[services.svc-{i:02}]\nrelease = \"tracktion-svc-{i:02}\"\nreplicas = {{ default = 1 }}\n\n"
        ));
    }
    text
}

/// Seconds from start to traffic restored and to verified healthy, and the whole run.
struct Timing {
    restored: f64,
    verified: f64,
    total: f64,
}

/// Every Service back on green, then the first service's green slot down.
fn incident(sandbox: &Sandbox) {
    sandbox.inject(&["--clear"]);
    select_all(sandbox, "green");
    let first = sandbox.platform_services()[0].clone();
    sandbox.inject(&["--service", &first, "--slot", "green", "--down"]);
}

fn baseline(sandbox: &Sandbox) -> Timing {
    incident(sandbox);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/runbook_traffic_rollback.sh");
    let template = sandbox.health_url_template();
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg(sandbox.kubeconfig())
        .arg(common::sandbox::NAMESPACE)
        .arg(&template)
        .args(sandbox.platform_services())
        .env(
            "SWITCH_SETTLE",
            std::env::var("SWITCH_SETTLE").unwrap_or_else(|_| "5".into()),
        )
        .output()
        .unwrap();
    let total = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "baseline failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ms = |label: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap()
            .trim()
            .parse::<f64>()
            .unwrap()
            / 1000.0
    };
    Timing {
        restored: ms("restored "),
        verified: ms("verified "),
        total,
    }
}

fn procedure(sandbox: &Sandbox, name: &str) -> Timing {
    incident(sandbox);
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    let j = journal.display().to_string();
    let spawned = chrono::Utc::now();
    let started = Instant::now();
    let run = sandbox.procedure(&["--yes", "--journal", &j], name, &[]);
    let total = started.elapsed().as_secs_f64();
    run.success();
    let at = |milestone: &str| -> f64 {
        let text = std::fs::read_to_string(&journal).unwrap();
        let record: serde_json::Value = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["function"] == "milestone" && r["args"]["name"] == milestone)
            .unwrap_or_else(|| panic!("{name}: no milestone {milestone}"));
        let time = chrono::DateTime::parse_from_rfc3339(record["time"].as_str().unwrap()).unwrap();
        (time.with_timezone(&chrono::Utc) - spawned).num_milliseconds() as f64 / 1000.0
    };
    Timing {
        restored: at("restored"),
        verified: at("validated"),
        total,
    }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn traffic_restore_benchmark() {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "4,40".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let mut rows = Vec::new();
    for n in sizes {
        let sandbox = Sandbox::up_with(&platform(n));
        let base = baseline(&sandbox);
        let emergency = procedure(&sandbox, "emergency");
        let full = procedure(&sandbox, "full");
        rows.push((n, base, emergency, full));
    }
    println!(
        "\n{:>8} | {:<32} | {:>10} | {:>10} | {:>8} | {:>12} | {:>12}",
        "services", "approach", "restored", "verified", "total", "restored ×", "verified ×"
    );
    println!("{}", "-".repeat(112));
    for (n, base, emergency, full) in &rows {
        for (label, t) in [
            ("runbook (bash, one by one)", base),
            ("rollback run emergency", emergency),
            ("rollback run full", full),
        ] {
            println!(
                "{n:>8} | {label:<32} | {:>9.2}s | {:>9.2}s | {:>7.2}s | {:>11.1}× | {:>11.1}×",
                t.restored,
                t.verified,
                t.total,
                base.restored / t.restored,
                base.verified / t.verified
            );
        }
    }
    if rows.len() >= 2 {
        let (first, last) = (&rows[0], &rows[rows.len() - 1]);
        println!(
            "\ngrowth from {} to {} services (verified): runbook {:.1}×, emergency {:.1}×, full {:.1}×",
            first.0,
            last.0,
            last.1.verified / first.1.verified,
            last.2.verified / first.2.verified,
            last.3.verified / first.3.verified
        );
    }
}
