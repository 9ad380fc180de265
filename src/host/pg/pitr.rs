//! Point-in-time recovery of a self-managed cluster, done for real and side by side:
//!
//! 1. `recover`: check the target lies in the recoverable window; copy the chosen base backup
//!    into a NEW data directory; configure recovery (`restore_command`,
//!    `recovery_target_time`, `recovery_target_action = 'promote'`, `recovery.signal`); start
//!    it on its own port; wait for promotion; verify. The serving cluster is not touched.
//! 2. `swap` (only after the operator confirmed): stop the recovered cluster and the serving
//!    one, rename the serving data directory to a dated name (kept), move the recovered one into
//!    its place, drop the recovery settings and start it on the serving port. Every client,
//!    service unit and backup job keeps pointing at the same directory and port. If it does not
//!    start, the old directory is put back and started.
//!
//! The recovered cluster archives its own WAL (its new timeline) into a directory of its own
//! until it is swapped in; then those files join the main archive. An abandoned recovery
//! therefore leaves nothing in the archive that a later recovery could follow by mistake.

use super::cluster::Cluster;
use super::inspect::{self, Integrity};
use super::target::Target;
use super::tools::{Cmd, chown_tree};
use super::wal::{self, BaseBackup, Window, rfc3339};
use crate::host::HostError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BEGIN_MARK: &str = "# BEGIN rollback pg::pitr";
const END_MARK: &str = "# END rollback pg::pitr";

/// A self-managed cluster as the platform describes it.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub cluster: Cluster,
    pub archive_dir: PathBuf,
    pub base_backup_dir: PathBuf,
    pub port: u16,
}

/// Parses an operator's time: RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fff]` with a zone. A time
/// without a zone is refused: guessing the zone is how recoveries land an hour off.
pub fn parse_target(text: &str) -> Result<DateTime<Utc>, HostError> {
    let trimmed = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(t.to_utc());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z"] {
        if let Ok(t) = DateTime::parse_from_str(trimmed, format) {
            return Ok(t.to_utc());
        }
    }
    if let Some(stamp) = trimmed
        .strip_suffix(" UTC")
        .or_else(|| trimmed.strip_suffix(" GMT"))
        && let Ok(t) = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.f")
    {
        return Ok(t.and_utc());
    }
    let zoneless = chrono::NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f").is_ok()
        || chrono::NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f").is_ok();
    Err(HostError::Invalid(if zoneless {
        format!(
            "'{trimmed}' has no time zone; write it with one, e.g. {}Z or with +02:00",
            trimmed.replace(' ', "T")
        )
    } else {
        format!(
            "cannot read '{trimmed}' as a time; write it as RFC 3339, e.g. 2024-01-15T14:30:00Z"
        )
    }))
}

/// Refuses a target in the future: recovery would replay everything and never stop there.
pub fn check_not_future(target: DateTime<Utc>) -> Result<(), HostError> {
    let now = Utc::now();
    if target > now {
        return Err(HostError::Invalid(format!(
            "target {} is in the future (now is {}); nothing was changed",
            rfc3339(target),
            rfc3339(now)
        )));
    }
    Ok(())
}

/// The timeline the serving cluster is on, from its control file.
pub async fn current_timeline(spec: &ClusterSpec) -> Result<u32, HostError> {
    let data = spec.cluster.control_data(&spec.cluster.data_dir).await?;
    data.iter()
        .find(|(k, _)| k == "Latest checkpoint's TimeLineID")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| {
            HostError::Failed(format!(
                "pg_controldata of {} shows no timeline",
                spec.cluster.data_dir.display()
            ))
        })
}

pub async fn window(spec: &ClusterSpec) -> Result<Window, HostError> {
    let timeline = current_timeline(spec).await?;
    wal::window(
        &spec.cluster,
        &spec.archive_dir,
        &spec.base_backup_dir,
        timeline,
    )
    .await
}

