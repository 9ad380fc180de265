//! `pg::query` and `pg::execute`: one statement, values only as parameters, rows as maps.

use super::target::{Target, describe};
use super::value::{Param, as_sql, row_to_json};
use crate::host::HostError;
use futures::{StreamExt, pin_mut};
use serde::Serialize;
use serde_json::{Map, Value};

pub type Row = Map<String, Value>;

/// Runs a query in a read-only transaction, so a "read" can never change anything even if
/// the SQL tries to: PostgreSQL itself refuses writes there.
pub async fn query(
    target: &Target,
    sql: &str,
    params: &[Param],
    max_rows: usize,
) -> Result<Vec<Row>, HostError> {
    let mut client = target.connect().await?;
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(|e| target.error("cannot start a read-only transaction", &e))?;
    let stream = tx
        .query_raw(sql, params.iter())
        .await
        .map_err(|e| statement_error(target, &e))?;
    pin_mut!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| statement_error(target, &e))?;
        if rows.len() == max_rows {
            return Err(HostError::Failed(format!(
                "the query returns more than {max_rows} rows; add a LIMIT or raise max_rows"
            )));
        }
        rows.push(row_to_json(&row).map_err(HostError::Failed)?);
    }
    tx.rollback()
        .await
        .map_err(|e| target.error("cannot end the read-only transaction", &e))?;
    Ok(rows)
}

#[derive(Debug, Clone, Serialize)]
pub struct Executed {
    pub rows_affected: u64,
    /// Rows of a `RETURNING` clause (empty otherwise).
    pub rows: Vec<Row>,
}

/// Runs one statement that changes something; it commits on its own.
pub async fn execute(target: &Target, sql: &str, params: &[Param]) -> Result<Executed, HostError> {
    let client = target.connect().await?;
    let stream = client
        .query_raw(sql, params.iter())
        .await
        .map_err(|e| statement_error(target, &e))?;
    pin_mut!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| statement_error(target, &e))?;
        rows.push(row_to_json(&row).map_err(HostError::Failed)?);
    }
    Ok(Executed {
        rows_affected: stream.rows_affected().unwrap_or(0),
        rows,
    })
}

/// Runs with typed parameters and no row limit: the building block of the other modules.
pub async fn rows(
    client: &impl tokio_postgres::GenericClient,
    target: &Target,
    sql: &str,
    params: &[Param],
) -> Result<Vec<tokio_postgres::Row>, HostError> {
    client
        .query(sql, &as_sql(params))
        .await
        .map_err(|e| statement_error(target, &e))
}

pub fn statement_error(target: &Target, e: &tokio_postgres::Error) -> HostError {
    let what = match e.as_db_error().map(|d| d.code().code()) {
        Some("57014") => "the statement was cancelled (statement_timeout or an operator)",
        Some("55P03") => "a lock could not be taken within lock_timeout",
        Some("25006") => "pg::query runs read-only; use pg::execute to change data",
        _ => "the statement failed",
    };
    HostError::Failed(format!("{what} on {}: {}", target.display(), describe(e)))
}
