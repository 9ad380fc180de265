//! ConfigMaps and Secrets of a namespace saved to files and put back.
//!
//! A snapshot directory holds `configmaps/<name>.json` and `secrets/<name>.json` (the latter
//! 0600 in a 0700 directory). Secret values are registered for redaction as they are read and
//! never appear in a result, the journal or a dry-run plan.

use super::client::{Kube, Op};
use super::request;
use crate::host::HostError;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use serde::Serialize;
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Objects the cluster or Helm own: restoring them would fight their owner.
const SKIPPED_CONFIGMAPS: [&str; 1] = ["kube-root-ca.crt"];
const SKIPPED_SECRET_TYPES: [&str; 2] =
    ["kubernetes.io/service-account-token", "helm.sh/release.v1"];

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotResult {
    pub dir: String,
    pub namespace: String,
    /// `ConfigMap/<name>` and `Secret/<name>` for each object saved.
    pub saved: Vec<String>,
    /// Objects left out because the cluster or Helm manage them.
    pub skipped: Vec<String>,
}

fn keep_meta(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        ..Default::default()
    }
}

fn register_secret(secret: &Secret) {
    for value in secret.data.iter().flat_map(|d| d.values()) {
        if let Ok(text) = std::str::from_utf8(&value.0) {
            crate::redact::register(text);
        }
    }
}

pub async fn snapshot(kube: &Kube, dir: &Path) -> Result<SnapshotResult, HostError> {
    let configmaps = kube
        .call(
            Op::all("list", "configmaps"),
            kube.api::<ConfigMap>().list(&ListParams::default()),
        )
        .await?
        .items;
    let secrets = kube
        .call(
            Op::all("list", "secrets"),
            kube.api::<Secret>().list(&ListParams::default()),
        )
        .await?
        .items;
    prepare_dir(dir)?;
    let mut result = SnapshotResult {
        dir: dir.display().to_string(),
        namespace: kube.namespace.clone(),
        saved: Vec::new(),
        skipped: Vec::new(),
    };
    for cm in configmaps {
        let name = cm.metadata.name.clone().unwrap_or_default();
        if SKIPPED_CONFIGMAPS.contains(&name.as_str()) {
            result.skipped.push(format!("ConfigMap/{name}"));
            continue;
        }
        let kept = ConfigMap {
            metadata: keep_meta(&cm.metadata),
            data: cm.data,
            binary_data: cm.binary_data,
            immutable: cm.immutable,
        };
        write_file(
            &dir.join("configmaps").join(format!("{name}.json")),
            &kept,
            0o644,
        )?;
        result.saved.push(format!("ConfigMap/{name}"));
    }
    for secret in secrets {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let kind = secret.type_.clone().unwrap_or_default();
        if SKIPPED_SECRET_TYPES.contains(&kind.as_str()) {
            result.skipped.push(format!("Secret/{name}"));
            continue;
        }
        register_secret(&secret);
        let kept = Secret {
            metadata: keep_meta(&secret.metadata),
            data: secret.data,
            type_: secret.type_,
            immutable: secret.immutable,
            string_data: None,
        };
        write_file(
            &dir.join("secrets").join(format!("{name}.json")),
            &kept,
            0o600,
        )?;
        result.saved.push(format!("Secret/{name}"));
    }
    Ok(result)
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> HostError {
    HostError::Failed(format!("cannot {what} {}: {e}", path.display()))
}

/// A snapshot goes into an empty or new directory, so no stale file from an older one mixes in.
fn prepare_dir(dir: &Path) -> Result<(), HostError> {
    if dir.exists() {
        let mut entries = fs::read_dir(dir).map_err(|e| io_error("read", dir, e))?;
        if entries.next().is_some() {
            return Err(HostError::Invalid(format!(
                "{} is not empty: snapshot into a new directory so files of an older snapshot cannot mix in",
                dir.display()
            )));
        }
    }
    fs::create_dir_all(dir.join("configmaps")).map_err(|e| io_error("create", dir, e))?;
    let secrets = dir.join("secrets");
    fs::create_dir_all(&secrets).map_err(|e| io_error("create", &secrets, e))?;
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700))
        .map_err(|e| io_error("protect", &secrets, e))?;
    Ok(())
}