#[derive(Debug, Clone)]
pub struct RecoverPlan {
    pub target: DateTime<Utc>,
    pub backup: BaseBackup,
    pub timeline: u32,
    pub candidate_dir: PathBuf,
    pub candidate_port: u16,
    pub timeout: Duration,
    pub database: String,
}

impl RecoverPlan {
    pub fn candidate_archive(&self) -> PathBuf {
        super::backup::with_suffix(&self.candidate_dir, ".wal-archive")
    }
}

/// The settings appended to the recovered cluster's postgresql.auto.conf (which is read last,
/// so they win over the copied configuration).
pub fn recovery_settings(spec: &ClusterSpec, plan: &RecoverPlan) -> Result<String, HostError> {
    let archive = path_for_config(&spec.archive_dir)?;
    let own_archive = path_for_config(&plan.candidate_archive())?;
    let target = plan.target.format("%Y-%m-%d %H:%M:%S%.6f+00");
    Ok(format!(
        "{BEGIN_MARK}: recovery to {} (the block is removed when it is swapped in)\n\
         restore_command = 'cp \"{archive}/%f\" \"%p\"'\n\
         recovery_target_time = '{target}'\n\
         recovery_target_action = 'promote'\n\
         recovery_target_timeline = '{}'\n\
         port = {}\n\
         archive_mode = on\n\
         archive_command = 'test ! -f \"{own_archive}/%f\" && cp \"%p\" \"{own_archive}/%f\"'\n\
         cluster_name = 'pitr'\n\
         {END_MARK}\n",
        rfc3339(plan.target),
        plan.timeline,
        plan.candidate_port,
    ))
}

/// A path inside a single-quoted setting that itself double-quotes it for the shell.
fn path_for_config(path: &Path) -> Result<String, HostError> {
    let text = path.display().to_string();
    if text.contains(['\'', '"', '\\', '$', '`', '\n']) {
        return Err(HostError::Invalid(format!(
            "{text}: quotes, backslashes, $ and ` are not supported in archive paths"
        )));
    }
    Ok(text)
}

/// The commands `recover` runs, for dry-run plans.
pub fn describe(spec: &ClusterSpec, plan: &RecoverPlan) -> Result<Vec<String>, HostError> {
    let candidate = Cluster::new(
        &spec.cluster.bin_dir,
        &plan.candidate_dir,
        spec.cluster.run_as.clone(),
    );
    Ok(vec![
        copy_command(spec, &plan.backup, &plan.candidate_dir).display(),
        format!("touch {}/recovery.signal", plan.candidate_dir.display()),
        format!(
            "append to {}/postgresql.auto.conf:\n{}",
            plan.candidate_dir.display(),
            recovery_settings(spec, plan)?
        ),
        candidate.start_command(plan.timeout).display(),
        format!(
            "wait until 127.0.0.1:{} is promoted; verify {} (integrity, row counts)",
            plan.candidate_port, plan.database
        ),
    ])
}

fn copy_command(spec: &ClusterSpec, backup: &BaseBackup, to: &Path) -> Cmd {
    Cmd::new("cp")
        .arg("-a")
        .arg(&backup.dir)
        .arg(to.as_os_str().to_owned())
        .run_as(spec.cluster.run_as.as_deref())
        .cwd("/")
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub data_dir: String,
    pub port: u16,
    pub log_file: String,
    pub archive_dir: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub target_time: String,
    pub base_backup: String,
    pub candidate: Candidate,
    /// The last transaction replayed (never after the target).
    pub recovered_to: Option<String>,
    pub timeline: i64,
    pub database: String,
    pub integrity: Integrity,
    pub counts: BTreeMap<String, i64>,
    pub duration_ms: u64,
}

