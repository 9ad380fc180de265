//! pg::safety_backup and pg_restore (restore into a new database, verify, swap) against a real
//! PostgreSQL: what is refused, what a failure leaves behind, and what a success serves.

mod common;
use common::Run;
use common::pg::Pg;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Takes a safety backup through the binary and returns its path.
fn backup(pg: &Pg) -> PathBuf {
    let run = pg
        .test()
        .script(r#"let b = pg::safety_backup(); print("path=" + b.path); print("rows=" + b.rows.audio_files + " verified=" + b.verified);"#)
        .run();
    run.success();
    let path = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("path="))
        .expect("backup path printed");
    PathBuf::from(path)
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn rewrite_checksum(dump: &Path) {
    let name = dump.file_name().unwrap().to_string_lossy();
    std::fs::write(
        format!("{}.sha256", dump.display()),
        format!("{}  {name}\n", sha256_hex(dump)),
    )
    .unwrap();
}

/// `pg_restore(dump)` as a whole script.
fn restore(pg: &Pg, dump: &Path) -> Run {
    pg.test()
        .script(&format!(r#"pg_restore("{}");"#, dump.display()))
        .run()
}

fn wait_for_sessions(pg: &Pg, n: usize) {
    for _ in 0..200 {
        let count: usize = pg
            .sql_in("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = 'tracktion' AND backend_type = 'client backend'")
            .parse()
            .unwrap();
        if count >= n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("sessions did not connect");
}

#[test]
fn safety_backup_writes_a_verified_dump_a_checksum_and_a_manifest() {
    let pg = Pg::start();
    let dump = backup(&pg);
    assert!(
        dump.starts_with(pg.server.backup_dir()),
        "{}",
        dump.display()
    );
    let sum = std::fs::read_to_string(format!("{}.sha256", dump.display())).unwrap();
    let name = dump.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(sum, format!("{}  {name}\n", sha256_hex(&dump)));
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.manifest.json", dump.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["rows"]["audio_files"], 4);
    assert_eq!(manifest["rows"]["tracklist_entries"], 20);
    let listed = Command::new(pg.server.bin_dir().join("pg_restore"))
        .arg("--list")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("TABLE DATA public audio_files"));
}

#[test]
fn a_procedure_stops_when_the_safety_backup_fails() {
    let pg = Pg::start();
    let run = pg
        .test()
        .script(
            r#"
let b = pg::safety_backup(#{ dir: "/proc/no-such-place/backups" });
pg::execute("DELETE FROM tracklist_entries");
"#,
        )
        .run();
    run.code(1)
        .stderr_has("cannot create the backup directory /proc/no-such-place/backups");
    assert_eq!(pg.sql("SELECT count(*) FROM tracklist_entries"), "20");
}

#[test]
fn a_successful_restore_serves_the_restored_data_under_the_original_name() {
    let pg = Pg::start();
    let dump = backup(&pg);
    let good = pg.checksums("tracktion");
    // The bad deploy the restore undoes.
    pg.sql(
        "DELETE FROM tracklist_entries WHERE position > 2; UPDATE audio_files SET format = 'wav'",
    );
    let damaged = pg.checksums("tracktion");
    let mut busy = pg.session("tracktion", true).spawn().unwrap();
    let mut idle = pg.session("tracktion", false).spawn().unwrap();
    wait_for_sessions(&pg, 2);
    let pids = pg.sql_in(
        "postgres",
        "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE datname = 'tracktion' AND backend_type = 'client backend'",
    );
    let run = pg
        .test()
        .script(&format!(
            r#"
let r = pg_restore("{}");
print("swapped=" + r.swapped + " old=" + r.old_database);
print("cancelled=" + r.sessions_cancelled + " terminated=" + r.sessions_terminated);
print("counts_match=" + r.counts_match_manifest + " entries=" + r.counts.tracklist_entries);
print("window_ms=" + r.swap_window_ms);
"#,
            dump.display()
        ))
        .run();
    run.success()
        .stdout_has("swapped=true old=tracktion_before_restore_")
        .stdout_has("cancelled=1 terminated=")
        .stdout_has("counts_match=true entries=20");
    // The cancelled one may leave on its own before the terminate; the idle one cannot.
    assert!(!run.stdout.contains("terminated=0"), "{}", run.stdout);
    assert!(
        !busy.wait().unwrap().success(),
        "the running statement was cancelled"
    );
    let left = pg.sql_in(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid IN ({pids})"),
    );
    assert_eq!(left, "0", "the sessions {pids} were ended");
    let _ = idle.wait();
    assert_eq!(
        pg.checksums("tracktion"),
        good,
        "the original name serves the backup"
    );
    let old = pg
        .databases()
        .into_iter()
        .find(|d| d.starts_with("tracktion_before_restore_"))
        .expect("old database kept");
    assert_eq!(
        pg.checksums(&old),
        damaged,
        "the old database is kept as it was"
    );
    assert_eq!(
        pg.sql_in(
            "postgres",
            "SELECT datallowconn FROM pg_database WHERE datname = 'tracktion'"
        ),
        "t"
    );
    let journal = run.journal();
    let call = journal
        .iter()
        .find(|l| l["function"] == "pg_restore")
        .unwrap();
    assert_eq!(call["outcome"]["status"], "ok", "{call}");
}

#[test]
fn a_wrong_checksum_is_refused_before_anything_changes() {
    let pg = Pg::start();
    let dump = backup(&pg);
    std::fs::write(
        format!("{}.sha256", dump.display()),
        format!("{}  x.dump\n", "0".repeat(64)),
    )
    .unwrap();
    let before = pg.databases();
    let run = restore(&pg, &dump);
    run.code(1)
        .stderr_has("checksum mismatch")
        .stderr_has("nothing was changed: tracktion is untouched");
    assert_eq!(pg.databases(), before);
}

#[test]
fn a_corrupted_dump_is_refused_even_with_a_matching_checksum() {
    let pg = Pg::start();
    let dump = backup(&pg);
    let mut bytes = std::fs::read(&dump).unwrap();
    bytes[..5].copy_from_slice(b"XXXXX");
    std::fs::write(&dump, bytes).unwrap();
    rewrite_checksum(&dump);
    let before = pg.databases();
    let run = restore(&pg, &dump);
    run.code(1)
        .stderr_has("is not a readable pg_dump archive")
        .stderr_has("nothing was changed");
    assert_eq!(pg.databases(), before);
}

#[test]
fn a_restore_failing_midway_leaves_the_original_byte_for_byte() {
    let pg = Pg::start();
    pg.sql(
        "INSERT INTO audio_files (path, sha256, format, duration_ms, size_bytes) \
         SELECT '/bulk/' || n, md5(n::text), 'mp3', 1000 + n, 4096 FROM generate_series(1, 20000) n",
    );
    let dump = backup(&pg);
    // A dump cut short whose checksum was taken after the damage: its table of contents
    // reads, its data does not.
    let len = std::fs::metadata(&dump).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dump)
        .unwrap()
        .set_len(len * 6 / 10)
        .unwrap();
    rewrite_checksum(&dump);
    let before = pg.checksums("tracktion");
    let run = restore(&pg, &dump);
    run.code(1)
        .stderr_has("the restore failed: pg_restore exited")
        .stderr_has("the original database tracktion is untouched and serving")
        .stderr_has("the partial restore is kept in database tracktion_restore_");
    assert_eq!(pg.checksums("tracktion"), before);
    let partial = pg
        .databases()
        .into_iter()
        .find(|d| d.starts_with("tracktion_restore_"))
        .expect("partial restore kept for inspection");
    // Midway: the schema and some rows arrived before the data ran out.
    assert_eq!(
        pg.sql_in(
            &partial,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'audio_files'"
        ),
        "1"
    );
    assert_eq!(
        pg.sql_in(
            "postgres",
            "SELECT datallowconn FROM pg_database WHERE datname = 'tracktion'"
        ),
        "t"
    );
    // The explicit way to clean up.
    pg.test()
        .script(&format!(r#"pg::drop_database("{partial}");"#))
        .run()
        .success();
    assert!(!pg.databases().contains(&partial));
}

#[test]
fn row_counts_that_differ_from_the_manifest_fail_verification() {
    let pg = Pg::start();
    let dump = backup(&pg);
    let manifest_path = format!("{}.manifest.json", dump.display());
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["rows"]["audio_files"] = Value::from(5);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let before = pg.checksums("tracktion");
    let run = pg
        .test()
        .script(&format!(
            r#"pg_restore("{}", #{{ drop_failed: true }});"#,
            dump.display()
        ))
        .run();
    run.code(1)
        .stderr_has(
            "row counts differ from the backup's manifest: audio_files: 4 rows, the backup holds 5",
        )
        .stderr_has("was dropped (drop_failed)");
    assert_eq!(pg.checksums("tracktion"), before);
    assert!(
        !pg.databases()
            .iter()
            .any(|d| d.starts_with("tracktion_restore_"))
    );
}

#[test]
fn a_missing_backup_file_is_a_clear_error() {
    let pg = Pg::start();
    let before = pg.databases();
    let run = pg
        .test()
        .script(r#"pg_restore("/nonexistent/tracktion.dump");"#)
        .run();
    run.code(2).stderr_has(
        "the backup file /nonexistent/tracktion.dump does not exist; nothing was changed",
    );
    assert_eq!(pg.databases(), before);
}

#[test]
fn dry_run_shows_the_restore_and_swap_without_doing_them() {
    let pg = Pg::start();
    let dump = backup(&pg);
    let before = pg.databases();
    let run = pg
        .test()
        .args(["--dry-run"])
        .script(&format!(
            r#"let r = pg_restore("{}"); if !r.planned {{ throw r; }}"#,
            dump.display()
        ))
        .run();
    run.success()
        .stderr_has("dry-run: pg_restore would run:")
        .stderr_has("pg_restore --exit-on-error '--dbname=host=127.0.0.1")
        .stderr_has("ALTER DATABASE \"tracktion\" ALLOW_CONNECTIONS false")
        .stderr_has("ALTER DATABASE \"tracktion\" RENAME TO \"tracktion_before_restore_");
    assert_eq!(pg.databases(), before);
}
