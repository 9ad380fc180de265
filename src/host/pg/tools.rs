//! PostgreSQL's own programs (pg_dump, pg_restore, pg_ctl, pg_waldump, …): finding them,
//! running them (as the cluster's OS user when `rollback` runs as root), and showing the exact
//! command line in the journal and in dry-runs.

use crate::host::HostError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where PostgreSQL's binaries are: the configured directory, `$ROLLBACK_PG_BIN`, the newest
/// Debian/Ubuntu (`/usr/lib/postgresql/N/bin`) or RHEL (`/usr/pgsql-N/bin`) install, or PATH.
/// `prefer_major` picks that version first when it is installed (the sandbox wants 15).
pub fn find_bin_dir(
    configured: Option<&str>,
    prefer_major: Option<u32>,
) -> Result<PathBuf, String> {
    let has_tools = |dir: &Path| dir.join("pg_ctl").is_file() || dir.join("pg_dump").is_file();
    if let Some(dir) = configured {
        let dir = PathBuf::from(dir);
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "bin_dir {} holds neither pg_ctl nor pg_dump; point it at PostgreSQL's bin directory",
                dir.display()
            ))
        };
    }
    if let Some(dir) = std::env::var_os("ROLLBACK_PG_BIN").map(PathBuf::from)
        && has_tools(&dir)
    {
        return Ok(dir);
    }
    let mut versioned: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name
                .strip_prefix(prefix)
                .and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if has_tools(&bin) {
                versioned.push((version, bin));
            }
        }
    }
    versioned.sort();
    if let Some(major) = prefer_major
        && let Some((_, dir)) = versioned.iter().find(|(v, _)| *v == major)
    {
        return Ok(dir.clone());
    }
    if let Some((_, dir)) = versioned.pop() {
        return Ok(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_tools(&dir) {
                return Ok(dir);
            }
        }
    }
    Err("PostgreSQL's programs (pg_dump, pg_ctl, …) are not installed: install postgresql-client-15 \
         (and postgresql-15 for a local server), or set bin_dir in [environments.X.postgres]"
        .into())
}

/// One program run: what it is, its arguments, extra environment, and whose it is.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
    /// Run as this OS user when `rollback` is root (PostgreSQL refuses to run as root).
    pub run_as: Option<String>,
    pub cwd: Option<PathBuf>,
}

/// What a finished program printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The last lines of stderr (or stdout), for an error message.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(6);
        lines[start..].join(" | ")
    }
}

impl Cmd {
    pub fn new(program: impl Into<PathBuf>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            run_as: None,
            cwd: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Cmd {
        self.env.push((key.to_string(), value.into()));
        self
    }

    pub fn run_as(mut self, user: Option<&str>) -> Cmd {
        self.run_as = user.map(str::to_string);
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.cwd = Some(dir.into());
        self
    }

    fn program_name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string())
    }

    /// The command as an operator would type it (environment values other than names are
    /// left out: PGPASSFILE points at a temporary file).
    pub fn display(&self) -> String {
        let mut words = Vec::new();
        if let Some(user) = self.effective_user() {
            words.extend(["runuser".to_string(), "-u".into(), user, "--".into()]);
        }
        words.push(self.program.display().to_string());
        words.extend(self.args.iter().map(|a| shell_quote(&a.to_string_lossy())));
        words.join(" ")
    }

    /// `run_as` only matters when we are root; as anyone else we already are who we are.
    fn effective_user(&self) -> Option<String> {
        self.run_as.clone().filter(|_| is_root())
    }

    fn std_command(&self) -> std::process::Command {
        let mut cmd = match self.effective_user() {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", &user, "--"]).arg(&self.program);
                c
            }
            None => std::process::Command::new(&self.program),
        };
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        // pg_ctl leaves the server running with our stdio unless it is redirected: never
        // give it a pipe it could hold open forever.
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs to the end; killed if the caller is cancelled (Ctrl-C, time budget).
    pub async fn run(&self) -> Result<Finished, HostError> {
        let mut cmd = tokio::process::Command::from(self.std_command());
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = cmd.output().await.map_err(|e| self.spawn_error(e))?;
        Ok(finished(output))
    }

    /// The same, blocking (the sandbox and tests run outside any runtime).
    pub fn run_blocking(&self) -> Result<Finished, HostError> {
        let output = self
            .std_command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        Ok(finished(output))
    }

    /// Runs and turns a non-zero exit into an error naming the program and its last output.
    pub async fn run_ok(&self, what: &str) -> Result<Finished, HostError> {
        let done = self.run().await?;
        self.check(what, done)
    }

    pub fn run_blocking_ok(&self, what: &str) -> Result<Finished, HostError> {
        let done = self.run_blocking()?;
        self.check(what, done)
    }

    fn check(&self, what: &str, done: Finished) -> Result<Finished, HostError> {
        if done.success {
            Ok(done)
        } else {
            Err(HostError::Failed(format!(
                "{what}: {} exited with {}: {}",
                self.program_name(),
                done.code
                    .map_or("a signal".to_string(), |c| format!("status {c}")),
                done.tail()
            )))
        }
    }

    fn spawn_error(&self, e: std::io::Error) -> HostError {
        HostError::Failed(format!(
            "cannot run {}: {e}; is PostgreSQL installed (postgresql-client-15)?",
            self.program.display()
        ))
    }
}

