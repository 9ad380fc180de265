//! `database` on the sandbox: each recovery method end to end through the binary (rows and
//! schema checked with psql, replicas with kubectl, notifications at the receivers), the plan
//! of a dry-run, and the failure paths: no approval, a safety backup that cannot be written, a
//! restore that fails verification, a notification channel down, the time budget.

mod common;
use common::golden::assert_golden;
use common::sandbox::Sandbox;
use common::{Run, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `spec.replicas` of every Deployment, by name.
fn replicas(sandbox: &Sandbox) -> Vec<(String, i64)> {
    let state = sandbox.cluster_state();
    state["deployments"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, d)| (name.clone(), d["replicas"].as_i64().unwrap()))
        .collect()
}

/// The shipped platform gives every service one replica outside production and staging.
fn assert_platform_replicas(sandbox: &Sandbox) {
    let all = replicas(sandbox);
    assert_eq!(all.len(), 8, "{all:?}");
    for (name, n) in all {
        assert_eq!(n, 1, "{name} is not back at the platform's replica count");
    }
}

/// The path after `safety backup kept: ` in the run's output.
fn safety_backup_of(run: &Run) -> PathBuf {
    let text = run.all_output();
    let line = text
        .lines()
        .find_map(|l| l.split("safety backup kept: ").nth(1))
        .unwrap_or_else(|| panic!("no safety backup in the output:\n{text}"));
    PathBuf::from(line.trim())
}

fn assert_backup_files(path: &Path) {
    assert!(path.is_file(), "{} missing", path.display());
    let sha = PathBuf::from(format!("{}.sha256", path.display()));
    assert!(sha.is_file(), "{} missing", sha.display());
}

fn schema_version(sandbox: &Sandbox) -> String {
    sandbox.psql("SELECT max(version) FROM schema_migrations")
}

/// Archives the current WAL segment and waits until the archive holds it.
fn archive_wal(sandbox: &Sandbox) {
    let segment = sandbox.psql("SELECT pg_walfile_name(pg_switch_wal())");
    let archive = PathBuf::from(
        sandbox.state()["database_settings"]["archive_dir"]
            .as_str()
            .unwrap(),
    );
    wait_until(
        "the WAL segment is archived",
        Duration::from_secs(60),
        || archive.join(&segment).exists().then_some(()),
    );
}

fn slack_texts(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .notifications("slack")
        .iter()
        .map(|n| n["body"].to_string())
        .collect()
}

#[test]
fn each_method_recovers_the_database_and_brings_services_back() {
    let sandbox = Sandbox::up();
    let cluster = sandbox.cluster_state();
    let database = sandbox.database_state();

    // The plan: reads for real, changes nothing.
    let plan = sandbox.procedure(
        &["--dry-run"],
        "database",
        &["--method", "schema_rollback", "--to-version", "2"],
    );
    plan.success();
    assert_golden("database-dry-run", &plan.report());
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);
    assert!(sandbox.notifications("slack").is_empty());

    // Schema rollback, with Slack down: the run goes on and the report says Slack failed.
    let slack_down = sandbox
        .procedure_test(
            &["--yes"],
            "database",
            &["--method", "schema_rollback", "--to-version", "2"],
        )
        .env(
            "ROLLBACK_SANDBOX_SLACK_WEBHOOK_URL",
            &format!("http://127.0.0.1:{}/down", common::free_port()),
        )
        .run();
    slack_down.success();
    assert_eq!(schema_version(&sandbox), "2");
    assert_eq!(
        sandbox.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'notifications'"),
        "0",
        "the 0003 down migration drops notifications"
    );
    assert_platform_replicas(&sandbox);
    let schema_backup = safety_backup_of(&slack_down);
    assert_backup_files(&schema_backup);
    let report = slack_down.report();
    assert!(report.contains("— SUCCEEDED"), "{report}");
    assert!(report.contains("milestone **validated**"), "{report}");
    assert!(report.contains("`pg::migrate_down`"), "{report}");
    assert!(
        report.contains("| slack"),
        "slack failure reported:\n{report}"
    );
    assert!(slack_texts(&sandbox).is_empty(), "Slack was down");
    assert_eq!(
        sandbox.notifications("pagerduty").len(),
        1,
        "PagerDuty got the resolve"
    );

    // Backup restore: rows deleted, then the schema-3 backup taken above restored.
    let tracklists = sandbox.psql("SELECT count(*) FROM tracklists");
    sandbox.psql("DELETE FROM tracklist_entries");
    sandbox.psql("DELETE FROM tracklists");
    let restore = sandbox.procedure(
        &["--yes"],
        "database",
        &[
            "--method",
            "backup_restore",
            "--backup",
            schema_backup.to_str().unwrap(),
        ],
    );
    restore.success();
    assert_eq!(sandbox.psql("SELECT count(*) FROM tracklists"), tracklists);
    assert_eq!(schema_version(&sandbox), "3");
    let databases = sandbox.psql_in("postgres", "SELECT datname FROM pg_database ORDER BY 1");
    assert!(
        databases.contains("tracktion_before_restore_"),
        "the replaced database is kept: {databases}"
    );
    assert_platform_replicas(&sandbox);
    assert_backup_files(&safety_backup_of(&restore));
    assert!(restore.report().contains("`pg_restore`"));

    // Point in time: formats overwritten after the target, recovered to before it.
    let formats = sandbox.psql("SELECT string_agg(format, ',' ORDER BY id) FROM audio_files");
    std::thread::sleep(Duration::from_millis(1100));
    let target = sandbox
        .psql("SELECT to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')");
    std::thread::sleep(Duration::from_millis(1100));
    sandbox.psql("UPDATE audio_files SET format = 'mp3'");
    archive_wal(&sandbox);
    let pitr = sandbox.procedure(
        &["--yes"],
        "database",
        &["--method", "point_in_time", "--target-time", &target],
    );
    pitr.success();
    assert_eq!(
        sandbox.psql("SELECT string_agg(format, ',' ORDER BY id) FROM audio_files"),
        formats
    );
    assert_platform_replicas(&sandbox);
    assert_backup_files(&safety_backup_of(&pitr));
    assert!(pitr.report().contains("`pg::pitr_swap`"));

    // Slack (back up for these two runs) heard each start and end.
    let texts = slack_texts(&sandbox);
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert!(texts[0].contains("Database rollback (backup_restore) started"));
    assert!(texts[3].contains("Database rollback (point_in_time) completed"));
}

