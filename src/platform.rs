//! The platform definition: environments and services, defined once in TOML.
//!
//! The shipped default is `scripts/platform.toml`; files in `$ROLLBACK_HOME/environments/`
//! are merged on top (that is where `rollback sandbox up` writes the `sandbox` environment).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PlatformFile {
    #[serde(default)]
    metrics: Option<Metrics>,
    #[serde(default)]
    environments: BTreeMap<String, Environment>,
    #[serde(default)]
    services: BTreeMap<String, Service>,
    /// `[[triggers]]`: what `rollback watch` acts on in every environment.
    #[serde(default)]
    triggers: Option<Vec<crate::watch::trigger::Trigger>>,
}

/// Names of the metrics the Prometheus helpers query.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub requests_total: String,
    pub duration_bucket: String,
    pub service_label: String,
    pub status_label: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests_total: "http_requests_total".into(),
            duration_bucket: "http_request_duration_seconds_bucket".into(),
            service_label: "service".into(),
            status_label: "status".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub namespace: String,
    #[serde(default)]
    pub kube_context: Option<String>,
    /// A kubeconfig file for this environment; the default is `$KUBECONFIG` or `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// The variable that holds the PostgreSQL URL (it carries a password, so never the URL).
    #[serde(default)]
    pub database_url_env: Option<String>,
    #[serde(default)]
    pub prometheus_url: Option<String>,
    #[serde(default)]
    pub pushgateway_url: Option<String>,
    /// Template with `{service}`, `{slot}` and `{namespace}`.
    #[serde(default)]
    pub health_url: Option<String>,
    #[serde(default)]
    pub notify: Notify,
    /// Backups, migrations and the self-managed cluster behind `database_url_env`.
    #[serde(default)]
    pub postgres: Option<Postgres>,
    /// The container registry the environment's images come from (`registry::` functions).
    #[serde(default)]
    pub registry: Option<Registry>,
    /// The variable that holds the Redis URL (`redis://[:password@]host:port[/db]`); never the
    /// URL itself, since it may carry a password.
    #[serde(default)]
    pub redis_url_env: Option<String>,
    /// How to count the user sessions a rollback would interrupt (`impact` reports it).
    #[serde(default)]
    pub sessions: Option<Sessions>,
    /// `[[environments.X.triggers]]`: replaces the platform's triggers for this environment.
    #[serde(default)]
    pub triggers: Option<Vec<crate::watch::trigger::Trigger>>,
}

/// `[environments.X.registry]`: where the environment's images live and how to log in.
/// Image references name the registry by `host`; `url` is where its API answers, so a
/// registry reached through another address (a mirror, a local port) keeps its image names.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// The registry as written in image references: `registry.example.com` or `host:5000`.
    pub host: String,
    /// Where the distribution API answers (default `https://<host>`).
    #[serde(default)]
    pub url: Option<String>,
    /// The path under `host` the services' images are in: `<host>/<repository>/<service>:<version>`.
    #[serde(default)]
    pub repository: Option<String>,
    /// The variable holding the user name, for basic auth or the token endpoint.
    #[serde(default)]
    pub username_env: Option<String>,
    /// The variable holding the password or access token.
    #[serde(default)]
    pub password_env: Option<String>,
}

/// `[environments.X.sessions]`: one way to count active sessions. `sql` is a read-only query
/// on the environment's database returning one row with a column `n`; `redis_pattern` is a key
/// pattern (`session:*`) for a Redis session store, counted with SCAN, never KEYS.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sessions {
    /// What is counted, for people: "signed-in users", "open editor sessions".
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub sql: Option<String>,
    #[serde(default)]
    pub redis_pattern: Option<String>,
}

