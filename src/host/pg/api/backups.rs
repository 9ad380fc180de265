//! Safety backups, restore-then-swap, and the one explicit way to drop a database.

use super::*;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct BackupOpts {
    dir: Option<String>,
    database: Option<String>,
    compress: Option<u32>,
    count_rows: Option<bool>,
    #[serde(deserialize_with = "opt_seconds")]
    lock_timeout: Option<f64>,
}

pub(super) fn backup_plan(
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
            dump_ms: 0,
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
            integrity: inspect::Integrity::planned(&planned.new_name),
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
    let (shown, dropped) = (name.to_string(), name.to_string());
    mutate(
        session,
        doc,
        args,
        vec![sql.clone()],
        move || Dropped { dropped: shown },
        async move {
            let client = maintenance.connect().await?;
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| maintenance.error("the drop failed", &e))?;
            Ok(Dropped { dropped })
        },
    )
}
