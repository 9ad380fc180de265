//! `rollback watch` on the sandbox: triggers evaluated against the real Prometheus, the
//! procedure run as an ordinary run, the cooldown, leader hand-over between two watcher
//! processes, Prometheus outages and Alertmanager's webhook.

mod common;
use common::sandbox::{NAMESPACE, SHIPPED_PLATFORM, Sandbox};
use common::{Test, free_port, http_request, wait_until};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERVICE: &str = "analysis-service";
const LIMIT: Duration = Duration::from_secs(90);

/// A procedure of the tests' own: switches a service's traffic back to blue and says so.
const SWITCH_BACK: &str = r#"//! Switch a service's traffic back to the blue slot.
//! @param service: string = "analysis-service"  The service to switch.
//! @timeout 2m
let s = switch_slot(service, "blue");
log(`traffic on ${s.to} (was ${s.from})`);
milestone("restored");
"#;

/// `emergency` as the default triggers run it, with a rate window sized for the sandbox.
const EMERGENCY: &str = r#"procedure = "emergency"
params = { reason = "{service} error rate above 5% (trigger {trigger})", force = true, window = "5s" }"#;

/// The tests' own small procedure.
const SWITCH: &str = r#"procedure = "switch-back"
params = { service = "{service}" }"#;

/// The error-rate trigger with test-sized durations running `procedure`, and `extra` triggers.
fn platform(procedure: &str, extra: &str) -> String {
    format!(
        r#"{SHIPPED_PLATFORM}
[[triggers]]
name = "high-error-rate"
metric = "error_rate"
threshold = 5
sustained = "3s"
window = "5s"
services = ["{SERVICE}"]
alertname = "HighErrorRate"
{procedure}
{extra}"#
    )
}

/// A `rollback watch` process whose stderr goes to a file; killed on drop.
struct Watcher {
    child: Child,
    log: PathBuf,
    _test: Test,
}

