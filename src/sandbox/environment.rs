//! The `sandbox` environment: a platform overlay in `$ROLLBACK_HOME/environments/`, so
//! `rollback run … --env sandbox` and `rollback repl --env sandbox` find the sandbox, and
//! `env.sh` with the variables that hold its (local, throw-away) notification credentials.

use super::chart::NAMESPACE;
use super::receivers::PAGERDUTY_PATH;
use super::state::{Export, State};
use serde_json::json;

pub const ENVIRONMENT: &str = "sandbox";
pub const SLACK_WEBHOOK_ENV: &str = "ROLLBACK_SANDBOX_SLACK_WEBHOOK_URL";
pub const PAGERDUTY_ROUTING_KEY_ENV: &str = "ROLLBACK_SANDBOX_PAGERDUTY_ROUTING_KEY";

/// Hook for the sandbox database: the variable its URL is exported in, once the database
/// step records a `database` in the state.
pub const DATABASE_URL_ENV: &str = "ROLLBACK_SANDBOX_DATABASE_URL";

/// The variable the sandbox Redis URL (with its random password) is exported in.
pub const REDIS_URL_ENV: &str = "ROLLBACK_SANDBOX_REDIS_URL";

/// The overlay text. Built as a document and serialised, so paths with quotes or
/// backslashes stay valid TOML.
pub fn overlay(state: &State) -> String {
    let server = state.server.as_ref().map(|p| p.url()).unwrap_or_default();
    let mut environment = json!({
        "namespace": NAMESPACE,
        "health_url": format!("{server}/{{service}}/{{slot}}/health"),
        "notify": {
            "slack_webhook_env": SLACK_WEBHOOK_ENV,
            "pagerduty_routing_key_env": PAGERDUTY_ROUTING_KEY_ENV,
            "pagerduty_events_url": format!("{server}{PAGERDUTY_PATH}"),
        },
    });
    if let Some(cluster) = &state.cluster {
        environment["kubeconfig"] = json!(cluster.kubeconfig.display().to_string());
        environment["kube_context"] = json!(cluster.context);
    }
    if let Some(p) = &state.prometheus {
        environment["prometheus_url"] = json!(p.url());
    }
    if let Some(p) = &state.pushgateway {
        environment["pushgateway_url"] = json!(p.url());
    }
    if state.database.is_some() {
        environment["database_url_env"] = json!(DATABASE_URL_ENV);
    }
    if let Some(settings) = &state.database_settings {
        // TOML has no null: only the settings that are set.
        let mut table = serde_json::to_value(settings).expect("settings serialize");
        if let Some(map) = table.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        environment["postgres"] = table;
    }
    if let Some(p) = &state.registry {
        // The Deployments name their images on the registry's usual host; the environment
        // sends requests for that host to the local registry.
        environment["registry"] = json!({
            "host": super::registry::HOST,
            "url": p.url(),
            "repository": super::registry::REPOSITORY,
        });
    }
    if state.redis.is_some() {
        environment["redis_url_env"] = json!(REDIS_URL_ENV);
    }
    let document = json!({"environments": {ENVIRONMENT: environment}});
    let toml = toml::to_string(&document).expect("a JSON object converts to TOML");
    format!(
        "# Written by `rollback sandbox up` and removed by `rollback sandbox down`; edits are lost.\n# The local sandbox: Kubernetes, Helm releases, Prometheus and notification receivers on 127.0.0.1.\n{toml}"
    )
}

/// `export NAME='value'` lines, quoted for any POSIX shell.
pub fn env_sh(exports: &[Export]) -> String {
    let mut out = String::from(
        "# Variables of the rollback sandbox: `source` this file before rehearsing.\n",
    );
    for export in exports {
        out.push_str(&format!(
            "export {}='{}'\n",
            export.name,
            export.value.replace('\'', r"'\''")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Platform;
    use crate::sandbox::state::{Cluster, Process};
    use std::path::PathBuf;

    #[test]
    fn overlay_defines_a_loadable_sandbox_environment() {
        let process = |port| {
            Some(Process {
                pid: 1,
                port,
                log: PathBuf::new(),
            })
        };
        let state = State {
            server: process(4000),
            prometheus: process(4001),
            pushgateway: process(4002),
            cluster: Some(Cluster {
                name: "rollback-sandbox".into(),
                workdir: PathBuf::from("/h/sandbox/cluster"),
                kubeconfig: PathBuf::from("/h/sandbox/cluster/kube\"config"),
                context: "kwok-rollback-sandbox".into(),
                bin: PathBuf::from("/bin"),
            }),
            ..State::default()
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sandbox.toml"), overlay(&state)).unwrap();
        let platform = Platform::load(
            "platform.toml",
            include_str!("../../scripts/platform.toml"),
            Some(dir.path()),
        )
        .unwrap();
        let env = platform.environment("sandbox").unwrap();
        assert_eq!(env.namespace, "tracktion");
        assert_eq!(
            env.kubeconfig.as_deref(),
            Some("/h/sandbox/cluster/kube\"config")
        );
        assert_eq!(env.prometheus_url.as_deref(), Some("http://127.0.0.1:4001"));
        assert_eq!(
            platform
                .health_url("sandbox", "file-watcher", "blue")
                .unwrap(),
            "http://127.0.0.1:4000/file-watcher/blue/health"
        );
        assert_eq!(
            env.notify.pagerduty_events_url.as_deref(),
            Some("http://127.0.0.1:4000/pagerduty/v2/enqueue")
        );
        assert_eq!(env.database_url_env, None);
        assert!(env.registry.is_none() && env.redis_url_env.is_none());
    }

    #[test]
    fn overlay_maps_the_image_host_to_the_local_registry_and_names_the_redis_variable() {
        let process = |port| {
            Some(Process {
                pid: 1,
                port,
                log: PathBuf::new(),
            })
        };
        let state = State {
            registry: process(4005),
            redis: process(4006),
            ..State::default()
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sandbox.toml"), overlay(&state)).unwrap();
        let platform = Platform::load("p.toml", "", Some(dir.path())).unwrap();
        let env = platform.environment("sandbox").unwrap();
        let registry = env.registry.as_ref().unwrap();
        assert_eq!(registry.host, "registry.tracktion.local");
        assert_eq!(registry.url.as_deref(), Some("http://127.0.0.1:4005"));
        assert_eq!(registry.repository.as_deref(), Some("tracktion"));
        assert_eq!(env.redis_url_env.as_deref(), Some(REDIS_URL_ENV));
    }

    #[test]
    fn env_sh_quotes_values() {
        let text = env_sh(&[Export {
            name: "X".into(),
            value: "a'b".into(),
        }]);
        assert!(text.ends_with("export X='a'\\''b'\n"), "{text}");
    }
}
