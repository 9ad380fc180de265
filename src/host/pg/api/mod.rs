//! The script-facing `pg::` functions: options in, one journaled read or mutation each, with
//! the exact SQL or commands as the dry-run plan. Shared helpers live here; the functions are
//! grouped by what they touch.

mod access;
mod backups;
mod data;
mod migrate;
mod recovery;

pub use access::{allow_connections, block_connections, connections, terminate_connections};
pub use backups::{drop_database, pg_restore, safety_backup};
pub use data::{check_integrity, execute, query, schema_version, table_counts};
pub use migrate::migrate_down;
pub use recovery::{pitr, pitr_swap, pitr_window};

use super::backup::{self, BackupPlan};
use super::docs::*;
use super::inspect;
use super::migrations::{self, DownPlan};
use super::pitr::{self, ClusterSpec, RecoverPlan, SwapPlan};
use super::query as q;
use super::restore::{self, RestorePlan};
use super::sessions::{self, TerminatePlan};
use super::sql::quote_ident;
use super::target::Target;
use super::tools::find_bin_dir;
use super::value::Param;
use crate::console;
use crate::host::{FnDoc, HostError, dynamic_to_json, options};
use crate::platform::Postgres;
use crate::session::Session;
use rhai::{Array, Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type RhaiResult = Result<Dynamic, Box<EvalAltResult>>;

const DEFAULT_MAINTENANCE_DB: &str = "postgres";
const DEFAULT_MAX_ROWS: i64 = 10_000;

/// Seconds as an optional script number (`5` or `5.0`).
fn opt_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    options::number(d).map(Some)
}

fn secs(doc: &FnDoc, what: &str, value: Option<f64>) -> Result<Option<Duration>, HostError> {
    value
        .map(|v| options::seconds(&doc.qualified_name(), what, v))
        .transpose()
}

/// The environment's database and PostgreSQL settings.
struct Env {
    target: Target,
    settings: Postgres,
}

impl Env {
    fn load(session: &Session) -> Result<Env, HostError> {
        let config = session.env_config();
        let target = Target::for_environment(
            &session.environment(),
            config.database_url_env.as_deref(),
            config.postgres.as_ref(),
        )?;
        Ok(Env {
            target,
            settings: config.postgres.clone().unwrap_or_default(),
        })
    }

    fn db(&self, database: &Option<String>) -> Target {
        match database {
            Some(name) => self.target.with_dbname(name),
            None => self.target.clone(),
        }
    }

    fn maintenance(&self, opt: &Option<String>) -> String {
        opt.clone()
            .or_else(|| self.settings.maintenance_db.clone())
            .unwrap_or_else(|| DEFAULT_MAINTENANCE_DB.into())
    }

    fn bin_dir(&self) -> Result<PathBuf, HostError> {
        find_bin_dir(self.settings.bin_dir.as_deref(), None).map_err(HostError::Invalid)
    }

    fn cluster(&self) -> Result<ClusterSpec, HostError> {
        let s = &self.settings;
        let need = |value: &Option<String>, key: &str| {
            value.clone().map(PathBuf::from).ok_or_else(|| {
                HostError::Invalid(format!(
                    "point-in-time recovery needs {key} in [environments.<env>.postgres]: it works on a \
                     self-managed cluster on this machine (see the README for operator-managed PostgreSQL)"
                ))
            })
        };
        let data_dir = need(&s.data_dir, "data_dir")?;
        let archive_dir = need(&s.archive_dir, "archive_dir")?;
        let base_backup_dir = need(&s.base_backup_dir, "base_backup_dir")?;
        let run_as = super::cluster::cluster_user(s.run_as.as_deref(), &data_dir)?;
        Ok(ClusterSpec {
            cluster: super::cluster::Cluster::new(&self.bin_dir()?, &data_dir, run_as),
            archive_dir,
            base_backup_dir,
            port: s.port.unwrap_or(self.target.ports()[0]),
        })
    }
}

/// Statement timeout for whole-database scans: the option, else what is left of the run's
/// budget (so the server stops when the run does), else none.
fn scan_timeout(session: &Session, opt: Option<Duration>) -> Duration {
    // A spent budget must not become 0, which PostgreSQL reads as "no limit".
    opt.or_else(|| {
        session
            .deadline_left()
            .map(|d| d.max(Duration::from_millis(1)))
    })
    .unwrap_or(Duration::ZERO)
}

fn err(doc: &FnDoc) -> impl Fn(HostError) -> Box<EvalAltResult> + '_ {
    move |e| e.into_rhai(&doc.qualified_name())
}

/// A mutation whose dry-run prints and journals `steps`, the SQL or commands it would run.
fn mutate<T: Serialize>(
    session: &Session,
    doc: &FnDoc,
    args: Value,
    steps: Vec<String>,
    planned: impl FnOnce() -> T,
    fut: impl std::future::Future<Output = Result<T, HostError>>,
) -> RhaiResult {
    let name = doc.qualified_name();
    let request = json!({ "steps": steps });
    let shown = name.clone();
    session.mutate(
        &name,
        args,
        request,
        move || {
            console::info(&format!("dry-run: {shown} would run:"));
            for step in &steps {
                console::info(&format!("  {step}"));
            }
            planned()
        },
        fut,
    )
}

fn params(list: Array) -> (Vec<Param>, Value) {
    let json: Vec<Value> = list.iter().map(dynamic_to_json).collect();
    (
        json.iter().map(Param::from_json).collect(),
        Value::Array(json),
    )
}
