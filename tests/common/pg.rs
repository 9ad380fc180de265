//! A real PostgreSQL per test, started with the sandbox's own helper, and the platform
//! definition that points `rollback` at it.

use super::{TEST_PLATFORM, Test, free_port};
use rollback::sandbox::postgres::{LocalPostgres, Settings, TRACKTION_DB};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The variable the test platform names as `database_url_env`.
pub const URL_VAR: &str = "TRACKTION_TEST_DATABASE_URL";

pub struct Pg {
    // Declared first so the server stops before its directory is removed.
    pub server: LocalPostgres,
    pub dir: tempfile::TempDir,
}

/// Fast settings for tests: no fsync, no timed WAL switches (tests switch explicitly).
pub fn test_settings() -> Settings {
    Settings {
        archive_timeout: Duration::ZERO,
        fsync: false,
        ..Settings::default()
    }
}

impl Pg {
    /// A server holding the Tracktion schema (version 3) and seed data in `tracktion`.
    pub fn start() -> Pg {
        let pg = Pg::empty();
        pg.server
            .load_tracktion(TRACKTION_DB)
            .expect("load tracktion");
        pg
    }

    /// A server with no application database yet.
    pub fn empty() -> Pg {
        Pg::in_dir(tempfile::tempdir().expect("temp dir"), test_settings())
    }

    /// A server in `dir` (prepared by the caller, e.g. with certificates) with `settings`.
    pub fn in_dir(dir: tempfile::TempDir, settings: Settings) -> Pg {
        let server =
            LocalPostgres::start_with(dir.path(), free_port(), settings).expect("start PostgreSQL");
        Pg { server, dir }
    }

    pub fn url(&self) -> String {
        self.server.url(TRACKTION_DB)
    }

    /// The test environment with this database and its `[environments.test.postgres]` table.
    pub fn platform(&self) -> String {
        format!(
            "{}\n[environments.test.postgres]\n{}",
            TEST_PLATFORM.replace(
                "[environments.test]\n",
                &format!("[environments.test]\ndatabase_url_env = \"{URL_VAR}\"\n"),
            ),
            self.server
                .platform_table("test")
                .lines()
                .skip(1)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// A run of `rollback` against this database.
    pub fn test(&self) -> Test {
        Test::new()
            .platform(&self.platform())
            .env(URL_VAR, &self.url())
    }

    /// A psql client session on `database`, not yet started: running a long statement when
    /// `busy`, else idle like an application's pooled connection (waiting on a stdin that
    /// never speaks).
    pub fn session(&self, database: &str, busy: bool) -> Command {
        let mut cmd = Command::new(self.server.bin_dir().join("psql"));
        cmd.args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &self.server.port().to_string(),
        ])
        .args(["-U", "postgres", "-d", database])
        .env("PGPASSWORD", self.server.password())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if busy {
            cmd.args(["-c", "SELECT pg_sleep(60)"]).stdin(Stdio::null());
        } else {
            cmd.stdin(Stdio::piped());
        }
        cmd
    }

    pub fn sql(&self, sql: &str) -> String {
        self.server.psql(TRACKTION_DB, sql).expect("psql")
    }

    pub fn sql_in(&self, database: &str, sql: &str) -> String {
        self.server.psql(database, sql).expect("psql")
    }

    /// md5 of every table's rows in a stable order: equal maps mean equal data.
    pub fn checksums(&self, database: &str) -> BTreeMap<String, String> {
        let tables = self.sql_in(
            database,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        );
        tables
            .lines()
            .map(|t| {
                let sum = self.sql_in(
                    database,
                    &format!(
                        "SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) FROM \"{t}\" r"
                    ),
                );
                (t.to_string(), sum)
            })
            .collect()
    }

    pub fn databases(&self) -> Vec<String> {
        self.sql_in("postgres", "SELECT datname FROM pg_database ORDER BY 1")
            .lines()
            .map(str::to_string)
            .collect()
    }
}
