//! Schema rollback through the down files.

use super::backups::{BackupOpts, backup_plan};
use super::*;

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
        &doc.qualified_name(),
        json!({"phase": "plan", "database": target.display(), "to": to}),
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
