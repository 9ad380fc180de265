//! Helm releases: history read natively from Helm's release Secrets, rollback through the helm
//! binary (`ROLLBACK_HELM`, else `helm` on PATH) with `--wait`.

use super::k8s::client::{self, Kube, Op};
use super::k8s::names;
use super::{Effect, FnDoc, HostError, Registrar, options};
use crate::console;
use crate::platform::Environment;
use crate::session::Session;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use rhai::{Array, Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

const HISTORY: FnDoc = FnDoc {
    module: Some("helm"),
    name: "history",
    signature: "(release: string) -> array of #{revision, status, chart, chart_version, app_version, updated, description, images, changes, annotations}",
    summary: "Reads a Helm release's revisions from its release Secrets, oldest first, without the helm binary.",
    example: r#"let h = helm::history("tracktion-analysis-service"); log("current: " + h[h.len() - 1].chart_version);"#,
    effect: Effect::Read,
};

const HISTORIES: FnDoc = FnDoc {
    module: Some("helm"),
    name: "histories",
    signature: "(releases: array) -> #{release: array of revisions as helm::history returns them}",
    summary: "Reads many Helm releases' revisions from one list of their release Secrets, so the time does not grow with the platform; throws naming every release that has none.",
    example: r#"let all = helm::histories(["tracktion-analysis-service", "tracktion-file-watcher"]); for r in all.keys() { log(`${r}: ${all[r].len()} revisions`); }"#,
    effect: Effect::Read,
};

const HELM_ROLLBACK: FnDoc = FnDoc {
    module: None,
    name: "helm_rollback",
    signature: "(release: string, revision?: int, opts?: #{timeout, wait, force, cleanup_on_fail, no_hooks, allow_pending}) -> #{release, from_revision, to_revision, new_revision, status, images, took_ms}",
    summary: "Rolls a Helm release back to the previous or given revision with helm rollback --wait, refusing a release stuck in pending-* unless allow_pending is set.",
    example: r#"let r = helm_rollback("tracktion-analysis-service"); log("now at revision " + r.new_revision);"#,
    effect: Effect::Mutate,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollbackOptions {
    /// Seconds helm waits for the rolled-back resources to be ready.
    #[serde(deserialize_with = "options::number")]
    pub timeout: f64,
    pub wait: bool,
    pub force: bool,
    pub cleanup_on_fail: bool,
    pub no_hooks: bool,
    /// Roll back over a revision left in pending-install/upgrade/rollback.
    pub allow_pending: bool,
}

impl Default for RollbackOptions {
    fn default() -> Self {
        RollbackOptions {
            timeout: 300.0,
            wait: true,
            force: false,
            cleanup_on_fail: false,
            no_hooks: false,
            allow_pending: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Revision {
    pub revision: i64,
    pub status: String,
    pub chart: String,
    pub chart_version: String,
    pub app_version: String,
    pub updated: String,
    pub description: String,
    /// The `image:` values of the rendered manifest.
    pub images: Vec<String>,
    /// What this chart version changes, from its `artifacthub.io/changes` annotation.
    pub changes: Vec<String>,
    /// The chart's annotations (Chart.yaml), e.g. the schema version a release expects.
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackResult {
    pub release: String,
    pub from_revision: i64,
    pub to_revision: i64,
    /// The revision the rollback created (Helm records a rollback as a new revision).
    pub new_revision: i64,
    pub status: String,
    pub images: Vec<String>,
    pub took_ms: u64,
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&HISTORY, move |release: &str| history(&s, release));
    let s = session.clone();
    r.func(&HISTORIES, move |releases: Array| histories(&s, releases));
    let s = session.clone();
    r.func(&HELM_ROLLBACK, move |release: &str| {
        rollback(&s, release, 0, Map::new())
    });
    let s = session.clone();
    r.func(&HELM_ROLLBACK, move |release: &str, revision: i64| {
        rollback(&s, release, revision, Map::new())
    });
    let s = session.clone();
    r.func(
        &HELM_ROLLBACK,
        move |release: &str, revision: i64, opts: Map| rollback(&s, release, revision, opts),
    );
}

fn check_release(release: &str) -> Result<(), HostError> {
    names::object("Helm release", release)?;
    if release.len() > 53 {
        return Err(HostError::Invalid(format!(
            "'{release}' is not a valid Helm release name: at most 53 characters"
        )));
    }
    Ok(())
}

fn history(s: &Arc<Session>, release: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = HISTORY.name;
    check_release(release).map_err(|e| e.into_rhai(f))?;
    let release = release.to_string();
    let session = s.clone();
    s.read(f, json!({"release": release}), async move {
        let kube = client::connect(&session).await?;
        read_history(&kube, &release).await
    })
}

fn histories(s: &Arc<Session>, releases: Array) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = HISTORIES.name;
    let names = (|| -> Result<Vec<String>, HostError> {
        if releases.is_empty() {
            return Err(HostError::Invalid(
                "no releases given: pass at least one Helm release name".into(),
            ));
        }
        let names = options::strings(releases, "Helm release")?;
        for release in &names {
            check_release(release)?;
        }
        Ok(names)
    })()
    .map_err(|e| e.into_rhai(f))?;
    let session = s.clone();
    s.read(f, json!({"releases": names}), async move {
        let kube = client::connect(&session).await?;
        read_histories(&kube, &names).await
    })
}

/// Helm 3 stores revision N of release R in Secret `sh.helm.release.v1.R.vN`, labelled
/// `owner=helm,name=R`; its `release` key is base64 of gzipped JSON.
pub async fn read_history(kube: &Kube, release: &str) -> Result<Vec<Revision>, HostError> {
    let mut all = read_histories(kube, &[release.to_string()]).await?;
    Ok(all.remove(release).unwrap_or_default())
}

/// The revisions of every release in `releases`, oldest first, from one list of Secrets.
pub async fn read_histories(
    kube: &Kube,
    releases: &[String],
) -> Result<BTreeMap<String, Vec<Revision>>, HostError> {
    let api = kube.api::<Secret>();
    let selector = match releases {
        [one] => format!("owner=helm,name={one}"),
        many => format!("owner=helm,name in ({})", many.join(",")),
    };
    let list = kube
        .call(
            Op::all("list", "secrets"),
            api.list(&ListParams::default().labels(&selector)),
        )
        .await?;
    let mut found: BTreeMap<String, Vec<Revision>> = BTreeMap::new();
    for secret in list.items {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let release = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("name"))
            .cloned()
            .unwrap_or_default();
        let Some(data) = secret.data.as_ref().and_then(|d| d.get("release")) else {
            continue;
        };
        let decoded = decode_release(&data.0).map_err(|e| {
            HostError::Failed(format!("cannot read the Helm release Secret {name}: {e}"))
        })?;
        found
            .entry(release)
            .or_default()
            .push(revision_of(&decoded));
    }
    let missing: Vec<&String> = releases
        .iter()
        .filter(|r| !found.contains_key(*r))
        .collect();
    match missing.as_slice() {
        [] => {}
        [release] => {
            return Err(HostError::Failed(format!(
                "no Helm release '{release}' in namespace {} (no Secret labelled owner=helm,name={release}); check the release name with `helm list -n {}`",
                kube.namespace, kube.namespace
            )));
        }
        many => {
            let quoted: Vec<String> = many.iter().map(|r| format!("'{r}'")).collect();
            return Err(HostError::Failed(format!(
                "no Helm releases {} in namespace {} (no Secret labelled owner=helm with those names); check the release names with `helm list -n {}`",
                quoted.join(", "),
                kube.namespace,
                kube.namespace
            )));
        }
    }
    // The label selector returns only these releases, so `found` holds nothing else.
    for revisions in found.values_mut() {
        revisions.sort_by_key(|r| r.revision);
    }
    Ok(found)
}

pub fn decode_release(raw: &[u8]) -> Result<Value, String> {
    let text: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|e| format!("not base64: {e}"))?;
    let json = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("not gzip: {e}"))?;
        out
    } else {
        bytes
    };
    serde_json::from_slice(&json).map_err(|e| format!("not a release: {e}"))
}

