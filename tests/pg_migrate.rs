//! pg::migrate_down against the Tracktion migrations on a real PostgreSQL.

mod common;
use common::pg::Pg;
use std::path::{Path, PathBuf};

fn copy_migrations(pg: &Pg, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(pg.server.migrations_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to.to_path_buf()
}

fn backups(pg: &Pg) -> usize {
    std::fs::read_dir(pg.server.backup_dir())
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn migrate_down_from_3_to_1_runs_the_down_files_after_a_backup() {
    let pg = Pg::start();
    let run = pg
        .test()
        .script(
            r#"
let m = pg::migrate_down(1);
print("from=" + m.from + " to=" + m.to + " steps=" + m.steps.map(|s| s.version));
print("backup=" + m.backup);
print("now=" + pg::schema_version().version);
"#,
        )
        .run();
    run.success()
        .stdout_has("from=3 to=1 steps=[3, 2]")
        .stdout_has(&format!("backup={}", pg.server.backup_dir().display()))
        .stdout_has("now=1");
    assert_eq!(
        pg.sql("SELECT string_agg(version::text, ',') FROM schema_migrations"),
        "1"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_tables WHERE tablename IN ('metadata', 'notifications')"),
        "0"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'analysis_results' AND column_name = 'status'"),
        "0"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM audio_files"),
        "4",
        "data outside the migrations stays"
    );
}

#[test]
fn a_missing_down_file_is_refused_with_every_gap_listed() {
    let pg = Pg::start();
    let dir = copy_migrations(&pg, &pg.dir.path().join("mig-missing"));
    std::fs::remove_file(dir.join("0002_metadata.down.sql")).unwrap();
    let before = pg.checksums("tracktion");
    let run = pg
        .test()
        .script(&format!(
            r#"pg::migrate_down(0, #{{ dir: "{}" }});"#,
            dir.display()
        ))
        .run();
    run.code(1)
        .stderr_has("cannot roll back from version 3 to 0: no down file in")
        .stderr_has("for version 2 (2_metadata.down.sql)")
        .stderr_has("nothing was changed");
    assert_eq!(pg.checksums("tracktion"), before);
    assert_eq!(backups(&pg), 0, "refused before the backup");
}

#[test]
fn dry_run_prints_the_down_sql_and_changes_nothing() {
    let pg = Pg::start();
    let run = pg
        .test()
        .args(["--dry-run"])
        .script(r#"let m = pg::migrate_down(2); if !m.planned { throw m; }"#)
        .run();
    run.success()
        .stderr_has("dry-run: pg::migrate_down would run:")
        .stderr_has("DROP TABLE notifications;")
        .stderr_has("DELETE FROM schema_migrations WHERE version = $1::bigint -- $1 = 3");
    assert_eq!(pg.sql("SELECT max(version) FROM schema_migrations"), "3");
    assert_eq!(backups(&pg), 0);
}

#[test]
fn a_failing_down_file_is_rolled_back_and_the_version_reported() {
    let pg = Pg::start();
    let dir = copy_migrations(&pg, &pg.dir.path().join("mig-broken"));
    std::fs::write(
        dir.join("0002_metadata.down.sql"),
        "DROP TABLE metadata;\nALTER TABLE audio_files DROP COLUMN no_such_column;\n",
    )
    .unwrap();
    let run = pg
        .test()
        .script(&format!(
            r#"pg::migrate_down(1, #{{ dir: "{}", backup: false }});"#,
            dir.display()
        ))
        .run();
    run.code(1)
        .stderr_has("down migration 2_metadata failed and was rolled back")
        .stderr_has("column \"no_such_column\" of relation \"audio_files\" does not exist")
        .stderr_has("reverted before it: 3; the database is at version 2");
    assert_eq!(pg.sql("SELECT max(version) FROM schema_migrations"), "2");
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'metadata'"),
        "1",
        "the failed file's DROP TABLE was rolled back with it"
    );
}
