//! Who is connected, and closing the door on them.

use super::*;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct ConnectionsOpts {
    database: Option<String>,
    all: bool,
}

pub fn connections(session: &Session, opts: Map) -> RhaiResult {
    let doc = &CONNECTIONS;
    let o: ConnectionsOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let target = env.db(&o.database);
    let maintenance = env.target.with_dbname(&env.maintenance(&None));
    let database = (!o.all).then(|| target.dbname().to_string());
    let args = json!({"database": target.display(), "opts": o});
    session.read(&doc.qualified_name(), args, async move {
        let client = connect_or_maintenance(&target, &maintenance).await?;
        sessions::list(&client, &target, database.as_deref()).await
    })
}

/// Connects to the database itself, or to the maintenance database when it refuses new
/// connections (after block_connections).
async fn connect_or_maintenance(
    target: &Target,
    maintenance: &Target,
) -> Result<tokio_postgres::Client, HostError> {
    match target.connect().await {
        Ok(client) => Ok(client),
        Err(first) => maintenance.connect().await.map_err(|_| first),
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct BlockOpts {
    database: Option<String>,
    maintenance_db: Option<String>,
}

fn set_allow(session: &Session, doc: &FnDoc, opts: Map, allow: bool) -> RhaiResult {
    let o: BlockOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let database = env.db(&o.database).dbname().to_string();
    let maintenance = env.target.with_dbname(&env.maintenance(&o.maintenance_db));
    let steps = vec![sessions::allow_sql(&database, allow).map_err(err(doc))?];
    let args = json!({"database": database, "server": maintenance.display()});
    let shown = database.clone();
    mutate(
        session,
        doc,
        args,
        steps,
        move || sessions::Allowed {
            database: shown,
            allow_connections: allow,
            previous: !allow,
        },
        async move {
            let client = maintenance.connect().await?;
            sessions::set_allow(&client, &maintenance, &database, allow).await
        },
    )
}

pub fn block_connections(session: &Session, opts: Map) -> RhaiResult {
    set_allow(session, &BLOCK_CONNECTIONS, opts, false)
}

pub fn allow_connections(session: &Session, opts: Map) -> RhaiResult {
    set_allow(session, &ALLOW_CONNECTIONS, opts, true)
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct TerminateOpts {
    database: Option<String>,
    #[serde(deserialize_with = "opt_seconds")]
    grace: Option<f64>,
    #[serde(deserialize_with = "opt_seconds")]
    timeout: Option<f64>,
}

pub fn terminate_connections(session: &Session, opts: Map) -> RhaiResult {
    let doc = &TERMINATE_CONNECTIONS;
    let o: TerminateOpts = options::parse(doc.name, opts).map_err(err(doc))?;
    let env = Env::load(session).map_err(err(doc))?;
    let target = env.db(&o.database);
    let maintenance = env.target.with_dbname(&env.maintenance(&None));
    let plan = TerminatePlan {
        grace: secs(doc, "grace", o.grace)
            .map_err(err(doc))?
            .unwrap_or(Duration::from_secs(2)),
        timeout: secs(doc, "timeout", o.timeout)
            .map_err(err(doc))?
            .unwrap_or(Duration::from_secs(5)),
    };
    let database = target.dbname().to_string();
    let steps = sessions::terminate_sql()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let args = json!({"database": target.display(), "opts": o});
    let shown = database.clone();
    mutate(
        session,
        doc,
        args,
        steps,
        move || sessions::Terminated {
            database: shown,
            own_pid: 0,
            cancelled: Vec::new(),
            terminated: Vec::new(),
            remaining: Vec::new(),
            ok: true,
        },
        async move {
            let client = connect_or_maintenance(&target, &maintenance).await?;
            sessions::terminate(&client, &target, &database, plan).await
        },
    )
}
