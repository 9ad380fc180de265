//! Helm history (read natively) and helm_rollback (through the helm binary) on a real cluster.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::{Cluster, cluster};
use common::{Run, Test, helm_release_with_status};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const CHART: &str = "apiVersion: v2\nname: web\nversion: 0.1.0\nappVersion: \"1.0\"\n";
const TEMPLATE: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    app: {{ .Release.Name }}
    version: {{ .Values.version | quote }}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
    spec:
      containers:
        - name: app
          image: {{ .Values.image | quote }}
"#;

fn chart(dir: &Path) -> std::path::PathBuf {
    let chart = dir.join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), CHART).unwrap();
    std::fs::write(chart.join("values.yaml"), "image: web:1\nversion: v1\n").unwrap();
    std::fs::write(chart.join("templates/deployment.yaml"), TEMPLATE).unwrap();
    chart
}

fn helm(c: &Cluster, home: &Path, ns: &str, args: &[&str]) {
    let out = Command::new(c.helm())
        .args(args)
        .args(["--namespace", ns, "--kubeconfig"])
        .arg(&c.kubeconfig)
        .env("HOME", home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Release `web` at revision 1 (web:1) and 2 (web:2).
fn two_revisions(c: &Cluster, ns: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let chart = chart(home.path());
    let chart = chart.to_str().unwrap();
    helm(
        c,
        home.path(),
        ns,
        &["install", "web", chart, "--wait", "--timeout", "120s"],
    );
    helm(
        c,
        home.path(),
        ns,
        &[
            "upgrade",
            "web",
            chart,
            "--set",
            "image=web:2,version=v2",
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    home
}

fn run(c: &Cluster, ns: &str, script: &str, args: &[&str]) -> Run {
    Test::new()
        .platform(&c.platform(ns))
        .script(script)
        .args(args)
        .env("ROLLBACK_HELM", c.helm().to_str().unwrap())
        .run()
}

fn result(run: &Run, function: &str) -> Value {
    run.journal()
        .into_iter()
        .rev()
        .find(|r| r["function"] == function)
        .unwrap()["outcome"]["result"]
        .clone()
}

fn image(c: &Cluster, ns: &str) -> String {
    c.json(&["-n", ns, "get", "deployment", "web"])["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn history_is_read_from_release_secrets_and_rollback_restores_the_image() {
    let c = cluster();
    let ns = c.namespace("helm");
    let _home = two_revisions(c, &ns);
    assert_eq!(image(c, &ns), "web:2");
    let run = run(
        c,
        &ns,
        r#"let h = helm::history("web"); print(h.len()); let r = helm_rollback("web"); print(r.new_revision);"#,
        &[],
    );
    run.success().stdout_has("2\n3");
    let history = result(&run, "history");
    assert_eq!(history[0]["revision"], 1);
    assert_eq!(history[0]["status"], "superseded");
    assert_eq!(history[0]["images"], serde_json::json!(["web:1"]));
    assert_eq!(history[1]["status"], "deployed");
    assert_eq!(history[1]["chart"], "web");
    assert_eq!(history[1]["chart_version"], "0.1.0");
    let rollback = result(&run, "helm_rollback");
    assert_eq!(
        (
            rollback["from_revision"].as_i64(),
            rollback["to_revision"].as_i64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(rollback["status"], "deployed");
    assert_eq!(rollback["images"], serde_json::json!(["web:1"]));
    assert_eq!(image(c, &ns), "web:1");
    let journal = run.journal();
    let call = journal
        .iter()
        .find(|r| r["function"] == "helm_rollback")
        .unwrap();
    assert!(call["mutating"].as_bool().unwrap());

    let missing = self::run(c, &ns, r#"helm::history("nope");"#, &[]);
    missing.code(1).stderr_has("no Helm release 'nope'");
}

#[test]
fn histories_of_many_releases_match_each_release_history() {
    let c = cluster();
    let ns = c.namespace("helm-many");
    let home = two_revisions(c, &ns);
    let chart = chart(home.path());
    helm(
        c,
        home.path(),
        &ns,
        &[
            "install",
            "api",
            chart.to_str().unwrap(),
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    let run = run(
        c,
        &ns,
        r#"let all = helm::histories(["web", "api"]); helm::history("web"); helm::history("api"); print(all.keys().len());"#,
        &[],
    );
    run.success().stdout_has("2");
    let all = result(&run, "histories");
    let journal = run.journal();
    let singles: Vec<&Value> = journal
        .iter()
        .filter(|r| r["function"] == "history")
        .map(|r| &r["outcome"]["result"])
        .collect();
    assert_eq!(&all["web"], singles[0]);
    assert_eq!(&all["api"], singles[1]);
    assert_eq!(all["web"].as_array().unwrap().len(), 2);
    assert_eq!(all["api"][0]["images"], serde_json::json!(["web:1"]));

    let one = self::run(c, &ns, r#"helm::histories(["web", "nope"]);"#, &[]);
    one.code(1)
        .stderr_has("no Helm release 'nope' in namespace");
    let two = self::run(c, &ns, r#"helm::histories(["nope", "web", "gone"]);"#, &[]);
    two.code(1)
        .stderr_has("no Helm releases 'nope', 'gone' in namespace");
    let empty = self::run(c, &ns, r#"helm::histories([]);"#, &[]);
    empty.code(2).stderr_has("no releases given");
    let bad = self::run(c, &ns, r#"helm::histories(["web", "Not_A_Name"]);"#, &[]);
    bad.code(2).stderr_has("Not_A_Name");
}

#[test]
fn dry_run_shows_the_helm_command_and_runs_nothing() {
    let c = cluster();
    let ns = c.namespace("helm-dry");
    let _home = two_revisions(c, &ns);
    let run = run(
        c,
        &ns,
        r#"helm_rollback("web", 1, #{ timeout: 90 });"#,
        &["--dry-run"],
    );
    run.success().stderr_has("would send");
    let call = run
        .journal()
        .into_iter()
        .find(|r| r["function"] == "helm_rollback")
        .unwrap();
    let command: Vec<String> =
        serde_json::from_value(call["args"]["request"]["command"].clone()).unwrap();
    assert_eq!(&command[1..4], ["rollback", "web", "1"]);
    assert!(command.contains(&"--wait".to_string()), "{command:?}");
    assert!(
        command.windows(2).any(|w| w == ["--timeout", "90s"]),
        "{command:?}"
    );
    assert!(
        command
            .windows(2)
            .any(|w| w[0] == "--namespace" && w[1] == ns),
        "{command:?}"
    );
    assert_eq!(image(c, &ns), "web:2");
}

/// Rewrites the status of a stored revision, as a helm process killed mid-upgrade leaves it.
fn set_status(c: &Cluster, ns: &str, revision: i64, status: &str) {
    let name = format!("sh.helm.release.v1.web.v{revision}");
    let secret = c.json(&["-n", ns, "get", "secret", &name]);
    let stored = helm_release_with_status(secret["data"]["release"].as_str().unwrap(), status);
    let patch = serde_json::json!({"metadata": {"labels": {"status": status}}, "data": {"release": stored}});
    c.kubectl(&["-n", ns, "patch", "secret", &name, "-p", &patch.to_string()]);
}

#[test]
fn a_release_stuck_in_pending_is_recognised_with_what_to_do() {
    let c = cluster();
    let ns = c.namespace("helm-pending");
    let _home = two_revisions(c, &ns);
    set_status(c, &ns, 2, "pending-upgrade");
    let refused = run(c, &ns, r#"helm_rollback("web");"#, &[]);
    refused
        .code(1)
        .stderr_has("release web is stuck in pending-upgrade at revision 2")
        .stderr_has(r#"helm_rollback("web", 1, #{ allow_pending: true })"#);
    assert_eq!(image(c, &ns), "web:2");
    let forced = run(
        c,
        &ns,
        r#"helm_rollback("web", 1, #{ allow_pending: true });"#,
        &[],
    );
    forced.success();
    assert_eq!(image(c, &ns), "web:1");
    assert_eq!(result(&forced, "helm_rollback")["new_revision"], 3);
}

#[test]
fn a_failing_helm_says_what_helm_said() {
    let c = cluster();
    let ns = c.namespace("helm-fail");
    let _home = two_revisions(c, &ns);
    let run = Test::new()
        .platform(&c.platform(&ns))
        .script(r#"helm_rollback("web");"#)
        .env("ROLLBACK_HELM", "/nonexistent/helm")
        .run();
    run.code(1)
        .stderr_has("the helm binary '/nonexistent/helm' was not found");
}
