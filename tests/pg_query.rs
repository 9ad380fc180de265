//! pg::query, pg::execute, quote_ident and the read functions against a real PostgreSQL,
//! including the ways a connection fails.

mod common;
use common::Test;
use common::pg::{Pg, URL_VAR};

#[test]
fn a_parameter_that_looks_like_sql_is_stored_as_data() {
    let pg = Pg::start();
    let before: i64 = pg.sql("SELECT count(*) FROM audio_files").parse().unwrap();
    let evil = "'; DROP TABLE audio_files; --";
    let run = pg
        .test()
        .script(&format!(
            r#"
let evil = "{evil}";
let r = pg::execute("INSERT INTO audio_files (path, sha256, format, duration_ms, size_bytes) VALUES ($1, $2, $3, $4, $5) RETURNING id", [evil, "ff", "mp3", 1000, 2048]);
if r.rows_affected != 1 {{ throw r; }}
let rows = pg::query("SELECT path FROM audio_files WHERE id = $1", [r.rows[0].id]);
print("stored=" + rows[0].path);
let n = pg::query("SELECT count(*) AS n FROM " + pg::quote_ident("audio_files"))[0].n;
print("count=" + n);
"#
        ))
        .run();
    run.success()
        .stdout_has(&format!("stored={evil}"))
        .stdout_has(&format!("count={}", before + 1));
    assert_eq!(
        pg.sql("SELECT count(*) FROM audio_files WHERE path = '''; DROP TABLE audio_files; --'"),
        "1"
    );
}

#[test]
fn rows_come_back_as_maps_with_script_types() {
    let pg = Pg::start();
    let run = pg
        .test()
        .script(
            r#"
let sql = `SELECT 42::int4 AS i, 12345678901::int8 AS big, 2.5::numeric AS num, 7::numeric AS whole,
    true AS yes, NULL::text AS nothing, ARRAY[1,2,3] AS arr, '{"k": [1]}'::jsonb AS doc,
    '2024-01-15 14:30:00+00'::timestamptz AS at, interval '1 day 2 seconds' AS span,
    'queued'::text AS status, $1::text AS echoed`;
let r = pg::query(sql, ["x,y"])[0];
if r.i != 42 || r.big != 12345678901 || r.num != 2.5 || r.whole != 7 { throw r; }
if !r.yes || r.nothing != () || r.arr != [1, 2, 3] || r.doc.k != [1] { throw r; }
if r.at != "2024-01-15T14:30:00Z" || r.span != 86402.0 || r.echoed != "x,y" { throw r; }
print("typed ok");
"#,
        )
        .run();
    run.success().stdout_has("typed ok");
}

#[test]
fn query_is_read_only_and_execute_is_planned_in_dry_run() {
    let pg = Pg::start();
    let run = pg
        .test()
        .script(r#"pg::query("DELETE FROM tracklist_entries");"#)
        .run();
    run.code(1)
        .stderr_has("pg::query runs read-only; use pg::execute to change data");
    let run = pg
        .test()
        .args(["--dry-run"])
        .script(
            r#"let r = pg::execute("DELETE FROM tracklist_entries WHERE tracklist_id = $1", [1]); if !r.planned { throw r; }"#,
        )
        .run();
    run.success()
        .stderr_has("dry-run: pg::execute would run:")
        .stderr_has("DELETE FROM tracklist_entries WHERE tracklist_id = $1   -- parameters: [1]");
    let planned = run
        .journal()
        .into_iter()
        .find(|l| l["function"] == "pg::execute")
        .expect("journaled");
    assert_eq!(planned["outcome"]["status"], "planned", "{planned}");
    assert_eq!(pg.sql("SELECT count(*) FROM tracklist_entries"), "20");
}

#[test]
fn schema_version_and_table_counts_read_the_database() {
    let pg = Pg::start();
    let run = pg
        .test()
        .script(
            r#"
let v = pg::schema_version();
print("version=" + v.version + " name=" + v.name + " applied=" + v.applied.len());
let c = pg::table_counts();
print("audio_files=" + c.tables.audio_files + " entries=" + c.tables.tracklist_entries + " total=" + c.total_rows);
"#,
        )
        .run();
    run.success()
        .stdout_has("version=3 name=analysis_status applied=3")
        .stdout_has("audio_files=4 entries=20 total=");
}

#[test]
fn check_integrity_finds_orphans_the_constraints_no_longer_prevent() {
    let pg = Pg::start();
    let clean = pg
        .test()
        .script(r#"let i = pg::check_integrity(); if !i.ok || i.foreign_keys_checked != 5 { throw i; } print("clean");"#)
        .run();
    clean.success().stdout_has("clean");
    // Replication mode skips foreign-key triggers: the way orphans get in for real.
    pg.sql(
        "SET session_replication_role = replica; \
         INSERT INTO analysis_results (audio_file_id, analyzer) VALUES (999, 'ghost'), (998, 'ghost')",
    );
    let run = pg
        .test()
        .script(
            r#"
let i = pg::check_integrity();
if i.ok { throw "orphans not found"; }
let o = i.orphans[0];
print(o.table + " -> " + o.references + " rows=" + o.rows + " sample=" + o.sample);
print(i.problems[0]);
"#,
        )
        .run();
    run.success()
        .stdout_has("analysis_results -> audio_files rows=2 sample=[\"998\", \"999\"]")
        .stdout_has("2 rows of analysis_results (audio_file_id) reference no row of audio_files");
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let port = common::free_port();
    let run = Test::new()
        .platform(&format!(
            "{}\n",
            common::TEST_PLATFORM.replace(
                "[environments.test]\n",
                &format!("[environments.test]\ndatabase_url_env = \"{URL_VAR}\"\n")
            )
        ))
        .env(
            URL_VAR,
            &format!("postgres://app:s3cret-pw@127.0.0.1:{port}/tracktion"),
        )
        .script(r#"pg::query("SELECT 1");"#)
        .run();
    run.code(1)
        .stderr_has(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}/tracktion"
        ))
        .stderr_has("check that the server is running");
    assert!(!run.all_output().contains("s3cret-pw"));
}

#[test]
fn a_wrong_password_is_named_but_never_printed() {
    let pg = Pg::start();
    let wrong = "Wr0ng-Passw0rd-xyz";
    let url = pg.url().replace(pg.server.password(), wrong);
    let run = pg
        .test()
        .env(URL_VAR, &url)
        .script(r#"pg::table_counts();"#)
        .run();
    run.code(1)
        .stderr_has("password authentication failed for user \"postgres\"")
        .stderr_has(&format!("check the user and password in ${URL_VAR}"));
    let all = run.all_output();
    assert!(!all.contains(wrong), "the password leaked:\n{all}");
    assert!(!all.contains(pg.server.password()));
}

#[test]
fn a_missing_url_variable_and_unknown_options_are_usage_errors() {
    let pg = Pg::start();
    let run = Test::new()
        .platform(&pg.platform())
        .script(r#"pg::query("SELECT 1");"#)
        .run();
    run.code(2).stderr_has(&format!(
        "the variable {URL_VAR} (database_url_env of environment 'test') is not set"
    ));
    let run = pg
        .test()
        .script(r#"pg::query("SELECT 1", [], #{ tiemout: 3 });"#)
        .run();
    run.code(2).stderr_has("unknown field `tiemout`");
}
