//! Benchmarks against a real cluster, measured side by side in one run; ignored by default:
//! `cargo test --release --test k8s_bench -- --ignored --nocapture`.
//!
//! 1. switch_slot (read, readiness checks, patch with precondition, read-back) against
//!    `kubectl patch` of the same selector.
//! 2. How long after a Deployment becomes available wait_rollout returns, against
//!    `kubectl rollout status` and the runbook's poll every 10 s.

#[path = "common/cluster.rs"]
mod cluster;

use cluster::{Cluster, cluster, deployment, service};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use rollback::host::k8s::client::{self, Kube};
use rollback::host::k8s::{rollout, slot};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SWITCHES: usize = 30;
const ROLLOUTS: usize = 8;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn connect(rt: &tokio::runtime::Runtime, c: &Cluster, ns: &str) -> Kube {
    rt.block_on(async {
        let config = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
        client::from_kubeconfig(config, "bench", None, ns)
            .await
            .unwrap()
    })
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_switch_slot_and_wait_rollout() {
    let c = cluster();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (switch, kubectl_patch) = bench_switch(c, &rt);
    let (wait, status) = bench_wait(c, &rt);
    let (sm, km) = (median(switch.clone()), median(kubectl_patch.clone()));
    let (wm, stm) = (median(wait.clone()), median(status.clone()));
    let runbook_poll_mean = 5000.0;
    println!();
    println!("| measurement | samples | median ms | max ms | ratio |");
    println!("|---|---|---|---|---|");
    println!(
        "| switch_slot incl. checks and read-back | {} | {sm:.1} | {:.1} | {:.3} |",
        switch.len(),
        max(&switch),
        sm / km
    );
    println!(
        "| kubectl patch of the same selector | {} | {km:.1} | {:.1} | 1 |",
        kubectl_patch.len(),
        max(&kubectl_patch)
    );
    println!(
        "| wait_rollout: return after the Deployment became available | {} | {wm:.1} | {:.1} | {:.4} vs kubectl, {:.5} vs runbook poll |",
        wait.len(),
        max(&wait),
        wm / stm,
        wm / runbook_poll_mean
    );
    println!(
        "| kubectl rollout status: exit after available | {} | {stm:.1} | {:.1} | 1 |",
        status.len(),
        max(&status)
    );
    println!(
        "| runbook `sleep 10` poll: expected delay (mean of 0..10 s) | - | {runbook_poll_mean:.0} | 10000 | - |"
    );
    assert!(
        sm / km <= 0.3,
        "switch_slot median {sm:.1} ms is more than 0.3 x kubectl patch {km:.1} ms"
    );
    assert!(
        max(&wait) <= 200.0,
        "wait_rollout returned {:.1} ms after availability",
        max(&wait)
    );
}

fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(0.0, f64::max)
}

fn bench_switch(c: &Cluster, rt: &tokio::runtime::Runtime) -> (Vec<f64>, Vec<f64>) {
    let ns = c.namespace("bench-slot");
    c.apply(
        &ns,
        &deployment(
            "shop-blue",
            &[("app", "shop"), ("slot", "blue"), ("version", "v1")],
            "shop:1",
            2,
            "",
        ),
    );
    c.apply(
        &ns,
        &deployment(
            "shop-green",
            &[("app", "shop"), ("slot", "green"), ("version", "v2")],
            "shop:2",
            2,
            "",
        ),
    );
    c.apply(&ns, &service("shop", &[("app", "shop"), ("slot", "blue")]));
    c.rollout_status(&ns, "shop-blue");
    c.rollout_status(&ns, "shop-green");
    let kube = connect(rt, c, &ns);
    let options = slot::SwitchOptions::default();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    // Alternating, so both see the same cluster load; the first two rounds warm up.
    for round in 0..SWITCHES + 2 {
        let target = if round % 2 == 0 { "green" } else { "blue" };
        let start = Instant::now();
        rt.block_on(async {
            let plan = slot::plan(&kube, "shop", Some(target), &options)
                .await
                .unwrap();
            slot::switch(&kube, plan).await.unwrap()
        });
        let switch = start.elapsed();
        let back = if target == "green" { "blue" } else { "green" };
        let patch = format!(r#"{{"spec":{{"selector":{{"slot":"{back}"}}}}}}"#);
        let start = Instant::now();
        c.kubectl(&["-n", &ns, "patch", "service", "shop", "-p", &patch]);
        let kubectl = start.elapsed();
        // Leave the Service where switch_slot expects it for the next round.
        c.kubectl(&[
            "-n",
            &ns,
            "patch",
            "service",
            "shop",
            "-p",
            &format!(r#"{{"spec":{{"selector":{{"slot":"{target}"}}}}}}"#),
        ]);
        if round >= 2 {
            ours.push(ms(switch));
            theirs.push(ms(kubectl));
        }
    }
    (ours, theirs)
}

/// For each rollout: the first moment a watch sees the Deployment rolled out (its
/// availability), then how much later wait_rollout and `kubectl rollout status` return.
fn bench_wait(c: &Cluster, rt: &tokio::runtime::Runtime) -> (Vec<f64>, Vec<f64>) {
    let ns = c.namespace("bench-wait");
    c.apply(&ns, &deployment("web", &[("app", "web")], "web:0", 2, ""));
    c.rollout_status(&ns, "web");
    let kube = connect(rt, c, &ns);
    let api = kube.api::<Deployment>();
    let seen: Arc<Mutex<Vec<(Instant, i64)>>> = Arc::default();
    let observer = {
        let seen = seen.clone();
        let api = api.clone();
        rt.spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=web");
            let mut events = watcher::watcher(api, config).boxed();
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::Apply(d) | watcher::Event::InitApply(d) = event
                    && matches!(rollout::progress(&d), rollout::Progress::Complete(_))
                {
                    let generation = d.status.and_then(|s| s.observed_generation).unwrap_or(0);
                    seen.lock().unwrap().push((Instant::now(), generation));
                }
            }
        })
    };
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 1..=ROLLOUTS {
        let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": format!("web:{i}")}]}}}});
        let patched = rt
            .block_on(api.patch("web", &PatchParams::default(), &Patch::Strategic(patch)))
            .unwrap();
        let generation = patched.metadata.generation.unwrap();
        let mut kubectl = c.kubectl_command();
        kubectl.args([
            "-n",
            &ns,
            "rollout",
            "status",
            "deployment/web",
            "--timeout=120s",
        ]);
        kubectl.stdout(std::process::Stdio::null());
        let status = std::thread::spawn(move || {
            kubectl.status().unwrap();
            Instant::now()
        });
        rt.block_on(rollout::wait(&kube, "web", Duration::from_secs(120)))
            .unwrap();
        let returned = Instant::now();
        let kubectl_returned = status.join().unwrap();
        let available = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, g)| *g >= generation)
            .map(|(t, _)| *t)
            .expect("the observer saw the rollout complete");
        ours.push(ms(returned.saturating_duration_since(available)));
        theirs.push(ms(kubectl_returned.saturating_duration_since(available)));
    }
    observer.abort();
    (ours, theirs)
}
