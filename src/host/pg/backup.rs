//! Safety backups: `pg_dump` in custom format, a sha256 file beside the dump, a manifest of
//! the exact row counts it holds, and a `pg_restore --list` to prove the archive reads back.
//!
//! The counts are taken inside the very snapshot pg_dump dumps (`pg_export_snapshot` +
//! `pg_dump --snapshot`), so a restore can later be checked row for row against them.

use super::inspect::{self, snapshot};
use super::target::Target;
use super::tools::{Cmd, PassFile};
use crate::host::HostError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BackupPlan {
    pub dir: PathBuf,
    pub bin_dir: PathBuf,
    /// pg_dump's `--compress` level; its own default when `None`.
    pub compress: Option<u32>,
    /// How long pg_dump may wait for a table lock before giving up (`--lock-wait-timeout`).
    pub lock_wait_timeout: Duration,
    /// Counts rows in pg_dump's snapshot for the manifest (a full scan of every table).
    pub count_rows: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    pub path: String,
    pub checksum_file: String,
    pub manifest_file: String,
    pub sha256: String,
    pub bytes: u64,
    pub database: String,
    /// Tables whose data the archive holds.
    pub tables: usize,
    /// Exact rows per table at the moment dumped (empty if counting was turned off).
    pub rows: BTreeMap<String, i64>,
    pub verified: bool,
    /// pg_dump alone; the rest of `duration_ms` is the checksum and the read-back check.
    pub dump_ms: u64,
    pub duration_ms: u64,
}

/// Written beside a dump as `<dump>.manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub database: String,
    pub created_at: String,
    pub server_version: String,
    pub sha256: String,
    pub bytes: u64,
    pub rows: BTreeMap<String, i64>,
}

/// `<dir>/<database>-<UTC time>.dump`; the database name is reduced to safe file characters.
pub fn backup_path(dir: &Path, database: &str, now: chrono::DateTime<chrono::Utc>) -> PathBuf {
    let safe: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{safe}-{}.dump", now.format("%Y%m%dT%H%M%S%.3fZ")))
}

pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The pg_dump command (the password travels in PGPASSFILE, never on the command line).
pub fn dump_command(
    plan: &BackupPlan,
    target: &Target,
    file: &Path,
    snapshot: Option<&str>,
) -> Cmd {
    let mut cmd = Cmd::new(plan.bin_dir.join("pg_dump"))
        .arg("--format=custom")
        .arg(format!("--file={}", file.display()))
        .arg(format!(
            "--lock-wait-timeout={}",
            plan.lock_wait_timeout.as_millis().max(1)
        ));
    if let Some(level) = plan.compress {
        cmd = cmd.arg(format!("--compress={level}"));
    }
    if let Some(id) = snapshot {
        cmd = cmd.arg(format!("--snapshot={id}"));
    }
    cmd.arg(format!("--dbname={}", target.conninfo()))
}

pub fn list_command(bin_dir: &Path, file: &Path) -> Cmd {
    Cmd::new(bin_dir.join("pg_restore"))
        .arg("--list")
        .arg(file.as_os_str().to_owned())
}

/// What `pg_restore --list` says an archive holds.
#[derive(Debug, Clone, Default)]
pub struct Toc {
    pub entries: usize,
    /// (schema, table) of every TABLE DATA entry.
    pub table_data: Vec<(String, String)>,
}

pub fn parse_toc(listing: &str) -> Toc {
    let mut toc = Toc::default();
    for line in listing.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        toc.entries += 1;
        // "3385; 0 16403 TABLE DATA public audio_files postgres"
        if let Some((_, rest)) = line.split_once(" TABLE DATA ") {
            let mut words = rest.split_whitespace();
            if let (Some(schema), Some(table)) = (words.next(), words.next()) {
                toc.table_data.push((schema.to_string(), table.to_string()));
            }
        }
    }
    toc
}

/// Reads the archive's table of contents; an unreadable archive is an error.
pub async fn verify_archive(bin_dir: &Path, file: &Path) -> Result<Toc, HostError> {
    let done = list_command(bin_dir, file).run().await?;
    let toc = parse_toc(&done.stdout);
    if !done.success || toc.entries == 0 {
        return Err(HostError::Failed(format!(
            "{} is not a readable pg_dump archive (pg_restore --list: {})",
            file.display(),
            if done.success {
                "it lists nothing".to_string()
            } else {
                done.tail()
            }
        )));
    }
    Ok(toc)
}

/// sha256 of a file, read in large blocks off the async threads.
pub async fn sha256_file(path: &Path) -> Result<String, HostError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok::<_, std::io::Error>(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| HostError::Failed(format!("checksum task failed: {e}")))?
    .map_err(|e| HostError::Failed(format!("cannot read the backup to checksum it: {e}")))
}

/// `sha256sum` format, so `sha256sum -c` checks it too.
pub fn checksum_line(sha256: &str, file: &Path) -> String {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{sha256}  {name}\n")
}

/// The hash recorded in `<file>.sha256`.
pub fn read_checksum(file: &Path) -> Result<String, HostError> {
    let sum_file = with_suffix(file, ".sha256");
    let text = std::fs::read_to_string(&sum_file).map_err(|e| {
        HostError::Failed(format!(
            "cannot read the checksum file {} ({e}); a backup without its checksum cannot be trusted: \
             if you know the dump is good, write one with `sha256sum {} > {}`",
            sum_file.display(),
            file.display(),
            sum_file.display()
        ))
    })?;
    let hash = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(HostError::Failed(format!(
            "{} does not start with a sha256 hash",
            sum_file.display()
        )));
    }
    Ok(hash)
}

