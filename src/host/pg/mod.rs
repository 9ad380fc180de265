//! PostgreSQL: queries with parameters only, integrity checks, sessions, safety backups,
//! restore-then-swap, schema rollback and point-in-time recovery.
//!
//! The operations are plain async functions on a `Target` (tested and benchmarked without
//! Rhai); this module and `api.rs` are the script-facing layer: options, docs, dry-run plans.

mod api;
pub mod backup;
pub mod cluster;
mod docs;
mod dumps;
pub mod inspect;
pub mod migrations;
pub mod pitr;
pub mod query;
pub mod restore;
pub mod sessions;
pub mod sql;
pub mod target;
mod tls;
pub mod tools;
pub mod value;
pub mod wal;

use super::Registrar;
use crate::session::Session;
use rhai::{Array, Map};
use std::sync::Arc;

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    use docs::*;
    let s = session.clone();
    r.func(&QUERY, move |sql: &str| {
        api::query(&s, sql, Array::new(), Map::new())
    });
    let s = session.clone();
    r.func(&QUERY, move |sql: &str, params: Array| {
        api::query(&s, sql, params, Map::new())
    });
    let s = session.clone();
    r.func(&QUERY, move |sql: &str, params: Array, opts: Map| {
        api::query(&s, sql, params, opts)
    });
    let s = session.clone();
    r.func(&EXECUTE, move |sql: &str| {
        api::execute(&s, sql, Array::new(), Map::new())
    });
    let s = session.clone();
    r.func(&EXECUTE, move |sql: &str, params: Array| {
        api::execute(&s, sql, params, Map::new())
    });
    let s = session.clone();
    r.func(&EXECUTE, move |sql: &str, params: Array, opts: Map| {
        api::execute(&s, sql, params, opts)
    });
    r.func(&QUOTE_IDENT, |name: &str| {
        sql::quote_ident(name).map_err(|e| e.into_rhai(&QUOTE_IDENT.qualified_name()))
    });

    macro_rules! with_opts {
        ($doc:expr, $f:path) => {{
            let s = session.clone();
            r.func(&$doc, move || $f(&s, Map::new()));
            let s = session.clone();
            r.func(&$doc, move |opts: Map| $f(&s, opts));
        }};
    }
    with_opts!(SCHEMA_VERSION, api::schema_version);
    with_opts!(TABLE_COUNTS, api::table_counts);
    with_opts!(CHECK_INTEGRITY, api::check_integrity);
    with_opts!(CONNECTIONS, api::connections);
    with_opts!(BLOCK_CONNECTIONS, api::block_connections);
    with_opts!(ALLOW_CONNECTIONS, api::allow_connections);
    with_opts!(TERMINATE_CONNECTIONS, api::terminate_connections);
    with_opts!(SAFETY_BACKUP, api::safety_backup);

    let s = session.clone();
    r.func(&PG_RESTORE, move |backup: &str| {
        api::pg_restore(&s, backup, Map::new())
    });
    let s = session.clone();
    r.func(&PG_RESTORE, move |backup: &str, opts: Map| {
        api::pg_restore(&s, backup, opts)
    });
    let s = session.clone();
    r.func(&DROP_DATABASE, move |name: &str| {
        api::drop_database(&s, name)
    });
    let s = session.clone();
    r.func(&MIGRATE_DOWN, move |to: i64| {
        api::migrate_down(&s, to, Map::new())
    });
    let s = session.clone();
    r.func(&MIGRATE_DOWN, move |to: i64, opts: Map| {
        api::migrate_down(&s, to, opts)
    });
    dumps::register(r, session);
    let s = session.clone();
    r.func(&PITR_WINDOW, move || api::pitr_window(&s));
    let s = session.clone();
    r.func(&PITR, move |target: &str| api::pitr(&s, target, Map::new()));
    let s = session.clone();
    r.func(&PITR, move |target: &str, opts: Map| {
        api::pitr(&s, target, opts)
    });
    let s = session.clone();
    r.func(&PITR_SWAP, move |recovery: Map| {
        api::pitr_swap(&s, recovery, Map::new())
    });
    let s = session.clone();
    r.func(&PITR_SWAP, move |recovery: Map, opts: Map| {
        api::pitr_swap(&s, recovery, opts)
    });
}
