//! The Tracktion demo: one Helm release per service from the chart embedded below, installed
//! with a history to roll back to, plus the umbrella `tracktion` Service.
//!
//! Revision 1 deploys v1.2.3 to blue and makes blue active (green keeps the v1.2.2 before it);
//! revision 2 deploys v1.2.4 to green and makes green active. So the sandbox starts where the
//! runbook does: the new version live on green, the previous one on standby on blue, and
//! `helm rollback` has a revision to return to.

use super::state::{Cluster, Paths, Service};
use crate::error::{Error, Result, io_context};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHART_NAME: &str = "tracktion-service";

/// The chart annotation naming the schema version a release expects, which tells `impact`
/// which migrations a rollback to that release leaves behind.
pub const SCHEMA_ANNOTATION: &str = "tracktion.io/schema-version";

/// The chart's files (Chart.yaml is written per revision, see `chart_yaml`).
const FILES: [(&str, &str); 5] = [
    ("values.yaml", include_str!("chart/values.yaml")),
    (
        "templates/_helpers.tpl",
        include_str!("chart/templates/_helpers.tpl"),
    ),
    (
        "templates/deployments.yaml",
        include_str!("chart/templates/deployments.yaml"),
    ),
    (
        "templates/service.yaml",
        include_str!("chart/templates/service.yaml"),
    ),
    (
        "templates/config.yaml",
        include_str!("chart/templates/config.yaml"),
    ),
];

pub struct Revision {
    pub app_version: &'static str,
    pub active: &'static str,
    pub blue: &'static str,
    pub green: &'static str,
    pub description: &'static str,
    /// The database schema version (highest migration) this release runs against.
    pub schema_version: u32,
    /// Release notes, as the chart's `artifacthub.io/changes` annotation lists them.
    pub changes: &'static [(&'static str, &'static str)],
}

pub const HISTORY: [Revision; 2] = [
    Revision {
        app_version: "1.2.3",
        active: "blue",
        blue: "v1.2.3",
        green: "v1.2.2",
        description: "deploy v1.2.3 to blue and switch traffic to blue",
        schema_version: 2,
        changes: &[(
            "fixed",
            "Notifications are retried when Slack rate-limits them",
        )],
    },
    Revision {
        app_version: "1.2.4",
        active: "green",
        blue: "v1.2.3",
        green: "v1.2.4",
        description: "deploy v1.2.4 to green and switch traffic to green",
        schema_version: 3,
        changes: &[
            ("added", "Cue-point detection in track analysis"),
            (
                "changed",
                "Tracklist matching tolerates misspelt artist names",
            ),
            (
                "fixed",
                "The file watcher missed files renamed on network shares",
            ),
        ],
    },
];

/// The slot that is live once `up` is done, and the version it runs.
pub fn live() -> &'static Revision {
    &HISTORY[HISTORY.len() - 1]
}

pub const NAMESPACE: &str = "tracktion";

/// How long `helm --wait` may take for one revision.
const HELM_TIMEOUT: Duration = Duration::from_secs(180);

fn chart_yaml(revision: &Revision) -> String {
    // The chart version follows the application's, as in-house charts usually do, so
    // `helm history` shows which version each revision deployed; its release notes travel in
    // the chart too, so the cluster knows what a rollback takes away.
    let app_version = revision.app_version;
    let changes: String = revision
        .changes
        .iter()
        .map(|(kind, description)| {
            format!("    - kind: {kind}\n      description: \"{description}\"\n")
        })
        .collect();
    format!(
        "apiVersion: v2\nname: {CHART_NAME}\ndescription: One Tracktion service deployed blue/green (rollback sandbox demo).\ntype: application\nversion: {app_version}\nappVersion: \"{app_version}\"\nannotations:\n  {SCHEMA_ANNOTATION}: \"{}\"\n  artifacthub.io/changes: |\n{changes}",
        revision.schema_version
    )
}

/// Writes the chart of `revision` under `dir` and returns its directory.
pub fn write_chart(dir: &Path, revision: &Revision) -> Result<PathBuf> {
    let chart = dir.join(format!("{CHART_NAME}-{}", revision.app_version));
    let files = std::iter::once(("Chart.yaml", chart_yaml(revision)))
        .chain(FILES.iter().map(|(name, text)| (*name, text.to_string())));
    for (name, text) in files {
        let path = chart.join(name);
        std::fs::create_dir_all(path.parent().expect("chart files are in a directory"))
            .map_err(|e| io_context(e, format!("cannot create {}", chart.display())))?;
        std::fs::write(&path, text)
            .map_err(|e| io_context(e, format!("cannot write {}", path.display())))?;
    }
    Ok(chart)
}

pub fn values(service: &Service, revision: &Revision) -> serde_json::Value {
    json!({
        "service": service.name,
        "activeSlot": revision.active,
        "slots": {
            "blue": {"version": revision.blue, "replicas": service.replicas},
            "green": {"version": revision.green, "replicas": service.replicas},
        },
    })
}

