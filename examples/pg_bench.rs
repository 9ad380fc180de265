//! Benchmark: safety backup + restore-then-swap against bare `pg_dump` + `pg_restore`, side by
//! side on one local PostgreSQL 15 holding a Tracktion database of the requested size.
//!
//! `cargo run --release --example pg_bench -- [SIZE_MB] [ROUNDS]` (default 1024 MB, 2 rounds).
//! Prints figures; asserts nothing. Goals: overhead at most 10%, swap window under 1 s.

use rollback::host::pg::backup::{self, BackupPlan};
use rollback::host::pg::restore::{self, RestorePlan};
use rollback::host::pg::sessions::TerminatePlan;
use rollback::host::pg::target::Target;
use rollback::host::pg::tools::{Cmd, PassFile};
use rollback::sandbox::postgres::{LocalPostgres, Settings, TRACKTION_DB};
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size_mb: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = Settings {
        archive_timeout: Duration::ZERO,
        extra_conf: vec![
            "max_wal_size = 4GB".into(),
            "maintenance_work_mem = 256MB".into(),
        ],
        ..Settings::default()
    };
    let pg = LocalPostgres::start_with(dir.path(), port, settings).expect("start PostgreSQL");
    pg.load_tracktion(TRACKTION_DB).expect("schema");
    let started = Instant::now();
    fill(&pg, size_mb);
    let bytes: u64 = pg
        .psql("postgres", "SELECT pg_database_size('tracktion')")
        .unwrap()
        .parse()
        .unwrap();
    println!(
        "database: {:.0} MB ({} audio files), generated in {:.0}s; PostgreSQL {}",
        bytes as f64 / 1e6,
        pg.psql(TRACKTION_DB, "SELECT count(*) FROM audio_files")
            .unwrap(),
        started.elapsed().as_secs_f64(),
        pg.psql("postgres", "SHOW server_version").unwrap()
    );
    let target = Target::from_url(&pg.url(TRACKTION_DB), "the benchmark")
        .unwrap()
        .with_statement_timeout(Duration::ZERO);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = dir.path().join("bench");
    std::fs::create_dir_all(&work).unwrap();

    let mut bare_total = Duration::ZERO;
    let mut ours_total = Duration::ZERO;
    let mut ours_tools = Duration::ZERO;
    let mut windows = Vec::new();
    for round in 1..=rounds {
        // Alternate the order so neither side always runs on a warmer cache.
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for ours in order {
            // Every phase starts from a clean checkpoint, so none pays for the last one's WAL.
            pg.psql("postgres", "CHECKPOINT").unwrap();
            if ours {
                let (took, window, detail, tools) =
                    runtime.block_on(ours_once(&pg, &target, &work));
                ours_tools += tools;
                println!(
                    "round {round} ours: {:.1}s (safety backup {:.1}s, restore+verify+swap {:.1}s; {detail}), swap window {:.0} ms",
                    took.0.as_secs_f64() + took.1.as_secs_f64(),
                    took.0.as_secs_f64(),
                    took.1.as_secs_f64(),
                    window
                );
                ours_total += took.0 + took.1;
                windows.push(window);
            } else {
                let (dump, restore) = bare_once(&pg, &target, &work);
                println!(
                    "round {round} bare: {:.1}s (pg_dump {:.1}s, pg_restore {:.1}s)",
                    (dump + restore).as_secs_f64(),
                    dump.as_secs_f64(),
                    restore.as_secs_f64()
                );
                bare_total += dump + restore;
            }
        }
    }
    let overhead = ours_total.as_secs_f64() / bare_total.as_secs_f64() - 1.0;
    // The same ratio measured inside our own runs: everything around our own pg_dump and
    // pg_restore (checksums, --list checks, counts, verification, swap) over those two. It
    // does not move with the machine's load between runs the way the side-by-side does.
    let added = (ours_total.as_secs_f64() - ours_tools.as_secs_f64()) / ours_tools.as_secs_f64();
    let worst_window = windows.iter().cloned().fold(0.0, f64::max);
    println!(
        "RESULT size={:.0}MB rounds={rounds} bare={:.1}s ours={:.1}s overhead={:+.1}% (goal <= 10%) steps_around_dump_and_restore={:+.1}% swap_window_max={:.0}ms (goal < 1000ms)",
        bytes as f64 / 1e6,
        bare_total.as_secs_f64(),
        ours_total.as_secs_f64(),
        overhead * 100.0,
        added * 100.0,
        worst_window
    );
}