/// Recovers into the candidate directory and leaves it running, promoted, on its own port.
pub async fn recover(
    spec: &ClusterSpec,
    plan: &RecoverPlan,
    target: &Target,
) -> Result<Recovery, HostError> {
    let started = Instant::now();
    if plan.candidate_dir.exists() {
        return Err(HostError::Invalid(format!(
            "{} already exists; choose another data_dir for the recovery",
            plan.candidate_dir.display()
        )));
    }
    if std::net::TcpListener::bind(("127.0.0.1", plan.candidate_port)).is_err() {
        return Err(HostError::Invalid(format!(
            "port {} is in use; choose another port for the recovered cluster",
            plan.candidate_port
        )));
    }
    copy_command(spec, &plan.backup, &plan.candidate_dir)
        .run_ok("cannot copy the base backup")
        .await?;
    let candidate = Cluster::new(
        &spec.cluster.bin_dir,
        &plan.candidate_dir,
        spec.cluster.run_as.clone(),
    );
    let prepared = prepare(spec, plan);
    let outcome = match prepared {
        Ok(()) => start_and_verify(&candidate, plan, target).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok((recovered_to, timeline, integrity, counts)) => Ok(Recovery {
            target_time: rfc3339(plan.target),
            base_backup: plan.backup.dir.clone(),
            candidate: Candidate {
                data_dir: plan.candidate_dir.display().to_string(),
                port: plan.candidate_port,
                log_file: candidate.log_file.display().to_string(),
                archive_dir: plan.candidate_archive().display().to_string(),
            },
            recovered_to,
            timeline,
            database: plan.database.clone(),
            integrity,
            counts,
            duration_ms: started.elapsed().as_millis() as u64,
        }),
        Err(e) => {
            let _ = candidate.stop(Duration::from_secs(30)).await;
            Err(HostError::Failed(format!(
                "{e}; the serving cluster was not touched; the attempt is left in {} for inspection",
                plan.candidate_dir.display()
            )))
        }
    }
}