fn write_file<T: Serialize>(path: &Path, value: &T, mode: u32) -> Result<(), HostError> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| HostError::Failed(format!("cannot encode {}: {e}", path.display())))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_error("create", path, e))?;
    file.write_all(&text)
        .map_err(|e| io_error("write", path, e))
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreResult {
    pub dir: String,
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

enum Object {
    ConfigMap(ConfigMap),
    Secret(Secret),
}

enum Action {
    Create,
    /// Replace the current object (its resourceVersion is the precondition) with the saved
    /// data, labels and annotations; everything else of it (owners, …) is kept.
    Replace,
}

struct Step {
    object: Object,
    action: Action,
}

pub struct RestorePlan {
    dir: String,
    steps: Vec<Step>,
    unchanged: Vec<String>,
    namespace: String,
}

fn read_dir_objects<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<T>, HostError> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("read", dir, e)),
    };
    files.retain(|p| p.extension().is_some_and(|x| x == "json"));
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = fs::read(path).map_err(|e| io_error("read", path, e))?;
            serde_json::from_slice(&text).map_err(|e| {
                HostError::Invalid(format!("{} is not a snapshot file: {e}", path.display()))
            })
        })
        .collect()
}

/// The current metadata with the saved labels and annotations; managedFields are left to the
/// server (omitted, it keeps them).
fn restored_meta(current: ObjectMeta, saved: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        labels: saved.labels.clone(),
        annotations: saved.annotations.clone(),
        managed_fields: None,
        ..current
    }
}

fn same_meta(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.labels.clone().unwrap_or_default() == b.labels.clone().unwrap_or_default()
        && a.annotations.clone().unwrap_or_default() == b.annotations.clone().unwrap_or_default()
}

pub async fn plan_restore(kube: &Kube, dir: &Path) -> Result<RestorePlan, HostError> {
    if !dir.join("configmaps").is_dir() && !dir.join("secrets").is_dir() {
        return Err(HostError::Invalid(format!(
            "{} is not a snapshot directory (no configmaps/ or secrets/ in it); give the directory k8s::snapshot_config wrote",
            dir.display()
        )));
    }
    let mut plan = RestorePlan {
        dir: dir.display().to_string(),
        steps: Vec::new(),
        unchanged: Vec::new(),
        namespace: kube.namespace.clone(),
    };
    for saved in read_dir_objects::<ConfigMap>(&dir.join("configmaps"))? {
        let name = saved.metadata.name.clone().unwrap_or_default();
        let api = kube.api::<ConfigMap>();
        let current = kube
            .call_opt(Op::new("get", "configmaps", &name), api.get(&name))
            .await?;
        let action = match current {
            None => Action::Create,
            Some(c)
                if c.data == saved.data
                    && c.binary_data == saved.binary_data
                    && same_meta(&c.metadata, &saved.metadata) =>
            {
                plan.unchanged.push(format!("ConfigMap/{name}"));
                continue;
            }
            Some(current) => {
                let mut merged = current;
                merged.metadata = restored_meta(merged.metadata, &saved.metadata);
                merged.data = saved.data;
                merged.binary_data = saved.binary_data;
                plan.steps.push(Step {
                    object: Object::ConfigMap(merged),
                    action: Action::Replace,
                });
                continue;
            }
        };
        plan.steps.push(Step {
            object: Object::ConfigMap(saved),
            action,
        });
    }
    for saved in read_dir_objects::<Secret>(&dir.join("secrets"))? {
        register_secret(&saved);
        let name = saved.metadata.name.clone().unwrap_or_default();
        let api = kube.api::<Secret>();
        let current = kube
            .call_opt(Op::new("get", "secrets", &name), api.get(&name))
            .await?;
        let action = match current {
            None => Action::Create,
            Some(c)
                if c.data == saved.data
                    && c.type_ == saved.type_
                    && same_meta(&c.metadata, &saved.metadata) =>
            {
                plan.unchanged.push(format!("Secret/{name}"));
                continue;
            }
            Some(current) => {
                let mut merged = current;
                merged.metadata = restored_meta(merged.metadata, &saved.metadata);
                merged.data = saved.data;
                merged.string_data = None;
                plan.steps.push(Step {
                    object: Object::Secret(merged),
                    action: Action::Replace,
                });
                continue;
            }
        };
        plan.steps.push(Step {
            object: Object::Secret(saved),
            action,
        });
    }
    Ok(plan)
}

