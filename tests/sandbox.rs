//! `rollback sandbox up | status | inject | down` against the real stack: a kwok cluster with
//! the demo's Helm releases, the sandbox server, Prometheus and Pushgateway, on loopback.
//! Each test has its own `ROLLBACK_HOME`, so each sandbox has its own cluster and ports.

mod common;
use common::sandbox::{SERVICES, SHIPPED_PLATFORM, Sandbox};
use common::{http_get, http_request, wait_until};
use std::path::Path;
use std::time::Duration;

/// Hang guard for waits on Prometheus (it scrapes every second).
const PATIENCE: Duration = Duration::from_secs(90);

/// Running and not a zombie: `/proc/PID/stat`'s state letter.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with(['Z', 'X']))
        })
        .is_some_and(|zombie| !zombie)
}

/// Processes (other than this test) whose command line names `dir`.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id() && running(*pid))
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&dir).then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

#[test]
fn up_serves_the_demo_then_down_stops_everything() {
    let sandbox = Sandbox::new(SHIPPED_PLATFORM);
    let up = sandbox.rollback(&["sandbox", "up"]);
    up.success()
        .stdout_has("export ROLLBACK_SANDBOX_SLACK_WEBHOOK_URL='http://127.0.0.1:")
        .stdout_has("export ROLLBACK_SANDBOX_PAGERDUTY_ROUTING_KEY='")
        .stderr_has("sandbox up in");
    let environment = std::fs::read_to_string(sandbox.environment_file()).unwrap();
    assert!(
        environment.contains("namespace = \"tracktion\""),
        "{environment}"
    );

    // Eight Deployments, Available, labelled with their slot and version.
    let deployments = sandbox.kubectl_json(&["get", "deployments"]);
    let items = deployments["items"].as_array().unwrap();
    assert_eq!(items.len(), 8);
    for d in items {
        let labels = &d["metadata"]["labels"];
        let name = d["metadata"]["name"].as_str().unwrap();
        let (service, slot) = (
            labels["app"].as_str().unwrap(),
            labels["slot"].as_str().unwrap(),
        );
        assert_eq!(name, format!("{service}-{slot}"));
        assert!(SERVICES.contains(&service));
        let expected = if slot == "green" { "v1.2.4" } else { "v1.2.3" };
        assert_eq!(labels["version"], expected, "{name}");
        let available = d["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True");
        assert!(available, "{name} is not Available: {}", d["status"]);
    }
    // Per-service Services and the umbrella one select green.
    for service in SERVICES {
        let svc = sandbox.kubectl_json(&["get", "service", service]);
        assert_eq!(svc["spec"]["selector"]["app"], service);
        assert_eq!(svc["spec"]["selector"]["slot"], "green");
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        let history = sandbox.helm_history(&format!("tracktion-{service}"));
        let history = history.as_array().unwrap();
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!(history[0]["app_version"], "1.2.3");
        assert_eq!(history[0]["status"], "superseded");
        assert_eq!(history[1]["app_version"], "1.2.4");
        assert_eq!(history[1]["status"], "deployed");
    }
    // The history is real: rolling a release back returns its Service to blue and green to
    // the version before, and the server sees it.
    sandbox.helm(&[
        "rollback",
        "tracktion-file-watcher",
        "1",
        "--wait",
        "--timeout",
        "120s",
    ]);
    let svc = sandbox.kubectl_json(&["get", "service", "file-watcher"]);
    assert_eq!(svc["spec"]["selector"]["slot"], "blue");
    let server = sandbox.url("server");
    wait_until(
        "the server to see the rolled-back version",
        PATIENCE,
        || {
            let (_, body) = http_get(&format!("{server}/file-watcher/green/health"));
            body.contains("\"version\":\"v1.2.2\"").then_some(())
        },
    );
    let umbrella = sandbox.kubectl_json(&["get", "service", "tracktion"]);
    assert_eq!(umbrella["spec"]["selector"]["slot"], "green");
    assert_eq!(
        umbrella["spec"]["selector"]["app.kubernetes.io/part-of"],
        "tracktion"
    );

    // Health through the environment's template; Prometheus already has data.
    let template = environment
        .lines()
        .find_map(|l| l.strip_prefix("health_url = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let health = |service: &str, slot: &str| {
        http_get(
            &template
                .replace("{service}", service)
                .replace("{slot}", slot),
        )
    };
    let (status, body) = health("analysis-service", "green");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\":\"v1.2.4\""), "{body}");
    assert_eq!(health("analysis-service", "purple").0, 404);
    assert_eq!(sandbox.prometheus(r#"up{job="tracktion"}"#), Some(1.0));
    wait_until("requests in Prometheus", PATIENCE, || {
        sandbox
            .prometheus("sum(http_requests_total)")
            .filter(|n| *n > 0.0)
    });

    // An injected error rate on the live slot shows in Prometheus' ratio.
    sandbox
        .rollback(&[
            "sandbox",
            "inject",
            "--service",
            "analysis-service",
            "--error-rate",
            "12",
        ])
        .success()
        .stdout_has("analysis-service green: 12% errors (500)");
    let mut last = None;
    let ratio = wait_until("a 12% error ratio", PATIENCE, || {
        last = sandbox.error_ratio("analysis-service");
        last.filter(|r| (r - 0.12).abs() < 0.015)
    });
    assert!((ratio - 0.12).abs() < 0.015, "{ratio} (last {last:?})");
    assert_eq!(sandbox.error_ratio("file-watcher"), Some(0.0));

    // Injected latency shows in the duration histogram (simulated durations, not wall time).
    sandbox
        .rollback(&[
            "sandbox",
            "inject",
            "--service",
            "tracklist-service",
            "--latency-ms",
            "800",
        ])
        .success()
        .stdout_has("tracklist-service green: +800 ms latency");
    wait_until("a p95 above 0.8 s", PATIENCE, || {
        sandbox
            .prometheus(
                r#"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{service="tracklist-service"}[5s])))"#,
            )
            .filter(|p95| *p95 > 0.8)
    });

    let status = sandbox.rollback(&["sandbox", "status"]);
    status.success().stdout_has("12% errors (500)");
    for component in ["server", "prometheus", "pushgateway"] {
        let line = status
            .stdout
            .lines()
            .find(|l| l.starts_with(component))
            .unwrap_or_else(|| panic!("no {component} line in\n{}", status.stdout));
        assert!(line.ends_with("answering"), "{line}");
    }
    assert!(
        status.stdout.contains("ready (rollback-sandbox"),
        "{}",
        status.stdout
    );

    // Traffic follows the Service: switched to blue, the errors stop.
    sandbox.kubectl(&[
        "patch",
        "service",
        "analysis-service",
        "-p",
        r#"{"spec":{"selector":{"slot":"blue"}}}"#,
    ]);
    wait_until("the error ratio to drop after the switch", PATIENCE, || {
        sandbox
            .error_ratio("analysis-service")
            .filter(|r| *r == 0.0)
    });

    // A slot taken down answers 503; the other still answers.
    sandbox
        .rollback(&[
            "sandbox",
            "inject",
            "--service",
            "analysis-service",
            "--slot",
            "green",
            "--down",
        ])
        .success()
        .stdout_has("analysis-service green: down (503), 12% errors (500)");
    assert_eq!(health("analysis-service", "green").0, 503);
    assert_eq!(health("analysis-service", "blue").0, 200);

    // A procedure run with --env sandbox sees the sandbox with no other set-up.
    let run = sandbox
        .test()
        .script(
            r#"
let p = platform();
if p.namespace != "tracktion" { throw `namespace ${p.namespace}`; }
let svc = p.services.filter(|s| s.name == "analysis-service")[0];
let blue = health_check(svc.health.blue, #{ retries: 0 });
if !blue.ok || blue.status != 200 { throw blue; }
let green = health_check(svc.health.green, #{ retries: 0 });
log(`green answered ${green.status}`);
"#,
        )
        .args(["--env", "sandbox"])
        .run();
    run.success().stderr_has("green answered 503");

    // The receivers accept what Slack and PagerDuty accept, and record every delivery.
    let exports: Vec<(String, String)> = up
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.trim_matches('\'').to_string())
        })
        .collect();
    let slack = &exports.iter().find(|(k, _)| k.contains("SLACK")).unwrap().1;
    assert_eq!(
        http_request("POST", slack, r#"{"text":"rehearsal"}"#),
        (200, "ok".into())
    );
    assert_eq!(http_request("POST", slack, r#"{"text":""}"#).1, "no_text");
    let recorded =
        std::fs::read_to_string(sandbox.state_dir().join("notifications/slack.jsonl")).unwrap();
    assert_eq!(recorded.lines().count(), 2, "{recorded}");
    assert!(recorded.contains("\"text\":\"rehearsal\""), "{recorded}");

    // The sandbox's PostgreSQL serves the Tracktion schema at its newest migration, with a
    // base backup for point-in-time recovery, through the exported URL variable.
    let database_url = &exports
        .iter()
        .find(|(k, _)| k.contains("DATABASE_URL"))
        .unwrap()
        .1;
    let run = sandbox
        .test()
        .env("ROLLBACK_SANDBOX_DATABASE_URL", database_url)
        .script(
            r#"
let v = pg::schema_version();
let counts = pg::table_counts();
pg::pitr_window();
log(`schema ${v.version} audio_files ${counts.tables.audio_files}`);
"#,
        )
        .args(["--env", "sandbox"])
        .run();
    run.success().stderr_has("schema 3 audio_files 4");

    // `up` again changes nothing.
    let pids = sandbox.pids();
    sandbox
        .rollback(&["sandbox", "up"])
        .success()
        .stdout_has("the sandbox is already up");
    assert_eq!(sandbox.pids(), pids);

    sandbox
        .rollback(&["sandbox", "inject", "--clear"])
        .success()
        .stdout_has("no incidents");
    assert_eq!(health("analysis-service", "green").0, 200);

    // The registry holds the image of every Deployment (named on the registry's usual host,
    // which the environment maps to the local registry), and Redis has the seeded sessions.
    let state = sandbox.state();
    let data_pids: Vec<u32> = ["registry", "redis"]
        .iter()
        .map(|c| state[c]["pid"].as_u64().unwrap() as u32)
        .collect();
    let images: Vec<String> = sandbox.kubectl_json(&["get", "deployments"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["spec"]["template"]["spec"]["containers"][0]["image"].to_string())
        .collect();
    let env_sh = std::fs::read_to_string(sandbox.state_dir().join("env.sh")).unwrap();
    let redis_url = env_sh
        .lines()
        .find_map(|l| l.strip_prefix("export ROLLBACK_SANDBOX_REDIS_URL="))
        .unwrap()
        .trim_matches('\'');
    let script = format!(
        r#"
        let missing = [{}].filter(|image| !registry::image_exists(image).exists);
        print(`missing=${{missing}}`);
        import "images" as images;
        for v in ["v1.2.2", "v1.2.3", "v1.2.4"] {{ images::require("file-watcher", v); }}
        print(`gone=${{images::exists("file-watcher", "v9.9.9")}}`);
        print(`pong=${{redis::ping().ok}} sessions=${{redis::count("session:*").count}}`);
        "#,
        images.join(", ")
    );
    sandbox
        .test()
        .env("ROLLBACK_SANDBOX_REDIS_URL", redis_url)
        .script(&script)
        .args(["--env", "sandbox"])
        .run()
        .success()
        .stdout_has("missing=[]")
        .stdout_has("gone=false")
        .stdout_has("pong=true sessions=250");
    assert!(
        images
            .iter()
            .all(|i| i.starts_with("\"registry.tracktion.local/tracktion/")),
        "{images:?}"
    );
    assert_eq!(images.len(), 8);

    // `down` stops every process and removes the environment.
    assert!(pids.len() >= 9, "{pids:?}");
    sandbox
        .rollback(&["sandbox", "down"])
        .success()
        .stdout_has("sandbox stopped");
    let alive: Vec<u32> = pids
        .iter()
        .chain(&data_pids)
        .copied()
        .filter(|p| running(*p))
        .collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    assert!(processes_mentioning(&sandbox.home()).is_empty());
    assert!(!sandbox.environment_file().exists());
    assert!(!sandbox.state_dir().exists());
    sandbox
        .rollback(&["sandbox", "down"])
        .success()
        .stdout_has("not running");
    sandbox
        .test()
        .script("log(platform().namespace);")
        .args(["--env", "sandbox"])
        .run()
        .code(2)
        .stderr_has("unknown environment 'sandbox'");
}

#[test]
fn a_failed_up_stops_what_it_started() {
    // Helm refuses release names over 53 characters: the failure comes after the server,
    // Prometheus, the Pushgateway and the cluster have started.
    let sandbox = Sandbox::new(
        r#"
[services.analysis-service]
release = "tracktion-analysis-service-with-a-release-name-too-long-for-helm"
"#,
    );
    let up = sandbox.rollback(&["sandbox", "up"]);
    up.code(1)
        .stderr_has("helm could not deploy")
        .stderr_has("stopped Kubernetes cluster rollback-sandbox")
        .stderr_has("stopped prometheus")
        .stderr_has("what it had started is stopped; the logs of this attempt are in");
    let left = processes_mentioning(&sandbox.home());
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(!sandbox.environment_file().exists());
    assert!(!sandbox.state_dir().join("sandbox.json").exists());
    assert!(sandbox.state_dir().join("logs/cluster.log").is_file());
    sandbox
        .rollback(&["sandbox", "status"])
        .code(1)
        .stderr_has("the sandbox is not running");
}

#[test]
fn commands_need_a_running_sandbox_and_valid_incidents() {
    let sandbox = Sandbox::new(SHIPPED_PLATFORM);
    sandbox
        .rollback(&["sandbox", "status"])
        .code(1)
        .stderr_has("the sandbox is not running; start it with `rollback sandbox up`");
    sandbox
        .rollback(&[
            "sandbox",
            "inject",
            "--service",
            "file-watcher",
            "--latency-ms",
            "800",
        ])
        .code(1)
        .stderr_has("the sandbox is not running");
    sandbox
        .rollback(&["sandbox", "down"])
        .success()
        .stdout_has("the sandbox is not running; nothing to stop");
    sandbox
        .rollback(&[
            "sandbox",
            "inject",
            "--service",
            "file-watcher",
            "--error-rate",
            "150",
        ])
        .code(2)
        .stderr_has("--error-rate 150 is not a percentage");
    sandbox
        .rollback(&["sandbox", "inject", "--service", "file-watcher"])
        .code(2)
        .stderr_has("--error-rate");
    sandbox
        .rollback(&["sandbox", "inject", "--clear", "--down"])
        .code(2)
        .stderr_has("cannot be used with");
}

#[test]
fn up_names_the_package_of_a_missing_registry_or_redis() {
    // A PATH with everything `up` checks first, but no docker-registry (then no redis-server).
    let bin = tempfile::tempdir().unwrap();
    let which = |tool: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    for tool in ["bash", "kubectl", "prometheus", "prometheus-pushgateway"] {
        let path = which(tool);
        if !path.is_empty() {
            std::os::unix::fs::symlink(&path, bin.path().join(tool)).unwrap();
        }
    }
    let path = bin.path().display().to_string();
    let sandbox = Sandbox::new(SHIPPED_PLATFORM);
    sandbox
        .test()
        .env("PATH", &path)
        .args(["sandbox", "up"])
        .run()
        .code(1)
        .stderr_has("docker-registry is not installed")
        .stderr_has("apt-get install -y docker-registry");
    std::os::unix::fs::symlink(which("docker-registry"), bin.path().join("docker-registry"))
        .unwrap();
    sandbox
        .test()
        .env("PATH", &path)
        .args(["sandbox", "up"])
        .run()
        .code(1)
        .stderr_has("apt-get install -y redis-server");
    assert!(!sandbox.state_dir().join("sandbox.json").exists());
}
