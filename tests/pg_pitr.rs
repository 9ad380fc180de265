//! Point-in-time recovery of a real, WAL-archiving PostgreSQL: recovery to a time between two
//! writes, the swap, and the targets that must be refused before anything is touched.

mod common;
use common::pg::Pg;
use std::time::Duration;

fn write(pg: &Pg, tag: &str) {
    pg.sql(&format!(
        "INSERT INTO audio_files (path, sha256, format, duration_ms, size_bytes) \
         VALUES ('/pitr/{tag}', md5('{tag}'), 'flac', 1000, 1000)"
    ));
}

fn written(pg: &Pg) -> String {
    pg.sql("SELECT string_agg(path, ',' ORDER BY path) FROM audio_files WHERE path LIKE '/pitr/%'")
}

/// Directories beside the data directory: recoveries and kept data directories.
fn siblings(pg: &Pg) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pg.server.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.") && !n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

const PAUSE: Duration = Duration::from_millis(1100);

#[test]
fn recovers_to_a_time_between_writes_and_serves_it_after_confirm() {
    let pg = Pg::start();
    pg.server.base_backup().unwrap();
    write(&pg, "t1");
    std::thread::sleep(PAUSE);
    write(&pg, "t2");
    std::thread::sleep(PAUSE);
    let target = pg.server.server_time().unwrap();
    std::thread::sleep(PAUSE);
    write(&pg, "t3");
    pg.server.switch_wal().unwrap();
    assert_eq!(written(&pg), "/pitr/t1,/pitr/t2,/pitr/t3");

    let run = pg
        .test()
        .args(["--yes"])
        .script(&format!(
            r#"
let w = pg::pitr_window();
print("window=" + w.from + ".." + w.to);
let r = pg::pitr("{target}");
print("recovered_to=" + r.recovered_to + " integrity=" + r.integrity.ok + " files=" + r.counts.audio_files);
if confirm("Serve the cluster recovered to {target}?") {{
    let s = pg::pitr_swap(r);
    print("previous=" + s.previous_data_dir + " timeline=" + s.timeline);
}}
"#
        ))
        .run();
    run.success()
        .stdout_has("integrity=true files=6")
        .stdout_has("timeline=2");
    assert_eq!(written(&pg), "/pitr/t1,/pitr/t2", "t3 was after the target");
    let kept = siblings(&pg);
    assert!(
        kept.iter().any(|n| n.starts_with("data.before-pitr-")),
        "old data directory kept: {kept:?}"
    );
    // The recovered cluster serves on the original port and archives again.
    write(&pg, "t4");
    let segment = pg.server.switch_wal().unwrap();
    assert!(
        segment.starts_with("00000002"),
        "new timeline archived: {segment}"
    );
}

#[test]
fn a_target_past_the_last_archived_wal_is_refused_before_anything_is_stopped() {
    let pg = Pg::start();
    pg.server.base_backup().unwrap();
    write(&pg, "t1");
    pg.server.switch_wal().unwrap();
    std::thread::sleep(PAUSE);
    write(&pg, "t2");
    let target = pg.server.server_time().unwrap();
    let run = pg
        .test()
        .args(["--yes"])
        .script(&format!(r#"pg::pitr("{target}");"#))
        .run();
    run.code(1)
        .stderr_has("is after the last archived transaction")
        .stderr_has("recoverable window:")
        .stderr_has("nothing was changed");
    assert!(pg.server.cluster().is_running_blocking().unwrap());
    assert_eq!(written(&pg), "/pitr/t1,/pitr/t2");
    assert!(siblings(&pg).is_empty(), "{:?}", siblings(&pg));
}

#[test]
fn future_unparsable_and_zoneless_targets_are_refused() {
    let pg = Pg::start();
    pg.server.base_backup().unwrap();
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for (target, expected) in [
        (future.as_str(), "is in the future"),
        (
            "yesterday at noon",
            "cannot read 'yesterday at noon' as a time",
        ),
        ("2024-01-15 14:30:00", "has no time zone"),
    ] {
        let run = pg
            .test()
            .args(["--yes"])
            .script(&format!(r#"pg::pitr("{target}");"#))
            .run();
        run.code(2).stderr_has(expected);
    }
    assert!(pg.server.cluster().is_running_blocking().unwrap());
    assert!(siblings(&pg).is_empty(), "{:?}", siblings(&pg));
}

#[test]
fn dry_run_checks_the_window_and_plans_the_recovery_without_starting_anything() {
    let pg = Pg::start();
    pg.server.base_backup().unwrap();
    write(&pg, "t1");
    std::thread::sleep(PAUSE);
    let target = pg.server.server_time().unwrap();
    std::thread::sleep(PAUSE);
    write(&pg, "t2");
    pg.server.switch_wal().unwrap();
    let run = pg
        .test()
        .args(["--dry-run"])
        .script(&format!(
            r#"let r = pg::pitr("{target}"); if !r.planned {{ throw r; }} pg::pitr_swap(r);"#
        ))
        .run();
    run.success()
        .stderr_has("dry-run: pg::pitr would run:")
        .stderr_has("recovery_target_action = 'promote'")
        .stderr_has("pg_ctl start -D")
        .stderr_has("dry-run: pg::pitr_swap would run:");
    let window = run
        .journal()
        .into_iter()
        .find(|l| l["function"] == "pg::pitr" && l["args"]["phase"] == "window")
        .expect("the window was read for real");
    assert_eq!(window["outcome"]["status"], "ok", "{window}");
    assert!(siblings(&pg).is_empty(), "{:?}", siblings(&pg));
    assert_eq!(written(&pg), "/pitr/t1,/pitr/t2");
}