/// `[environments.X.postgres]`: what the `pg::` functions need besides the URL. Paths are on the
/// machine that runs `rollback`; the cluster fields are only for a self-managed server on that
/// machine (point-in-time recovery works on its data directory and WAL archive).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Postgres {
    /// Where `pg::safety_backup` writes dumps (with a .sha256 beside each).
    #[serde(default)]
    pub backup_dir: Option<String>,
    /// `<version>_<name>.up.sql` / `.down.sql` files for `pg::migrate_down`.
    #[serde(default)]
    pub migrations_dir: Option<String>,
    /// The database to connect to while the application's database is renamed (default `postgres`).
    #[serde(default)]
    pub maintenance_db: Option<String>,
    /// Seconds; set on every connection (default 60).
    #[serde(default)]
    pub statement_timeout: Option<f64>,
    /// Seconds; set on every connection (default 10).
    #[serde(default)]
    pub lock_timeout: Option<f64>,
    /// Directory of pg_ctl, pg_dump, pg_restore, pg_waldump (default: the newest installed).
    #[serde(default)]
    pub bin_dir: Option<String>,
    /// Self-managed cluster: its data directory.
    #[serde(default)]
    pub data_dir: Option<String>,
    /// Self-managed cluster: where `archive_command` copies WAL files.
    #[serde(default)]
    pub archive_dir: Option<String>,
    /// Self-managed cluster: directory of plain-format `pg_basebackup` backups, one per subdirectory.
    #[serde(default)]
    pub base_backup_dir: Option<String>,
    /// Self-managed cluster: the port it serves on (default: the URL's).
    #[serde(default)]
    pub port: Option<u16>,
    /// Self-managed cluster: the OS user that owns the data directory and runs the server;
    /// `rollback` running as root runs pg_ctl as this user (PostgreSQL refuses to run as root).
    #[serde(default)]
    pub run_as: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// The variable holding the Slack incoming-webhook URL (the URL itself is a secret).
    #[serde(default)]
    pub slack_webhook_env: Option<String>,
    /// The variable holding the PagerDuty Events API v2 routing key.
    #[serde(default)]
    pub pagerduty_routing_key_env: Option<String>,
    /// Where PagerDuty events go; only changed to point at a local receiver.
    #[serde(default)]
    pub pagerduty_events_url: Option<String>,
    /// Seconds before a notification delivery is given up.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The Helm release of the service, if it is deployed with Helm.
    #[serde(default)]
    pub release: Option<String>,
    /// Desired replicas per environment name, with `default` for the others.
    #[serde(default)]
    pub replicas: BTreeMap<String, u32>,
    /// Overrides the environment's health URL template for this service.
    #[serde(default)]
    pub health_url: Option<String>,
    /// A service whose loss makes the platform unavailable (all are, unless set to false).
    #[serde(default = "yes")]
    pub critical: bool,
}

fn yes() -> bool {
    true
}

/// The merged platform definition.
#[derive(Debug, Clone, Default)]
pub struct Platform {
    pub metrics: Metrics,
    pub environments: BTreeMap<String, Environment>,
    pub services: BTreeMap<String, Service>,
    /// The platform-wide `[[triggers]]`, if any file declares them.
    pub triggers: Option<Vec<crate::watch::trigger::Trigger>>,
    /// Files merged, in order, for messages.
    pub sources: Vec<String>,
}

pub const SLOTS: [&str; 2] = ["blue", "green"];

