//! Reads about a database's state: schema version, exact row counts, and integrity — every
//! foreign key actually holding (orphans counted, not just the constraint's presence), every
//! unvalidated check constraint tested, every index valid.

use super::query::rows;
use super::sql::{qualified, quote_ident};
use super::target::Target;
use crate::host::HostError;
use serde::Serialize;
use std::collections::BTreeMap;
use tokio_postgres::{Client, IsolationLevel, Transaction};

#[derive(Debug, Clone, Serialize)]
pub struct AppliedMigration {
    pub version: i64,
    pub name: Option<String>,
    pub applied_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchemaVersion {
    /// The highest applied version, 0 when none is.
    pub version: i64,
    pub name: Option<String>,
    pub applied_at: Option<String>,
    pub applied: Vec<AppliedMigration>,
}

/// `schema_migrations` as this tool's migrations write it (`version`, `name`, `applied_at`);
/// only `version` is required, so tables of other migration tools read too.
pub async fn schema_version(
    client: &impl tokio_postgres::GenericClient,
    target: &Target,
) -> Result<SchemaVersion, HostError> {
    let columns: Vec<String> = rows(
        client,
        target,
        "SELECT a.attname::text FROM pg_attribute a \
         WHERE a.attrelid = to_regclass('schema_migrations') AND a.attnum > 0 AND NOT a.attisdropped",
        &[],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    if !columns.iter().any(|c| c == "version") {
        return Err(HostError::Failed(format!(
            "database {} has no schema_migrations table with a version column: its schema is not managed by versioned migrations",
            target.dbname()
        )));
    }
    let name = if columns.iter().any(|c| c == "name") {
        "name::text"
    } else {
        "NULL::text"
    };
    let applied_at = if columns.iter().any(|c| c == "applied_at") {
        "applied_at::timestamptz"
    } else {
        "NULL::timestamptz"
    };
    let sql = format!("SELECT version::text, {name}, {applied_at} FROM schema_migrations");
    let mut applied = Vec::new();
    for row in rows(client, target, &sql, &[]).await? {
        let text: String = row.get(0);
        let version = text.trim().parse::<i64>().map_err(|_| {
            HostError::Failed(format!(
                "schema_migrations holds version '{text}', which is not a number"
            ))
        })?;
        let at: Option<chrono::DateTime<chrono::Utc>> = row.get(2);
        applied.push(AppliedMigration {
            version,
            name: row.get(1),
            applied_at: at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        });
    }
    applied.sort_by_key(|m| m.version);
    let last = applied.last().cloned();
    Ok(SchemaVersion {
        version: last.as_ref().map_or(0, |m| m.version),
        name: last.as_ref().and_then(|m| m.name.clone()),
        applied_at: last.and_then(|m| m.applied_at),
        applied,
    })
}

/// A consistent snapshot for several reads: counts and checks see one moment.
pub async fn snapshot<'a>(
    client: &'a mut Client,
    target: &Target,
) -> Result<Transaction<'a>, HostError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| target.error("cannot start a snapshot", &e))
}