impl Watcher {
    fn start(sandbox: &Sandbox, scripts: &Path, args: &[&str]) -> Watcher {
        let test = sandbox
            .test()
            .env("ROLLBACK_SCRIPTS", &scripts.display().to_string())
            .args(["--env", "sandbox", "--operator", "sre", "-v", "watch"])
            .args(["--interval", "1s", "--lease-duration", "3s"])
            .args(args);
        let log = test.path("watch.log");
        let child = test
            .command()
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(test.path("watch.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Watcher {
            child,
            log,
            _test: test,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `text`; returns the whole log.
    fn wait_for(&self, text: &str) -> String {
        wait_until(&format!("the watcher to log {text:?}"), LIMIT, || {
            let log = self.log();
            log.contains(text).then_some(log)
        })
    }

    fn count(&self, text: &str) -> usize {
        self.log().matches(text).count()
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> i32 {
        wait_until("the watcher to exit", LIMIT, || {
            self.child
                .try_wait()
                .unwrap()
                .map(|s| s.code().unwrap_or(-1))
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scripts_dir(sandbox: &Sandbox) -> PathBuf {
    let dir = sandbox.dir.path().join("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("switch-back.rhai"), SWITCH_BACK).unwrap();
    dir
}

/// Runs started in the sandbox (each holds a journal and a report).
fn runs(sandbox: &Sandbox) -> Vec<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(sandbox.home().join("runs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    runs.sort();
    runs
}

fn journal(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every record of the watchers' own journals, in file order.
fn watch_records(sandbox: &Sandbox) -> Vec<Value> {
    let dir = sandbox.home().join("watch/sandbox");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().flat_map(|f| journal(f)).collect()
}

fn push(sandbox: &Sandbox, value: u32) {
    let (status, body) = http_request(
        "PUT",
        &format!("{}/metrics/job/watch-test", sandbox.url("pushgateway")),
        &format!("watch_flap {value}\n"),
    );
    assert!(status < 300, "push: {status} {body}");
}

fn alert(status: &str, name: &str) -> String {
    format!(
        r#"{{"version":"4","groupKey":"{{}}:{{alertname=\"{name}\"}}","truncatedAlerts":0,"status":"{status}","receiver":"rollback","groupLabels":{{"alertname":"{name}"}},"commonLabels":{{"alertname":"{name}","service":"{SERVICE}"}},"commonAnnotations":{{}},"externalURL":"http://alertmanager:9093","alerts":[{{"status":"{status}","labels":{{"alertname":"{name}","service":"{SERVICE}","severity":"critical"}},"annotations":{{"summary":"errors"}},"startsAt":"2026-11-25T20:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus/graph","fingerprint":"a1b2c3"}}]}}"#
    )
}

#[test]
fn an_incident_fires_once_after_its_sustained_duration_and_a_flapping_metric_never_does() {
    let sandbox = Sandbox::up_with(&platform(
        EMERGENCY,
        r#"
[[triggers]]
name = "flapping"
metric = "promql"
query = 'max(watch_flap)'
threshold = 1
sustained = "8s"
procedure = "switch-back"
"#,
    ));
    let scripts = scripts_dir(&sandbox);
    let watcher = Watcher::start(&sandbox, &scripts, &[]);
    watcher.wait_for("leading: this replica");

    // A metric that goes over its threshold and back every second never holds for 8s.
    for round in 0..10 {
        push(&sandbox, if round % 2 == 0 { 5 } else { 0 });
        std::thread::sleep(Duration::from_secs(1));
    }
    push(&sandbox, 0);
    let log = watcher.wait_for("flapping: promql = 5 (promql > 1 for 8s), held");
    assert!(!log.contains("fired flapping"), "{log}");
    assert!(runs(&sandbox).is_empty());

    // The incident: errors on green, the live slot.
    assert_eq!(sandbox.selector(SERVICE), "green");
    sandbox.inject(&[
        "--service",
        SERVICE,
        "--slot",
        "green",
        "--error-rate",
        "12",
    ]);
    let log = watcher.wait_for("automatic rollbacks are paused until");
    let run = &runs(&sandbox)[..];
    assert_eq!(run.len(), 1, "{log}");
    assert_eq!(sandbox.selector(SERVICE), "blue");
    // Evaluations saw the condition hold for less than its sustained time without firing.
    let before: &str = log.split("fired high-error-rate").next().unwrap();
    assert!(
        before.contains("high-error-rate/analysis-service: error_rate = ")
            && before.contains("(error_rate > 5 for 3s), held "),
        "{log}"
    );

    // The run is an ordinary one: its journal starts with the trigger and its values, it took
    // the run lock, notified and has a report.
    let records = journal(&run[0].join("journal.jsonl"));
    let trigger = records.iter().find(|r| r["function"] == "trigger").unwrap();
    let cause = &trigger["args"]["incident"]["cause"];
    assert_eq!(cause["trigger"], "high-error-rate");
    assert_eq!(cause["service"], SERVICE);
    assert!(cause["value"].as_f64().unwrap() > 5.0, "{cause}");
    assert!(cause["held_s"].as_f64().unwrap() >= cause["sustained_s"].as_f64().unwrap());
    assert_eq!(records[0]["args"]["procedure"], "emergency");
    assert_eq!(records[0]["args"]["params"]["force"], true);
    assert!(records.iter().any(|r| r["function"] == "lock"));
    assert!(
        records
            .iter()
            .any(|r| r["function"] == "milestone" && r["args"]["name"] == "restored")
    );
    let report = std::fs::read_to_string(run[0].join("report.md")).unwrap();
    assert!(report.contains("emergency"), "{report}");
    let slack = sandbox.notifications("slack");
    let texts: Vec<String> = slack.iter().map(|n| n["body"].to_string()).collect();
    assert!(
        texts[0].contains("Automatic rollback: trigger high-error-rate/analysis-service fired"),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("EMERGENCY ROLLBACK")),
        "{texts:?}"
    );
    assert!(!sandbox.notifications("pagerduty").is_empty());
    let notified = (slack.len(), sandbox.notifications("pagerduty").len());
    let fired: Vec<Value> = watch_records(&sandbox)
        .into_iter()
        .filter(|r| r["function"] == "watch.fire")
        .collect();
    assert_eq!(fired.len(), 1);
    assert!(
        fired[0]["outcome"]["result"]["cause"]["value"]
            .as_f64()
            .unwrap()
            > 5.0
    );

    // Traffic on blue: the error rate falls back under the threshold.
    wait_until("the condition to clear", LIMIT, || {
        let log = watcher.log();
        let after = log.split("automatic rollbacks are paused until").nth(1)?;
        after
            .contains("high-error-rate/analysis-service: error_rate = 0 (error_rate > 5 for 3s)\n")
            .then_some(())
    });

    // The new live slot goes bad too: the condition holds again, but the cooldown stops a
    // second automatic rollback until someone acknowledges.
    sandbox.inject(&["--service", SERVICE, "--slot", "blue", "--error-rate", "20"]);
    let log = watcher.wait_for("cooldown: incident high-error-rate/analysis-service");
    assert!(log.contains("awaits acknowledgement"), "{log}");
    assert_eq!(runs(&sandbox).len(), 1);
    assert_eq!(sandbox.notifications("slack").len(), notified.0);

    let status = sandbox.rollback(&["--env", "sandbox", "watch", "status"]);
    status
        .success()
        .stdout_has("cooldown: incident high-error-rate/analysis-service fired at")
        .stdout_has("emergency run")
        .stdout_has("(succeeded) awaits acknowledgement");
    let row = status
        .stdout
        .lines()
        .find(|l| l.starts_with("high-error-rate"))
        .unwrap();
    assert!(
        row.contains("error_rate > 5 for 3s") && row.contains("holding for"),
        "{row}"
    );
    assert!(status.stdout.contains("leader: "), "{}", status.stdout);

    // SIGTERM: the watcher hands the lease over and exits cleanly.
    watcher.signal("-TERM");
    let mut watcher = watcher;
    assert_eq!(watcher.wait_exit(), 0, "{}", watcher.log());
    assert!(
        watcher
            .log()
            .contains("released Lease tracktion/rollback-watch-leader")
    );

    sandbox
        .rollback(&["--env", "sandbox", "--operator", "oncall", "watch", "ack"])
        .success()
        .stderr_has("acknowledged by oncall: high-error-rate/analysis-service");
    sandbox
        .rollback(&["--env", "sandbox", "watch", "status"])
        .success()
        .stdout_has("cooldown: none")
        .stdout_has("last acknowledged: high-error-rate/analysis-service by oncall");

    // A dry-run watcher announces what it would do and changes nothing.
    let cluster = sandbox.cluster_state();
    let dry = Watcher::start(&sandbox, &scripts, &["--dry-run"]);
    let log = dry.wait_for("dry-run: high-error-rate/analysis-service");
    assert!(
        log.contains("would notify and run `rollback --env sandbox run emergency --force true --reason analysis-service error rate above 5% (trigger high-error-rate) --window 5s` (nothing done)"),
        "{log}"
    );
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(runs(&sandbox).len(), 1);
    assert_eq!(sandbox.notifications("slack").len(), notified.0);
    assert_eq!(sandbox.notifications("pagerduty").len(), notified.1);
    assert!(!log.contains("leading: this replica"), "{log}");
}

fn can_i(sandbox: &Sandbox, what: &[&str]) -> bool {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(sandbox.kubeconfig())
        .args(["-n", NAMESPACE, "auth", "can-i"])
        .args(what)
        .arg(format!(
            "--as=system:serviceaccount:{NAMESPACE}:rollback-watch"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// Applies `deploy/watch` to the sandbox's cluster, checks what its Role allows and refuses,
/// and returns a kubeconfig that authenticates as its service account.
fn deploy_manifests(sandbox: &Sandbox) -> PathBuf {
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/watch");
    sandbox.kubectl(&["apply", "-k", manifests]);
    let deployment = wait_until("the watcher Deployment's 2 replicas", LIMIT, || {
        let d = sandbox.kubectl_json(&["get", "deployment", "rollback-watch"]);
        (d["status"]["readyReplicas"] == 2).then_some(d)
    });
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let pods =
        sandbox.kubectl_json(&["get", "pods", "-l", "app.kubernetes.io/name=rollback-watch"]);
    assert_eq!(pods["items"].as_array().unwrap().len(), 2);

    let needed: &[&[&str]] = &[
        &["create", "leases.coordination.k8s.io"],
        &["get", "leases.coordination.k8s.io/rollback-watch-leader"],
        &["update", "leases.coordination.k8s.io/rollback-watch-leader"],
        &["update", "leases.coordination.k8s.io/rollback-run-lock"],
        &["create", "configmaps"],
        &["update", "configmaps/rollback-watch"],
        &["get", "services/analysis-service"],
        &["patch", "services/analysis-service"],
        &["list", "endpointslices.discovery.k8s.io"],
        &["list", "pods"],
        &["patch", "deployments.apps/analysis-service-blue"],
        &["watch", "deployments.apps"],
    ];
    for what in needed {
        assert!(
            can_i(sandbox, what),
            "the watcher's Role should allow {what:?}"
        );
    }
    let refused: &[&[&str]] = &[
        &["get", "secrets"],
        &["list", "secrets"],
        &["update", "leases.coordination.k8s.io/some-other-lease"],
        &["update", "configmaps/tracktion-config"],
        &["delete", "configmaps/rollback-watch"],
        &["delete", "deployments.apps/analysis-service-green"],
        &["delete", "services/analysis-service"],
        &["create", "pods/exec"],
        &["create", "deployments.apps"],
        &["list", "pods", "--all-namespaces"],
    ];
    for what in refused {
        assert!(
            !can_i(sandbox, what),
            "the watcher's Role should refuse {what:?}"
        );
    }

    let token = sandbox.kubectl(&["create", "token", "rollback-watch", "--duration", "1h"]);
    let path = sandbox.dir.path().join("watch.kubeconfig");
    std::fs::copy(sandbox.kubeconfig(), &path).unwrap();
    let context = sandbox.kubectl(&["config", "current-context"]);
    for args in [
        vec!["set-credentials", "rollback-watch", "--token", token.trim()],
        vec!["set-context", context.trim(), "--user", "rollback-watch"],
    ] {
        let status = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&path)
            .arg("config")
            .args(&args)
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
    }
    path
}

/// A TCP relay to Prometheus that can be cut: cutting closes the open connections, and new
/// ones are closed at once while it is down.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::new()));
        let flag = up.clone();
        let streams = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                streams.lock().unwrap().push(client.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay { port, up, open }
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for stream in self.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

#[test]
fn only_the_leader_acts_a_successor_respects_the_cooldown_and_prometheus_outages_never_fire() {
    let sandbox = Sandbox::up_with(&platform(SWITCH, ""));
    let scripts = scripts_dir(&sandbox);
    let kubeconfig = deploy_manifests(&sandbox);
    // The watchers run as the manifests' service account, and reach Prometheus through a
    // relay the test can cut.
    let relay = Relay::start(sandbox.url("prometheus").replace("http://", ""));
    let overlay = std::fs::read_to_string(sandbox.environment_file())
        .unwrap()
        .replace(
            &sandbox.url("prometheus"),
            &format!("http://127.0.0.1:{}", relay.port),
        )
        .replace(&sandbox.kubeconfig(), &kubeconfig.display().to_string());
    std::fs::write(sandbox.home().join("environments/zz-relay.toml"), overlay).unwrap();

    let (port1, port2) = (free_port(), free_port());
    let first = Watcher::start(
        &sandbox,
        &scripts,
        &["--listen", &format!("127.0.0.1:{port1}")],
    );
    first.wait_for("leading: this replica");
    let second = Watcher::start(
        &sandbox,
        &scripts,
        &["--listen", &format!("127.0.0.1:{port2}")],
    );
    second.wait_for("high-error-rate/analysis-service: error_rate = ");
    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    for port in [port1, port2] {
        assert_eq!(common::http_get(&url(port, "/healthz")).0, 200);
        wait_until("readiness", LIMIT, || {
            (common::http_get(&url(port, "/readyz")).0 == 200).then_some(())
        });
    }

    // Alertmanager: malformed, resolved and unknown alerts do nothing; the follower refuses to
    // act and names the leader.
    let hook = url(port1, "/alertmanager");
    let (status, body) = http_request("POST", &hook, "{\"alerts\": [");
    assert_eq!(status, 400, "{body}");
    let (status, body) = http_request("POST", &hook, &alert("resolved", "HighErrorRate"));
    assert_eq!(
        (status, body.contains("is resolved")),
        (200, true),
        "{body}"
    );
    let (status, body) = http_request("POST", &hook, &alert("firing", "DiskFull"));
    assert_eq!(
        (status, body.contains("matches no trigger")),
        (200, true),
        "{body}"
    );
    let (status, body) = http_request(
        "POST",
        &url(port2, "/alertmanager"),
        &alert("firing", "HighErrorRate"),
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not the leader"), "{body}");
    let log = first.log();
    assert!(
        log.contains("Alertmanager webhook refused: not an Alertmanager webhook payload"),
        "{log}"
    );
    assert!(
        log.contains("ignored alert 'DiskFull' matches no trigger"),
        "{log}"
    );
    assert!(runs(&sandbox).is_empty());

    // A firing alert with a known name fires its trigger at once, on the leader.
    let (status, body) = http_request("POST", &hook, &alert("firing", "HighErrorRate"));
    assert_eq!(status, 200, "{body}");
    first.wait_for("automatic rollbacks are paused until");
    assert_eq!(runs(&sandbox).len(), 1);
    assert_eq!(sandbox.selector(SERVICE), "blue");
    assert_eq!(second.count("fired high-error-rate"), 0);

    // The incident goes on (the new live slot errs); the leader dies; the follower takes the
    // lease over and holds back: the incident is the same, and nobody acknowledged it.
    sandbox.inject(&["--service", SERVICE, "--slot", "blue", "--error-rate", "25"]);
    first.signal("-KILL");
    second.wait_for("leading: this replica");
    second.wait_for("cooldown: incident high-error-rate/analysis-service");
    assert_eq!(runs(&sandbox).len(), 1);
    assert_eq!(second.count("fired high-error-rate"), 0);

    // Acknowledged, then Prometheus goes away: no data never fires, however long it lasts.
    sandbox
        .rollback(&["--env", "sandbox", "watch", "ack"])
        .success();
    relay.set(false);
    second.wait_for("cannot evaluate triggers: cannot reach Prometheus");
    let failures = second.count("error_rate = error (");
    wait_until("eight evaluations without Prometheus", LIMIT, || {
        (second.count("error_rate = error (") >= failures + 8).then_some(())
    });
    assert_eq!(runs(&sandbox).len(), 1);
    sandbox
        .rollback(&["--env", "sandbox", "watch", "status"])
        .success()
        .stdout_has("unavailable");

    // Prometheus is back: the condition has to hold its whole sustained time again, then fires.
    relay.set(true);
    second.wait_for("answers again; evaluating triggers");
    let log = wait_until("the second rollback", LIMIT, || {
        let log = second.log();
        (second.count("automatic rollbacks are paused until") == 1).then_some(log)
    });
    let after = log.split("answers again").nth(1).unwrap();
    assert!(
        after.contains("held 1") || after.contains("held 2"),
        "{log}"
    );
    assert_eq!(runs(&sandbox).len(), 2);
}