fn prepare(spec: &ClusterSpec, plan: &RecoverPlan) -> Result<(), HostError> {
    let dir = &plan.candidate_dir;
    let io = |what: &str, e: std::io::Error| HostError::Failed(format!("cannot {what}: {e}"));
    // A base backup never holds these, but a copied data directory might.
    for stale in ["postmaster.pid", "standby.signal"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let signal = dir.join("recovery.signal");
    std::fs::write(&signal, "").map_err(|e| io("write recovery.signal", e))?;
    let auto = dir.join("postgresql.auto.conf");
    let mut conf = std::fs::read_to_string(&auto).unwrap_or_default();
    if !conf.ends_with('\n') && !conf.is_empty() {
        conf.push('\n');
    }
    conf.push_str(&recovery_settings(spec, plan)?);
    std::fs::write(&auto, conf).map_err(|e| io("write postgresql.auto.conf", e))?;
    let archive = plan.candidate_archive();
    std::fs::create_dir_all(&archive).map_err(|e| io("create the recovery's WAL archive", e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io("protect the data directory", e))?;
    let user = spec.cluster.run_as.as_deref();
    for path in [&signal, &auto, &archive] {
        chown_tree(path, user)?;
    }
    Ok(())
}

type Verified = (Option<String>, i64, Integrity, BTreeMap<String, i64>);

async fn start_and_verify(
    candidate: &Cluster,
    plan: &RecoverPlan,
    target: &Target,
) -> Result<Verified, HostError> {
    candidate.start(plan.timeout).await?;
    let deadline = Instant::now() + plan.timeout;
    let probe = target
        .with_port(plan.candidate_port)
        .with_dbname(&plan.database)
        .with_statement_timeout(Duration::ZERO);
    loop {
        if !candidate.is_running().await? {
            return Err(HostError::Failed(format!(
                "recovery stopped before reaching the target; server log: {}",
                candidate.log_tail()
            )));
        }
        if let Ok(client) = probe.connect().await
            && let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await
            && !row.get::<_, bool>(0)
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(HostError::Failed(format!(
                "recovery did not finish within {}; server log: {}",
                crate::timefmt::format_duration(plan.timeout),
                candidate.log_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut client = probe.connect().await?;
    let row = client
        .query_one(
            "SELECT pg_last_xact_replay_timestamp(), (SELECT timeline_id::int8 FROM pg_control_checkpoint())",
            &[],
        )
        .await
        .map_err(|e| probe.error("cannot read the recovery point", &e))?;
    let replayed: Option<DateTime<Utc>> = row.get(0);
    let timeline: i64 = row.get(1);
    if let Some(at) = replayed
        && at > plan.target
    {
        return Err(HostError::Failed(format!(
            "the recovered cluster replayed a transaction of {}, after the target {}",
            rfc3339(at),
            rfc3339(plan.target)
        )));
    }
    let tx = inspect::snapshot(&mut client, &probe).await?;
    let counts = inspect::table_counts(&tx, &probe).await?;
    let integrity = inspect::check_integrity(&tx, &probe, inspect::Depth::Full).await?;
    drop(tx);
    if !integrity.ok {
        return Err(HostError::Failed(format!(
            "the recovered database fails verification: {}",
            integrity.problems.join("; ")
        )));
    }
    Ok((replayed.map(rfc3339), timeline, integrity, counts))
}

#[derive(Debug, Clone)]
pub struct SwapPlan {
    pub candidate_dir: PathBuf,
    pub candidate_port: u16,
    pub candidate_archive: PathBuf,
    pub previous_dir: PathBuf,
    pub timeout: Duration,
}

/// The swap's steps, for dry-run plans.
pub fn describe_swap(spec: &ClusterSpec, plan: &SwapPlan) -> Vec<String> {
    let candidate = Cluster::new(
        &spec.cluster.bin_dir,
        &plan.candidate_dir,
        spec.cluster.run_as.clone(),
    );
    vec![
        candidate.stop_command(plan.timeout).display(),
        spec.cluster.stop_command(plan.timeout).display(),
        format!(
            "copy {}/* into {}",
            plan.candidate_archive.display(),
            spec.archive_dir.display()
        ),
        format!(
            "mv {} {}",
            spec.cluster.data_dir.display(),
            plan.previous_dir.display()
        ),
        format!(
            "mv {} {}",
            plan.candidate_dir.display(),
            spec.cluster.data_dir.display()
        ),
        format!(
            "remove the recovery settings from {}/postgresql.auto.conf",
            spec.cluster.data_dir.display()
        ),
        spec.cluster.start_command(plan.timeout).display(),
    ]
}

#[derive(Debug, Clone, Serialize)]
pub struct Swapped {
    pub data_dir: String,
    /// The data directory that served before, kept.
    pub previous_data_dir: String,
    pub port: u16,
    pub timeline: i64,
    /// From stopping the serving cluster to the recovered one answering.
    pub downtime_ms: u64,
}

/// Checks that can fail without touching anything, done before the first stop.
pub async fn check_swap(
    spec: &ClusterSpec,
    plan: &SwapPlan,
    target: &Target,
) -> Result<(), HostError> {
    let conf = std::fs::read_to_string(plan.candidate_dir.join("postgresql.auto.conf"))
        .unwrap_or_default();
    if !conf.contains(BEGIN_MARK) {
        return Err(HostError::Invalid(format!(
            "{} is not a recovery made by pg::pitr; pass the map pg::pitr returned",
            plan.candidate_dir.display()
        )));
    }
    if plan.candidate_dir == spec.cluster.data_dir {
        return Err(HostError::Invalid(
            "the recovery is the serving data directory".into(),
        ));
    }
    if plan.previous_dir.exists() {
        return Err(HostError::Invalid(format!(
            "{} already exists; retry in a second",
            plan.previous_dir.display()
        )));
    }
    let same_device = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev(),
            _ => false,
        }
    };
    let parent = spec.cluster.data_dir.parent().unwrap_or(Path::new("/"));
    if !same_device(&spec.cluster.data_dir, parent) || !same_device(&plan.candidate_dir, parent) {
        return Err(HostError::Invalid(format!(
            "{} is a mount point or the recovery is on another file system: the swap renames directories; \
             repoint the service at {} instead",
            spec.cluster.data_dir.display(),
            plan.candidate_dir.display()
        )));
    }
    let probe = target
        .with_port(plan.candidate_port)
        .with_statement_timeout(Duration::ZERO);
    let client = probe
        .connect()
        .await
        .map_err(|e| HostError::Failed(format!("the recovered cluster is not answering: {e}")))?;
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| probe.error("cannot ask the recovered cluster", &e))?
        .get(0);
    if in_recovery {
        return Err(HostError::Failed(
            "the recovered cluster is still in recovery (not promoted); nothing was changed".into(),
        ));
    }
    Ok(())
}

pub async fn swap(
    spec: &ClusterSpec,
    plan: &SwapPlan,
    target: &Target,
) -> Result<Swapped, HostError> {
    check_swap(spec, plan, target).await?;
    let candidate = Cluster::new(
        &spec.cluster.bin_dir,
        &plan.candidate_dir,
        spec.cluster.run_as.clone(),
    );
    candidate.stop(plan.timeout).await?;
    let stopped_at = Instant::now();
    if let Err(e) = spec.cluster.stop(plan.timeout).await {
        let _ = candidate.start(plan.timeout).await;
        return Err(HostError::Failed(format!(
            "{e}; the serving cluster could not be stopped, so nothing was swapped; the recovery was restarted"
        )));
    }
    let io = |what: String, e: std::io::Error| HostError::Failed(format!("{what}: {e}"));
    merge_archive(
        &plan.candidate_archive,
        &spec.archive_dir,
        spec.cluster.run_as.as_deref(),
    )?;
    let data_dir = &spec.cluster.data_dir;
    std::fs::rename(data_dir, &plan.previous_dir)
        .map_err(|e| io(format!("cannot move {} aside", data_dir.display()), e))?;
    if let Err(e) = std::fs::rename(&plan.candidate_dir, data_dir) {
        let _ = std::fs::rename(&plan.previous_dir, data_dir);
        let _ = spec.cluster.start(plan.timeout).await;
        return Err(io(
            format!(
                "cannot move the recovery into {}; the previous cluster was put back and started",
                data_dir.display()
            ),
            e,
        ));
    }
    let started = remove_recovery_settings(data_dir, spec.cluster.run_as.as_deref());
    let started = match started {
        Ok(()) => spec.cluster.start(plan.timeout).await,
        Err(e) => Err(e),
    };
    if let Err(e) = started {
        let _ = spec.cluster.stop(plan.timeout).await;
        let _ = std::fs::rename(data_dir, &plan.candidate_dir);
        let _ = std::fs::rename(&plan.previous_dir, data_dir);
        let back = spec.cluster.start(plan.timeout).await;
        return Err(HostError::Failed(format!(
            "the recovered cluster did not start in place: {e}; {}",
            match back {
                Ok(()) => "the previous cluster was put back and is serving again".to_string(),
                Err(e2) => format!("PUTTING THE PREVIOUS CLUSTER BACK FAILED TOO: {e2}"),
            }
        )));
    }
    let probe = target.with_port(spec.port);
    let client = probe.connect().await?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), (SELECT timeline_id::int8 FROM pg_control_checkpoint())",
            &[],
        )
        .await
        .map_err(|e| probe.error("the swapped cluster does not answer", &e))?;
    Ok(Swapped {
        data_dir: data_dir.display().to_string(),
        previous_data_dir: plan.previous_dir.display().to_string(),
        port: spec.port,
        timeline: row.get(1),
        downtime_ms: stopped_at.elapsed().as_millis() as u64,
    })
}

/// The recovery's own WAL joins the main archive once it serves.
fn merge_archive(from: &Path, to: &Path, user: Option<&str>) -> Result<(), HostError> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let dest = to.join(entry.file_name());
        if dest.exists() {
            continue;
        }
        std::fs::copy(entry.path(), &dest).map_err(|e| {
            HostError::Failed(format!(
                "cannot copy {} into the archive: {e}",
                entry.path().display()
            ))
        })?;
        // restore_command runs as the cluster's user: it must be able to read the file.
        chown_tree(&dest, user)?;
    }
    Ok(())
}

