//! Configuration kept as manifests (in git, typically): ConfigMaps parsed and validated from
//! YAML or JSON files, applied onto the namespace, and the namespace's required ConfigMaps and
//! Secrets checked for presence and syntax.
//!
//! Secrets are never applied from manifests: a Secret in a repository is either encrypted for
//! a controller or a leak, and `k8s::restore_config` puts Secrets back from a snapshot. Secret
//! values are registered for redaction the moment they are read and never returned.

use super::client::{Kube, Op};
use super::{Outcome, invalid, mutation, names, read, request};
use crate::host::{Effect, FnDoc, HostError, Registrar};
use crate::session::Session;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PostParams;
use rhai::{Array, Map};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const PARSE_CONFIG: FnDoc = super::doc(
    "parse_config",
    "(files: array of #{path, content}) -> #{ok, configmaps: array of #{name, data, labels, annotations, source}, secrets, ignored, problems}",
    "Parses YAML or JSON manifest files (as git::show_tree returns them) into ConfigMaps, checking names and that every .yaml, .yml and .json key parses; Secrets are listed by name only, never applied.",
    r#"let tree = git::show_tree("/srv/config-repo", "v1.2.3", "k8s/production"); let parsed = k8s::parse_config(tree.files); if !parsed.ok { throw parsed.problems; }"#,
    Effect::Read,
);
const APPLY_CONFIGMAPS: FnDoc = super::doc(
    "apply_configmaps",
    "(configmaps: array of #{name, data, labels?, annotations?}) -> #{created, updated, unchanged}",
    "Creates or replaces ConfigMaps with the given data (as k8s::parse_config returns them), keeping the labels and annotations their owners set and adding the given ones.",
    r#"let parsed = k8s::parse_config(git::show_tree("/srv/config-repo", "v1.2.3", "k8s").files); let r = k8s::apply_configmaps(parsed.configmaps); log("updated " + r.updated);"#,
    Effect::Mutate,
);
const CHECK_CONFIG: FnDoc = super::doc(
    "check_config",
    "(required: #{configmaps: array, secrets: array}) -> #{ok, problems, configmaps: array of #{name, keys}, secrets: array of #{name, keys}}",
    "Checks that the named ConfigMaps and Secrets exist, that their .yaml, .yml and .json keys parse and that Secret keys named like a URL hold one, without returning any Secret value.",
    r#"let c = k8s::check_config(#{ configmaps: ["app-config"], secrets: ["db-credentials"] }); if !c.ok { throw c.problems; }"#,
    Effect::Read,
);

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&PARSE_CONFIG, move |files: Array| parse_config(&s, files));
    let s = session.clone();
    r.func(&APPLY_CONFIGMAPS, move |list: Array| {
        apply_configmaps(&s, list)
    });
    let s = session.clone();
    r.func(&CHECK_CONFIG, move |required: Map| {
        check_config(&s, required)
    });
}

/// A ConfigMap as scripts see it and pass it back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigMapSpec {
    pub name: String,
    pub data: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The file it came from, for messages; not sent.
    pub source: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Parsed {
    pub ok: bool,
    pub configmaps: Vec<ConfigMapSpec>,
    /// `Secret/<name> (<file>)`: found, never applied.
    pub secrets: Vec<String>,
    /// Other kinds, and files that are not manifests.
    pub ignored: Vec<String>,
    pub problems: Vec<String>,
}

#[derive(Deserialize)]
struct FileArg {
    path: String,
    content: String,
}

fn parse_config(session: &Arc<Session>, files: Array) -> Outcome {
    let f = PARSE_CONFIG.name;
    let mut inputs = Vec::with_capacity(files.len());
    for file in files {
        let arg: FileArg = rhai::serde::from_dynamic(&file).map_err(|e| {
            invalid(
                f,
                HostError::Invalid(format!(
                    "each file must be a map with path and content (as git::show_tree returns): {e}"
                )),
            )
        })?;
        inputs.push(arg);
    }
    // File contents stay out of the journal: Secret manifests may be among them.
    let shown: Vec<Value> = inputs
        .iter()
        .map(|i| json!({"path": i.path, "bytes": i.content.len()}))
        .collect();
    let namespace = session.env_config().namespace.clone();
    session.read(f, json!({"files": shown}), async move {
        Ok(parse_files(&inputs, &namespace))
    })
}