pub fn revision_of(release: &Value) -> Revision {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let info = &release["info"];
    let chart = &release["chart"]["metadata"];
    Revision {
        revision: release["version"].as_i64().unwrap_or(0),
        status: text(&info["status"]),
        chart: text(&chart["name"]),
        chart_version: text(&chart["version"]),
        app_version: text(&chart["appVersion"]),
        updated: text(&info["last_deployed"]),
        description: text(&info["description"]),
        images: images_of(release["manifest"].as_str().unwrap_or_default()),
        changes: super::changelog::parse_changes(
            chart["annotations"][super::changelog::CHANGES_ANNOTATION]
                .as_str()
                .unwrap_or_default(),
        ),
        annotations: chart["annotations"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn images_of(manifest: &str) -> Vec<String> {
    let mut images: Vec<String> = manifest
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().trim_start_matches("- ").trim_start();
            rest.strip_prefix("image:")
        })
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|v| !v.is_empty())
        .collect();
    images.dedup();
    images
}

pub struct RollbackPlan {
    release: String,
    command: Vec<String>,
    result: RollbackResult,
    started: Instant,
}

/// Picks the target revision the way `helm rollback` does (the one before the last when none
/// is given) and refuses a release whose last revision is still pending.
pub fn choose(
    release: &str,
    history: &[Revision],
    revision: i64,
    allow_pending: bool,
) -> Result<(i64, i64), HostError> {
    let last = history.last().expect("history is never empty");
    if last.status.starts_with("pending-") && !allow_pending {
        let advice = if last.status == "pending-install" && history.len() == 1 {
            format!(
                "there is no earlier revision to go back to: if no helm process works on it any more, uninstall it (helm uninstall {release}) and install again"
            )
        } else {
            format!(
                "if no helm process works on it any more, roll back over it with helm_rollback(\"{release}\", {}, #{{ allow_pending: true }})",
                if revision > 0 {
                    revision
                } else {
                    last.revision - 1
                }
            )
        };
        return Err(HostError::Failed(format!(
            "release {release} is stuck in {} at revision {} (since {}): a helm operation is still running on it or died half-way; {advice}",
            last.status, last.revision, last.updated
        )));
    }
    let target = if revision > 0 {
        revision
    } else {
        last.revision - 1
    };
    if !history.iter().any(|r| r.revision == target) {
        let known: Vec<String> = history.iter().map(|r| r.revision.to_string()).collect();
        return Err(HostError::Failed(format!(
            "release {release} has no revision {target} to roll back to; its revisions are {}",
            known.join(", ")
        )));
    }
    Ok((last.revision, target))
}

