//! A real Kubernetes for the tests: one kwok cluster (real etcd, API server, controllers and
//! scheduler, fake nodes) per test binary, started by `testbed/cluster.sh`, or the one named
//! by `ROLLBACK_TEST_KUBECONFIG`; each test gets a namespace of its own so tests run in
//! parallel. The cluster is torn down when the test process exits.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub kubeconfig: PathBuf,
    /// The testbed binaries (helm, kwokctl…), when known.
    pub bin: Option<PathBuf>,
    /// The cluster's name and work directory when this process started it.
    pub started: Option<(String, PathBuf)>,
}

const BINARIES: [&str; 7] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kwokctl",
    "helm",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$TESTBED_BIN`, else the newest complete `<cache>/testbed/*/bin`.
pub fn testbed_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TESTBED_BIN") {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var("ROLLBACK_CACHE").unwrap_or_else(|_| "/var/cache/rollback".into());
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> =
        std::fs::read_dir(Path::new(&cache).join("testbed"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|bin| BINARIES.iter().all(|b| bin.join(b).is_file()))
            .filter_map(|bin| Some((bin.metadata().ok()?.modified().ok()?, bin)))
            .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin)
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The cluster of this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let bin = testbed_bin();
        if let Some(kubeconfig) = std::env::var_os("ROLLBACK_TEST_KUBECONFIG") {
            return Cluster {
                kubeconfig: PathBuf::from(kubeconfig),
                bin,
                started: None,
            };
        }
        let Some(bin) = bin else {
            panic!(
                "the Kubernetes testbed binaries are missing (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, kwokctl, helm): \
                 build them once with `testbed/provision.sh` (15-40 minutes from Go modules), or set TESTBED_BIN to their directory, \
                 or ROLLBACK_TEST_KUBECONFIG to a running cluster"
            );
        };
        start(bin, "rbt")
    })
}

/// A cluster of its own for a test that stops it; panics when the binaries are missing.
pub fn start_private(tag: &str) -> Cluster {
    let bin = testbed_bin()
        .expect("the Kubernetes testbed binaries are missing: run testbed/provision.sh");
    start(bin, tag)
}

fn start(bin: PathBuf, tag: &str) -> Cluster {
    let name = format!("{tag}-{}", std::process::id());
    let workdir = std::env::temp_dir().join(format!("rollback-kwok-{name}"));
    let _ = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir).unwrap();
    let script = repo().join("testbed/cluster.sh");
    // Tear the cluster down when this test process exits, however it exits: a detached
    // watcher waits for this pid to disappear.
    let watcher = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {script} down {name} {dir} >{dir}/down.log 2>&1 && rm -rf {dir}",
        pid = std::process::id(),
        script = script.display(),
        dir = workdir.display(),
    );
    // Never waited for: it must outlive this process to tear the cluster down.
    #[allow(clippy::zombie_processes)]
    Command::new("setsid")
        .args(["sh", "-c", &watcher])
        .env("TESTBED_BIN", &bin)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cluster watcher (setsid)");
    let log = workdir.join("up.log");
    let output = Command::new(&script)
        .args(["up", &name])
        .arg(&workdir)
        .env("TESTBED_BIN", &bin)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .output()
        .expect("run testbed/cluster.sh");
    if !output.status.success() {
        panic!(
            "testbed/cluster.sh up failed ({}):\n{}",
            output.status,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let kubeconfig = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    Cluster {
        kubeconfig: PathBuf::from(kubeconfig),
        bin: Some(bin),
        started: Some((name, workdir)),
    }
}

static NAMESPACES: AtomicUsize = AtomicUsize::new(0);

impl Cluster {
    /// Stops the components of a cluster this process started (an outage: the kubeconfig and
    /// certificates stay; the exit watcher still deletes it all).
    pub fn stop(&self) {
        let (name, dir) = self
            .started
            .as_ref()
            .expect("only a cluster started here can be stopped");
        let out = Command::new(self.bin.as_ref().unwrap().join("kwokctl"))
            .args(["stop", "cluster", "--name", name])
            .env("KWOK_WORKDIR", dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kwokctl stop cluster: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn helm(&self) -> PathBuf {
        std::env::var_os("ROLLBACK_HELM")
            .map(PathBuf::from)
            .or_else(|| self.bin.as_ref().map(|b| b.join("helm")))
            .expect("no helm: set ROLLBACK_HELM or TESTBED_BIN")
    }

    pub fn kubectl_command(&self) -> Command {
        let mut cmd =
            Command::new(std::env::var("TESTBED_KUBECTL").unwrap_or_else(|_| "kubectl".into()));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Runs kubectl; returns its output whatever the exit status.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.kubectl_command();
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and returns its stdout; panics with its stderr when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args, None);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl -o json")
    }

    /// Creates objects from YAML or JSON in a namespace.
    pub fn apply(&self, ns: &str, manifest: &str) {
        let out = self.kubectl_output(&["-n", ns, "apply", "-f", "-"], Some(manifest));
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{manifest}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new namespace with its default ServiceAccount (pods are refused until it exists).
    pub fn namespace(&self, prefix: &str) -> String {
        let n = NAMESPACES.fetch_add(1, Ordering::SeqCst);
        let ns = format!("{prefix}-{}-{n}", std::process::id());
        self.kubectl(&["create", "namespace", &ns]);
        self.wait_until(
            Duration::from_secs(60),
            "the default ServiceAccount",
            || {
                self.kubectl_output(&["-n", &ns, "get", "serviceaccount", "default"], None)
                    .status
                    .success()
            },
        );
        ns
    }

    /// Test setup only: polls a condition (tests assert outcomes, never timings).
    pub fn wait_until(&self, limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn rollout_status(&self, ns: &str, deployment: &str) {
        self.kubectl(&[
            "-n",
            ns,
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            "--timeout=120s",
        ]);
    }

    /// A platform definition with one environment, `test`, on this cluster and namespace.
    pub fn platform(&self, ns: &str) -> String {
        format!(
            "[environments.test]\nnamespace = \"{ns}\"\nkubeconfig = \"{}\"\n",
            self.kubeconfig.display()
        )
    }
}

/// A Deployment whose pods kwok runs; `extra_pod_spec` is merged into the pod spec as JSON
/// fields (e.g. `"nodeSelector": {"missing": "x"}` to keep its pods Pending).
pub fn deployment(
    name: &str,
    labels: &[(&str, &str)],
    image: &str,
    replicas: i32,
    extra_pod_spec: &str,
) -> String {
    let labels_json = labels
        .iter()
        .map(|(k, v)| format!("\"{k}\": \"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // The version label is on pods and the Deployment but not in the selector, so a new
    // version is a rollout, not a new Deployment.
    let selector_json = labels
        .iter()
        .filter(|(k, _)| *k != "version")
        .map(|(k, v)| format!("\"{k}\": \"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let extra = if extra_pod_spec.is_empty() {
        String::new()
    } else {
        format!(", {extra_pod_spec}")
    };
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {{"name": "{name}", "labels": {{{labels_json}}}}},
  "spec": {{"replicas": {replicas}, "progressDeadlineSeconds": 600,
    "selector": {{"matchLabels": {{{selector_json}}}}},
    "template": {{"metadata": {{"labels": {{{labels_json}}}}},
      "spec": {{"containers": [{{"name": "app", "image": "{image}"}}],
        "tolerations": [{{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}}]{extra}}}}}}}}}"#
    )
}

/// A ClusterIP Service selecting `selector`.
pub fn service(name: &str, selector: &[(&str, &str)]) -> String {
    let selector = selector
        .iter()
        .map(|(k, v)| format!("\"{k}\": \"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}"}},
  "spec": {{"type": "ClusterIP", "selector": {{{selector}}}, "ports": [{{"port": 80, "targetPort": 8080}}]}}}}"#
    )
}
