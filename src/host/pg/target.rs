//! Where a `pg::` call connects: the URL from the variable the platform names, TLS as the URL
//! asks, and the statement and lock timeouts set on every connection.

use super::tls;
use crate::host::HostError;
use crate::platform::Postgres;
use std::path::PathBuf;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode as DriverSslMode};
use tokio_postgres::{Client, Config};

pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// libpq's `sslmode` values; the driver only knows three, so the rest is done in `tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, HostError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(HostError::Invalid(format!(
                    "sslmode={other} is not a libpq sslmode: use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Timeouts set with `SET` right after connecting (rather than as startup options, which
/// connection poolers such as PgBouncer reject).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub statement: Duration,
    pub lock: Duration,
}

/// One database server and database, with the credentials to reach it.
#[derive(Clone)]
pub struct Target {
    config: Config,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    /// The variable the URL came from, for messages ("check $X").
    pub source: String,
    pub timeouts: Timeouts,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl Target {
    /// Parses a `postgres://` URL. `source` names where it came from, for messages; the
    /// password is registered for redaction before anything else can print it.
    pub fn from_url(url: &str, source: &str) -> Result<Target, HostError> {
        crate::redact::register_url_password(url);
        let trimmed = url.trim();
        if !(trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://")) {
            return Err(HostError::Invalid(format!(
                "{source} does not hold a postgres:// URL; set it to postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            )));
        }
        let (rest, sslmode, sslrootcert) = take_tls_params(trimmed)?;
        let mut config: Config = rest.parse().map_err(|e| {
            HostError::Invalid(format!(
                "the URL in {source} is not a valid PostgreSQL URL ({e}); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ))
        })?;
        if let Some(password) = config.get_password() {
            crate::redact::register(&String::from_utf8_lossy(password));
        }
        if config.get_dbname().is_none() {
            return Err(HostError::Invalid(format!(
                "the URL in {source} names no database; add /DATABASE after the host"
            )));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("rollback");
        }
        config.ssl_mode(match sslmode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Allow | SslMode::Prefer => DriverSslMode::Prefer,
            _ => DriverSslMode::Require,
        });
        Ok(Target {
            config,
            sslmode,
            sslrootcert,
            source: source.to_string(),
            timeouts: Timeouts {
                statement: DEFAULT_STATEMENT_TIMEOUT,
                lock: DEFAULT_LOCK_TIMEOUT,
            },
        })
    }

    /// The target of an environment: the URL in its `database_url_env` variable.
    pub fn for_environment(
        env_name: &str,
        var: Option<&str>,
        settings: Option<&Postgres>,
    ) -> Result<Target, HostError> {
        let var = var.ok_or_else(|| {
            HostError::Invalid(format!(
                "environment '{env_name}' has no database: set database_url_env in its platform definition"
            ))
        })?;
        let url = std::env::var(var).map_err(|_| {
            HostError::Invalid(format!(
                "the variable {var} (database_url_env of environment '{env_name}') is not set; export it with the database URL"
            ))
        })?;
        let mut target = Target::from_url(&url, &format!("${var}"))?;
        if let Some(settings) = settings {
            if let Some(s) = settings.statement_timeout {
                target.timeouts.statement = seconds(s, "statement_timeout")?;
            }
            if let Some(s) = settings.lock_timeout {
                target.timeouts.lock = seconds(s, "lock_timeout")?;
            }
        }
        Ok(target)
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }

    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("postgres")
    }

    pub fn password(&self) -> Option<String> {
        self.config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// Hosts as libpq writes them (a unix socket is its directory).
    pub fn hosts(&self) -> Vec<String> {
        self.config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect()
    }

    pub fn ports(&self) -> Vec<u16> {
        let ports = self.config.get_ports();
        if ports.is_empty() {
            vec![5432]
        } else {
            ports.to_vec()
        }
    }

    /// `host:port/database` for messages; never the password.
    pub fn display(&self) -> String {
        let hosts = self.hosts();
        let ports = self.ports();
        let host = hosts.first().map(String::as_str).unwrap_or("localhost");
        format!("{host}:{}/{}", ports[0], self.dbname())
    }

    /// The same server, another database (the maintenance database, a restored copy).
    pub fn with_dbname(&self, dbname: &str) -> Target {
        let mut t = self.clone();
        t.config.dbname(dbname);
        t
    }

    /// The same credentials on another port of the same host (a recovered cluster).
    pub fn with_port(&self, port: u16) -> Target {
        let mut t = self.clone();
        let hosts = t.config.get_hosts().to_vec();
        let mut config = Config::new();
        for h in hosts.iter().take(1) {
            match h {
                Host::Tcp(name) => config.host(name),
                Host::Unix(path) => config.host_path(path),
            };
        }
        config.port(port);
        config.user(self.user());
        if let Some(p) = self.config.get_password() {
            config.password(p);
        }
        config.dbname(self.dbname());
        config.ssl_mode(self.config.get_ssl_mode());
        if let Some(ct) = self.config.get_connect_timeout() {
            config.connect_timeout(*ct);
        }
        if let Some(app) = self.config.get_application_name() {
            config.application_name(app);
        }
        t.config = config;
        t
    }

    pub fn with_timeouts(&self, timeouts: Timeouts) -> Target {
        let mut t = self.clone();
        t.timeouts = timeouts;
        t
    }

    pub fn with_statement_timeout(&self, statement: Duration) -> Target {
        self.with_timeouts(Timeouts {
            statement,
            lock: self.timeouts.lock,
        })
    }

    /// Opens a connection, drives it on the current runtime and sets the timeouts.
    pub async fn connect(&self) -> Result<Client, HostError> {
        let client = match self.sslmode {
            SslMode::Disable => {
                let (client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| self.connect_error(&e))?;
                tokio::spawn(connection);
                client
            }
            _ => {
                let connector = tls::connector(self.sslmode, self.sslrootcert.as_deref())?;
                let (client, connection) = self
                    .config
                    .connect(connector)
                    .await
                    .map_err(|e| self.connect_error(&e))?;
                tokio::spawn(connection);
                client
            }
        };
        // Whole milliseconds from numbers, never text from a script: nothing to inject.
        let set = format!(
            "SET statement_timeout = {}; SET lock_timeout = {}",
            self.timeouts.statement.as_millis(),
            self.timeouts.lock.as_millis()
        );
        client
            .batch_execute(&set)
            .await
            .map_err(|e| self.error("cannot set the session timeouts", &e))?;
        Ok(client)
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> HostError {
        let shown = self.display();
        let source = &self.source;
        if let Some(db) = e.as_db_error() {
            let hint = match db.code().code() {
                "28P01" | "28000" => format!("check the user and password in {source}"),
                "3D000" => "check the database name in the URL".to_string(),
                "53300" => {
                    "the server has no free connection slots; end idle sessions or retry".into()
                }
                "57P03" => "the server is starting up or shutting down; retry shortly".into(),
                _ => format!("check the server and the URL in {source}"),
            };
            return HostError::Failed(format!(
                "cannot connect to PostgreSQL at {shown}: {}; {hint}",
                db.message()
            ));
        }
        HostError::Failed(format!(
            "cannot connect to PostgreSQL at {shown} (URL from {source}): {}; check that the server is running and reachable",
            describe(e)
        ))
    }

    /// A driver error after connecting, with the server's message, detail and hint.
    pub fn error(&self, what: &str, e: &tokio_postgres::Error) -> HostError {
        HostError::Failed(format!("{what} on {}: {}", self.display(), describe(e)))
    }

    /// Connection settings for libpq tools (pg_dump, pg_restore) without the password, which
    /// goes in a password file instead of the command line or the journal.
    pub fn conninfo(&self) -> String {
        let mut parts = vec![
            format!("host={}", conninfo_value(&self.hosts().join(","))),
            format!(
                "port={}",
                self.ports()
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            format!("user={}", conninfo_value(self.user())),
            format!("dbname={}", conninfo_value(self.dbname())),
            format!("sslmode={}", self.sslmode.as_str()),
            "application_name=rollback".to_string(),
        ];
        if let Some(cert) = &self.sslrootcert {
            parts.push(format!(
                "sslrootcert={}",
                conninfo_value(&cert.display().to_string())
            ));
        }
        parts.join(" ")
    }
}

fn seconds(value: f64, what: &str) -> Result<Duration, HostError> {
    if value.is_finite() && value >= 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(HostError::Invalid(format!(
            "{what} in the platform definition must be seconds, 0 or more"
        )))
    }
}

/// Splits `sslmode` and `sslrootcert` off the query string: the driver rejects the libpq
/// modes it does not implement, and `tls` implements them.
fn take_tls_params(url: &str) -> Result<(String, SslMode, Option<PathBuf>), HostError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut sslmode = SslMode::Prefer;
    let mut rootcert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded: String = url::form_urlencoded::parse(format!("v={value}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        match key {
            "sslmode" => sslmode = SslMode::parse(&decoded)?,
            "sslrootcert" => rootcert = Some(PathBuf::from(decoded)),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, sslmode, rootcert))
}

/// A libpq conninfo value, quoted when it needs to be.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/,:".contains(c))
    {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// A driver error in one line: the server's message with its detail and hint, or the cause
/// chain of a client-side error.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    crate::host::chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_are_taken_out_of_the_url() {
        let (rest, mode, cert) = take_tls_params(
            "postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(mode, SslMode::VerifyFull);
        assert_eq!(cert.unwrap(), PathBuf::from("/tmp/ca.pem"));
        assert!(take_tls_params("postgres://h/db?sslmode=sometimes").is_err());
    }

    #[test]
    fn conninfo_has_no_password_and_quotes_values() {
        let t = Target::from_url(
            "postgres://app:pw%20with%20space@db.example:6543/my%20db?sslmode=require",
            "$X",
        )
        .unwrap();
        let info = t.conninfo();
        assert_eq!(
            info,
            "host=db.example port=6543 user=app dbname='my db' sslmode=require application_name=rollback"
        );
        assert_eq!(t.password().unwrap(), "pw with space");
        assert_eq!(t.display(), "db.example:6543/my db");
        assert_eq!(t.with_port(7000).display(), "db.example:7000/my db");
    }

    #[test]
    fn urls_without_a_database_or_scheme_are_refused() {
        let err = Target::from_url("mysql://h/db", "$X").unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");
        let err = Target::from_url("postgres://h:5432", "$X").unwrap_err();
        assert!(err.to_string().contains("names no database"), "{err}");
    }
}
