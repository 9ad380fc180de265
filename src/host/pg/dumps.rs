//! `pg::backups`: the safety backups on disk, newest first, so a procedure can tell before it
//! starts whether a database rollback would have a recent dump to fall back on.

use super::backup::{read_manifest, with_suffix};
use crate::host::{Effect, FnDoc, HostError, Registrar, options};
use crate::session::Session;
use rhai::{Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const BACKUPS: FnDoc = FnDoc {
    module: Some("pg"),
    name: "backups",
    signature: "(opts?: #{dir}) -> array of #{path, database, created_at, age_s, bytes, has_checksum, has_manifest}",
    summary: "Lists the safety backups (pg_dump files) in the environment's backup_dir, newest first, with their age and whether their checksum and manifest are beside them.",
    example: r#"let b = pg::backups(); if b.is_empty() || b[0].age_s > 86400 { log("warn", "no safety backup from the last 24 hours"); }"#,
    effect: Effect::Read,
};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct Opts {
    dir: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Dump {
    path: String,
    database: String,
    created_at: String,
    age_s: i64,
    bytes: u64,
    has_checksum: bool,
    has_manifest: bool,
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&BACKUPS, move || backups(&s, Map::new()));
    let s = session.clone();
    r.func(&BACKUPS, move |opts: Map| backups(&s, opts));
}

fn backups(session: &Session, opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = BACKUPS.qualified_name();
    let o: Opts = options::parse(&f, opts).map_err(|e| e.into_rhai(&f))?;
    let configured = session
        .env_config()
        .postgres
        .as_ref()
        .and_then(|p| p.backup_dir.clone());
    let dir = o.dir.clone().or(configured).ok_or_else(|| {
        HostError::Invalid(format!(
            "no backup directory: set backup_dir in [environments.{}.postgres] or pass #{{ dir: \"/path\" }}",
            session.environment()
        ))
        .into_rhai(&f)
    })?;
    let dir = PathBuf::from(dir);
    session.read(&f, json!({"dir": dir.display().to_string()}), async move {
        list(&dir, chrono::Utc::now())
    })
}

/// `*.dump` files in `dir`; a missing directory has none.
fn list(dir: &Path, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Dump>, HostError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(HostError::Failed(format!(
                "cannot read the backup directory {}: {e}",
                dir.display()
            )));
        }
    };
    let mut dumps: Vec<Dump> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dump"))
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            let manifest = read_manifest(&path);
            let modified: chrono::DateTime<chrono::Utc> = meta.modified().ok()?.into();
            // The manifest's time is when the snapshot was taken; a copied file's mtime is not.
            let created = manifest
                .as_ref()
                .and_then(|m| chrono::DateTime::parse_from_rfc3339(&m.created_at).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or(modified);
            let stem = path.file_stem()?.to_string_lossy().into_owned();
            let database = manifest
                .as_ref()
                .map(|m| m.database.clone())
                .unwrap_or_else(|| {
                    stem.rsplit_once('-')
                        .map(|(db, _)| db.to_string())
                        .unwrap_or(stem)
                });
            Some(Dump {
                database,
                created_at: created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                age_s: (now - created).num_seconds().max(0),
                bytes: meta.len(),
                has_checksum: with_suffix(&path, ".sha256").is_file(),
                has_manifest: manifest.is_some(),
                path: path.display().to_string(),
            })
        })
        .collect();
    dumps.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(dumps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_dumps_newest_first_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("tracktion-20260101T000000.000Z.dump");
        let new = dir.path().join("tracktion-20260102T000000.000Z.dump");
        std::fs::write(&old, "x").unwrap();
        std::fs::write(&new, "yy").unwrap();
        std::fs::write(with_suffix(&new, ".sha256"), "h").unwrap();
        std::fs::write(
            with_suffix(&new, ".manifest.json"),
            r#"{"database":"tracktion","created_at":"2026-01-02T00:00:00Z","server_version":"15","sha256":"h","bytes":2,"rows":{}}"#,
        )
        .unwrap();
        std::fs::write(
            with_suffix(&old, ".manifest.json"),
            r#"{"database":"tracktion","created_at":"2026-01-01T00:00:00Z","server_version":"15","sha256":"h","bytes":1,"rows":{}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "z").unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-02T01:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let dumps = list(dir.path(), now).unwrap();
        assert_eq!(dumps.len(), 2);
        assert_eq!(dumps[0].created_at, "2026-01-02T00:00:00Z");
        assert_eq!(dumps[0].age_s, 3600);
        assert!(dumps[0].has_checksum && dumps[0].has_manifest);
        assert_eq!(dumps[0].database, "tracktion");
        assert!(!dumps[1].has_checksum);
        assert!(list(&dir.path().join("missing"), now).unwrap().is_empty());
    }
}