impl Platform {
    /// Parses the base definition and merges every overlay file on top.
    pub fn load(base_name: &str, base_text: &str, overlay_dir: Option<&Path>) -> Result<Platform> {
        let mut platform = Platform::default();
        platform.merge(base_name, base_text)?;
        if let Some(dir) = overlay_dir {
            for path in overlay_files(dir)? {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Error::usage(format!(
                        "cannot read platform overlay {}: {e}",
                        path.display()
                    ))
                })?;
                platform.merge(&path.display().to_string(), &text)?;
            }
        }
        platform.validate()?;
        Ok(platform)
    }

    fn merge(&mut self, name: &str, text: &str) -> Result<()> {
        let file: PlatformFile = toml::from_str(text).map_err(|e| {
            Error::usage(format!(
                "the platform definition {name} is invalid: {}\nfix the file (its format is described at the top of scripts/platform.toml)",
                e.to_string().trim_end()
            ))
        })?;
        if let Some(metrics) = file.metrics {
            self.metrics = metrics;
        }
        self.environments.extend(file.environments);
        self.services.extend(file.services);
        if file.triggers.is_some() {
            self.triggers = file.triggers;
        }
        self.sources.push(name.to_string());
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        for (name, env) in &self.environments {
            if !is_dns_label(&env.namespace) {
                return Err(Error::usage(format!(
                    "environment '{name}': namespace '{}' is not a valid Kubernetes name (lowercase letters, digits and '-')",
                    env.namespace
                )));
            }
            let registry_url = env.registry.as_ref().and_then(|r| r.url.as_ref());
            for url in [&env.prometheus_url, &env.pushgateway_url]
                .into_iter()
                .flatten()
                .chain(registry_url)
            {
                url::Url::parse(url).map_err(|e| {
                    Error::usage(format!(
                        "environment '{name}': '{url}' is not a valid URL: {e}"
                    ))
                })?;
            }
        }
        for name in self.services.keys() {
            if !is_dns_label(name) {
                return Err(Error::usage(format!(
                    "service '{name}' is not a valid Kubernetes name (lowercase letters, digits and '-')"
                )));
            }
        }
        Ok(())
    }

    /// The named environment, or a usage error listing the defined ones.
    pub fn environment(&self, name: &str) -> Result<&Environment> {
        self.environments.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.environments.keys().map(String::as_str).collect();
            let hint = crate::engine::suggest::did_you_mean(name, known.iter().copied())
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            Error::usage(format!(
                "unknown environment '{name}'{hint}; defined environments: {}\nadd it to the platform definition or pass one of these with --env",
                known.join(", ")
            ))
        })
    }

    /// Desired replicas of a service in an environment.
    pub fn replicas(&self, service: &Service, env: &str) -> u32 {
        service
            .replicas
            .get(env)
            .or_else(|| service.replicas.get("default"))
            .copied()
            .unwrap_or(1)
    }

    /// The health URL of a service's slot, from the service's or the environment's template.
    pub fn health_url(&self, env_name: &str, service: &str, slot: &str) -> Option<String> {
        let env = self.environments.get(env_name)?;
        let template = self
            .services
            .get(service)
            .and_then(|s| s.health_url.clone())
            .or_else(|| env.health_url.clone())?;
        Some(
            template
                .replace("{service}", service)
                .replace("{slot}", slot)
                .replace("{namespace}", &env.namespace),
        )
    }

    /// Secrets named by the platform that are set in the process environment, registered for
    /// redaction before anything runs.
    pub fn register_secrets(&self) {
        for env in self.environments.values() {
            let names = [
                &env.database_url_env,
                &env.notify.slack_webhook_env,
                &env.notify.pagerduty_routing_key_env,
            ];
            let registry_password = env.registry.as_ref().and_then(|r| r.password_env.as_ref());
            let names = names
                .into_iter()
                .chain([&env.redis_url_env])
                .flatten()
                .chain(registry_password);
            for name in names {
                if let Ok(value) = std::env::var(name) {
                    crate::redact::register(&value);
                    crate::redact::register_url_password(&value);
                }
            }
        }
    }
}

fn overlay_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::usage(format!(
                "cannot read platform overlays in {}: {e}",
                dir.display()
            )));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// RFC 1123 label: what Kubernetes accepts as a namespace or Service name.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = include_str!("../scripts/platform.toml");

    #[test]
    fn shipped_platform_loads() {
        let p = Platform::load("platform.toml", BASE, None).unwrap();
        assert_eq!(p.services.len(), 4);
        let svc = &p.services["analysis-service"];
        assert_eq!(p.replicas(svc, "production"), 3);
        assert_eq!(p.replicas(svc, "qa"), 1);
        assert_eq!(
            p.health_url("production", "file-watcher", "green").unwrap(),
            "http://file-watcher-green.tracktion-production.svc.cluster.local:8000/health"
        );
    }

    #[test]
    fn overlays_add_environments() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sandbox.toml"),
            "[environments.sandbox]\nnamespace = \"tracktion\"\n",
        )
        .unwrap();
        let p = Platform::load("platform.toml", BASE, Some(dir.path())).unwrap();
        assert!(p.environment("sandbox").is_ok());
        assert!(p.environment("production").is_ok());
    }

    #[test]
    fn postgres_settings_parse_and_reject_unknown_keys() {
        let p = Platform::load(
            "p.toml",
            "[environments.x]\nnamespace='a'\n[environments.x.postgres]\nbackup_dir='/b'\nport=5433\nrun_as='postgres'\n",
            None,
        )
        .unwrap();
        let pg = p.environments["x"].postgres.as_ref().unwrap();
        assert_eq!(pg.backup_dir.as_deref(), Some("/b"));
        assert_eq!(pg.port, Some(5433));
        let err = Platform::load(
            "p.toml",
            "[environments.x]\nnamespace='a'\n[environments.x.postgres]\ndata_directory='/d'\n",
            None,
        )
        .unwrap_err();
        assert!(
            err.message.contains("unknown field `data_directory`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn unknown_keys_and_environments_are_usage_errors() {
        let err = Platform::load(
            "p.toml",
            "[environments.x]\nnamespace='a'\nnamspace='b'\n",
            None,
        )
        .unwrap_err();
        assert!(
            err.message.contains("unknown field `namspace`"),
            "{}",
            err.message
        );
        let p = Platform::load("platform.toml", BASE, None).unwrap();
        let err = p.environment("prodution").unwrap_err();
        assert!(
            err.message.contains("did you mean 'production'"),
            "{}",
            err.message
        );
    }
}