fn is_structured(key: &str) -> bool {
    [".yaml", ".yml", ".json"].iter().any(|x| key.ends_with(x))
}

/// Why a value under `key` does not parse as its extension says, or `None`.
fn syntax_problem(key: &str, value: &str) -> Option<String> {
    if key.ends_with(".json") {
        serde_json::from_str::<Value>(value)
            .err()
            .map(|e| format!("line {} column {}", e.line(), e.column()))
    } else if is_structured(key) {
        serde_yaml::from_str::<serde_yaml::Value>(value)
            .err()
            .map(|e| match e.location() {
                Some(l) => format!("line {} column {}", l.line(), l.column()),
                None => "not valid YAML".into(),
            })
    } else {
        None
    }
}

fn parse_files(files: &[FileArg], namespace: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for file in files {
        if !is_structured(&file.path) {
            parsed
                .ignored
                .push(format!("{} (not a .yaml, .yml or .json file)", file.path));
            continue;
        }
        let documents: Result<Vec<Value>, String> = if file.path.ends_with(".json") {
            serde_json::from_str(&file.content)
                .map(|v| vec![v])
                .map_err(|e| format!("line {} column {}", e.line(), e.column()))
        } else {
            serde_yaml::Deserializer::from_str(&file.content)
                .map(|doc| {
                    Value::deserialize(doc).map_err(|e| match e.location() {
                        Some(l) => format!("line {} column {}", l.line(), l.column()),
                        None => e.to_string(),
                    })
                })
                .collect()
        };
        match documents {
            Ok(docs) => {
                for doc in docs {
                    add_document(&mut parsed, doc, &file.path, namespace);
                }
            }
            Err(at) => parsed
                .problems
                .push(format!("{}: not a valid manifest ({at})", file.path)),
        }
    }
    let mut seen = BTreeMap::new();
    for cm in &parsed.configmaps {
        if let Some(first) = seen.insert(cm.name.clone(), cm.source.clone()) {
            parsed.problems.push(format!(
                "ConfigMap/{} is defined twice ({first} and {})",
                cm.name, cm.source
            ));
        }
    }
    parsed.ok = parsed.problems.is_empty();
    parsed
}

fn add_document(parsed: &mut Parsed, doc: Value, path: &str, namespace: &str) {
    if doc.is_null() {
        return;
    }
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    if kind == "List" {
        for item in doc["items"].as_array().cloned().unwrap_or_default() {
            add_document(parsed, item, path, namespace);
        }
        return;
    }
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let label = format!("{kind}/{name} ({path})");
    match kind.as_str() {
        "ConfigMap" => {}
        "Secret" => {
            // Registered so that no later message can show them, then forgotten.
            for field in ["data", "stringData"] {
                if let Some(map) = doc[field].as_object() {
                    for v in map.values().filter_map(Value::as_str) {
                        crate::redact::register(v);
                    }
                }
            }
            parsed.secrets.push(label);
            return;
        }
        "" => {
            parsed
                .problems
                .push(format!("{path}: a document has no kind"));
            return;
        }
        _ => {
            parsed.ignored.push(label);
            return;
        }
    }
    if let Err(e) = names::object("ConfigMap", &name) {
        parsed.problems.push(format!("{path}: {e}"));
        return;
    }
    if let Some(ns) = doc["metadata"]["namespace"].as_str()
        && ns != namespace
    {
        parsed.problems.push(format!(
            "{label}: its namespace is {ns}, but this environment's is {namespace}"
        ));
        return;
    }
    if doc.get("binaryData").is_some_and(|b| !b.is_null()) {
        parsed.problems.push(format!(
            "{label}: binaryData is not supported; keep binary files out of configuration manifests"
        ));
        return;
    }
    let strings = |field: &Value, what: &str| -> Result<BTreeMap<String, String>, String> {
        match field {
            Value::Null => Ok(BTreeMap::new()),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(format!(
                        "{label}: {what} '{k}' is {other}, not a string (quote it in the manifest)"
                    )),
                })
                .collect(),
            _ => Err(format!("{label}: {what} is not a map")),
        }
    };
    let spec = (|| {
        Ok::<_, String>(ConfigMapSpec {
            data: strings(&doc["data"], "data key")?,
            labels: strings(&doc["metadata"]["labels"], "label")?,
            annotations: strings(&doc["metadata"]["annotations"], "annotation")?,
            name: name.clone(),
            source: path.to_string(),
        })
    })();
    match spec {
        Ok(spec) => {
            for (key, value) in &spec.data {
                if let Some(at) = syntax_problem(key, value) {
                    parsed
                        .problems
                        .push(format!("{label}: key {key} does not parse ({at})"));
                }
            }
            parsed.configmaps.push(spec);
        }
        Err(problem) => parsed.problems.push(problem),
    }
}

