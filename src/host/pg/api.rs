//! The script-facing `pg::` functions: options in, one journaled read or mutation each, with
//! the exact SQL or commands as the dry-run plan.

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
    opt.or_else(|| session.deadline_left())
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

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct QueryOpts {
    database: Option<String>,
    #[serde(deserialize_with = "opt_seconds")]
    timeout: Option<f64>,
    max_rows: Option<i64>,
}

pub fn query(session: &Session, sql: &str, list: Array, opts: Map) -> RhaiResult {
    let doc = &QUERY;
    let o: QueryOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let mut target = env.db(&o.database);
    if let Some(t) = secs(doc, "timeout", o.timeout).map_err(err(doc))? {
        target = target.with_statement_timeout(t);
    }
    let max_rows = o.max_rows.unwrap_or(DEFAULT_MAX_ROWS).clamp(1, 100_000) as usize;
    let (values, shown) = params(list);
    let args = json!({"sql": sql, "params": shown, "database": target.display(), "opts": o});
    let sql = sql.to_string();
    session.read(&doc.qualified_name(), args, async move {
        q::query(&target, &sql, &values, max_rows).await
    })
}

pub fn execute(session: &Session, sql: &str, list: Array, opts: Map) -> RhaiResult {
    let doc = &EXECUTE;
    let o: QueryOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let mut target = env.db(&o.database);
    if let Some(t) = secs(doc, "timeout", o.timeout).map_err(err(doc))? {
        target = target.with_statement_timeout(t);
    }
    let (values, shown) = params(list);
    let args = json!({"sql": sql, "params": shown, "database": target.display()});
    let steps = vec![format!("{sql}   -- parameters: {shown}")];
    let sql = sql.to_string();
    mutate(
        session,
        doc,
        args,
        steps,
        || q::Executed {
            rows_affected: 0,
            rows: Vec::new(),
        },
        async move { q::execute(&target, &sql, &values).await },
    )
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct DbOpts {
    database: Option<String>,
    #[serde(deserialize_with = "opt_seconds")]
    timeout: Option<f64>,
}

fn scan_target(
    session: &Session,
    doc: &FnDoc,
    opts: Map,
) -> Result<(Target, DbOpts), Box<EvalAltResult>> {
    let o: DbOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let timeout = secs(doc, "timeout", o.timeout).map_err(err(doc))?;
    let target = env
        .db(&o.database)
        .with_statement_timeout(scan_timeout(session, timeout));
    Ok((target, o))
}

pub fn schema_version(session: &Session, opts: Map) -> RhaiResult {
    let doc = &SCHEMA_VERSION;
    let (target, o) = scan_target(session, doc, opts)?;
    let args = json!({"database": target.display(), "opts": o});
    session.read(&doc.qualified_name(), args, async move {
        let client = target.connect().await?;
        inspect::schema_version(&client, &target).await
    })
}

#[derive(Serialize)]
struct Counts {
    tables: std::collections::BTreeMap<String, i64>,
    total_rows: i64,
}

pub fn table_counts(session: &Session, opts: Map) -> RhaiResult {
    let doc = &TABLE_COUNTS;
    let (target, o) = scan_target(session, doc, opts)?;
    let args = json!({"database": target.display(), "opts": o});
    session.read(&doc.qualified_name(), args, async move {
        let mut client = target.connect().await?;
        let tx = inspect::snapshot(&mut client, &target).await?;
        let tables = inspect::table_counts(&tx, &target).await?;
        Ok(Counts {
            total_rows: tables.values().sum(),
            tables,
        })
    })
}

pub fn check_integrity(session: &Session, opts: Map) -> RhaiResult {
    let doc = &CHECK_INTEGRITY;
    let (target, o) = scan_target(session, doc, opts)?;
    let args = json!({"database": target.display(), "opts": o});
    session.read(&doc.qualified_name(), args, async move {
        let mut client = target.connect().await?;
        let tx = inspect::snapshot(&mut client, &target).await?;
        inspect::check_integrity(&tx, &target).await
    })
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct ConnectionsOpts {
    database: Option<String>,
    all: bool,
}

pub fn connections(session: &Session, opts: Map) -> RhaiResult {
    let doc = &CONNECTIONS;
    let o: ConnectionsOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let target = env.db(&o.database);
    let maintenance = env.target.with_dbname(&env.maintenance(&None));
    let database = (!o.all).then(|| target.dbname().to_string());
    let args = json!({"database": target.display(), "opts": o});
    session.read(&doc.qualified_name(), args, async move {
        let client = connect_or_maintenance(&target, &maintenance).await?;
        sessions::list(&client, &target, database.as_deref()).await
    })
}

/// Connects to the database itself, or to the maintenance database when it refuses new
/// connections (after block_connections).
async fn connect_or_maintenance(
    target: &Target,
    maintenance: &Target,
) -> Result<tokio_postgres::Client, HostError> {
    match target.connect().await {
        Ok(client) => Ok(client),
        Err(first) => maintenance.connect().await.map_err(|_| first),
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct BlockOpts {
    database: Option<String>,
    maintenance_db: Option<String>,
}

fn set_allow(session: &Session, doc: &FnDoc, opts: Map, allow: bool) -> RhaiResult {
    let o: BlockOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let database = env.db(&o.database).dbname().to_string();
    let maintenance = env.target.with_dbname(&env.maintenance(&o.maintenance_db));
    let steps = vec![sessions::allow_sql(&database, allow).map_err(err(doc))?];
    let args = json!({"database": database, "server": maintenance.display()});
    let shown = database.clone();
    mutate(
        session,
        doc,
        args,
        steps,
        move || sessions::Allowed {
            database: shown,
            allow_connections: allow,
            previous: !allow,
        },
        async move {
            let client = maintenance.connect().await?;
            sessions::set_allow(&client, &maintenance, &database, allow).await
        },
    )
}

pub fn block_connections(session: &Session, opts: Map) -> RhaiResult {
    set_allow(session, &BLOCK_CONNECTIONS, opts, false)
}

pub fn allow_connections(session: &Session, opts: Map) -> RhaiResult {
    set_allow(session, &ALLOW_CONNECTIONS, opts, true)
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct TerminateOpts {
    database: Option<String>,
    #[serde(deserialize_with = "opt_seconds")]
    grace: Option<f64>,
    #[serde(deserialize_with = "opt_seconds")]
    timeout: Option<f64>,
}

pub fn terminate_connections(session: &Session, opts: Map) -> RhaiResult {
    let doc = &TERMINATE_CONNECTIONS;
    let o: TerminateOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let target = env.db(&o.database);
    let maintenance = env.target.with_dbname(&env.maintenance(&None));
    let plan = TerminatePlan {
        grace: secs(doc, "grace", o.grace)
            .map_err(err(doc))?
            .unwrap_or(Duration::from_secs(2)),
        timeout: secs(doc, "timeout", o.timeout)
            .map_err(err(doc))?
            .unwrap_or(Duration::from_secs(5)),
    };
    let database = target.dbname().to_string();
    let steps = sessions::terminate_sql()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let args = json!({"database": target.display(), "opts": o});
    let shown = database.clone();
    mutate(
        session,
        doc,
        args,
        steps,
        move || sessions::Terminated {
            database: shown,
            own_pid: 0,
            cancelled: Vec::new(),
            terminated: Vec::new(),
            remaining: Vec::new(),
            ok: true,
        },
        async move {
            let client = connect_or_maintenance(&target, &maintenance).await?;
            sessions::terminate(&client, &target, &database, plan).await
        },
    )
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct BackupOpts {
    dir: Option<String>,
    database: Option<String>,
    compress: Option<u32>,
    count_rows: Option<bool>,
    #[serde(deserialize_with = "opt_seconds")]
    lock_timeout: Option<f64>,
}

fn backup_plan(
    session: &Session,
    env: &Env,
    doc: &FnDoc,
    dir: Option<String>,
    o: &BackupOpts,
) -> Result<BackupPlan, HostError> {
    let dir = dir.or_else(|| env.settings.backup_dir.clone()).ok_or_else(|| {
        HostError::Invalid(format!(
            "no backup directory: set backup_dir in [environments.{}.postgres] or pass #{{ dir: \"/path\" }}",
            session.environment()
        ))
    })?;
    Ok(BackupPlan {
        dir: PathBuf::from(dir),
        bin_dir: env.bin_dir()?,
        compress: o.compress,
        lock_wait_timeout: secs(doc, "lock_timeout", o.lock_timeout)?
            .unwrap_or(env.target.timeouts.lock),
        count_rows: o.count_rows.unwrap_or(true),
    })
}

pub fn safety_backup(session: &Session, opts: Map) -> RhaiResult {
    let doc = &SAFETY_BACKUP;
    let o: BackupOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let target = env
        .db(&o.database)
        .with_statement_timeout(scan_timeout(session, None));
    let plan = backup_plan(session, &env, doc, o.dir.clone(), &o).map_err(err(doc))?;
    let path = backup::backup_path(&plan.dir, target.dbname(), chrono::Utc::now());
    let steps = vec![
        backup::dump_command(&plan, &target, &path, Some("<exported snapshot>")).display(),
        format!("sha256 of the dump into {}.sha256", path.display()),
        backup::list_command(&plan.bin_dir, &path).display(),
    ];
    let args = json!({"database": target.display(), "opts": o});
    let planned_path = path.display().to_string();
    let database = target.dbname().to_string();
    mutate(
        session,
        doc,
        args,
        steps,
        move || backup::Backup {
            checksum_file: format!("{planned_path}.sha256"),
            manifest_file: format!("{planned_path}.manifest.json"),
            path: planned_path,
            sha256: String::new(),
            bytes: 0,
            database,
            tables: 0,
            rows: Default::default(),
            verified: false,
            duration_ms: 0,
        },
        async move { backup::safety_backup(&target, &plan).await },
    )
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RestoreOpts {
    database: Option<String>,
    maintenance_db: Option<String>,
    jobs: Option<u32>,
    no_owner: bool,
    #[serde(deserialize_with = "opt_seconds")]
    grace: Option<f64>,
    #[serde(deserialize_with = "opt_seconds")]
    terminate_timeout: Option<f64>,
    drop_failed: bool,
    swap: Option<bool>,
}

pub fn pg_restore(session: &Session, backup_file: &str, opts: Map) -> RhaiResult {
    let doc = &PG_RESTORE;
    let o: RestoreOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let target = env.db(&o.database);
    let database = target.dbname().to_string();
    let maintenance_db = env.maintenance(&o.maintenance_db);
    if maintenance_db == database {
        return Err(err(doc)(HostError::Invalid(format!(
            "the maintenance database cannot be {database} itself: it is renamed; pass maintenance_db"
        ))));
    }
    let (new_name, old_name) = restore::names(&database, chrono::Utc::now());
    let plan = RestorePlan {
        backup: PathBuf::from(backup_file),
        database: database.clone(),
        maintenance_db,
        bin_dir: env.bin_dir().map_err(err(doc))?,
        jobs: o.jobs.unwrap_or(1).clamp(1, 64),
        no_owner: o.no_owner,
        terminate: TerminatePlan {
            grace: secs(doc, "grace", o.grace)
                .map_err(err(doc))?
                .unwrap_or(Duration::from_millis(500)),
            timeout: secs(doc, "terminate_timeout", o.terminate_timeout)
                .map_err(err(doc))?
                .unwrap_or(Duration::from_secs(5)),
        },
        drop_failed: o.drop_failed,
        swap: o.swap.unwrap_or(true),
        new_name,
        old_name,
    };
    let steps = restore::describe(&plan, &target).map_err(err(doc))?;
    let args = json!({"backup": backup_file, "database": target.display(), "opts": o});
    let planned = plan.clone();
    mutate(
        session,
        doc,
        args,
        steps,
        move || restore::Restored {
            database: planned.database.clone(),
            backup: planned.backup.display().to_string(),
            sha256: String::new(),
            restored_into: planned.new_name.clone(),
            swapped: planned.swap,
            old_database: planned.swap.then(|| planned.old_name.clone()),
            swap_window_ms: 0.0,
            sessions_cancelled: 0,
            sessions_terminated: 0,
            restore_ms: 0,
            verify_ms: 0,
            integrity: inspect::Integrity {
                ok: true,
                database: planned.new_name.clone(),
                foreign_keys_checked: 0,
                check_constraints_checked: 0,
                problems: Vec::new(),
                orphans: Vec::new(),
                invalid_indexes: Vec::new(),
                not_validated: Vec::new(),
            },
            counts: Default::default(),
            counts_match_manifest: None,
        },
        async move { restore::restore(&target, &plan).await },
    )
}

#[derive(Serialize)]
struct Dropped {
    dropped: String,
}

pub fn drop_database(session: &Session, name: &str) -> RhaiResult {
    let doc = &DROP_DATABASE;
    let env = Env::load(session).map_err(err(doc))?;
    let maintenance_db = env.maintenance(&None);
    let protected = [
        env.target.dbname(),
        maintenance_db.as_str(),
        "postgres",
        "template0",
        "template1",
    ];
    if protected.contains(&name) {
        return Err(err(doc)(HostError::Invalid(format!(
            "refusing to drop {name}: it is the environment's database, the maintenance database or a template"
        ))));
    }
    let sql = format!("DROP DATABASE {}", quote_ident(name).map_err(err(doc))?);
    let maintenance = env.target.with_dbname(&maintenance_db);
    let args = json!({"name": name, "server": maintenance.display()});
    let shown = name.to_string();
    mutate(
        session,
        doc,
        args,
        vec![sql.clone()],
        move || Dropped {
            dropped: shown.clone(),
        },
        async move {
            let client = maintenance.connect().await?;
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| maintenance.error("the drop failed", &e))?;
            Ok(Dropped {
                dropped: name_of(&sql),
            })
        },
    )
}

fn name_of(drop_sql: &str) -> String {
    drop_sql
        .trim_start_matches("DROP DATABASE ")
        .trim_matches('"')
        .replace("\"\"", "\"")
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct MigrateOpts {
    dir: Option<String>,
    backup: Option<bool>,
    backup_dir: Option<String>,
    #[serde(deserialize_with = "opt_seconds")]
    timeout: Option<f64>,
}

#[derive(Serialize)]
struct MigratedDown {
    from: i64,
    to: i64,
    steps: Vec<migrations::Step>,
    backup: Option<String>,
}

pub fn migrate_down(session: &Session, to: i64, opts: Map) -> RhaiResult {
    let doc = &MIGRATE_DOWN;
    let o: MigrateOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let dir = o
        .dir
        .clone()
        .or_else(|| env.settings.migrations_dir.clone())
        .map(PathBuf::from)
        .ok_or_else(|| {
            err(doc)(HostError::Invalid(format!(
                "no migrations directory: set migrations_dir in [environments.{}.postgres] or pass #{{ dir: \"/path\" }}",
                session.environment()
            )))
        })?;
    let timeout = secs(doc, "timeout", o.timeout).map_err(err(doc))?;
    let target = env
        .target
        .with_statement_timeout(scan_timeout(session, timeout));
    let take_backup = o.backup.unwrap_or(true);
    let backup_plan = if take_backup {
        let bo = BackupOpts::default();
        Some(backup_plan(session, &env, doc, o.backup_dir.clone(), &bo).map_err(err(doc))?)
    } else {
        None
    };
    // The plan needs the database's applied versions: read it for real, dry-run or not, so a
    // missing down file is refused in the plan too.
    let captured: Arc<Mutex<Option<DownPlan>>> = Arc::default();
    let sink = captured.clone();
    let (plan_target, plan_dir) = (target.clone(), dir.clone());
    let _plan_read = session.read(
        &SCHEMA_VERSION.qualified_name(),
        json!({"database": target.display(), "for": "pg::migrate_down", "to": to}),
        async move {
            let client = plan_target.connect().await?;
            let plan = migrations::plan_for(&client, &plan_target, &plan_dir, to).await?;
            let shown = json!({"from": plan.from, "to": plan.to,
                "versions": plan.steps.iter().map(|s| s.version).collect::<Vec<_>>()});
            *sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(plan);
            Ok(shown)
        },
    )?;
    let plan = captured
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("the plan read succeeded");
    let mut steps = Vec::new();
    if let Some(bp) = &backup_plan {
        steps.push(format!(
            "safety backup into {} (pg_dump --format=custom)",
            bp.dir.display()
        ));
    }
    for s in &plan.steps {
        steps.push(format!(
            "BEGIN; -- {}\n{}\n{} -- $1 = {}\nCOMMIT;",
            s.file,
            s.sql.trim_end(),
            migrations::DELETE_VERSION,
            s.version
        ));
    }
    let args = json!({"to_version": to, "dir": dir.display().to_string(), "database": target.display(), "opts": o});
    let planned = MigratedDown {
        from: plan.from,
        to: plan.to,
        steps: plan.steps.clone(),
        backup: None,
    };
    mutate(session, doc, args, steps, move || planned, async move {
        let backup = match &backup_plan {
            Some(bp) => Some(
                backup::safety_backup(&target, bp)
                    .await
                    .map_err(|e| {
                        HostError::Failed(format!(
                            "the safety backup failed, so no migration was run: {e}"
                        ))
                    })?
                    .path,
            ),
            None => None,
        };
        let mut client = target.connect().await?;
        let done = migrations::run_down(&mut client, &target, plan).await?;
        Ok(MigratedDown {
            from: done.from,
            to: done.to,
            steps: done.steps,
            backup,
        })
    })
}

pub fn pitr_window(session: &Session) -> RhaiResult {
    let doc = &PITR_WINDOW;
    let env = Env::load(session).map_err(err(doc))?;
    let spec = env.cluster().map_err(err(doc))?;
    let args = json!({"data_dir": spec.cluster.data_dir, "archive_dir": spec.archive_dir});
    session.read(&doc.qualified_name(), args, async move {
        pitr::window(&spec).await
    })
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct PitrOpts {
    port: Option<u16>,
    data_dir: Option<String>,
    #[serde(deserialize_with = "opt_seconds")]
    timeout: Option<f64>,
    database: Option<String>,
}

/// The first free loopback port above the serving one.
fn free_port_after(port: u16) -> Option<u16> {
    (1..=200u16)
        .filter_map(|i| port.checked_add(i))
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
}

pub fn pitr(session: &Session, target_time: &str, opts: Map) -> RhaiResult {
    let doc = &PITR;
    let o: PitrOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let when = pitr::parse_target(target_time).map_err(err(doc))?;
    pitr::check_not_future(when).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let spec = env.cluster().map_err(err(doc))?;
    let database = env.db(&o.database).dbname().to_string();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let candidate_dir =
        o.data_dir.clone().map(PathBuf::from).unwrap_or_else(|| {
            backup::with_suffix(&spec.cluster.data_dir, &format!(".pitr-{stamp}"))
        });
    let candidate_port = match o.port.or_else(|| free_port_after(spec.port)) {
        Some(p) => p,
        None => {
            return Err(err(doc)(HostError::Invalid(
                "no free port for the recovered cluster: pass #{ port: N }".into(),
            )));
        }
    };
    let timeout = secs(doc, "timeout", o.timeout)
        .map_err(err(doc))?
        .unwrap_or(Duration::from_secs(600));
    // The window is read for real, dry-run or not: a target outside it is refused before
    // anything is stopped, copied or started.
    let chosen: Arc<Mutex<Option<(super::wal::BaseBackup, u32)>>> = Arc::default();
    let sink = chosen.clone();
    let window_spec = spec.clone();
    let _window = session.read(
        &PITR_WINDOW.qualified_name(),
        json!({"for": "pg::pitr", "target_time": pitr_rfc3339(when)}),
        async move {
            let window = pitr::window(&window_spec).await?;
            let backup = super::wal::choose(&window, when)?;
            *sink.lock().unwrap_or_else(|e| e.into_inner()) = Some((backup, window.timeline));
            Ok(window)
        },
    )?;
    let (backup, timeline) = chosen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("the window read succeeded");
    let plan = RecoverPlan {
        target: when,
        backup,
        timeline,
        candidate_dir,
        candidate_port,
        timeout,
        database,
    };
    let steps = pitr::describe(&spec, &plan).map_err(err(doc))?;
    let args =
        json!({"target_time": pitr_rfc3339(when), "opts": o, "base_backup": plan.backup.dir});
    let target = env.target.clone();
    let planned = plan.clone();
    mutate(
        session,
        doc,
        args,
        steps,
        move || pitr::Recovery {
            target_time: pitr_rfc3339(planned.target),
            base_backup: planned.backup.dir.clone(),
            candidate: pitr::Candidate {
                data_dir: planned.candidate_dir.display().to_string(),
                port: planned.candidate_port,
                log_file: String::new(),
                archive_dir: planned.candidate_archive().display().to_string(),
            },
            recovered_to: None,
            timeline: 0,
            database: planned.database.clone(),
            integrity: inspect::Integrity {
                ok: true,
                database: planned.database.clone(),
                foreign_keys_checked: 0,
                check_constraints_checked: 0,
                problems: Vec::new(),
                orphans: Vec::new(),
                invalid_indexes: Vec::new(),
                not_validated: Vec::new(),
            },
            counts: Default::default(),
            duration_ms: 0,
        },
        async move { pitr::recover(&spec, &plan, &target).await },
    )
}

fn pitr_rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    super::wal::rfc3339(t)
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct SwapOpts {
    #[serde(deserialize_with = "opt_seconds")]
    timeout: Option<f64>,
}

/// The part of pg::pitr's result pitr_swap needs (other fields are ignored).
#[derive(Debug, Deserialize)]
struct RecoveryArg {
    candidate: CandidateArg,
}

#[derive(Debug, Deserialize)]
struct CandidateArg {
    data_dir: String,
    port: u16,
    archive_dir: String,
}

pub fn pitr_swap(session: &Session, recovery: Map, opts: Map) -> RhaiResult {
    let doc = &PITR_SWAP;
    let o: SwapOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let arg: RecoveryArg = rhai::serde::from_dynamic(&Dynamic::from_map(recovery)).map_err(|e| {
        err(doc)(HostError::Invalid(format!(
            "pass the map pg::pitr returned (it needs candidate.data_dir, candidate.port, candidate.archive_dir): {e}"
        )))
    })?;
    let env = Env::load(session).map_err(err(doc))?;
    let spec = env.cluster().map_err(err(doc))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let plan = SwapPlan {
        candidate_dir: PathBuf::from(&arg.candidate.data_dir),
        candidate_port: arg.candidate.port,
        candidate_archive: PathBuf::from(&arg.candidate.archive_dir),
        previous_dir: backup::with_suffix(&spec.cluster.data_dir, &format!(".before-pitr-{stamp}")),
        timeout: secs(doc, "timeout", o.timeout)
            .map_err(err(doc))?
            .unwrap_or(Duration::from_secs(120)),
    };
    let steps = pitr::describe_swap(&spec, &plan);
    let args = json!({"candidate": arg.candidate.data_dir, "port": arg.candidate.port, "opts": o});
    let target = env.target.clone();
    let planned = (
        spec.cluster.data_dir.clone(),
        plan.previous_dir.clone(),
        spec.port,
    );
    mutate(
        session,
        doc,
        args,
        steps,
        move || pitr::Swapped {
            data_dir: planned.0.display().to_string(),
            previous_data_dir: planned.1.display().to_string(),
            port: planned.2,
            timeline: 0,
            downtime_ms: 0,
        },
        async move { pitr::swap(&spec, &plan, &target).await },
    )
}