/// Helm, with its cache and configuration kept in the sandbox directory rather than `$HOME`.
pub fn helm(paths: &Paths, cluster: &Cluster) -> Command {
    let mut command = Command::new(cluster.bin.join("helm"));
    let home = paths.helm_home();
    command
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["--kube-context", &cluster.context, "--namespace", NAMESPACE]);
    command
}

/// Installs every service's release with its two revisions, the services side by side.
pub fn install(paths: &Paths, cluster: &Cluster, services: &[Service]) -> Result<()> {
    // Created once up front: four concurrent `helm --create-namespace` would race for it.
    kubectl_apply(cluster, &namespace(), "the tracktion namespace")?;
    kubectl_apply(cluster, &umbrella_service(), "the tracktion Service")?;
    let charts: Vec<PathBuf> = HISTORY
        .iter()
        .map(|r| write_chart(&paths.charts(), r))
        .collect::<Result<_>>()?;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = services
            .iter()
            .map(|service| {
                let charts = &charts;
                scope.spawn(move || install_service(paths, cluster, service, charts))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("install thread"))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let _ = std::fs::remove_dir_all(paths.charts());
    Ok(())
}

fn install_service(
    paths: &Paths,
    cluster: &Cluster,
    service: &Service,
    charts: &[PathBuf],
) -> Result<()> {
    for (revision, chart) in HISTORY.iter().zip(charts) {
        let values_file = paths.charts().join(format!(
            "{}-{}.values.json",
            service.name, revision.app_version
        ));
        std::fs::write(&values_file, values(service, revision).to_string())
            .map_err(|e| io_context(e, format!("cannot write {}", values_file.display())))?;
        let mut command = helm(paths, cluster);
        command
            .args(["upgrade", "--install", &service.release])
            .arg(chart)
            .arg("-f")
            .arg(&values_file)
            .args(["--timeout", &format!("{}s", HELM_TIMEOUT.as_secs())])
            .args(["--description", revision.description])
            .stdin(Stdio::null());
        // Only the live revision is waited for: it includes every Deployment of the earlier
        // one, so waiting once proves all of them ready and halves the install time.
        if std::ptr::eq(revision, live()) {
            command.arg("--wait");
        }
        let output = command
            .output()
            .map_err(|e| Error::failed(format!("cannot run helm: {e}")))?;
        if !output.status.success() {
            return Err(Error::failed(format!(
                "helm could not deploy {} of {} (release {}): {}",
                revision.app_version,
                service.name,
                service.release,
                String::from_utf8_lossy(&output.stderr).trim(),
            )));
        }
    }
    Ok(())
}

/// The platform's entry point, as in the runbook: one Service over every service's pods in
/// the active slot. It belongs to no release (four releases cannot own one object), so
/// `helm rollback` of a service leaves it alone; switching the whole platform patches it.
fn umbrella_service() -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "tracktion",
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/part-of": "tracktion",
                "app.kubernetes.io/managed-by": "rollback-sandbox",
            },
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/part-of": "tracktion", "slot": live().active},
            "ports": [{"name": "http", "port": 8000, "targetPort": "http"}],
        },
    })
    .to_string()
}

fn namespace() -> String {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}).to_string()
}

fn kubectl_apply(cluster: &Cluster, manifest: &str, what: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["--context", &cluster.context, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::failed(format!("cannot run kubectl: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(manifest.as_bytes())
        .map_err(|e| io_context(e, format!("cannot send {what} to kubectl")))?;
    let output = child
        .wait_with_output()
        .map_err(|e| io_context(e, "kubectl apply"))?;
    if !output.status.success() {
        return Err(Error::failed(format!(
            "kubectl could not create {what}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_revision_runs_the_new_version_on_green() {
        let service = Service {
            name: "file-watcher".into(),
            release: "tracktion-file-watcher".into(),
            replicas: 2,
        };
        let v = values(&service, live());
        assert_eq!(v["activeSlot"], "green");
        assert_eq!(v["slots"]["green"]["version"], "v1.2.4");
        assert_eq!(v["slots"]["blue"]["version"], "v1.2.3");
        assert_eq!(v["slots"]["blue"]["replicas"], 2);
        assert_eq!(HISTORY[0].active, "blue");
    }

    #[test]
    fn chart_is_written_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let chart = write_chart(dir.path(), &HISTORY[0]).unwrap();
        let meta = std::fs::read_to_string(chart.join("Chart.yaml")).unwrap();
        assert!(meta.contains("appVersion: \"1.2.3\""), "{meta}");
        assert!(
            meta.contains("tracktion.io/schema-version: \"2\""),
            "{meta}"
        );
        let notes = meta.split_once("artifacthub.io/changes: |\n").unwrap().1;
        assert_eq!(
            crate::host::changelog::parse_changes(notes),
            vec!["fixed: Notifications are retried when Slack rate-limits them"]
        );
        assert!(chart.join("templates/deployments.yaml").is_file());
    }
}