/// Takes the recovery block out of postgresql.auto.conf, leaving a note of what happened.
fn remove_recovery_settings(data_dir: &Path, user: Option<&str>) -> Result<(), HostError> {
    let auto = data_dir.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&auto)
        .map_err(|e| HostError::Failed(format!("cannot read {}: {e}", auto.display())))?;
    let mut kept = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with(BEGIN_MARK) {
            inside = true;
            kept.push(format!(
                "# recovered by rollback pg::pitr ({}); swapped in {}",
                line.trim_start_matches(BEGIN_MARK)
                    .trim_start_matches(':')
                    .trim(),
                crate::timefmt::now_rfc3339()
            ));
            continue;
        }
        if line.starts_with(END_MARK) {
            inside = false;
            continue;
        }
        if !inside {
            kept.push(line.to_string());
        }
    }
    let mut out = kept.join("\n");
    out.push('\n');
    std::fs::write(&auto, out)
        .map_err(|e| HostError::Failed(format!("cannot write {}: {e}", auto.display())))?;
    chown_tree(&auto, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_need_a_zone() {
        assert_eq!(
            rfc3339(parse_target("2024-01-15T14:30:00Z").unwrap()),
            "2024-01-15T14:30:00.000000Z"
        );
        assert_eq!(
            rfc3339(parse_target("2024-01-15 14:30:00+02:00").unwrap()),
            "2024-01-15T12:30:00.000000Z"
        );
        assert_eq!(
            rfc3339(parse_target("2024-01-15 14:30:00.25 UTC").unwrap()),
            "2024-01-15T14:30:00.250000Z"
        );
        let err = parse_target("2024-01-15 14:30:00").unwrap_err().to_string();
        assert!(err.contains("no time zone"), "{err}");
        let err = parse_target("yesterday").unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
        assert!(check_not_future(Utc::now() + chrono::Duration::hours(1)).is_err());
    }

    #[test]
    fn recovery_block_is_removed_on_swap() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ClusterSpec {
            cluster: Cluster::new(Path::new("/bin"), dir.path(), None),
            archive_dir: PathBuf::from("/arch"),
            base_backup_dir: PathBuf::from("/base"),
            port: 5432,
        };
        let plan = RecoverPlan {
            target: parse_target("2024-01-15T14:30:00Z").unwrap(),
            backup: BaseBackup {
                dir: "/base/1".into(),
                label: String::new(),
                start_wal: String::new(),
                ready_at: String::new(),
                ready: Utc::now(),
            },
            timeline: 1,
            candidate_dir: PathBuf::from("/data.pitr"),
            candidate_port: 5433,
            timeout: Duration::from_secs(5),
            database: "db".into(),
        };
        let block = recovery_settings(&spec, &plan).unwrap();
        assert!(block.contains("recovery_target_time = '2024-01-15 14:30:00.000000+00'"));
        assert!(block.contains("restore_command = 'cp \"/arch/%f\" \"%p\"'"));
        std::fs::write(
            dir.path().join("postgresql.auto.conf"),
            format!("work_mem = '8MB'\n{block}"),
        )
        .unwrap();
        remove_recovery_settings(dir.path(), None).unwrap();
        let left = std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(
            left.starts_with("work_mem = '8MB'\n# recovered by rollback pg::pitr"),
            "{left}"
        );
        assert!(!left.contains("recovery_target_time"), "{left}");
    }
}
