//! The recoverable window of a WAL archive: it opens when a base backup ended (recovery can
//! only stop after the backup is consistent) and closes at the last transaction whose WAL has
//! been archived (recovery cannot replay what is not there). A target outside it is the most
//! common point-in-time-recovery failure, so it is checked before anything is touched.

use super::cluster::Cluster;
use crate::host::HostError;
use chrono::{DateTime, NaiveDateTime, Utc};
use regex::Regex;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

static SEGMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$").expect("valid regex")
});
static WAL_TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"desc: (?:COMMIT|ABORT)(?:_PREPARED)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC",
    )
    .expect("valid regex")
});

/// How far back to look for a transaction when the newest segments hold none (an idle server
/// switching segments on `archive_timeout`).
const MAX_SEGMENTS_SCANNED: usize = 64;

#[derive(Debug, Clone, Serialize)]
pub struct BaseBackup {
    pub dir: String,
    pub label: String,
    pub start_wal: String,
    /// When the backup was consistent: the earliest time recovery from it may stop at.
    pub ready_at: String,
    #[serde(skip)]
    pub ready: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub timeline: u32,
    pub base_backups: Vec<BaseBackup>,
    /// The earliest time any base backup can recover to (RFC 3339), if any backup is usable.
    pub from: Option<String>,
    /// The last archived commit (RFC 3339).
    pub to: Option<String>,
    pub last_archived_wal: Option<String>,
    /// WAL files missing between the oldest usable backup and the newest archived file.
    pub missing_wal: Vec<String>,
    /// Base backups that cannot be used, and why.
    pub skipped: Vec<String>,
    #[serde(skip)]
    pub to_time: Option<DateTime<Utc>>,
}

/// A WAL segment file name split into (timeline, log, segment).
fn segment(name: &str) -> Option<(u32, u64, u64)> {
    let caps = SEGMENT.captures(name)?;
    Some((
        u32::from_str_radix(&caps[1], 16).ok()?,
        u64::from_str_radix(&caps[2], 16).ok()?,
        u64::from_str_radix(&caps[3], 16).ok()?,
    ))
}

fn line_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// "2024-01-15 14:30:00 UTC" (or GMT, or a numeric offset), as PostgreSQL writes backup
/// labels; other zone names are not guessed at.
pub fn parse_label_time(text: &str) -> Option<DateTime<Utc>> {
    let (stamp, zone) = text.trim().rsplit_once(' ')?;
    let naive = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S").ok()?;
    match zone {
        "UTC" | "GMT" | "Z" => Some(naive.and_utc()),
        _ => {
            let offset =
                DateTime::parse_from_str(&format!("{stamp} {zone}"), "%Y-%m-%d %H:%M:%S %#z")
                    .ok()?;
            Some(offset.to_utc())
        }
    }
}

/// "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)" → (lsn, file).
fn wal_location(value: &str) -> Option<(String, String)> {
    let (lsn, rest) = value.split_once(' ')?;
    let file = rest.trim().strip_prefix("(file ")?.strip_suffix(')')?;
    Some((lsn.to_string(), file.to_string()))
}