/// User tables (partitioned ones once, as their parent), as (schema, table).
pub async fn user_tables(
    client: &impl tokio_postgres::GenericClient,
    target: &Target,
) -> Result<Vec<(String, String)>, HostError> {
    let sql = "SELECT n.nspname::text, c.relname::text FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname !~ '^pg_(toast|temp)' ORDER BY 1, 2";
    Ok(rows(client, target, sql, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// How tables are named in results: `audio_files` in `public`, `schema.table` elsewhere.
pub fn table_key(schema: &str, table: &str) -> String {
    if schema == "public" {
        table.to_string()
    } else {
        format!("{schema}.{table}")
    }
}

/// Exact row counts of every user table.
pub async fn table_counts(
    client: &impl tokio_postgres::GenericClient,
    target: &Target,
) -> Result<BTreeMap<String, i64>, HostError> {
    let mut counts = BTreeMap::new();
    for (schema, table) in user_tables(client, target).await? {
        let sql = format!("SELECT count(*) FROM {}", qualified(&schema, &table)?);
        let n: i64 = rows(client, target, &sql, &[]).await?[0].get(0);
        counts.insert(table_key(&schema, &table), n);
    }
    Ok(counts)
}

#[derive(Debug, Clone, Serialize)]
pub struct Orphans {
    pub constraint: String,
    pub table: String,
    pub columns: Vec<String>,
    pub references: String,
    pub referenced_columns: Vec<String>,
    pub rows: i64,
    /// Up to five offending key values.
    pub sample: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    pub ok: bool,
    pub database: String,
    pub foreign_keys_checked: usize,
    /// Foreign keys taken as proven without an orphan scan (see `Depth::FreshRestore`).
    pub foreign_keys_trusted: usize,
    pub check_constraints_checked: usize,
    /// One sentence per problem found; empty when `ok`.
    pub problems: Vec<String>,
    pub orphans: Vec<Orphans>,
    pub invalid_indexes: Vec<String>,
    /// Constraints marked NOT VALID: tested row by row here, but not guaranteed by PostgreSQL.
    pub not_validated: Vec<String>,
}

impl Integrity {
    /// What a dry-run returns: the shape of a result, nothing checked.
    pub fn planned(database: &str) -> Integrity {
        Integrity {
            ok: true,
            database: database.to_string(),
            foreign_keys_checked: 0,
            foreign_keys_trusted: 0,
            check_constraints_checked: 0,
            problems: Vec::new(),
            orphans: Vec::new(),
            invalid_indexes: Vec::new(),
            not_validated: Vec::new(),
        }
    }
}

struct ForeignKey {
    name: String,
    child: (String, String),
    parent: (String, String),
    match_full: bool,
    validated: bool,
    child_columns: Vec<String>,
    parent_columns: Vec<String>,
}

const FOREIGN_KEYS: &str = "\
SELECT c.conname::text, cn.nspname::text, cc.relname::text, pn.nspname::text, pc.relname::text,
       c.confmatchtype::text, c.convalidated,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.ord),
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.ord)
FROM pg_constraint c
JOIN pg_class cc ON cc.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE c.contype = 'f' AND c.conparentid = 0
ORDER BY 2, 3, 1";

/// The orphan query of one foreign key: rows whose key is set (per its MATCH rule) and has
/// no referenced row. Built from catalog names, each quoted.
fn orphan_condition(fk: &ForeignKey) -> Result<String, HostError> {
    let child = qualified(&fk.child.0, &fk.child.1)?;
    let parent = qualified(&fk.parent.0, &fk.parent.1)?;
    let mut joins = Vec::new();
    for (c, p) in fk.child_columns.iter().zip(&fk.parent_columns) {
        joins.push(format!("p.{} = c.{}", quote_ident(p)?, quote_ident(c)?));
    }
    let cols: Vec<String> = fk
        .child_columns
        .iter()
        .map(|c| quote_ident(c).map(|q| format!("c.{q}")))
        .collect::<Result<_, _>>()?;
    let missing = format!(
        "NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE {})",
        joins.join(" AND ")
    );
    let all_set = cols
        .iter()
        .map(|c| format!("{c} IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let condition = if fk.match_full && cols.len() > 1 {
        let all_null = cols
            .iter()
            .map(|c| format!("{c} IS NULL"))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!("NOT ({all_null}) AND (NOT ({all_set}) OR {missing})")
    } else {
        format!("{all_set} AND {missing}")
    };
    Ok(format!("FROM {child} AS c WHERE {condition}"))
}

fn key_text(fk: &ForeignKey) -> Result<String, HostError> {
    let cols: Vec<String> = fk
        .child_columns
        .iter()
        .map(|c| quote_ident(c).map(|q| format!("c.{q}")))
        .collect::<Result<_, _>>()?;
    Ok(if cols.len() == 1 {
        format!("({})::text", cols[0])
    } else {
        format!("ROW({})::text", cols.join(", "))
    })
}

/// How much `check_integrity` re-proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every foreign key gets an orphan scan: what an operator asks for, since the triggers
    /// behind foreign keys can be bypassed (`session_replication_role = replica`, disabled
    /// triggers) and the constraint still looks valid.
    Full,
    /// A database pg_restore has just built and nobody else has used: PostgreSQL validated
    /// each foreign key (a full orphan scan of its own) when pg_restore added it after the
    /// data, so only NOT VALID ones are scanned again. Saves a second scan of every table.
    FreshRestore,
}

/// Checks everything in one snapshot; problems are reported, not raised.
pub async fn check_integrity(
    client: &impl tokio_postgres::GenericClient,
    target: &Target,
    depth: Depth,
) -> Result<Integrity, HostError> {
    let mut result = Integrity::planned(target.dbname());
    for row in rows(client, target, FOREIGN_KEYS, &[]).await? {
        let fk = ForeignKey {
            name: row.get(0),
            child: (row.get(1), row.get(2)),
            parent: (row.get(3), row.get(4)),
            match_full: row.get::<_, String>(5) == "f",
            validated: row.get(6),
            child_columns: row.get(7),
            parent_columns: row.get(8),
        };
        result.foreign_keys_checked += 1;
        if depth == Depth::FreshRestore && fk.validated {
            result.foreign_keys_trusted += 1;
            continue;
        }
        let from = orphan_condition(&fk)?;
        let count: i64 =
            rows(client, target, &format!("SELECT count(*) {from}"), &[]).await?[0].get(0);
        let table = table_key(&fk.child.0, &fk.child.1);
        if !fk.validated {
            result.not_validated.push(format!("{table}.{}", fk.name));
        }
        if count > 0 {
            let sample_sql = format!("SELECT {} {from} ORDER BY 1 LIMIT 5", key_text(&fk)?);
            let sample = rows(client, target, &sample_sql, &[])
                .await?
                .iter()
                .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
                .collect();
            let references = table_key(&fk.parent.0, &fk.parent.1);
            result.problems.push(format!(
                "{count} rows of {table} ({}) reference no row of {references} (foreign key {})",
                fk.child_columns.join(", "),
                fk.name
            ));
            result.orphans.push(Orphans {
                constraint: fk.name,
                table,
                columns: fk.child_columns,
                references,
                referenced_columns: fk.parent_columns,
                rows: count,
                sample,
            });
        }
    }
    let checks = "SELECT c.conname::text, n.nspname::text, t.relname::text, pg_get_expr(c.conbin, c.conrelid) \
                  FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
                  JOIN pg_namespace n ON n.oid = t.relnamespace \
                  WHERE c.contype = 'c' AND NOT c.convalidated ORDER BY 2, 3, 1";
    for row in rows(client, target, checks, &[]).await? {
        let (name, schema, table, expr): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        result.check_constraints_checked += 1;
        // The expression is the server's own rendering of the catalog, not script input.
        let sql = format!(
            "SELECT count(*) FROM {} WHERE NOT ({expr})",
            qualified(&schema, &table)?
        );
        let count: i64 = rows(client, target, &sql, &[]).await?[0].get(0);
        let key = table_key(&schema, &table);
        result.not_validated.push(format!("{key}.{name}"));
        if count > 0 {
            result.problems.push(format!(
                "{count} rows of {key} violate check constraint {name} (NOT VALID)"
            ));
        }
    }
    let indexes = "SELECT n.nspname::text, c.relname::text FROM pg_index i \
                   JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE NOT i.indisvalid ORDER BY 1, 2";
    for row in rows(client, target, indexes, &[]).await? {
        let name = table_key(&row.get::<_, String>(0), &row.get::<_, String>(1));
        result.problems.push(format!(
            "index {name} is invalid (a failed CREATE INDEX CONCURRENTLY?): it is not used and enforces nothing; REINDEX it"
        ));
        result.invalid_indexes.push(name);
    }
    result.ok = result.problems.is_empty();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fk(match_full: bool, cols: &[&str]) -> ForeignKey {
        ForeignKey {
            name: "fk".into(),
            child: ("public".into(), "tracks".into()),
            parent: ("public".into(), "audio_files".into()),
            match_full,
            validated: true,
            child_columns: cols.iter().map(|c| c.to_string()).collect(),
            parent_columns: cols.iter().map(|c| format!("p_{c}")).collect(),
        }
    }

    #[test]
    fn orphan_queries_follow_the_match_rule() {
        assert_eq!(
            orphan_condition(&fk(false, &["audio_file_id"])).unwrap(),
            "FROM \"public\".\"tracks\" AS c WHERE c.\"audio_file_id\" IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM \"public\".\"audio_files\" AS p WHERE p.\"p_audio_file_id\" = c.\"audio_file_id\")"
        );
        let full = orphan_condition(&fk(true, &["a", "b"])).unwrap();
        assert!(
            full.contains("NOT (c.\"a\" IS NULL AND c.\"b\" IS NULL) AND (NOT (c.\"a\" IS NOT NULL AND c.\"b\" IS NOT NULL) OR NOT EXISTS"),
            "{full}"
        );
    }
}
