//! Sessions on a database: listing them, closing the door (`ALLOW_CONNECTIONS`), and ending
//! them — cancel first so running statements roll back cleanly, then terminate with a bounded
//! wait, never the caller's own session.

use super::query::rows;
use super::sql::quote_ident;
use super::target::Target;
use super::value::Param;
use crate::host::HostError;
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub pid: i64,
    pub database: Option<String>,
    pub user: Option<String>,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub backend_start: Option<String>,
    pub query_start: Option<String>,
    pub wait_event: Option<String>,
    /// The first 200 characters of the current or last statement.
    pub query: Option<String>,
    /// The session `rollback` itself used for this call.
    pub is_self: bool,
}

const LIST: &str = "\
SELECT pid::int8, datname::text, usename::text, application_name, client_addr::text, state,
       backend_start, query_start, wait_event_type || ':' || wait_event, left(query, 200),
       pid = pg_backend_pid()
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND ($1::text IS NULL OR datname = $1::text)
ORDER BY backend_start";

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Client sessions on `database` (all databases when `None`).
pub async fn list(
    client: &Client,
    target: &Target,
    database: Option<&str>,
) -> Result<Vec<Connection>, HostError> {
    let param = Param(database.map(str::to_string));
    Ok(rows(client, target, LIST, &[param])
        .await?
        .iter()
        .map(|r| Connection {
            pid: r.get(0),
            database: r.get(1),
            user: r.get(2),
            application_name: r.get(3),
            client_addr: r.get(4),
            state: r.get(5),
            backend_start: time(r.get(6)),
            query_start: time(r.get(7)),
            wait_event: r.get(8),
            query: r.get(9),
            is_self: r.get(10),
        })
        .collect())
}

/// `ALTER DATABASE … ALLOW_CONNECTIONS` — the statement, for plans and for running.
pub fn allow_sql(database: &str, allow: bool) -> Result<String, HostError> {
    Ok(format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS {allow}",
        quote_ident(database)?
    ))
}

#[derive(Debug, Clone, Serialize)]
pub struct Allowed {
    pub database: String,
    pub allow_connections: bool,
    /// What it was before this call.
    pub previous: bool,
}

/// Opens or closes `database` to new sessions; sessions already in stay (see `terminate`).
pub async fn set_allow(
    client: &Client,
    target: &Target,
    database: &str,
    allow: bool,
) -> Result<Allowed, HostError> {
    let previous = allows_connections(client, target, database).await?;
    client
        .batch_execute(&allow_sql(database, allow)?)
        .await
        .map_err(|e| {
            target.error(
                &format!("cannot change ALLOW_CONNECTIONS of {database}"),
                &e,
            )
        })?;
    Ok(Allowed {
        database: database.to_string(),
        allow_connections: allow,
        previous,
    })
}

pub async fn allows_connections(
    client: &Client,
    target: &Target,
    database: &str,
) -> Result<bool, HostError> {
    let found = rows(
        client,
        target,
        "SELECT datallowconn FROM pg_database WHERE datname = $1",
        &[Param(Some(database.to_string()))],
    )
    .await?;
    match found.first() {
        Some(row) => Ok(row.get(0)),
        None => Err(HostError::Failed(format!(
            "there is no database {database} on {}",
            target.display()
        ))),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct TerminatePlan {
    /// How long cancelled statements get to end before their sessions are terminated.
    pub grace: Duration,
    /// How long to wait for each terminated session to be gone.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Terminated {
    pub database: String,
    /// The session that did this; never touched.
    pub own_pid: i64,
    pub cancelled: Vec<i64>,
    pub terminated: Vec<i64>,
    /// Sessions still there at the end (new ones, if the database was not closed first).
    pub remaining: Vec<i64>,
    pub ok: bool,
}

/// The statements `terminate` runs, for dry-run plans.
pub fn terminate_sql() -> [&'static str; 3] {
    [
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        "SELECT pg_cancel_backend(pid) FROM unnest($1::int[]) AS pid",
        "SELECT pid::int8, pg_terminate_backend(pid, $2) FROM unnest($1::int[]) AS pid",
    ]
}

async fn other_pids(
    client: &Client,
    target: &Target,
    database: &str,
) -> Result<Vec<i64>, HostError> {
    Ok(rows(
        client,
        target,
        "SELECT pid::int8 FROM pg_stat_activity WHERE datname = $1 \
         AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        &[Param(Some(database.to_string()))],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

async fn active_pids(
    client: &Client,
    target: &Target,
    pids: &[i64],
) -> Result<Vec<i64>, HostError> {
    Ok(rows(
        client,
        target,
        "SELECT pid::int8 FROM pg_stat_activity WHERE pid = ANY($1::int[]) AND state <> 'idle'",
        &[pid_array(pids)],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

fn pid_array(pids: &[i64]) -> Param {
    Param(Some(format!(
        "{{{}}}",
        pids.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    )))
}

/// Ends every other session on `database`: cancel, wait up to `grace` for the statements to
/// stop, terminate, and wait up to `timeout` for the sessions to be gone. `client` may be
/// connected to `database` itself; its own session is excluded by `pg_backend_pid()`.
pub async fn terminate(
    client: &Client,
    target: &Target,
    database: &str,
    plan: TerminatePlan,
) -> Result<Terminated, HostError> {
    let own_pid: i64 = rows(client, target, "SELECT pg_backend_pid()::int8", &[]).await?[0].get(0);
    let pids = other_pids(client, target, database).await?;
    let mut result = Terminated {
        database: database.to_string(),
        own_pid,
        cancelled: Vec::new(),
        terminated: Vec::new(),
        remaining: Vec::new(),
        ok: true,
    };
    if pids.is_empty() {
        return Ok(result);
    }
    let active = active_pids(client, target, &pids).await?;
    if !active.is_empty() {
        rows(client, target, terminate_sql()[1], &[pid_array(&active)]).await?;
        result.cancelled = active.clone();
        let until = Instant::now() + plan.grace;
        while Instant::now() < until && !active_pids(client, target, &active).await?.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let timeout_ms = Param(Some(plan.timeout.as_millis().to_string()));
    let ended = rows(
        client,
        target,
        terminate_sql()[2],
        &[pid_array(&pids), timeout_ms],
    )
    .await?;
    result.terminated = ended
        .iter()
        .filter(|r| r.get::<_, Option<bool>>(1).unwrap_or(false))
        .map(|r| r.get(0))
        .collect();
    result.remaining = other_pids(client, target, database).await?;
    result.ok = result.remaining.is_empty();
    Ok(result)
}