impl Step {
    fn label(&self) -> String {
        match &self.object {
            Object::ConfigMap(c) => {
                format!("ConfigMap/{}", c.metadata.name.clone().unwrap_or_default())
            }
            Object::Secret(s) => format!("Secret/{}", s.metadata.name.clone().unwrap_or_default()),
        }
    }

    /// The request as the journal may show it: Secret values masked, keys kept.
    fn shown(&self, namespace: &str) -> Value {
        let (resource, name, body) = match &self.object {
            Object::ConfigMap(c) => (
                "configmaps",
                c.metadata.name.clone().unwrap_or_default(),
                serde_json::to_value(c).unwrap_or_default(),
            ),
            Object::Secret(s) => {
                let mut body = serde_json::to_value(s).unwrap_or_default();
                if let Some(data) = body.get_mut("data").and_then(Value::as_object_mut) {
                    for v in data.values_mut() {
                        *v = Value::String(crate::redact::MASK.into());
                    }
                }
                ("secrets", s.metadata.name.clone().unwrap_or_default(), body)
            }
        };
        let collection = format!("/api/v1/namespaces/{namespace}/{resource}");
        match &self.action {
            Action::Create => request::post(&collection, body),
            Action::Replace => request::put(&format!("{collection}/{name}"), body),
        }
    }
}

impl RestorePlan {
    pub fn request(&self) -> Value {
        Value::Array(
            self.steps
                .iter()
                .map(|s| s.shown(&self.namespace))
                .collect(),
        )
    }

    pub fn result(&self) -> RestoreResult {
        let mut result = RestoreResult {
            dir: self.dir.clone(),
            created: Vec::new(),
            updated: Vec::new(),
            unchanged: self.unchanged.clone(),
        };
        for step in &self.steps {
            match step.action {
                Action::Create => result.created.push(step.label()),
                Action::Replace => result.updated.push(step.label()),
            }
        }
        result
    }
}

pub async fn restore(kube: &Kube, plan: RestorePlan) -> Result<RestoreResult, HostError> {
    let result = plan.result();
    for step in plan.steps {
        let label = step.label();
        let conflict = || {
            format!(
                "{label} changed after it was read, so it was not restored (nor anything after it); run restore_config again"
            )
        };
        match (step.object, step.action) {
            (Object::ConfigMap(c), Action::Create) => {
                let name = c.metadata.name.clone().unwrap_or_default();
                kube.call(
                    Op::new("create", "configmaps", &name),
                    kube.api().create(&PostParams::default(), &c),
                )
                .await?;
            }
            (Object::ConfigMap(c), Action::Replace) => {
                let name = c.metadata.name.clone().unwrap_or_default();
                kube.call_cas(
                    Op::new("update", "configmaps", &name),
                    kube.api().replace(&name, &PostParams::default(), &c),
                    conflict,
                )
                .await?;
            }
            (Object::Secret(s), Action::Create) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                kube.call(
                    Op::new("create", "secrets", &name),
                    kube.api().create(&PostParams::default(), &s),
                )
                .await?;
            }
            (Object::Secret(s), Action::Replace) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                kube.call_cas(
                    Op::new("update", "secrets", &name),
                    kube.api().replace(&name, &PostParams::default(), &s),
                    conflict,
                )
                .await?;
            }
        }
    }
    Ok(result)
}