/// Checks the dump against its `.sha256`; returns the hash.
pub async fn verify_checksum(file: &Path) -> Result<String, HostError> {
    let expected = read_checksum(file)?;
    let actual = sha256_file(file).await?;
    if actual != expected {
        return Err(HostError::Failed(format!(
            "checksum mismatch: {} has sha256 {actual} but {}.sha256 says {expected}; \
             the file is damaged or is not the dump the checksum was made for",
            file.display(),
            file.display()
        )));
    }
    Ok(actual)
}

pub fn read_manifest(file: &Path) -> Option<Manifest> {
    let text = std::fs::read_to_string(with_suffix(file, ".manifest.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Takes the backup; on any failure nothing is left behind but the error.
pub async fn safety_backup(target: &Target, plan: &BackupPlan) -> Result<Backup, HostError> {
    let started = Instant::now();
    create_private_dir(&plan.dir)?;
    let path = backup_path(&plan.dir, target.dbname(), chrono::Utc::now());
    let partial = with_suffix(&path, ".partial");
    let outcome = dump_and_check(target, plan, &path, &partial).await;
    if outcome.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let (sha256, toc, rows, server_version, dump_ms) = outcome?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let checksum_file = with_suffix(&path, ".sha256");
    let manifest_file = with_suffix(&path, ".manifest.json");
    let manifest = Manifest {
        database: target.dbname().to_string(),
        created_at: crate::timefmt::now_rfc3339(),
        server_version,
        sha256: sha256.clone(),
        bytes,
        rows: rows.clone(),
    };
    let write = |p: &Path, text: String| {
        std::fs::write(p, text)
            .map_err(|e| HostError::Failed(format!("cannot write {}: {e}", p.display())))
    };
    write(&checksum_file, checksum_line(&sha256, &path))?;
    write(
        &manifest_file,
        serde_json::to_string_pretty(&manifest).unwrap_or_default(),
    )?;
    Ok(Backup {
        path: path.display().to_string(),
        checksum_file: checksum_file.display().to_string(),
        manifest_file: manifest_file.display().to_string(),
        sha256,
        bytes,
        database: target.dbname().to_string(),
        tables: toc.table_data.len(),
        rows,
        verified: true,
        dump_ms,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

type Dumped = (String, Toc, BTreeMap<String, i64>, String, u64);

async fn dump_and_check(
    target: &Target,
    plan: &BackupPlan,
    path: &Path,
    partial: &Path,
) -> Result<Dumped, HostError> {
    let mut client = target.connect().await?;
    let server_version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(|e| target.error("cannot read the server version", &e))?
        .get(0);
    let tx = snapshot(&mut client, target).await?;
    let snapshot_id: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| target.error("cannot export a snapshot for pg_dump", &e))?
        .get(0);
    let passfile = PassFile::create(target.password().as_deref())?;
    let mut cmd = dump_command(plan, target, partial, Some(&snapshot_id));
    if let Some(pf) = &passfile {
        cmd = cmd.env("PGPASSFILE", &pf.path);
    }
    // Counting runs beside pg_dump in the exported snapshot; the transaction stays open
    // until both are done, which keeps the snapshot importable for pg_dump.
    let counting = async {
        if plan.count_rows {
            inspect::table_counts(&tx, target).await
        } else {
            Ok(BTreeMap::new())
        }
    };
    let dump_started = Instant::now();
    let (dumped, rows) = tokio::join!(cmd.run_ok("pg_dump failed"), counting);
    let dump_ms = dump_started.elapsed().as_millis() as u64;
    let _ = tx.rollback().await;
    dumped?;
    let rows = rows?;
    let sha256 = sha256_file(partial).await?;
    let toc = verify_archive(&plan.bin_dir, partial).await?;
    std::fs::rename(partial, path).map_err(|e| {
        HostError::Failed(format!(
            "cannot move the finished dump to {}: {e}",
            path.display()
        ))
    })?;
    Ok((sha256, toc, rows, server_version, dump_ms))
}

/// The backup directory, created readable by its owner only (dumps hold all the data).
pub fn create_private_dir(dir: &Path) -> Result<(), HostError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            HostError::Failed(format!(
                "cannot create the backup directory {}: {e}",
                dir.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_listing_names_table_data() {
        let listing = ";\n; Archive created at 2024-01-15\n;\n\
            215; 1259 16386 TABLE public audio_files postgres\n\
            3345; 0 16386 TABLE DATA public audio_files postgres\n\
            3346; 0 16399 TABLE DATA public tracklists postgres\n\
            3200; 2606 16400 FK CONSTRAINT public tracklists tracklists_audio_file_id_fkey postgres\n";
        let toc = parse_toc(listing);
        assert_eq!(toc.entries, 4);
        assert_eq!(
            toc.table_data,
            vec![
                ("public".to_string(), "audio_files".to_string()),
                ("public".to_string(), "tracklists".to_string())
            ]
        );
    }

    #[test]
    fn checksum_files_are_sha256sum_compatible() {
        let line = checksum_line(&"a".repeat(64), Path::new("/b/x.dump"));
        assert_eq!(line, format!("{}  x.dump\n", "a".repeat(64)));
        let when = chrono::DateTime::parse_from_rfc3339("2024-01-15T14:30:00.5Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            backup_path(Path::new("/b"), "my db", when),
            PathBuf::from("/b/my_db-20240115T143000.500Z.dump")
        );
    }
}