/// Registers for redaction every value of the Secret manifests in a YAML or JSON file (both
/// `stringData` and the decoded `data`), so that a caller journaling the file's text (as
/// `git::show_tree` does) never shows them. Anything that does not parse is left alone.
pub fn register_secret_values(path: &str, content: &str) {
    if !is_structured(path) {
        return;
    }
    for doc in serde_yaml::Deserializer::from_str(content) {
        let Ok(doc) = Value::deserialize(doc) else {
            return;
        };
        let items = match doc["kind"].as_str() {
            Some("List") => doc["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![doc],
        };
        for item in items.iter().filter(|i| i["kind"] == "Secret") {
            for value in item["stringData"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                if let Some(text) = value.as_str() {
                    crate::redact::register(text);
                }
            }
            for value in item["data"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                let Some(encoded) = value.as_str() else {
                    continue;
                };
                crate::redact::register(encoded);
                use base64::Engine as _;
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded)
                    && let Ok(text) = String::from_utf8(bytes)
                {
                    crate::redact::register(&text);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

enum Change {
    Create(ConfigMap),
    Replace(ConfigMap),
}

struct ApplyPlan {
    changes: Vec<Change>,
    result: Applied,
    namespace: String,
}

fn apply_configmaps(session: &Arc<Session>, list: Array) -> Outcome {
    let f = APPLY_CONFIGMAPS.name;
    let mut specs = Vec::with_capacity(list.len());
    for item in list {
        let spec: ConfigMapSpec = rhai::serde::from_dynamic(&item).map_err(|e| {
            invalid(
                f,
                HostError::Invalid(format!(
                    "each ConfigMap must be a map #{{ name, data, labels, annotations }} (as k8s::parse_config returns): {e}"
                )),
            )
        })?;
        names::object("ConfigMap", &spec.name).map_err(|e| invalid(f, e))?;
        specs.push(spec);
    }
    let args = json!({"configmaps": specs.iter().map(|s| &s.name).collect::<Vec<_>>()});
    mutation(
        session,
        f,
        args,
        |kube| async move { plan_apply(&kube, specs).await },
        |plan| (plan.request(), plan.result.clone()),
        |kube, plan| async move { apply(&kube, plan).await },
    )
}

async fn plan_apply(kube: &Kube, specs: Vec<ConfigMapSpec>) -> Result<ApplyPlan, HostError> {
    let mut plan = ApplyPlan {
        changes: Vec::new(),
        result: Applied {
            created: Vec::new(),
            updated: Vec::new(),
            unchanged: Vec::new(),
        },
        namespace: kube.namespace.clone(),
    };
    for spec in specs {
        let label = format!("ConfigMap/{}", spec.name);
        let current = kube
            .call_opt(
                Op::new("get", "configmaps", &spec.name),
                kube.api::<ConfigMap>().get(&spec.name),
            )
            .await?;
        match current {
            None => {
                let mut cm = ConfigMap::default();
                cm.metadata.name = Some(spec.name.clone());
                cm.metadata.labels = (!spec.labels.is_empty()).then(|| spec.labels.clone());
                cm.metadata.annotations =
                    (!spec.annotations.is_empty()).then(|| spec.annotations.clone());
                cm.data = Some(spec.data);
                plan.changes.push(Change::Create(cm));
                plan.result.created.push(label);
            }
            Some(current) => {
                // Owners' metadata (Helm's release labels and annotations) is kept, or the next
                // `helm upgrade` would refuse the object; the manifest's keys are added on top.
                let mut labels = current.metadata.labels.clone().unwrap_or_default();
                labels.extend(spec.labels);
                let mut annotations = current.metadata.annotations.clone().unwrap_or_default();
                annotations.extend(spec.annotations);
                let same = current.data.clone().unwrap_or_default() == spec.data
                    && current.binary_data.is_none()
                    && current.metadata.labels.clone().unwrap_or_default() == labels
                    && current.metadata.annotations.clone().unwrap_or_default() == annotations;
                if same {
                    plan.result.unchanged.push(label);
                    continue;
                }
                let mut cm = current;
                cm.metadata.managed_fields = None;
                cm.metadata.labels = Some(labels);
                cm.metadata.annotations = Some(annotations);
                cm.data = Some(spec.data);
                cm.binary_data = None;
                plan.changes.push(Change::Replace(cm));
                plan.result.updated.push(label);
            }
        }
    }
    Ok(plan)
}

impl ApplyPlan {
    fn request(&self) -> Value {
        let collection = format!("/api/v1/namespaces/{}/configmaps", self.namespace);
        Value::Array(
            self.changes
                .iter()
                .map(|c| match c {
                    Change::Create(cm) => {
                        request::post(&collection, serde_json::to_value(cm).unwrap_or_default())
                    }
                    Change::Replace(cm) => request::put(
                        &format!(
                            "{collection}/{}",
                            cm.metadata.name.clone().unwrap_or_default()
                        ),
                        serde_json::to_value(cm).unwrap_or_default(),
                    ),
                })
                .collect(),
        )
    }
}

async fn apply(kube: &Kube, plan: ApplyPlan) -> Result<Applied, HostError> {
    let api = kube.api::<ConfigMap>();
    for change in plan.changes {
        match change {
            Change::Create(cm) => {
                let name = cm.metadata.name.clone().unwrap_or_default();
                kube.call(
                    Op::new("create", "configmaps", &name),
                    api.create(&PostParams::default(), &cm),
                )
                .await?;
            }
            Change::Replace(cm) => {
                let name = cm.metadata.name.clone().unwrap_or_default();
                let conflict = || {
                    format!(
                        "ConfigMap/{name} changed after it was read, so it was not replaced (nor anything after it); run apply_configmaps again"
                    )
                };
                kube.call_cas(
                    Op::new("update", "configmaps", &name),
                    api.replace(&name, &PostParams::default(), &cm),
                    conflict,
                )
                .await?;
            }
        }
    }
    Ok(plan.result)
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct Required {
    configmaps: Vec<String>,
    secrets: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Present {
    name: String,
    keys: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Checked {
    ok: bool,
    problems: Vec<String>,
    configmaps: Vec<Present>,
    secrets: Vec<Present>,
}

fn check_config(session: &Arc<Session>, required: Map) -> Outcome {
    let f = CHECK_CONFIG.name;
    let required: Required = crate::host::options::parse(f, required).map_err(|e| invalid(f, e))?;
    for name in required.configmaps.iter().chain(&required.secrets) {
        names::object("object", name).map_err(|e| invalid(f, e))?;
    }
    let args = serde_json::to_value(&required).unwrap_or_default();
    read(session, f, args, |kube| async move {
        check(&kube, required).await
    })
}

async fn check(kube: &Kube, required: Required) -> Result<Checked, HostError> {
    let mut checked = Checked {
        ok: false,
        problems: Vec::new(),
        configmaps: Vec::new(),
        secrets: Vec::new(),
    };
    for name in &required.configmaps {
        let found = kube
            .call_opt(
                Op::new("get", "configmaps", name),
                kube.api::<ConfigMap>().get(name),
            )
            .await?;
        let Some(cm) = found else {
            checked
                .problems
                .push(format!("ConfigMap/{name} does not exist"));
            continue;
        };
        let data = cm.data.unwrap_or_default();
        for (key, value) in &data {
            if let Some(at) = syntax_problem(key, value) {
                checked
                    .problems
                    .push(format!("ConfigMap/{name}: key {key} does not parse ({at})"));
            }
        }
        checked.configmaps.push(Present {
            name: name.clone(),
            keys: data.keys().cloned().collect(),
        });
    }
    for name in &required.secrets {
        let found = kube
            .call_opt(
                Op::new("get", "secrets", name),
                kube.api::<Secret>().get(name),
            )
            .await?;
        let Some(secret) = found else {
            checked
                .problems
                .push(format!("Secret/{name} does not exist"));
            continue;
        };
        let data = secret.data.unwrap_or_default();
        for (key, value) in &data {
            let Ok(text) = std::str::from_utf8(&value.0) else {
                continue;
            };
            crate::redact::register(text);
            // Only positions are reported: a parser's message can quote the value.
            if let Some(at) = syntax_problem(key, text) {
                checked
                    .problems
                    .push(format!("Secret/{name}: key {key} does not parse ({at})"));
            }
            if key.to_ascii_lowercase().ends_with("url") && !is_url(text) {
                checked.problems.push(format!(
                    "Secret/{name}: key {key} does not hold a URL with a scheme and a host"
                ));
            }
        }
        checked.secrets.push(Present {
            name: name.clone(),
            keys: data.keys().cloned().collect(),
        });
    }
    checked.ok = checked.problems.is_empty();
    Ok(checked)
}

fn is_url(text: &str) -> bool {
    url::Url::parse(text.trim()).is_ok_and(|u| u.has_host())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> FileArg {
        FileArg {
            path: path.into(),
            content: content.into(),
        }
    }

    #[test]
    fn configmaps_are_parsed_from_multi_document_yaml_and_json() {
        let parsed = parse_files(
            &[
                file(
                    "k8s/app.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\n  labels: {team: core}\ndata:\n  app.yaml: |\n    log_level: info\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
                ),
                file(
                    "k8s/flags.json",
                    r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"flags","namespace":"tracktion"},"data":{"flags.json":"{\"beta\":true}"}}"#,
                ),
                file("k8s/README.md", "docs"),
            ],
            "tracktion",
        );
        assert!(parsed.ok, "{:?}", parsed.problems);
        let names: Vec<&str> = parsed.configmaps.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app-config", "flags"]);
        assert_eq!(parsed.configmaps[0].data["app.yaml"], "log_level: info\n");
        assert_eq!(parsed.configmaps[0].labels["team"], "core");
        assert_eq!(parsed.secrets, ["Secret/db (k8s/app.yaml)"]);
        assert_eq!(parsed.ignored.len(), 2);
        assert_eq!(
            crate::redact::scrub("pw hunter2"),
            format!("pw {}", crate::redact::MASK)
        );
    }

    #[test]
    fn secret_manifest_values_are_registered_for_redaction() {
        // "s3cr3t-from-git" in base64.
        register_secret_values(
            "k8s/secrets.yaml",
            "kind: ConfigMap\nmetadata: {name: c}\n---\nkind: Secret\nmetadata: {name: s}\ndata:\n  token: czNjcjN0LWZyb20tZ2l0\nstringData:\n  other: plain-from-git-42\n",
        );
        let shown = crate::redact::scrub("s3cr3t-from-git plain-from-git-42");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("plain-from"),
            "{shown}"
        );
    }

    #[test]
    fn broken_keys_numbers_namespaces_and_duplicates_are_problems() {
        let parsed = parse_files(
            &[
                file(
                    "a.yaml",
                    "kind: ConfigMap\nmetadata: {name: a}\ndata:\n  settings.json: '{\"x\": '\n  port: 8080\n",
                ),
                file(
                    "b.yaml",
                    "kind: ConfigMap\nmetadata: {name: b, namespace: other}\n",
                ),
                file(
                    "c.yaml",
                    "kind: ConfigMap\nmetadata: {name: c}\ndata:\n  app.yaml: 'a: [1'\n",
                ),
                file("d.yaml", "kind: ConfigMap\nmetadata: {name: c}\n"),
                file("e.yaml", "kind: [unclosed\n"),
            ],
            "tracktion",
        );
        assert!(!parsed.ok);
        let all = parsed.problems.join("\n");
        assert!(
            all.contains("data key 'port' is 8080, not a string"),
            "{all}"
        );
        assert!(all.contains("its namespace is other"), "{all}");
        assert!(all.contains("key app.yaml does not parse"), "{all}");
        assert!(all.contains("ConfigMap/c is defined twice"), "{all}");
        assert!(all.contains("e.yaml: not a valid manifest"), "{all}");
    }
}