fn helm_binary() -> String {
    std::env::var("ROLLBACK_HELM")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "helm".into())
}

fn rollback(
    s: &Arc<Session>,
    release: &str,
    revision: i64,
    opts: Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = HELM_ROLLBACK.name;
    check_release(release).map_err(|e| e.into_rhai(f))?;
    let o: RollbackOptions = options::parse(f, opts).map_err(|e| e.into_rhai(f))?;
    if revision < 0 {
        return Err(HostError::Invalid(format!(
            "revision must be 1 or more (or omitted for the previous one), got {revision}"
        ))
        .into_rhai(f));
    }
    if o.timeout <= 0.0 {
        return Err(HostError::Invalid("timeout must be more than 0 seconds".into()).into_rhai(f));
    }
    let args = json!({"release": release, "revision": revision, "opts": o});
    let env = s.env_config().clone();
    let name = release.to_string();
    super::k8s::mutation(
        s,
        f,
        args,
        move |kube| async move { plan_rollback(&kube, &env, &name, revision, &o).await },
        |plan| (json!({"command": plan.command}), plan.result.clone()),
        run_rollback,
    )
}

async fn plan_rollback(
    kube: &Kube,
    env: &Environment,
    release: &str,
    revision: i64,
    o: &RollbackOptions,
) -> Result<RollbackPlan, HostError> {
    let started = Instant::now();
    let history = read_history(kube, release).await?;
    let (from, to) = choose(release, &history, revision, o.allow_pending)?;
    let images = history
        .iter()
        .find(|r| r.revision == to)
        .map(|r| r.images.clone())
        .unwrap_or_default();
    let mut command = vec![
        helm_binary(),
        "rollback".into(),
        release.to_string(),
        to.to_string(),
        "--namespace".into(),
        kube.namespace.clone(),
        "--timeout".into(),
        format!("{}s", o.timeout.ceil() as u64),
    ];
    if let client::Source::Platform(path) = client::source(env) {
        command.extend(["--kubeconfig".into(), path.display().to_string()]);
    }
    if let Some(context) = &env.kube_context {
        command.extend(["--kube-context".into(), context.clone()]);
    }
    for (on, flag) in [
        (o.wait, "--wait"),
        (o.force, "--force"),
        (o.cleanup_on_fail, "--cleanup-on-fail"),
        (o.no_hooks, "--no-hooks"),
    ] {
        if on {
            command.push(flag.into());
        }
    }
    Ok(RollbackPlan {
        release: release.to_string(),
        command,
        result: RollbackResult {
            release: release.to_string(),
            from_revision: from,
            to_revision: to,
            new_revision: from + 1,
            status: "deployed".into(),
            images,
            took_ms: 0,
        },
        started,
    })
}