/// Tracktion-shaped data in batches until the database reaches `size_mb`.
fn fill(pg: &LocalPostgres, size_mb: u64) {
    let batch = 50_000;
    let mut next = 1_000_000i64;
    loop {
        let size: u64 = pg
            .psql("postgres", "SELECT pg_database_size('tracktion')")
            .unwrap()
            .parse()
            .unwrap();
        if size >= size_mb * 1_000_000 {
            return;
        }
        let (from, to) = (next, next + batch - 1);
        next += batch;
        pg.psql(
            TRACKTION_DB,
            &format!(
                "BEGIN;
                 INSERT INTO audio_files (id, path, sha256, format, duration_ms, size_bytes, title)
                   SELECT n, '/library/bulk/' || n || '.flac', md5(n::text) || md5((n + 1)::text),
                          (ARRAY['mp3','flac','wav','aac','ogg'])[1 + n % 5], 60000 + n % 3600000, 1000000 + n,
                          'Set ' || n || ' ' || md5(n::text || 'title')
                   FROM generate_series({from}, {to}) n;
                 INSERT INTO tracklists (id, audio_file_id, source)
                   SELECT n, n, '1001tracklists' FROM generate_series({from}, {to}) n;
                 INSERT INTO tracklist_entries (tracklist_id, position, artist, title, start_ms)
                   SELECT n, p, 'Artist ' || md5((n * p)::text), 'Track ' || md5((n + p)::text), p * 240000
                   FROM generate_series({from}, {to}) n, generate_series(1, 8) p;
                 INSERT INTO analysis_results (audio_file_id, analyzer, bpm, musical_key, energy, status)
                   SELECT n, a, 90 + n % 80, (ARRAY['8A','9B','4A'])[1 + n % 3], (n % 100) / 100.0, 'done'
                   FROM generate_series({from}, {to}) n, unnest(ARRAY['essentia','librosa']) a;
                 INSERT INTO metadata (audio_file_id, key, value)
                   SELECT n, k, md5(n::text || k) FROM generate_series({from}, {to}) n, unnest(ARRAY['genre','label']) k;
                 COMMIT;"
            ),
        )
        .unwrap();
    }
}

/// Plain pg_dump + createdb + pg_restore, as an operator would type them.
fn bare_once(pg: &LocalPostgres, target: &Target, work: &Path) -> (Duration, Duration) {
    let file = work.join("bare.dump");
    let _ = std::fs::remove_file(&file);
    let pass = PassFile::create(target.password().as_deref())
        .unwrap()
        .unwrap();
    let started = Instant::now();
    Cmd::new(pg.bin_dir().join("pg_dump"))
        .arg("--format=custom")
        .arg(format!("--file={}", file.display()))
        .arg(format!("--dbname={}", target.conninfo()))
        .env("PGPASSFILE", &pass.path)
        .run_blocking_ok("pg_dump")
        .unwrap();
    let dump = started.elapsed();
    let started = Instant::now();
    pg.psql("postgres", "CREATE DATABASE bare_copy").unwrap();
    Cmd::new(pg.bin_dir().join("pg_restore"))
        .arg("--exit-on-error")
        .arg(format!(
            "--dbname={}",
            target.with_dbname("bare_copy").conninfo()
        ))
        .arg(file.as_os_str().to_owned())
        .env("PGPASSFILE", &pass.path)
        .run_blocking_ok("pg_restore")
        .unwrap();
    let restore = started.elapsed();
    pg.psql("postgres", "DROP DATABASE bare_copy").unwrap();
    let _ = std::fs::remove_file(&file);
    (dump, restore)
}

async fn ours_once(
    pg: &LocalPostgres,
    target: &Target,
    work: &Path,
) -> ((Duration, Duration), f64, String, Duration) {
    let plan = BackupPlan {
        dir: work.join("safety"),
        bin_dir: pg.bin_dir().to_path_buf(),
        compress: None,
        lock_wait_timeout: Duration::from_secs(10),
        count_rows: true,
    };
    let started = Instant::now();
    let taken = backup::safety_backup(target, &plan)
        .await
        .expect("safety backup");
    let backup_took = started.elapsed();
    let (new_name, old_name) = restore::names(TRACKTION_DB, chrono::Utc::now());
    let plan = RestorePlan {
        backup: taken.path.clone().into(),
        database: TRACKTION_DB.into(),
        maintenance_db: "postgres".into(),
        bin_dir: pg.bin_dir().to_path_buf(),
        jobs: 1,
        no_owner: false,
        terminate: TerminatePlan {
            grace: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        },
        drop_failed: false,
        swap: true,
        new_name,
        old_name: old_name.clone(),
    };
    let started = Instant::now();
    let restored = restore::restore(target, &plan).await.expect("restore");
    let restore_took = started.elapsed();
    let detail = format!(
        "pg_dump {:.1}s, pg_restore {:.1}s, verify {:.1}s, dump {:.0} MB",
        taken.dump_ms as f64 / 1000.0,
        restored.restore_ms as f64 / 1000.0,
        restored.verify_ms as f64 / 1000.0,
        taken.bytes as f64 / 1e6
    );
    // The kept database and the dump are the benchmark's to clean up.
    pg.psql("postgres", &format!("DROP DATABASE \"{old_name}\""))
        .unwrap();
    for suffix in ["", ".sha256", ".manifest.json"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", taken.path));
    }
    let tools = Duration::from_millis(taken.dump_ms + restored.restore_ms);
    (
        (backup_took, restore_took),
        restored.swap_window_ms,
        detail,
        tools,
    )
}