/// Finds the base backups and when each became consistent, from the backup history files
/// (`<segment>.<offset>.backup`) PostgreSQL archives when a backup ends.
fn base_backups(
    base_dir: &Path,
    archive: &[String],
    archive_dir: &Path,
) -> (Vec<BaseBackup>, Vec<String>) {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let Ok(entries) = std::fs::read_dir(base_dir) else {
        skipped.push(format!("cannot read {}", base_dir.display()));
        return (found, skipped);
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(label_text) = std::fs::read_to_string(dir.join("backup_label")) else {
            continue;
        };
        let Some((lsn, start_wal)) =
            line_value(&label_text, "START WAL LOCATION:").and_then(wal_location)
        else {
            skipped.push(format!(
                "{}: backup_label has no START WAL LOCATION",
                dir.display()
            ));
            continue;
        };
        let history = archive.iter().find(|name| {
            name.starts_with(&format!("{start_wal}."))
                && name.ends_with(".backup")
                && std::fs::read_to_string(archive_dir.join(name)).is_ok_and(|t| {
                    line_value(&t, "START WAL LOCATION:")
                        .and_then(wal_location)
                        .is_some_and(|(l, _)| l == lsn)
                })
        });
        let Some(history) = history else {
            skipped.push(format!(
                "{}: its history file ({start_wal}.*.backup) is not in the archive, so when it ended is unknown",
                dir.display()
            ));
            continue;
        };
        let path = archive_dir.join(history);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // The stop time as written, which has whole seconds: the backup ended within the
        // second after it, so the window opens at its end. If the zone is a name we do not
        // know, the time the history file was archived, which is never earlier either.
        let ready = line_value(&text, "STOP TIME:")
            .and_then(parse_label_time)
            .map(|t| t + chrono::Duration::seconds(1))
            .or_else(|| {
                std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .map(DateTime::<Utc>::from)
            });
        let Some(ready) = ready else {
            skipped.push(format!("{}: no STOP TIME in {history}", dir.display()));
            continue;
        };
        found.push(BaseBackup {
            dir: dir.display().to_string(),
            label: line_value(&label_text, "LABEL:")
                .unwrap_or_default()
                .to_string(),
            start_wal,
            ready_at: rfc3339(ready),
            ready,
        });
    }
    found.sort_by_key(|b| b.ready);
    (found, skipped)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The window of the cluster's archive on `timeline` (WAL of later timelines, such as one an
/// abandoned recovery created, is ignored).
pub async fn window(
    cluster: &Cluster,
    archive_dir: &Path,
    base_dir: &Path,
    timeline: u32,
) -> Result<Window, HostError> {
    let mut names: Vec<String> = std::fs::read_dir(archive_dir)
        .map_err(|e| {
            HostError::Failed(format!(
                "cannot read the WAL archive {}: {e}",
                archive_dir.display()
            ))
        })?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let (base_backups, skipped) = base_backups(base_dir, &names, archive_dir);
    // For each segment position, the file of the highest timeline not above ours.
    let mut segments: Vec<((u64, u64), u32, String)> = names
        .iter()
        .filter_map(|n| segment(n).map(|(tli, log, seg)| ((log, seg), tli, n.clone())))
        .filter(|(_, tli, _)| *tli <= timeline)
        .collect();
    segments.sort();
    segments.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            *earlier = later.clone();
            true
        } else {
            false
        }
    });
    let last = segments.last().map(|s| s.2.clone());
    let (to_time, _) = last_commit(cluster, archive_dir, &segments).await;
    let missing_wal = match base_backups.first().and_then(|b| segment(&b.start_wal)) {
        Some((_, log, seg)) => {
            let seg_size = segment_size(cluster, base_backups.first()).await;
            gaps(&segments, (log, seg), seg_size)
        }
        None => Vec::new(),
    };
    Ok(Window {
        timeline,
        from: base_backups.first().map(|b| b.ready_at.clone()),
        to: to_time.map(rfc3339),
        last_archived_wal: last,
        missing_wal,
        skipped,
        base_backups,
        to_time,
    })
}

/// Bytes per WAL segment, from the backup's control file (16 MB unless initdb changed it).
async fn segment_size(cluster: &Cluster, backup: Option<&BaseBackup>) -> u64 {
    let Some(backup) = backup else {
        return 16 << 20;
    };
    cluster
        .control_data(Path::new(&backup.dir))
        .await
        .ok()
        .and_then(|kv| {
            kv.into_iter()
                .find(|(k, _)| k == "Bytes per WAL segment")
                .and_then(|(_, v)| v.parse().ok())
        })
        .unwrap_or(16 << 20)
}

/// Segment positions missing between `start` and the newest archived one.
fn gaps(segments: &[((u64, u64), u32, String)], start: (u64, u64), seg_size: u64) -> Vec<String> {
    let per_log = (0x1_0000_0000u64 / seg_size.max(1)).max(1);
    let index = |(log, seg): (u64, u64)| log * per_log + seg;
    let have: std::collections::BTreeSet<u64> = segments.iter().map(|s| index(s.0)).collect();
    let Some(&newest) = have.iter().next_back() else {
        return vec![format!(
            "no WAL file at all from {:08X}{:08X} on",
            start.0, start.1
        )];
    };
    let mut missing = Vec::new();
    let mut at = index(start);
    while at <= newest && missing.len() < 10 {
        if !have.contains(&at) {
            missing.push(format!("{:08X}{:08X}", at / per_log, at % per_log));
        }
        at += 1;
    }
    missing
}

