//! Restore-then-swap: the backup is checked, restored into a NEW database, verified, and only
//! then swapped in under the original name inside a short window with connections blocked.
//! The old database is kept under a dated name. Until the swap commits, the original is never
//! touched; if anything fails inside the window it is reopened before the error returns.

use super::backup::{self, read_manifest};
use super::inspect::{self, Integrity, snapshot};
use super::query::rows;
use super::sessions::{self, TerminatePlan, allow_sql};
use super::sql::{name_with_suffix, quote_ident, quote_literal};
use super::target::Target;
use super::tools::{Cmd, PassFile};
use super::value::Param;
use crate::host::HostError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

#[derive(Debug, Clone)]
pub struct RestorePlan {
    pub backup: PathBuf,
    pub database: String,
    pub maintenance_db: String,
    pub bin_dir: PathBuf,
    pub jobs: u32,
    pub no_owner: bool,
    pub terminate: TerminatePlan,
    /// Drop the new database if the restore or its verification fails (never the original).
    pub drop_failed: bool,
    /// Swap it in; `false` restores and verifies only.
    pub swap: bool,
    pub new_name: String,
    pub old_name: String,
}

/// `<db>_restore_<stamp>` and `<db>_before_restore_<stamp>`, within PostgreSQL's 63 bytes.
pub fn names(database: &str, now: chrono::DateTime<chrono::Utc>) -> (String, String) {
    let stamp = now.format("%Y%m%d_%H%M%S");
    (
        name_with_suffix(database, &format!("_restore_{stamp}")),
        name_with_suffix(database, &format!("_before_restore_{stamp}")),
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub database: String,
    pub backup: String,
    pub sha256: String,
    /// The new database the backup went into (its name until the swap).
    pub restored_into: String,
    pub swapped: bool,
    /// The original, kept under this name after the swap.
    pub old_database: Option<String>,
    /// How long new connections were refused.
    pub swap_window_ms: f64,
    /// Sessions whose running statement was cancelled (most then leave on their own).
    pub sessions_cancelled: usize,
    /// Sessions terminated because they stayed.
    pub sessions_terminated: usize,
    pub restore_ms: u64,
    pub verify_ms: u64,
    pub integrity: Integrity,
    pub counts: BTreeMap<String, i64>,
    /// Whether the counts equal the backup's manifest (`None`: the backup has none).
    pub counts_match_manifest: Option<bool>,
}

/// What the call will do, for dry-run plans and the journal.
pub fn describe(plan: &RestorePlan, target: &Target) -> Result<Vec<String>, HostError> {
    let orig = quote_ident(&plan.database)?;
    let new = quote_ident(&plan.new_name)?;
    let old = quote_ident(&plan.old_name)?;
    let mut steps = vec![
        format!(
            "verify sha256 of {} against {}.sha256",
            plan.backup.display(),
            plan.backup.display()
        ),
        backup::list_command(&plan.bin_dir, &plan.backup).display(),
        format!(
            "CREATE DATABASE {new} WITH TEMPLATE template0 OWNER <owner of {orig}> ENCODING <same> LC_COLLATE <same> LC_CTYPE <same>"
        ),
        restore_command(plan, &target.with_dbname(&plan.new_name)).display(),
        format!(
            "verify {new}: foreign keys (orphans), check constraints, indexes, row counts against the backup's manifest"
        ),
    ];
    if plan.swap {
        steps.extend([
            allow_sql(&plan.database, false)?,
            "cancel, then terminate, the sessions on the original (pg_cancel_backend, pg_terminate_backend)".into(),
            format!("BEGIN; ALTER DATABASE {orig} RENAME TO {old}; ALTER DATABASE {new} RENAME TO {orig}; {}; COMMIT", allow_sql(&plan.database, true)?),
        ]);
    }
    Ok(steps)
}

fn restore_command(plan: &RestorePlan, new_target: &Target) -> Cmd {
    let mut cmd = Cmd::new(plan.bin_dir.join("pg_restore"))
        .arg("--exit-on-error")
        .arg(format!("--dbname={}", new_target.conninfo()));
    if plan.jobs > 1 {
        cmd = cmd.arg(format!("--jobs={}", plan.jobs));
    }
    if plan.no_owner {
        cmd = cmd.arg("--no-owner");
    }
    cmd.arg(plan.backup.as_os_str().to_owned())
}

pub async fn restore(target: &Target, plan: &RestorePlan) -> Result<Restored, HostError> {
    if !plan.backup.is_file() {
        return Err(HostError::Invalid(format!(
            "the backup file {} does not exist; nothing was changed",
            plan.backup.display()
        )));
    }
    let sha256 = backup::verify_checksum(&plan.backup)
        .await
        .map_err(|e| nothing_changed(e, plan))?;
    let toc = backup::verify_archive(&plan.bin_dir, &plan.backup)
        .await
        .map_err(|e| nothing_changed(e, plan))?;
    let maint_target = target.with_dbname(&plan.maintenance_db);
    let maint = maint_target.connect().await?;
    create_database_like(&maint, &maint_target, &plan.database, &plan.new_name)
        .await
        .map_err(|e| nothing_changed(e, plan))?;

    let new_target = target.with_dbname(&plan.new_name);
    let started = Instant::now();
    let restored = run_restore(plan, &new_target).await;
    let restore_ms = started.elapsed().as_millis() as u64;
    let verify_started = Instant::now();
    let verified = match restored {
        Ok(()) => verify(&new_target, &toc, &plan.backup).await,
        Err(e) => Err(e),
    };
    let verify_ms = verify_started.elapsed().as_millis() as u64;
    let (integrity, counts, counts_match) = match verified {
        Ok(v) => v,
        Err(e) => return Err(failed_before_swap(e, plan, &maint).await),
    };
    let mut result = Restored {
        database: plan.database.clone(),
        backup: plan.backup.display().to_string(),
        sha256,
        restored_into: plan.new_name.clone(),
        swapped: false,
        old_database: None,
        swap_window_ms: 0.0,
        sessions_cancelled: 0,
        sessions_terminated: 0,
        restore_ms,
        verify_ms,
        integrity,
        counts,
        counts_match_manifest: counts_match,
    };
    if !plan.swap {
        return Ok(result);
    }
    drop(maint);
    // The swap runs as its own task: if the caller is cancelled mid-window, the task still
    // finishes (or reopens the original) instead of stopping between two statements.
    let swap_target = maint_target.clone();
    let swap_plan = plan.clone();
    let handle = tokio::spawn(async move { swap(&swap_target, &swap_plan).await });
    let swapped = handle
        .await
        .map_err(|e| HostError::Failed(format!("the swap task failed: {e}")))??;
    result.swapped = true;
    result.old_database = Some(plan.old_name.clone());
    result.swap_window_ms = swapped.window.as_secs_f64() * 1000.0;
    result.sessions_cancelled = swapped.cancelled;
    result.sessions_terminated = swapped.terminated;
    // The restored database answers under the original name.
    let check = target.connect().await?;
    check
        .simple_query("SELECT 1")
        .await
        .map_err(|e| target.error("the swapped-in database does not answer", &e))?;
    Ok(result)
}

fn nothing_changed(e: HostError, plan: &RestorePlan) -> HostError {
    match e {
        HostError::Failed(m) => HostError::Failed(format!(
            "{m}; nothing was changed: {} is untouched",
            plan.database
        )),
        other => other,
    }
}

async fn run_restore(plan: &RestorePlan, new_target: &Target) -> Result<(), HostError> {
    let passfile = PassFile::create(new_target.password().as_deref())?;
    let mut cmd = restore_command(plan, new_target);
    if let Some(pf) = &passfile {
        cmd = cmd.env("PGPASSFILE", &pf.path);
    }
    cmd.run_ok("the restore failed").await.map(|_| ())
}

type Verified = (Integrity, BTreeMap<String, i64>, Option<bool>);

/// The restored database must hold every table of the archive, with the manifest's exact
/// row counts when there is one, and pass the integrity check.
async fn verify(
    new_target: &Target,
    toc: &backup::Toc,
    file: &Path,
) -> Result<Verified, HostError> {
    let target = new_target.with_statement_timeout(Duration::ZERO);
    let mut client = target.connect().await?;
    let tx = snapshot(&mut client, &target).await?;
    let counts = inspect::table_counts(&tx, &target).await?;
    let integrity = inspect::check_integrity(&tx, &target, inspect::Depth::FreshRestore).await?;
    let _ = tx.rollback().await;
    let missing: Vec<String> = toc
        .table_data
        .iter()
        .map(|(s, t)| inspect::table_key(s, t))
        .filter(|k| !counts.contains_key(k))
        .collect();
    if !missing.is_empty() {
        return Err(HostError::Failed(format!(
            "verification failed: tables of the backup are missing after the restore: {}",
            missing.join(", ")
        )));
    }
    if !integrity.ok {
        return Err(HostError::Failed(format!(
            "verification failed: {}",
            integrity.problems.join("; ")
        )));
    }
    let matches = match read_manifest(file) {
        Some(manifest) if !manifest.rows.is_empty() => {
            let differ: Vec<String> = manifest
                .rows
                .iter()
                .filter(|(table, n)| counts.get(*table) != Some(n))
                .map(|(table, n)| {
                    format!(
                        "{table}: {} rows, the backup holds {n}",
                        counts.get(table).map_or("no".to_string(), i64::to_string)
                    )
                })
                .collect();
            if !differ.is_empty() {
                return Err(HostError::Failed(format!(
                    "verification failed: row counts differ from the backup's manifest: {}",
                    differ.join("; ")
                )));
            }
            Some(true)
        }
        _ => None,
    };
    Ok((integrity, counts, matches))
}

/// Before the swap nothing served from the new database: say where it is, and drop it only
/// if the caller asked for that.
async fn failed_before_swap(e: HostError, plan: &RestorePlan, maint: &Client) -> HostError {
    let HostError::Failed(message) = e else {
        return e;
    };
    let leftover = if plan.drop_failed {
        let sql = format!(
            "DROP DATABASE {}",
            quote_ident(&plan.new_name).unwrap_or_default()
        );
        match maint.batch_execute(&sql).await {
            Ok(()) => format!(
                "the partial database {} was dropped (drop_failed)",
                plan.new_name
            ),
            Err(err) => format!(
                "the partial database {} could not be dropped: {}",
                plan.new_name,
                super::target::describe(&err)
            ),
        }
    } else {
        format!(
            "the partial restore is kept in database {} for inspection; drop it with pg::drop_database(\"{}\")",
            plan.new_name, plan.new_name
        )
    };
    HostError::Failed(format!(
        "{message}; the original database {} is untouched and serving; {leftover}",
        plan.database
    ))
}

/// `CREATE DATABASE new` with the owner, encoding and locale of `like`.
async fn create_database_like(
    client: &Client,
    target: &Target,
    like: &str,
    new: &str,
) -> Result<(), HostError> {
    let version: i32 = rows(
        client,
        target,
        "SELECT current_setting('server_version_num')::int",
        &[],
    )
    .await?[0]
        .get(0);
    let icu_column = match version {
        v if v >= 170000 => "d.datlocale",
        v if v >= 150000 => "d.daticulocale",
        _ => "NULL::text",
    };
    let provider = if version >= 150000 {
        "d.datlocprovider::text"
    } else {
        "'c'"
    };
    let sql = format!(
        "SELECT pg_get_userbyid(d.datdba)::text, pg_encoding_to_char(d.encoding)::text, \
         d.datcollate::text, d.datctype::text, {provider}, {icu_column}::text \
         FROM pg_database d WHERE d.datname = $1"
    );
    let found = rows(client, target, &sql, &[Param(Some(like.to_string()))]).await?;
    let Some(row) = found.first() else {
        return Err(HostError::Failed(format!(
            "there is no database {like} on {} to restore over",
            target.display()
        )));
    };
    let exists = rows(
        client,
        target,
        "SELECT 1 FROM pg_database WHERE datname = $1",
        &[Param(Some(new.to_string()))],
    )
    .await?;
    if !exists.is_empty() {
        return Err(HostError::Failed(format!(
            "database {new} already exists; wait a second and retry, or drop it with pg::drop_database"
        )));
    }
    let (owner, encoding, collate, ctype, provider, icu): (
        String,
        String,
        String,
        String,
        String,
        Option<String>,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    // Values read from the server's catalog, quoted as literals: CREATE DATABASE takes none
    // as parameters.
    let mut sql = format!(
        "CREATE DATABASE {} WITH TEMPLATE template0 OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(new)?,
        quote_ident(&owner)?,
        quote_literal(&encoding),
        quote_literal(&collate),
        quote_literal(&ctype)
    );
    if provider == "i" {
        sql.push_str(" LOCALE_PROVIDER icu");
        if let Some(icu) = icu {
            let keyword = if version >= 170000 {
                "LOCALE"
            } else {
                "ICU_LOCALE"
            };
            sql.push_str(&format!(" {keyword} {}", quote_literal(&icu)));
        }
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| target.error(&format!("cannot create database {new}"), &e))
}

struct Swapped {
    window: Duration,
    cancelled: usize,
    terminated: usize,
}

/// The window: close the original, end its sessions, rename both in one transaction, open
/// the new one. Any failure before COMMIT rolls back and reopens the original.
async fn swap(maint_target: &Target, plan: &RestorePlan) -> Result<Swapped, HostError> {
    let mut client = maint_target.connect().await?;
    let previous = sessions::allows_connections(&client, maint_target, &plan.database).await?;
    let started = Instant::now();
    let guard = Reopen::new(maint_target.clone(), plan.database.clone(), previous);
    sessions::set_allow(&client, maint_target, &plan.database, false).await?;
    let inside = async {
        let ended =
            sessions::terminate(&client, maint_target, &plan.database, plan.terminate).await?;
        if !ended.ok {
            return Err(HostError::Failed(format!(
                "sessions {:?} on {} did not end within {}",
                ended.remaining,
                plan.database,
                crate::timefmt::format_duration(plan.terminate.timeout)
            )));
        }
        Ok((ended.cancelled.len(), ended.terminated.len()))
    }
    .await;
    let (cancelled, terminated) = match inside {
        Ok(n) => n,
        Err(e) => return Err(reopen_after(e, &client, plan, previous, guard).await),
    };
    let renames = format!(
        "ALTER DATABASE {orig} RENAME TO {old}; ALTER DATABASE {new} RENAME TO {orig}; {allow}; {old_allow}",
        orig = quote_ident(&plan.database)?,
        old = quote_ident(&plan.old_name)?,
        new = quote_ident(&plan.new_name)?,
        allow = allow_sql(&plan.database, true)?,
        old_allow = allow_sql(&plan.old_name, previous)?,
    );
    let committed = async {
        let tx = client
            .transaction()
            .await
            .map_err(|e| maint_target.error("cannot start the swap transaction", &e))?;
        tx.batch_execute(&renames)
            .await
            .map_err(|e| maint_target.error("the rename failed", &e))?;
        tx.commit()
            .await
            .map_err(|e| maint_target.error("the rename could not commit", &e))
    }
    .await;
    match committed {
        Ok(()) => {
            guard.disarm();
            Ok(Swapped {
                window: started.elapsed(),
                cancelled,
                terminated,
            })
        }
        Err(e) => Err(reopen_after(e, &client, plan, previous, guard).await),
    }
}

async fn reopen_after(
    e: HostError,
    client: &Client,
    plan: &RestorePlan,
    previous: bool,
    guard: Reopen,
) -> HostError {
    let reopened = client
        .batch_execute(&allow_sql(&plan.database, previous).unwrap_or_default())
        .await;
    guard.disarm();
    let state = match reopened {
        Ok(()) => format!(
            "the original database {} is open again and serving",
            plan.database
        ),
        Err(err) => format!(
            "REOPENING THE ORIGINAL FAILED ({}): run `{}` now",
            super::target::describe(&err),
            allow_sql(&plan.database, true).unwrap_or_default()
        ),
    };
    HostError::Failed(format!(
        "the swap was abandoned: {e}; {state}; the verified restore stays in {}",
        plan.new_name
    ))
}

/// Reopens the original if the swap is dropped mid-window (the runtime shutting down under
/// it): a last resort that runs on its own thread so it completes even then.
struct Reopen {
    target: Option<Target>,
    database: String,
    allow: bool,
}

impl Reopen {
    fn new(target: Target, database: String, allow: bool) -> Reopen {
        Reopen {
            target: Some(target),
            database,
            allow,
        }
    }

    fn disarm(mut self) {
        self.target = None;
    }
}

impl Drop for Reopen {
    fn drop(&mut self) {
        let Some(target) = self.target.take() else {
            return;
        };
        let Ok(sql) = allow_sql(&self.database, self.allow) else {
            return;
        };
        let worker = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let client = target.connect().await.ok()?;
                client.batch_execute(&sql).await.ok()
            })
        });
        let _ = worker.join();
    }
}
