//! The `pg::` functions' docs: one constant per function, registered in `mod.rs`.

use crate::host::{Effect, FnDoc};

const fn pg(
    name: &'static str,
    signature: &'static str,
    summary: &'static str,
    example: &'static str,
    effect: Effect,
) -> FnDoc {
    FnDoc {
        module: Some("pg"),
        name,
        signature,
        summary,
        example,
        effect,
    }
}

pub const QUERY: FnDoc = pg(
    "query",
    "(sql: string, params?: array, opts?: #{database, timeout, max_rows}) -> array of maps",
    "Runs one read-only SQL statement with $1, $2… parameters and returns its rows as maps keyed by column name.",
    r#"let rows = pg::query("SELECT id, path FROM audio_files WHERE format = $1 LIMIT 10", ["flac"]);"#,
    Effect::Read,
);

pub const EXECUTE: FnDoc = pg(
    "execute",
    "(sql: string, params?: array, opts?: #{database, timeout}) -> #{rows_affected, rows}",
    "Runs one SQL statement that changes data, values passed only as $1, $2… parameters, and reports the rows it affected.",
    r#"let r = pg::execute("UPDATE analysis_results SET status = $1 WHERE id = $2", ["queued", 42]);"#,
    Effect::Mutate,
);

pub const QUOTE_IDENT: FnDoc = pg(
    "quote_ident",
    "(name: string) -> string",
    "Quotes a table, column or database name for use in SQL text, so it is always read as a name.",
    r#"let n = pg::query("SELECT count(*) AS n FROM " + pg::quote_ident("audio_files"))[0].n;"#,
    Effect::Read,
);

pub const SCHEMA_VERSION: FnDoc = pg(
    "schema_version",
    "(opts?: #{database}) -> #{version, name, applied_at, applied}",
    "Reads the highest applied migration and every applied version from schema_migrations.",
    r#"let v = pg::schema_version(); log("schema at version " + v.version);"#,
    Effect::Read,
);

pub const TABLE_COUNTS: FnDoc = pg(
    "table_counts",
    "(opts?: #{database, timeout}) -> #{tables: map, total_rows}",
    "Counts the rows of every user table exactly, in one snapshot.",
    r#"let c = pg::table_counts(); log("audio files: " + c.tables.audio_files);"#,
    Effect::Read,
);

pub const CHECK_INTEGRITY: FnDoc = pg(
    "check_integrity",
    "(opts?: #{database, timeout}) -> #{ok, problems, orphans, invalid_indexes, not_validated, foreign_keys_checked}",
    "Checks that every foreign key really holds by counting orphan rows, that unvalidated check constraints hold, and that no index is invalid.",
    r#"let i = pg::check_integrity(); if !i.ok { throw i.problems; }"#,
    Effect::Read,
);

pub const CONNECTIONS: FnDoc = pg(
    "connections",
    "(opts?: #{database, all}) -> array of #{pid, user, application_name, client_addr, state, query, is_self}",
    "Lists the client sessions on the database (or on every database with all: true).",
    r#"let sessions = pg::connections(); log(sessions.len() + " sessions");"#,
    Effect::Read,
);

pub const BLOCK_CONNECTIONS: FnDoc = pg(
    "block_connections",
    "(opts?: #{database}) -> #{database, allow_connections, previous}",
    "Refuses new connections to the database (ALTER DATABASE … ALLOW_CONNECTIONS false); sessions already in stay.",
    r#"pg::block_connections(); pg::terminate_connections(); pg::allow_connections();"#,
    Effect::Mutate,
);

pub const ALLOW_CONNECTIONS: FnDoc = pg(
    "allow_connections",
    "(opts?: #{database}) -> #{database, allow_connections, previous}",
    "Accepts new connections to the database again (ALTER DATABASE … ALLOW_CONNECTIONS true).",
    r#"pg::allow_connections(#{ database: "tracktion" });"#,
    Effect::Mutate,
);