fn finished(output: std::process::Output) -> Finished {
    Finished {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `word` quoted for a POSIX shell when it needs to be.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A libpq password file holding one password, readable by us only, removed when dropped:
/// tools get the password through it, never through their command line.
pub struct PassFile {
    pub path: PathBuf,
}

impl PassFile {
    pub fn create(password: Option<&str>) -> Result<Option<PassFile>, HostError> {
        let Some(password) = password else {
            return Ok(None);
        };
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path =
            std::env::temp_dir().join(format!("rollback-pgpass-{}", uuid::Uuid::new_v4().simple()));
        let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| HostError::Failed(format!("cannot write a password file: {e}")))?;
        writeln!(file, "*:*:*:*:{escaped}")
            .map_err(|e| HostError::Failed(format!("cannot write a password file: {e}")))?;
        Ok(Some(PassFile { path }))
    }
}

impl Drop for PassFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Uid and gid of an OS user, for handing directories to it.
pub fn user_ids(user: &str) -> Result<(u32, u32), HostError> {
    let name = std::ffi::CString::new(user)
        .map_err(|_| HostError::Invalid(format!("'{user}' is not a valid user name")))?;
    // SAFETY: getpwnam reads a NUL-terminated name and returns NULL or a pointer to static
    // storage, which is copied out at once; nothing here runs concurrently with other
    // getpw* callers in this program.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(HostError::Invalid(format!(
            "there is no OS user '{user}' (run_as); install postgresql-15, which creates 'postgres'"
        )));
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok((uid, gid))
}

/// Gives `path` and everything under it to `user` (no-op unless we are root).
pub fn chown_tree(path: &Path, user: Option<&str>) -> Result<(), HostError> {
    let Some(user) = user.filter(|_| is_root()) else {
        return Ok(());
    };
    let (uid, gid) = user_ids(user)?;
    chown_recursive(path, uid, gid).map_err(|e| {
        HostError::Failed(format!(
            "cannot give {} to user {user}: {e}",
            path.display()
        ))
    })
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_display_as_typed() {
        let cmd = Cmd::new("/usr/bin/pg_dump")
            .arg("--file=/tmp/a b.dump")
            .arg("--dbname=host=x user=y");
        assert_eq!(
            cmd.display(),
            "/usr/bin/pg_dump '--file=/tmp/a b.dump' '--dbname=host=x user=y'"
        );
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn password_files_escape_and_vanish() {
        let file = PassFile::create(Some("a:b\\c")).unwrap().unwrap();
        let text = std::fs::read_to_string(&file.path).unwrap();
        assert_eq!(text, "*:*:*:*:a\\:b\\\\c\n");
        let path = file.path.clone();
        drop(file);
        assert!(!path.exists());
    }
}
