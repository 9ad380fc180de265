//! Versioned migrations: `<version>_<name>.up.sql` / `<version>_<name>.down.sql` files and the
//! `schema_migrations` table. Each file runs in its own transaction together with the
//! bookkeeping row, so a version is either fully applied (or reverted) or not at all.

use super::inspect::{AppliedMigration, schema_version};
use super::target::Target;
use crate::host::HostError;
use regex::Regex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Instant;
use tokio_postgres::Client;

static FILE_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\d+)_([A-Za-z0-9_\-]+)\.(up|down)\.sql$").expect("valid regex")
});

/// A transaction statement inside a migration would end the transaction it runs in.
static TRANSACTION_CONTROL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?im)^\s*(begin|commit|rollback|start\s+transaction|end)\s*(transaction|work)?\s*;",
    )
    .expect("valid regex")
});

pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
    version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())";

#[derive(Debug, Clone, Default)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub up: Option<PathBuf>,
    pub down: Option<PathBuf>,
}

/// Every migration in `dir`, by version. Two files claiming one version with different names
/// are an error: which one ran would be a guess.
pub fn scan(dir: &Path) -> Result<BTreeMap<i64, Migration>, HostError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        HostError::Invalid(format!(
            "cannot read the migrations directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut found: BTreeMap<i64, Migration> = BTreeMap::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(caps) = FILE_NAME.captures(&file_name) else {
            continue;
        };
        let version: i64 = caps[1]
            .parse()
            .map_err(|_| HostError::Invalid(format!("{file_name}: the version is too large")))?;
        let m = found.entry(version).or_insert_with(|| Migration {
            version,
            name: caps[2].to_string(),
            ..Migration::default()
        });
        if m.name != caps[2] {
            return Err(HostError::Invalid(format!(
                "two migrations have version {version}: {} and {}",
                m.name, &caps[2]
            )));
        }
        let path = entry.path();
        if &caps[3] == "up" {
            m.up = Some(path);
        } else {
            m.down = Some(path);
        }
    }
    Ok(found)
}

/// One reverted (or, in a dry-run, to-be-reverted) migration.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub version: i64,
    pub name: String,
    pub file: String,
    pub sql: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DownPlan {
    pub from: i64,
    pub to: i64,
    pub steps: Vec<Step>,
}

/// Which down files take the database from its current version to `to`, newest first; refuses
/// (listing every gap) unless each one exists, so nothing runs halfway.
pub fn plan_down(
    applied: &[AppliedMigration],
    files: &BTreeMap<i64, Migration>,
    to: i64,
    dir: &Path,
) -> Result<DownPlan, HostError> {
    let from = applied.last().map_or(0, |m| m.version);
    if to < 0 {
        return Err(HostError::Invalid(format!(
            "the target version must be 0 or more (got {to})"
        )));
    }
    if to > from {
        return Err(HostError::Invalid(format!(
            "the database is at version {from}, below {to}: migrate_down only goes down"
        )));
    }
    if to != 0 && !applied.iter().any(|m| m.version == to) {
        let list: Vec<String> = applied.iter().map(|m| m.version.to_string()).collect();
        return Err(HostError::Invalid(format!(
            "version {to} was never applied, so it cannot be rolled back to; applied versions: {}",
            list.join(", ")
        )));
    }
    let mut steps = Vec::new();
    let mut missing = Vec::new();
    for m in applied.iter().rev().filter(|m| m.version > to) {
        let file = files.get(&m.version).and_then(|f| f.down.clone());
        let name = files
            .get(&m.version)
            .map(|f| f.name.clone())
            .or_else(|| m.name.clone())
            .unwrap_or_default();
        match file {
            Some(path) => {
                let sql = std::fs::read_to_string(&path).map_err(|e| {
                    HostError::Failed(format!("cannot read {}: {e}", path.display()))
                })?;
                if TRANSACTION_CONTROL.is_match(&sql) {
                    return Err(HostError::Invalid(format!(
                        "{} contains BEGIN/COMMIT/ROLLBACK: each down file already runs in its own \
                         transaction; remove them; nothing was changed",
                        path.display()
                    )));
                }
                steps.push(Step {
                    version: m.version,
                    name,
                    file: path.display().to_string(),
                    sql,
                    duration_ms: 0,
                });
            }
            None => missing.push(format!(
                "{} ({}_{}.down.sql)",
                m.version,
                m.version,
                if name.is_empty() { "<name>" } else { &name }
            )),
        }
    }
    if !missing.is_empty() {
        return Err(HostError::Failed(format!(
            "cannot roll back from version {from} to {to}: no down file in {} for version {}; \
             nothing was changed",
            dir.display(),
            missing.join(", ")
        )));
    }
    Ok(DownPlan { from, to, steps })
}

/// The plan for a database: reads its applied versions.
pub async fn plan_for(
    client: &Client,
    target: &Target,
    dir: &Path,
    to: i64,
) -> Result<DownPlan, HostError> {
    let version = schema_version(client, target).await?;
    let files = scan(dir)?;
    plan_down(&version.applied, &files, to, dir)
}

pub const DELETE_VERSION: &str = "DELETE FROM schema_migrations WHERE version = $1::bigint";
pub const INSERT_VERSION: &str =
    "INSERT INTO schema_migrations (version, name) VALUES ($1::bigint, $2)";

