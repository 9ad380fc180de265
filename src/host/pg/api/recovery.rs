//! Point-in-time recovery of a self-managed cluster.

use super::*;
use crate::host::pg::wal;

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
    let chosen: Arc<Mutex<Option<(wal::BaseBackup, u32)>>> = Arc::default();
    let sink = chosen.clone();
    let window_spec = spec.clone();
    // Journaled under pg::pitr (phase "window") so a refusal names the function called.
    let _window = session.read(
        &doc.qualified_name(),
        json!({"phase": "window", "target_time": pitr_rfc3339(when)}),
        async move {
            let window = pitr::window(&window_spec).await?;
            let backup = wal::choose(&window, when)?;
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
            integrity: inspect::Integrity::planned(&planned.database),
            counts: Default::default(),
            duration_ms: 0,
        },
        async move { pitr::recover(&spec, &plan, &target).await },
    )
}

fn pitr_rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    wal::rfc3339(t)
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