/// How much of helm's output an error message quotes.
const OUTPUT_TAIL_LINES: usize = 8;

async fn run_rollback(kube: Kube, plan: RollbackPlan) -> Result<RollbackResult, HostError> {
    let (program, rest) = plan.command.split_first().expect("a command");
    console::info(&format!("running {}", plan.command.join(" ")));
    let output = tokio::process::Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            HostError::Failed(if e.kind() == std::io::ErrorKind::NotFound {
                format!("the helm binary '{program}' was not found: install Helm 3, put it on PATH or set ROLLBACK_HELM to its path")
            } else {
                format!("cannot run {program}: {e}")
            })
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let text = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(OUTPUT_TAIL_LINES)..].join(" | ");
        return Err(HostError::Failed(format!(
            "helm rollback of {} to revision {} failed ({}): {tail}; see helm::history(\"{}\") for the state it left",
            plan.release, plan.result.to_revision, output.status, plan.release
        )));
    }
    let history = read_history(&kube, &plan.release).await?;
    let last = history.last().expect("history is never empty");
    let mut result = plan.result;
    result.new_revision = last.revision;
    result.status = last.status.clone();
    result.images = last.images.clone();
    result.took_ms = plan.started.elapsed().as_millis() as u64;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn encoded(release: &Value) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(release.to_string().as_bytes()).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(gz.finish().unwrap())
            .into_bytes()
    }

    fn rev(n: i64, status: &str) -> Revision {
        Revision {
            revision: n,
            status: status.into(),
            chart: "web".into(),
            chart_version: "1.0.0".into(),
            app_version: String::new(),
            updated: String::new(),
            description: String::new(),
            images: Vec::new(),
            changes: Vec::new(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn decodes_helm_release_secrets() {
        let release = json!({
            "name": "web", "version": 3, "namespace": "t",
            "info": {"status": "deployed", "last_deployed": "2026-11-25T17:00:00Z", "description": "Upgrade complete"},
            "chart": {"metadata": {"name": "web", "version": "1.2.0", "appVersion": "2.0"}},
            "manifest": "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: \"registry.local/web:2.0\"\n",
        });
        let r = revision_of(&decode_release(&encoded(&release)).unwrap());
        assert_eq!(
            (r.revision, r.status.as_str(), r.chart_version.as_str()),
            (3, "deployed", "1.2.0")
        );
        assert_eq!(r.images, vec!["registry.local/web:2.0"]);
        assert!(decode_release(b"not base64!").is_err());
    }

    #[test]
    fn rollback_target_and_pending_releases() {
        let h = vec![
            rev(1, "superseded"),
            rev(2, "superseded"),
            rev(3, "deployed"),
        ];
        assert_eq!(choose("web", &h, 0, false).unwrap(), (3, 2));
        assert_eq!(choose("web", &h, 1, false).unwrap(), (3, 1));
        assert!(
            choose("web", &h, 7, false)
                .unwrap_err()
                .to_string()
                .contains("revisions are 1, 2, 3")
        );
        let pending = vec![
            rev(1, "superseded"),
            rev(2, "deployed"),
            rev(3, "pending-upgrade"),
        ];
        let e = choose("web", &pending, 0, false).unwrap_err().to_string();
        assert!(e.contains("stuck in pending-upgrade at revision 3"), "{e}");
        assert!(e.contains("allow_pending: true"), "{e}");
        assert_eq!(choose("web", &pending, 0, true).unwrap(), (3, 2));
        let e = choose("web", &[rev(1, "pending-install")], 0, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("helm uninstall web"), "{e}");
    }
}
