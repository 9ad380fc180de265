//! A whole sandbox per test (`rollback sandbox up` in its own `ROLLBACK_HOME`): a kwok cluster
//! with the demo's Helm releases, PostgreSQL, Prometheus, Pushgateway and the notification
//! receivers, on loopback. `down` runs on drop, so a failing test leaves nothing running.
//!
//! Procedures' end-to-end tests drive `rollback --env sandbox …` through `rollback(...)` and
//! read the platform back with kubectl, helm, psql and the receivers' records.

use super::{Run, Test, http_get};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

pub const SHIPPED_PLATFORM: &str = include_str!("../../scripts/platform.toml");
pub const ENV: &str = "sandbox";
pub const NAMESPACE: &str = "tracktion";

/// The shipped services, sorted.
pub const SERVICES: [&str; 4] = [
    "analysis-service",
    "file-watcher",
    "notification-service",
    "tracklist-service",
];

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub platform: String,
    /// `export NAME='value'` pairs from `env.sh`, once `up` has run.
    exports: Vec<(String, String)>,
}

impl Sandbox {
    /// A sandbox home with `platform`, not started.
    pub fn new(platform: &str) -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
            platform: platform.into(),
            exports: Vec::new(),
        }
    }

    /// The shipped platform's sandbox, started.
    pub fn up() -> Sandbox {
        Sandbox::up_with(SHIPPED_PLATFORM)
    }

    /// A sandbox for `platform`, started; panics with `up`'s output if it fails.
    pub fn up_with(platform: &str) -> Sandbox {
        let mut sandbox = Sandbox::new(platform);
        sandbox.start();
        sandbox
    }

    /// Runs `sandbox up` and loads the variables it exports.
    pub fn start(&mut self) -> Run {
        let run = self.rollback(&["sandbox", "up"]);
        run.success();
        self.load_exports();
        run
    }

    fn load_exports(&mut self) {
        let text = std::fs::read_to_string(self.state_dir().join("env.sh")).unwrap();
        self.exports = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').replace(r"'\''", "'")))
            .collect();
    }

    /// The value `env.sh` exports as `name`.
    pub fn export(&self, name: &str) -> String {
        self.exports
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("env.sh exports no {name}"))
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.home().join("sandbox")
    }

    pub fn environment_file(&self) -> PathBuf {
        self.home().join("environments/sandbox.toml")
    }

    /// The `health_url` template (`{service}`, `{slot}`) of the environment `sandbox up` wrote.
    pub fn health_url_template(&self) -> String {
        let environment = std::fs::read_to_string(self.environment_file()).unwrap();
        environment
            .lines()
            .find_map(|l| l.strip_prefix("health_url = "))
            .expect("the sandbox environment has a health_url")
            .trim_matches('"')
            .to_string()
    }

    /// The health URL of `service`'s `slot`.
    pub fn health_url(&self, service: &str, slot: &str) -> String {
        self.health_url_template()
            .replace("{service}", service)
            .replace("{slot}", slot)
    }

    /// A `rollback` command with this sandbox's home, platform and exported variables.
    pub fn test(&self) -> Test {
        let mut test = Test::new()
            .platform(&self.platform)
            .env("ROLLBACK_HOME", &self.home().display().to_string());
        for (k, v) in &self.exports {
            test = test.env(k, v);
        }
        test
    }

    pub fn rollback(&self, args: &[&str]) -> Run {
        self.test().args(args).run()
    }

    /// `rollback --env sandbox --operator sre [global…] run <procedure> [params…]`.
    pub fn procedure(&self, global: &[&str], procedure: &str, params: &[&str]) -> Run {
        self.procedure_test(global, procedure, params).run()
    }

    /// The same command, not yet run: for more environment, or to start it and leave it running.
    pub fn procedure_test(&self, global: &[&str], procedure: &str, params: &[&str]) -> Test {
        let mut args = vec!["--env", ENV, "--operator", "sre"];
        args.extend_from_slice(global);
        args.extend(["run", procedure]);
        args.extend_from_slice(params);
        self.test().args(args)
    }

    /// `rollback sandbox inject …`, which must succeed.
    pub fn inject(&self, args: &[&str]) {
        let mut all = vec!["sandbox", "inject"];
        all.extend_from_slice(args);
        self.rollback(&all).success();
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.state_dir().join("sandbox.json")).unwrap(),
        )
        .unwrap()
    }

    pub fn kubeconfig(&self) -> String {
        self.state()["cluster"]["kubeconfig"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The directory holding the testbed's kubectl-compatible binaries (helm among them).
    pub fn bin(&self) -> PathBuf {
        PathBuf::from(self.state()["cluster"]["bin"].as_str().unwrap())
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["-n", NAMESPACE])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&args)).unwrap()
    }

    pub fn helm(&self, args: &[&str]) -> Vec<u8> {
        let helm_home = self.dir.path().join("helm");
        let out = Command::new(self.bin().join("helm"))
            .env("HELM_CACHE_HOME", &helm_home)
            .env("HELM_CONFIG_HOME", &helm_home)
            .env("HELM_DATA_HOME", &helm_home)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["-n", NAMESPACE])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn helm_history(&self, release: &str) -> Value {
        serde_json::from_slice(&self.helm(&["history", release, "-o", "json"])).unwrap()
    }

    /// `http://127.0.0.1:PORT` of a component recorded in `sandbox.json`.
    pub fn url(&self, component: &str) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.state()[component]["port"].as_u64().unwrap()
        )
    }

    /// The first sample of an instant Prometheus query, if the query has one.
    pub fn prometheus(&self, query: &str) -> Option<f64> {
        let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let (status, body) = http_get(&format!(
            "{}/api/v1/query?query={encoded}",
            self.url("prometheus")
        ));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// The share of a service's requests answered 5xx over the last few seconds.
    pub fn error_ratio(&self, service: &str) -> Option<f64> {
        self.prometheus(&format!(
            r#"sum(rate(http_requests_total{{service="{service}",status=~"5.."}}[5s])) / sum(rate(http_requests_total{{service="{service}"}}[5s]))"#
        ))
    }

    /// The slot (`blue`/`green`) a Service's selector points at.
    pub fn selector(&self, service: &str) -> String {
        self.kubectl_json(&["get", "service", service])["spec"]["selector"]["slot"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Each Deployment's image, replicas, version label and the annotations/labels this tool
    /// sets, and each Service's selected slot: the cluster state procedures change.
    pub fn cluster_state(&self) -> Value {
        let mut deployments = BTreeMap::new();
        for d in self.kubectl_json(&["get", "deployments"])["items"]
            .as_array()
            .unwrap()
        {
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            deployments.insert(
                name,
                json!({
                    "image": d["spec"]["template"]["spec"]["containers"][0]["image"],
                    "replicas": d["spec"]["replicas"],
                    "labels": d["metadata"]["labels"],
                    "template_annotations": d["spec"]["template"]["metadata"]["annotations"],
                    "generation": d["metadata"]["generation"],
                }),
            );
        }
        let mut services = BTreeMap::new();
        for s in self.kubectl_json(&["get", "services"])["items"]
            .as_array()
            .unwrap()
        {
            services.insert(
                s["metadata"]["name"].as_str().unwrap().to_string(),
                s["spec"]["selector"].clone(),
            );
        }
        let mut config = BTreeMap::new();
        for kind in ["configmaps", "secrets"] {
            for item in self.kubectl_json(&["get", kind])["items"]
                .as_array()
                .unwrap()
            {
                let name = item["metadata"]["name"].as_str().unwrap();
                // Helm's release records change on every rollback and are compared through
                // `releases` below.
                if name.starts_with("sh.helm.release.") || name == "kube-root-ca.crt" {
                    continue;
                }
                config.insert(format!("{kind}/{name}"), item["data"].clone());
            }
        }
        let releases: BTreeMap<String, Value> = self
            .platform_services()
            .iter()
            .map(|s| {
                let release = format!("tracktion-{s}");
                let history = self.helm_history(&release);
                (release, history)
            })
            .collect();
        json!({
            "deployments": deployments,
            "services": services,
            "config": config,
            "releases": releases,
        })
    }

    /// The services the platform of this sandbox defines, sorted.
    pub fn platform_services(&self) -> Vec<String> {
        let doc: toml::Table = self.platform.parse().unwrap();
        doc["services"]
            .as_table()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// psql against the sandbox's `tracktion` database: unaligned tuples, one row per line.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_url(&self.export("ROLLBACK_SANDBOX_DATABASE_URL"), sql)
    }

    /// psql against another database of the sandbox's server.
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        let url = self.export("ROLLBACK_SANDBOX_DATABASE_URL");
        let mut url = url::Url::parse(&url).unwrap();
        url.set_path(&format!("/{database}"));
        self.psql_url(url.as_str(), sql)
    }

    fn psql_url(&self, url: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-XqtA", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    }

    /// Databases, the schema version and an md5 of every public table's rows: equal values
    /// mean equal data.
    pub fn database_state(&self) -> Value {
        let databases = self.psql_in(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
        );
        let tables =
            self.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1");
        let checksums: BTreeMap<String, String> = tables
            .lines()
            .map(|t| {
                let sum = self.psql(&format!(
                    "SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) FROM \"{t}\" r"
                ));
                (t.to_string(), sum)
            })
            .collect();
        json!({
            "databases": databases.lines().collect::<Vec<_>>(),
            "tables": checksums,
        })
    }

    /// Every delivery the sandbox's `receiver` ("slack" or "pagerduty") recorded, in order:
    /// `{time, path, status, reply, body}`.
    pub fn notifications(&self, receiver: &str) -> Vec<Value> {
        let path = self
            .state_dir()
            .join("notifications")
            .join(format!("{receiver}.jsonl"));
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Pids of every process of this sandbox: the recorded ones and the cluster's components.
    pub fn pids(&self) -> Vec<u32> {
        let state = self.state();
        let mut pids: Vec<u32> = ["server", "prometheus", "pushgateway", "database"]
            .iter()
            .filter_map(|c| state[c]["pid"].as_u64())
            .map(|p| p as u32)
            .collect();
        let pid_dir = self
            .state_dir()
            .join("cluster/clusters/rollback-sandbox/pids");
        for entry in std::fs::read_dir(pid_dir).unwrap().flatten() {
            pids.push(
                std::fs::read_to_string(entry.path())
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap(),
            );
        }
        pids.sort_unstable();
        pids
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.state_dir().join("sandbox.json").exists() {
            let _ = self.rollback(&["sandbox", "down"]);
        }
    }
}
