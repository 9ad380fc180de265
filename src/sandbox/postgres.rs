//! A real PostgreSQL on loopback for rehearsals and tests: its own data directory and port,
//! WAL archiving on, base backups on demand, and the Tracktion schema (migrations with down
//! files, seed data) embedded in the binary.
//!
//! PostgreSQL refuses to run as root (initdb and postgres both exit). When this process is
//! root, the server programs run as the `postgres` OS user (created by Debian's
//! postgresql-15 package) through `runuser`, and the directories they write are given to it.
//! Client programs (pg_dump, pg_restore, psql) need no such care.
//!
//! Layout under the sandbox directory:
//! `data/` cluster, `archive/` WAL archive, `basebackups/<time>/` plain base backups,
//! `run/` unix socket, `migrations/` the Tracktion migrations, `backups/` safety backups,
//! `password` the superuser's password, `data.log` the server log.

use crate::error::{Error, Result, io_context};
use crate::host::HostError;
use crate::host::pg::cluster::Cluster;
use crate::host::pg::tools::{Cmd, chown_tree, find_bin_dir, is_root};
use include_dir::{Dir, include_dir};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

static TRACKTION: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/src/sandbox/tracktion");

/// The superuser the sandbox creates; tests and the sandbox connect as it.
pub const SUPERUSER: &str = "postgres";
/// The database `load_tracktion` creates by default.
pub const TRACKTION_DB: &str = "tracktion";
/// The PostgreSQL major version the sandbox prefers when several are installed.
pub const PREFERRED_MAJOR: u32 = 15;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Force a WAL segment switch (and so an archived file) at least this often; zero turns
    /// it off (tests switch explicitly).
    pub archive_timeout: Duration,
    /// Off makes initdb and tests faster; the sandbox keeps it on.
    pub fsync: bool,
    pub bin_dir: Option<PathBuf>,
    /// Who runs the server when we are root (default `postgres`).
    pub run_as: Option<String>,
    /// Extra `postgresql.conf` lines.
    pub extra_conf: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            archive_timeout: Duration::from_secs(60),
            fsync: true,
            bin_dir: None,
            run_as: None,
            extra_conf: Vec::new(),
        }
    }
}

/// One local cluster; stopped when dropped.
pub struct LocalPostgres {
    root: PathBuf,
    port: u16,
    bin_dir: PathBuf,
    run_as: Option<String>,
    password: String,
    running: bool,
}

fn failed(e: HostError) -> Error {
    Error::failed(e.to_string())
}

impl LocalPostgres {
    pub fn start(dir: &Path, port: u16) -> Result<LocalPostgres> {
        Self::start_with(dir, port, Settings::default())
    }

    /// The cluster already running in `dir` (started by an earlier process), to stop it.
    pub fn attach(dir: &Path, port: u16) -> Result<LocalPostgres> {
        let mut pg = Self::unstarted(dir, port, &Settings::default())?;
        pg.running = true;
        Ok(pg)
    }

    fn unstarted(dir: &Path, port: u16, settings: &Settings) -> Result<LocalPostgres> {
        let bin_dir = match &settings.bin_dir {
            Some(dir) => dir.clone(),
            None => find_bin_dir(None, Some(PREFERRED_MAJOR)).map_err(Error::failed)?,
        };
        let run_as = if is_root() {
            Some(settings.run_as.clone().unwrap_or_else(|| "postgres".into()))
        } else {
            None
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| io_context(e, format!("cannot create {}", dir.display())))?;
        let root = dir
            .canonicalize()
            .map_err(|e| io_context(e, format!("cannot resolve {}", dir.display())))?;
        Ok(LocalPostgres {
            root,
            port,
            bin_dir,
            run_as,
            password: String::new(),
            running: false,
        })
    }