/// The newest commit or abort time in the archive, reading segments newest first.
async fn last_commit(
    cluster: &Cluster,
    archive_dir: &Path,
    segments: &[((u64, u64), u32, String)],
) -> (Option<DateTime<Utc>>, Option<String>) {
    for (_, _, name) in segments.iter().rev().take(MAX_SEGMENTS_SCANNED) {
        let path: PathBuf = archive_dir.join(name);
        // pg_waldump prints times in its own time zone: make it UTC. It exits non-zero at
        // the end of the valid WAL in a segment switched early, after printing every record.
        let cmd = super::tools::Cmd::new(cluster.bin_dir.join("pg_waldump"))
            .arg(path.as_os_str().to_owned())
            .env("TZ", "UTC");
        let Ok(done) = cmd.run().await else {
            continue;
        };
        let newest = WAL_TIME
            .captures_iter(&done.stdout)
            .filter_map(|c| NaiveDateTime::parse_from_str(&c[1], "%Y-%m-%d %H:%M:%S%.f").ok())
            .map(|t| t.and_utc())
            .max();
        if newest.is_some() {
            return (newest, Some(name.clone()));
        }
    }
    (None, None)
}

/// The base backup to recover `target` from: the newest one consistent before it.
pub fn choose(window: &Window, target: DateTime<Utc>) -> Result<BaseBackup, HostError> {
    let shown = rfc3339(target);
    let describe = || {
        format!(
            "recoverable window: {} to {} (timeline {}, last archived WAL {})",
            window.from.as_deref().unwrap_or("(no usable base backup)"),
            window.to.as_deref().unwrap_or("(no archived transaction)"),
            window.timeline,
            window.last_archived_wal.as_deref().unwrap_or("none")
        )
    };
    if window.base_backups.is_empty() {
        let why = if window.skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", window.skipped.join("; "))
        };
        return Err(HostError::Failed(format!(
            "no usable base backup{why}; take one with pg_basebackup -Fp into the base backup directory"
        )));
    }
    let Some(to) = window.to_time else {
        return Err(HostError::Failed(format!(
            "the WAL archive holds no transaction to recover to; {}",
            describe()
        )));
    };
    if target > to {
        return Err(HostError::Failed(format!(
            "target {shown} is after the last archived transaction ({}): the WAL needed to reach it \
             has not been archived (yet); {}. Archive the current WAL (SELECT pg_switch_wal()) and \
             wait for it to reach the archive, or choose an earlier time; nothing was changed",
            rfc3339(to),
            describe()
        )));
    }
    let Some(backup) = window.base_backups.iter().rev().find(|b| b.ready <= target) else {
        return Err(HostError::Failed(format!(
            "target {shown} is before the oldest base backup became consistent; {}; nothing was changed",
            describe()
        )));
    };
    if !window.missing_wal.is_empty() {
        return Err(HostError::Failed(format!(
            "the WAL archive has gaps recovery cannot cross: missing {}; {}; nothing was changed",
            window.missing_wal.join(", "),
            describe()
        )));
    }
    Ok(backup.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_times_parse_with_utc_or_offsets() {
        let t = parse_label_time("2024-01-15 14:30:00 UTC").unwrap();
        assert_eq!(rfc3339(t), "2024-01-15T14:30:00.000000Z");
        let t = parse_label_time("2024-01-15 14:30:00 +0100").unwrap();
        assert_eq!(rfc3339(t), "2024-01-15T13:30:00.000000Z");
        assert!(parse_label_time("2024-01-15 14:30:00 CET").is_none());
    }

    #[test]
    fn wal_locations_and_segments_parse() {
        assert_eq!(
            wal_location("0/2000028 (file 000000010000000000000002)").unwrap(),
            (
                "0/2000028".to_string(),
                "000000010000000000000002".to_string()
            )
        );
        assert_eq!(segment("0000000200000001000000FF"), Some((2, 1, 255)));
        assert_eq!(segment("000000010000000000000002.00000028.backup"), None);
    }

    #[test]
    fn gaps_are_found_across_log_boundaries() {
        let seg = |log, s| ((log, s), 1u32, String::new());
        let have = vec![seg(0, 0xFE), seg(0, 0xFF), seg(1, 0), seg(1, 2)];
        assert_eq!(gaps(&have, (0, 0xFE), 16 << 20), vec!["0000000100000001"]);
        assert!(gaps(&have[..3], (0, 0xFE), 16 << 20).is_empty());
    }
}