#[test]
fn failures_leave_the_database_and_services_in_a_stated_state() {
    let sandbox = Sandbox::up();
    let cluster = sandbox.cluster_state();
    let database = sandbox.database_state();

    // Without a terminal and without --yes, the first confirm refuses: nothing happens.
    let refused = sandbox.procedure(
        &[],
        "database",
        &["--method", "schema_rollback", "--to-version", "2"],
    );
    refused
        .code(2)
        .stderr_has("there is no terminal to answer on and --yes was not given");
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);
    assert!(sandbox.notifications("slack").is_empty());

    // A missing parameter is refused before anything is read.
    sandbox
        .procedure(&["--yes"], "database", &["--method", "point_in_time"])
        .code(1)
        .stderr_has("point_in_time needs --target-time");

    // The safety backup cannot be written: no service is stopped, nothing is changed.
    let not_a_dir = sandbox.dir.path().join("not-a-directory");
    std::fs::write(&not_a_dir, "a file").unwrap();
    let unwritable = not_a_dir.join("backups");
    let no_backup = sandbox.procedure(
        &["--yes"],
        "database",
        &[
            "--method",
            "schema_rollback",
            "--to-version",
            "2",
            "--backup-dir",
            unwritable.to_str().unwrap(),
        ],
    );
    no_backup
        .code(1)
        .stderr_has("the safety backup failed, so nothing was changed and no service was stopped");
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);
    let texts = slack_texts(&sandbox);
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1].contains("FAILED"), "{texts:?}");

    // A restore that fails its verification midway: a backup whose manifest disagrees with
    // its rows. Services come back; the report says which database is live and how to return.
    let script = sandbox.dir.path().join("backup.rhai");
    std::fs::write(&script, "print(pg::safety_backup().path);").unwrap();
    let taken = sandbox.rollback(&["--env", "sandbox", "--yes", "run", script.to_str().unwrap()]);
    taken.success();
    let dump = PathBuf::from(taken.stdout.trim());
    let manifest_path = PathBuf::from(format!("{}.manifest.json", dump.display()));
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["rows"]["audio_files"] = Value::from(999);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let failed = sandbox.procedure(
        &["--yes"],
        "database",
        &[
            "--method",
            "backup_restore",
            "--backup",
            dump.to_str().unwrap(),
        ],
    );
    failed.code(1);
    let report = failed.report();
    for expected in [
        "row counts differ from the backup's manifest",
        "Database state after the failure:",
        "- live: database tracktion answers, schema version 3",
        "- also on the server: database tracktion_restore_",
        "- safety backup taken before any change: ",
        "- to return to the state before this run: rollback --env sandbox run database --method backup_restore --backup ",
        "- services: 8 Deployments scaled back and rolled out",
    ] {
        assert!(
            report.contains(expected),
            "report lacks {expected:?}:\n{report}"
        );
    }
    assert_backup_files(&PathBuf::from(
        report
            .lines()
            .find_map(|l| l.split("safety backup taken before any change: ").nth(1))
            .unwrap()
            .split(" (")
            .next()
            .unwrap(),
    ));
    assert_platform_replicas(&sandbox);
    assert_eq!(
        sandbox.psql("SELECT datallowconn FROM pg_database WHERE datname = 'tracktion'"),
        "t",
        "connections are accepted again"
    );
    assert_eq!(
        sandbox.database_state()["tables"],
        database["tables"],
        "the live data is the original"
    );

    // The time budget runs out while a table lock holds the pre-checks: exit 3, and the
    // services were never stopped.
    let mut lock = Command::new("psql")
        .args([
            "-Xq",
            "-d",
            &sandbox.export("ROLLBACK_SANDBOX_DATABASE_URL"),
        ])
        .args([
            "-c",
            "BEGIN; LOCK TABLE audio_files IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the lock is held", Duration::from_secs(20), || {
        (sandbox.psql_in(
            "postgres",
            "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted AND relation IS NOT NULL",
        ) != "0")
            .then_some(())
    });
    let out_of_time = sandbox.procedure(
        &["--yes", "--timeout", "3s"],
        "database",
        &["--method", "schema_rollback", "--to-version", "2"],
    );
    let _ = lock.kill();
    let _ = lock.wait();
    out_of_time.code(3);
    assert!(
        out_of_time.report().contains("OUT OF TIME"),
        "{}",
        out_of_time.report()
    );
    assert_platform_replicas(&sandbox);
    assert_eq!(schema_version(&sandbox), "3");
}