    /// Creates the cluster on first use (initdb), then starts it; an existing one is reused.
    pub fn start_with(dir: &Path, port: u16, settings: Settings) -> Result<LocalPostgres> {
        let mut pg = Self::unstarted(dir, port, &settings)?;
        pg.prepare_dirs()?;
        pg.password = pg.password_file()?;
        if !pg.data_dir().join("PG_VERSION").exists() {
            pg.initdb(&settings)?;
        }
        pg.write_conf(&settings)?;
        pg.start_server()?;
        Ok(pg)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
    pub fn run_as(&self) -> Option<&str> {
        self.run_as.as_deref()
    }
    pub fn password(&self) -> &str {
        &self.password
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn archive_dir(&self) -> PathBuf {
        self.root.join("archive")
    }
    pub fn base_backup_dir(&self) -> PathBuf {
        self.root.join("basebackups")
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn backup_dir(&self) -> PathBuf {
        self.root.join("backups")
    }
    pub fn migrations_dir(&self) -> PathBuf {
        self.root.join("migrations")
    }

    /// The cluster as pg_ctl sees it (its log is `data.log` beside the data directory).
    pub fn cluster(&self) -> Cluster {
        Cluster::new(&self.bin_dir, &self.data_dir(), self.run_as.clone())
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<db>`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    fn prepare_dirs(&self) -> Result<()> {
        // The server's user must be able to enter the root; it owns everything inside but
        // the backups (written by pg_dump, running as us).
        for dir in [
            self.root.clone(),
            self.archive_dir(),
            self.base_backup_dir(),
            self.socket_dir(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| io_context(e, format!("cannot create {}", dir.display())))?;
            self.give(&dir)?;
        }
        self.write_migrations()?;
        Ok(())
    }

    fn give(&self, path: &Path) -> Result<()> {
        chown_tree(path, self.run_as.as_deref()).map_err(failed)
    }

    /// Reuses the password of an earlier start, or makes one.
    fn password_file(&self) -> Result<String> {
        let path = self.root.join("password");
        if let Ok(text) = std::fs::read_to_string(&path)
            && !text.trim().is_empty()
        {
            return Ok(text.trim().to_string());
        }
        let password = uuid::Uuid::new_v4().simple().to_string();
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_context(e, format!("cannot write {}", path.display())))?;
        writeln!(file, "{password}")
            .map_err(|e| io_context(e, format!("cannot write {}", path.display())))?;
        self.give(&path)?;
        crate::redact::register(&password);
        Ok(password)
    }

    fn server_tool(&self, name: &str) -> Cmd {
        Cmd::new(self.bin_dir.join(name))
            .run_as(self.run_as.as_deref())
            .cwd(&self.root)
    }

    fn initdb(&self, settings: &Settings) -> Result<()> {
        let mut cmd = self
            .server_tool("initdb")
            .arg("-D")
            .arg(self.data_dir().as_os_str().to_owned())
            .arg(format!("--username={SUPERUSER}"))
            .arg(format!("--pwfile={}", self.root.join("password").display()))
            .arg("--auth-local=trust")
            .arg("--auth-host=scram-sha-256")
            .arg("--encoding=UTF8")
            .arg("--locale=C")
            .arg("--no-instructions");
        if !settings.fsync {
            cmd = cmd.arg("--no-sync");
        }
        cmd.run_blocking_ok(
            "initdb failed (the server's user must be able to enter every parent directory)",
        )
        .map_err(failed)?;
        Ok(())
    }

    fn write_conf(&self, settings: &Settings) -> Result<()> {
        let conf = self.data_dir().join("postgresql.conf");
        let text = std::fs::read_to_string(&conf)
            .map_err(|e| io_context(e, format!("cannot read {}", conf.display())))?;
        const MARK: &str = "# --- rollback sandbox ---";
        let base = text.split(MARK).next().unwrap_or_default().trim_end();
        let archive = self.archive_dir();
        let mut lines = vec![
            format!("listen_addresses = '127.0.0.1'"),
            format!("port = {}", self.port),
            format!(
                "unix_socket_directories = '{}'",
                self.socket_dir().display()
            ),
            "wal_level = replica".into(),
            "archive_mode = on".into(),
            format!(
                "archive_command = 'test ! -f \"{a}/%f\" && cp \"%p\" \"{a}/%f\"'",
                a = archive.display()
            ),
            format!("archive_timeout = {}", settings.archive_timeout.as_secs()),
            "max_wal_senders = 4".into(),
            "max_connections = 50".into(),
            "shared_buffers = 128MB".into(),
            format!("fsync = {}", if settings.fsync { "on" } else { "off" }),
            "log_line_prefix = '%m [%p] %q%u@%d '".into(),
        ];
        lines.extend(settings.extra_conf.iter().cloned());
        let out = format!("{base}\n\n{MARK}\n{}\n", lines.join("\n"));
        std::fs::write(&conf, out)
            .map_err(|e| io_context(e, format!("cannot write {}", conf.display())))?;
        self.give(&conf)
    }

    fn start_server(&mut self) -> Result<()> {
        let cluster = self.cluster();
        let running = cluster.is_running_blocking().map_err(failed)?;
        if !running {
            if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err() {
                return Err(Error::failed(format!(
                    "port {} on 127.0.0.1 is in use; choose another port for the sandbox PostgreSQL",
                    self.port
                )));
            }
            let done = cluster
                .start_command(Duration::from_secs(60))
                .run_blocking()
                .map_err(failed)?;
            if !done.success {
                return Err(Error::failed(format!(
                    "PostgreSQL did not start: {}; server log: {}",
                    done.tail(),
                    cluster.log_tail()
                )));
            }
        }
        self.running = true;
        Ok(())
    }

    /// Stops the server (fast shutdown); the data stays for the next start.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let cluster = self.cluster();
        if cluster.is_running_blocking().map_err(failed)? {
            cluster
                .stop_command(Duration::from_secs(60))
                .run_blocking_ok("cannot stop PostgreSQL")
                .map_err(failed)?;
        }
        Ok(())
    }

    /// Runs SQL through psql over the unix socket as the superuser; returns unaligned,
    /// tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let done = self
            .server_tool("psql")
            .arg("-h")
            .arg(self.socket_dir().as_os_str().to_owned())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(SUPERUSER)
            .arg("-d")
            .arg(database)
            .arg("-X")
            .arg("-q")
            .arg("-t")
            .arg("-A")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-c")
            .arg(sql)
            .run_blocking_ok("psql failed")
            .map_err(failed)?;
        Ok(done.stdout.trim_end().to_string())
    }

    /// Creates `database` (if missing) with the Tracktion schema at the newest version and
    /// the seed data; returns the versions applied.
    pub fn load_tracktion(&self, database: &str) -> Result<Vec<i64>> {
        let exists = self.psql(
            "postgres",
            &format!(
                "SELECT 1 FROM pg_database WHERE datname = {}",
                crate::host::pg::sql::quote_literal(database)
            ),
        )?;
        if exists.is_empty() {
            let ident = crate::host::pg::sql::quote_ident(database).map_err(failed)?;
            self.psql("postgres", &format!("CREATE DATABASE {ident}"))?;
        }
        let target = crate::host::pg::target::Target::from_url(&self.url(database), "the sandbox")
            .map_err(failed)?;
        let dir = self.migrations_dir();
        let applied = block_on(async {
            let mut client = target.connect().await?;
            crate::host::pg::migrations::run_up(&mut client, &target, &dir).await
        })?;
        if !applied.is_empty() && applied.contains(&1) {
            self.psql(database, seed_sql())?;
        }
        Ok(applied)
    }

    /// Writes the Tracktion migrations to `migrations/` (what migrations_dir points at).
    pub fn write_migrations(&self) -> Result<PathBuf> {
        let dir = self.migrations_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| io_context(e, format!("cannot create {}", dir.display())))?;
        let migrations = TRACKTION
            .get_dir("migrations")
            .expect("the Tracktion migrations are embedded");
        for file in migrations.files() {
            let name = file.path().file_name().expect("embedded files have names");
            std::fs::write(dir.join(name), file.contents())
                .map_err(|e| io_context(e, format!("cannot write {}", dir.display())))?;
        }
        Ok(dir)
    }

    /// Takes a plain-format base backup into `basebackups/<time>/` and waits until its history
    /// file is archived (that is what marks when recovery from it may stop).
    pub fn base_backup(&self) -> Result<PathBuf> {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let dest = self.base_backup_dir().join(&stamp);
        self.server_tool("pg_basebackup")
            .arg("-h")
            .arg(self.socket_dir().as_os_str().to_owned())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(SUPERUSER)
            .arg("-D")
            .arg(dest.as_os_str().to_owned())
            .arg("--format=plain")
            .arg("--wal-method=stream")
            .arg("--checkpoint=fast")
            .arg(format!("--label=rollback sandbox {stamp}"))
            .run_blocking_ok("pg_basebackup failed")
            .map_err(failed)?;
        let label = std::fs::read_to_string(dest.join("backup_label"))
            .map_err(|e| io_context(e, format!("{} has no backup_label", dest.display())))?;
        let start_file = label
            .lines()
            .find_map(|l| l.strip_prefix("START WAL LOCATION:"))
            .and_then(|v| v.split("(file ").nth(1))
            .map(|v| v.trim_end_matches(')').trim().to_string())
            .ok_or_else(|| Error::failed("backup_label has no START WAL LOCATION"))?;
        self.wait_for_archive(|name| {
            name.starts_with(&format!("{start_file}.")) && name.ends_with(".backup")
        })?;
        Ok(dest)
    }

    /// Switches to a new WAL segment and waits until the finished one is archived; returns its
    /// name. Everything committed before the call is then recoverable.
    pub fn switch_wal(&self) -> Result<String> {
        let name = self.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")?;
        self.wait_for_archive(|n| n == name)?;
        Ok(name)
    }

    fn wait_for_archive(&self, wanted: impl Fn(&str) -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = std::fs::read_dir(self.archive_dir())
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| wanted(&e.file_name().to_string_lossy()))
                })
                .unwrap_or(false);
            if found {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::failed(format!(
                    "WAL archiving into {} did not happen within 60s; server log: {}",
                    self.archive_dir().display(),
                    self.cluster().log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's clock, RFC 3339 UTC with microseconds (what recovery targets compare to).
    pub fn server_time(&self) -> Result<String> {
        self.psql(
            "postgres",
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
    }

    /// Leaves the server running after this value is dropped: `rollback sandbox up` exits
    /// while the sandbox's database keeps serving, and `down` stops it.
    pub fn detach(mut self) {
        self.running = false;
    }

    /// The postmaster's pid, from the first line of `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The platform settings that point the pg:: functions at this cluster.
    pub fn settings(&self) -> crate::platform::Postgres {
        let path = |p: PathBuf| Some(p.display().to_string());
        crate::platform::Postgres {
            backup_dir: path(self.backup_dir()),
            migrations_dir: path(self.migrations_dir()),
            bin_dir: path(self.bin_dir.clone()),
            data_dir: path(self.data_dir()),
            archive_dir: path(self.archive_dir()),
            base_backup_dir: path(self.base_backup_dir()),
            port: Some(self.port),
            run_as: self.run_as.clone(),
            ..Default::default()
        }
    }

    /// The `[environments.<env>.postgres]` table pointing the pg:: functions at this cluster.
    pub fn platform_table(&self, env: &str) -> String {
        let mut text = format!(
            "[environments.{env}.postgres]\n\
             backup_dir = \"{}\"\n\
             migrations_dir = \"{}\"\n\
             bin_dir = \"{}\"\n\
             data_dir = \"{}\"\n\
             archive_dir = \"{}\"\n\
             base_backup_dir = \"{}\"\n\
             port = {}\n",
            self.backup_dir().display(),
            self.migrations_dir().display(),
            self.bin_dir.display(),
            self.data_dir().display(),
            self.archive_dir().display(),
            self.base_backup_dir().display(),
            self.port,
        );
        if let Some(user) = &self.run_as {
            text.push_str(&format!("run_as = \"{user}\"\n"));
        }
        text
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The Tracktion seed data (for schema version 3).
pub fn seed_sql() -> &'static str {
    TRACKTION
        .get_file("seed.sql")
        .and_then(|f| f.contents_utf8())
        .expect("the seed data is embedded")
}

fn block_on<T>(
    fut: impl std::future::Future<Output = std::result::Result<T, HostError>>,
) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_context(e, "cannot start a runtime"))?
        .block_on(fut)
        .map_err(failed)
}