pub const TERMINATE_CONNECTIONS: FnDoc = pg(
    "terminate_connections",
    "(opts?: #{database, grace, timeout}) -> #{cancelled, terminated, remaining, own_pid, ok}",
    "Ends every other session on the database: cancels running statements, waits up to grace seconds, then terminates, waiting up to timeout seconds; never its own session.",
    r#"let t = pg::terminate_connections(#{ grace: 2, timeout: 5 }); if !t.ok { log("warn", "still connected: " + t.remaining); }"#,
    Effect::Mutate,
);

pub const SAFETY_BACKUP: FnDoc = pg(
    "safety_backup",
    "(opts?: #{dir, database, compress, count_rows, lock_timeout}) -> #{path, sha256, bytes, tables, rows, verified}",
    "Dumps the database with pg_dump (custom format), writes a sha256 file and a row-count manifest beside it, and proves the dump reads back with pg_restore --list.",
    r#"let backup = pg::safety_backup(); log("backup " + backup.path + " sha256 " + backup.sha256);"#,
    Effect::Mutate,
);

pub const PG_RESTORE: FnDoc = FnDoc {
    module: None,
    name: "pg_restore",
    signature: "(backup: string, opts?: #{database, maintenance_db, jobs, no_owner, grace, terminate_timeout, drop_failed, swap}) -> #{database, restored_into, old_database, swap_window_ms, integrity, counts}",
    summary: "Checks a dump's sha256, restores it into a new database, verifies it, then swaps it in under the original name with connections blocked for a moment, keeping the old database under a dated name.",
    example: r#"let b = pg::safety_backup(); let r = pg_restore(b.path, #{ jobs: 2 }); log("old database kept as " + r.old_database);"#,
    effect: Effect::Mutate,
};

pub const DROP_DATABASE: FnDoc = pg(
    "drop_database",
    "(name: string) -> #{dropped}",
    "Drops a database by name, refusing the environment's own database, the maintenance database and templates; the only way this tool drops one.",
    r#"pg::drop_database("tracktion_before_restore_20240115_143000");"#,
    Effect::Mutate,
);

pub const MIGRATE_DOWN: FnDoc = pg(
    "migrate_down",
    "(to_version: int, opts?: #{dir, backup, backup_dir, timeout}) -> #{from, to, steps, backup}",
    "Runs the down migrations from the current schema version to to_version, newest first, each in its own transaction with schema_migrations, after a safety backup; refuses if any down file is missing.",
    r#"let m = pg::migrate_down(1); log("schema back at " + m.to);"#,
    Effect::Mutate,
);

pub const PITR_WINDOW: FnDoc = pg(
    "pitr_window",
    "() -> #{from, to, timeline, base_backups, last_archived_wal, missing_wal}",
    "Reports the recoverable window of the self-managed cluster: from the end of the oldest base backup to the last archived transaction.",
    r#"let w = pg::pitr_window(); log("can recover to " + w.from + " .. " + w.to);"#,
    Effect::Read,
);

pub const PITR: FnDoc = pg(
    "pitr",
    "(target_time: string, opts?: #{port, data_dir, timeout, database}) -> #{target_time, candidate, recovered_to, integrity, counts}",
    "Recovers the self-managed cluster to a point in time into a new data directory on its own port, after checking the target lies in the recoverable window, and verifies it; the serving cluster is not touched.",
    r#"let r = pg::pitr("2024-01-15T14:30:00Z"); if confirm("Serve the recovered cluster?") { pg::pitr_swap(r); }"#,
    Effect::Mutate,
);

pub const PITR_SWAP: FnDoc = pg(
    "pitr_swap",
    "(recovery: map, opts?: #{timeout}) -> #{data_dir, previous_data_dir, port, downtime_ms}",
    "Makes a recovery from pg::pitr the serving cluster: stops both, keeps the old data directory under a dated name, moves the recovered one in place and starts it on the serving port.",
    r#"let r = pg::pitr("2024-01-15T14:30:00Z"); if confirm("Serve it?") { let s = pg::pitr_swap(r); log("old data kept in " + s.previous_data_dir); }"#,
    Effect::Mutate,
);