/// Runs the plan; stops at the first failure, whose transaction is rolled back, and says
/// which versions were reverted before it.
pub async fn run_down(
    client: &mut Client,
    target: &Target,
    mut plan: DownPlan,
) -> Result<DownPlan, HostError> {
    let mut done: Vec<i64> = Vec::new();
    for step in &mut plan.steps {
        let started = Instant::now();
        let outcome =
            run_in_transaction(client, target, &step.sql, DELETE_VERSION, &[&step.version]).await;
        if let Err(e) = outcome {
            // Everything above this version was reverted; this one rolled back whole.
            let reverted = if done.is_empty() {
                "no version was reverted".to_string()
            } else {
                format!(
                    "reverted before it: {}",
                    done.iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(HostError::Failed(format!(
                "down migration {}_{} failed and was rolled back: {e}; {reverted}; the database is at version {}",
                step.version, step.name, step.version
            )));
        }
        step.duration_ms = started.elapsed().as_millis() as u64;
        done.push(step.version);
    }
    Ok(plan)
}

async fn run_in_transaction(
    client: &mut Client,
    target: &Target,
    sql: &str,
    bookkeeping: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<(), HostError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| target.error("cannot start a transaction", &e))?;
    tx.batch_execute(sql)
        .await
        .map_err(|e| HostError::Failed(super::target::describe(&e)))?;
    tx.execute(bookkeeping, params)
        .await
        .map_err(|e| HostError::Failed(super::target::describe(&e)))?;
    tx.commit()
        .await
        .map_err(|e| HostError::Failed(super::target::describe(&e)))
}

/// Applies every up file above the current version (the sandbox builds its schema this way).
pub async fn run_up(
    client: &mut Client,
    target: &Target,
    dir: &Path,
) -> Result<Vec<i64>, HostError> {
    client
        .batch_execute(CREATE_TABLE)
        .await
        .map_err(|e| target.error("cannot create schema_migrations", &e))?;
    let current = schema_version(client, target).await?.version;
    let mut applied = Vec::new();
    for m in scan(dir)?.into_values().filter(|m| m.version > current) {
        let Some(up) = &m.up else {
            return Err(HostError::Failed(format!(
                "migration {} has no up file",
                m.version
            )));
        };
        let sql = std::fs::read_to_string(up)
            .map_err(|e| HostError::Failed(format!("cannot read {}: {e}", up.display())))?;
        run_in_transaction(client, target, &sql, INSERT_VERSION, &[&m.version, &m.name])
            .await
            .map_err(|e| {
                HostError::Failed(format!("migration {}_{} failed: {e}", m.version, m.name))
            })?;
        applied.push(m.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(versions: &[i64]) -> Vec<AppliedMigration> {
        versions
            .iter()
            .map(|v| AppliedMigration {
                version: *v,
                name: None,
                applied_at: None,
            })
            .collect()
    }

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn down_plans_run_newest_first_and_stop_at_the_target() {
        let dir = dir_with(&[
            ("0001_init.up.sql", "a"),
            ("0001_init.down.sql", "b"),
            ("0002_more.up.sql", "c"),
            ("0002_more.down.sql", "d"),
            ("0003_last.up.sql", "e"),
            ("0003_last.down.sql", "f"),
            ("README.md", "ignored"),
        ]);
        let files = scan(dir.path()).unwrap();
        let plan = plan_down(&applied(&[1, 2, 3]), &files, 1, dir.path()).unwrap();
        let order: Vec<i64> = plan.steps.iter().map(|s| s.version).collect();
        assert_eq!(order, vec![3, 2]);
        assert_eq!(plan.steps[0].sql, "f");
    }

    #[test]
    fn missing_down_files_are_all_listed() {
        let dir = dir_with(&[
            ("1_init.up.sql", "a"),
            ("2_more.up.sql", "c"),
            ("3_last.up.sql", "e"),
            ("3_last.down.sql", "f"),
        ]);
        let files = scan(dir.path()).unwrap();
        let err = plan_down(&applied(&[1, 2, 3]), &files, 0, dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("2 (2_more.down.sql), 1 (1_init.down.sql)"),
            "{text}"
        );
        assert!(text.contains("nothing was changed"), "{text}");
    }

    #[test]
    fn targets_must_be_applied_versions_below_the_current_one() {
        let dir = dir_with(&[("1_a.down.sql", ""), ("3_b.down.sql", "")]);
        let files = scan(dir.path()).unwrap();
        assert!(plan_down(&applied(&[1, 3]), &files, 2, dir.path()).is_err());
        assert!(plan_down(&applied(&[1, 3]), &files, 4, dir.path()).is_err());
        assert!(
            plan_down(&applied(&[1, 3]), &files, 3, dir.path())
                .unwrap()
                .steps
                .is_empty()
        );
    }

    #[test]
    fn transaction_statements_in_a_down_file_are_refused() {
        let dir = dir_with(&[("1_a.down.sql", "BEGIN;\nDROP TABLE x;\nCOMMIT;\n")]);
        let files = scan(dir.path()).unwrap();
        let err = plan_down(&applied(&[1]), &files, 0, dir.path()).unwrap_err();
        assert!(err.to_string().contains("BEGIN/COMMIT"), "{err}");
    }
}
