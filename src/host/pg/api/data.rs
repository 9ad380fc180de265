//! Queries and whole-database reads.

use super::*;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct QueryOpts {
    database: Option<String>,
    #[serde(deserialize_with = "opt_seconds")]
    timeout: Option<f64>,
    max_rows: Option<i64>,
}

pub fn query(session: &Session, sql: &str, list: Array, opts: Map) -> RhaiResult {
    let doc = &QUERY;
    let o: QueryOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let mut target = env.db(&o.database);
    if let Some(t) = secs(doc, "timeout", o.timeout).map_err(err(doc))? {
        target = target.with_statement_timeout(t);
    }
    let max_rows = o.max_rows.unwrap_or(DEFAULT_MAX_ROWS).clamp(1, 100_000) as usize;
    let (values, shown) = params(list);
    let args = json!({"sql": sql, "params": shown, "database": target.display(), "opts": o});
    let sql = sql.to_string();
    session.read(&doc.qualified_name(), args, async move {
        q::query(&target, &sql, &values, max_rows).await
    })
}

pub fn execute(session: &Session, sql: &str, list: Array, opts: Map) -> RhaiResult {
    let doc = &EXECUTE;
    let o: QueryOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let mut target = env.db(&o.database);
    if let Some(t) = secs(doc, "timeout", o.timeout).map_err(err(doc))? {
        target = target.with_statement_timeout(t);
    }
    let (values, shown) = params(list);
    let args = json!({"sql": sql, "params": shown, "database": target.display()});
    let steps = vec![format!("{sql}   -- parameters: {shown}")];
    let sql = sql.to_string();
    mutate(
        session,
        doc,
        args,
        steps,
        || q::Executed {
            rows_affected: 0,
            rows: Vec::new(),
        },
        async move { q::execute(&target, &sql, &values).await },
    )
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct DbOpts {
    database: Option<String>,
    #[serde(deserialize_with = "opt_seconds")]
    timeout: Option<f64>,
}

fn scan_target(
    session: &Session,
    doc: &FnDoc,
    opts: Map,
) -> Result<(Target, DbOpts), Box<EvalAltResult>> {
    let o: DbOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let timeout = secs(doc, "timeout", o.timeout).map_err(err(doc))?;
    let target = env
        .db(&o.database)
        .with_statement_timeout(scan_timeout(session, timeout));
    Ok((target, o))
}

pub fn schema_version(session: &Session, opts: Map) -> RhaiResult {
    let doc = &SCHEMA_VERSION;
    let (target, o) = scan_target(session, doc, opts)?;
    let args = json!({"database": target.display(), "opts": o});
    session.read(&doc.qualified_name(), args, async move {
        let client = target.connect().await?;
        inspect::schema_version(&client, &target).await
    })
}

#[derive(Serialize)]
struct Counts {
    tables: std::collections::BTreeMap<String, i64>,
    total_rows: i64,
}

pub fn table_counts(session: &Session, opts: Map) -> RhaiResult {
    let doc = &TABLE_COUNTS;
    let (target, o) = scan_target(session, doc, opts)?;
    let args = json!({"database": target.display(), "opts": o});
    session.read(&doc.qualified_name(), args, async move {
        let mut client = target.connect().await?;
        let tx = inspect::snapshot(&mut client, &target).await?;
        let tables = inspect::table_counts(&tx, &target).await?;
        Ok(Counts {
            total_rows: tables.values().sum(),
            tables,
        })
    })
}

pub fn check_integrity(session: &Session, opts: Map) -> RhaiResult {
    let doc = &CHECK_INTEGRITY;
    let (target, o) = scan_target(session, doc, opts)?;
    let args = json!({"database": target.display(), "opts": o});
    session.read(&doc.qualified_name(), args, async move {
        let mut client = target.connect().await?;
        let tx = inspect::snapshot(&mut client, &target).await?;
        inspect::check_integrity(&tx, &target, inspect::Depth::Full).await
    })
}
