//! Redis: is it up, and how many keys match a pattern (sessions, queued jobs)?
//!
//! The URL comes from the variable named by the environment's `redis_url_env` (it may carry a
//! password, so the platform never holds it). Counting uses SCAN with COUNT, never KEYS, so a
//! large keyspace never blocks the server, and it stops at its timeout or the run's deadline.

pub mod resp;

use super::{Effect, FnDoc, HostError, Registrar, options};
use crate::session::Session;
use resp::{Connection, Failure, Target, Value};
use rhai::{Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PING: FnDoc = FnDoc {
    module: Some("redis"),
    name: "ping",
    signature: "(opts?: #{timeout}) -> #{ok, address, version, latency_ms}",
    summary: "Connects to the environment's Redis (AUTH and SELECT from its URL) and sends PING, failing with the reason when it does not answer PONG.",
    example: r#"let r = redis::ping(); log(`Redis ${r.version} at ${r.address} answered in ${r.latency_ms} ms`);"#,
    effect: Effect::Read,
};

const COUNT: FnDoc = FnDoc {
    module: Some("redis"),
    name: "count",
    signature: "(pattern: string, opts?: #{batch, timeout}) -> #{pattern, count, scans, address}",
    summary: "Counts the keys matching a glob pattern with SCAN (never KEYS), batch keys per call, failing when the scan outlasts its timeout.",
    example: r#"let sessions = redis::count("session:*"); log(`${sessions.count} sessions open`);"#,
    effect: Effect::Read,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct PingOptions {
    /// Seconds for connecting and for each command.
    #[serde(deserialize_with = "options::number")]
    timeout: f64,
}

impl Default for PingOptions {
    fn default() -> Self {
        PingOptions { timeout: 5.0 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct CountOptions {
    /// The COUNT hint of each SCAN: keys the server looks at per call.
    batch: i64,
    /// Seconds for the whole scan.
    #[serde(deserialize_with = "options::number")]
    timeout: f64,
}

impl Default for CountOptions {
    fn default() -> Self {
        CountOptions {
            batch: 1000,
            timeout: 60.0,
        }
    }
}

#[derive(Debug, Serialize)]
struct PingResult {
    ok: bool,
    address: String,
    version: Option<String>,
    latency_ms: f64,
}

#[derive(Debug, Serialize)]
struct CountResult {
    pattern: String,
    count: i64,
    /// SCAN calls made.
    scans: i64,
    address: String,
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&PING, move || ping(&s, Map::new()));
    let s = session.clone();
    r.func(&PING, move |opts: Map| ping(&s, opts));
    let s = session.clone();
    r.func(&COUNT, move |pattern: &str| count(&s, pattern, Map::new()));
    let s = session.clone();
    r.func(&COUNT, move |pattern: &str, opts: Map| {
        count(&s, pattern, opts)
    });
}

/// The environment's Redis, named by the variable that holds its URL.
struct Redis {
    target: Target,
    var: String,
}

impl Redis {
    fn from_session(session: &Session) -> Result<Redis, HostError> {
        let env = session.environment();
        let var = session.env_config().redis_url_env.clone().ok_or_else(|| {
            HostError::Invalid(format!(
                "environment '{env}' has no Redis: set redis_url_env in [environments.{env}] to the variable that holds its URL"
            ))
        })?;
        let url = std::env::var(&var).map_err(|_| {
            HostError::Failed(format!(
                "the variable {var} (redis_url_env of environment '{env}') is not set; export it with the Redis URL"
            ))
        })?;
        crate::redact::register(&url);
        crate::redact::register_url_password(&url);
        let target = resp::parse_url(&url).map_err(|why| {
            HostError::Invalid(format!("the Redis URL in {var} is invalid: {why}"))
        })?;
        if let Some(password) = &target.password {
            crate::redact::register(password);
        }
        Ok(Redis { target, var })
    }

    async fn connect(&self, timeout: Duration) -> Result<Connection, HostError> {
        Connection::open(&self.target, timeout)
            .await
            .map_err(|f| self.explain(f))
    }

    /// A failure in an operator's words: what failed, where, and what to check.
    fn explain(&self, failure: Failure) -> HostError {
        let address = self.target.address();
        let var = &self.var;
        let text = match failure {
            Failure::Io(e) => format!(
                "cannot talk to Redis at {address}: {e}; check that it is up and the URL in {var}"
            ),
            Failure::Timeout => format!(
                "Redis at {address} did not answer in time; check that it is up and not blocked, and the URL in {var}"
            ),
            Failure::Server(e) if e.starts_with("WRONGPASS") || e.contains("invalid password") => {
                format!(
                    "Redis at {address} refused the credentials ({}); check the user and password in the URL in {var}",
                    first_word(&e)
                )
            }
            Failure::Server(e) if e.starts_with("NOAUTH") => format!(
                "Redis at {address} requires a password; put it in the URL in {var} (redis://:PASSWORD@host:port)"
            ),
            Failure::Server(e) if e.contains("without any password configured") => format!(
                "Redis at {address} has no password but the URL in {var} gives one; remove it from the URL"
            ),
            Failure::Server(e) => format!("Redis at {address} answered an error: {e}"),
            Failure::Protocol(e) => format!(
                "Redis at {address} broke the protocol ({e}); check that {var} points at a Redis server"
            ),
        };
        HostError::Failed(text)
    }
}

fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or(text)
}

fn ping(session: &Session, opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = PING.qualified_name();
    let prepared = (|| -> Result<_, HostError> {
        let o: PingOptions = options::parse(&f, opts)?;
        let timeout = options::timeout(&f, o.timeout)?;
        Ok((o, timeout, Redis::from_session(session)?))
    })();
    let (o, timeout, redis) = prepared.map_err(|e| e.into_rhai(&f))?;
    session.read(&f, json!({"opts": o}), async move {
        let started = Instant::now();
        let mut conn = redis.connect(timeout).await?;
        let reply = conn.ok(&[b"PING"]).await.map_err(|e| redis.explain(e))?;
        let latency_ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        if reply != Value::Simple("PONG".into()) {
            return Err(HostError::Failed(format!(
                "Redis at {} answered PING with {reply:?} instead of PONG",
                redis.target.address()
            )));
        }
        // The version helps a report; a server that hides INFO still answered PING.
        let version = conn
            .ok(&[b"INFO", b"server"])
            .await
            .ok()
            .and_then(|v| v.text())
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("redis_version:"))
                    .map(|v| v.trim().to_string())
            });
        Ok(PingResult {
            ok: true,
            address: redis.target.address(),
            version,
            latency_ms,
        })
    })
}

fn count(session: &Session, pattern: &str, opts: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = COUNT.qualified_name();
    let prepared = (|| -> Result<_, HostError> {
        let o: CountOptions = options::parse(&f, opts)?;
        if !(1..=100_000).contains(&o.batch) {
            return Err(HostError::Invalid(
                "batch must be between 1 and 100000".into(),
            ));
        }
        let timeout = options::timeout(&f, o.timeout)?;
        if pattern.is_empty() {
            return Err(HostError::Invalid(
                "the pattern is empty; use \"*\" to count every key".into(),
            ));
        }
        Ok((o, timeout, Redis::from_session(session)?))
    })();
    let (o, timeout, redis) = prepared.map_err(|e| e.into_rhai(&f))?;
    let pattern = pattern.to_string();
    session.read(&f, json!({"pattern": pattern, "opts": o}), async move {
        let started = Instant::now();
        // Each command may take up to the whole budget; the loop checks what is left.
        let mut conn = redis.connect(timeout).await?;
        let batch = o.batch.to_string();
        // SCAN may return a key twice while the server resizes its table: count each once.
        // Hashes, not keys, keep the memory at 8 bytes a key.
        let hasher = RandomState::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut cursor = "0".to_string();
        let mut scans = 0i64;
        loop {
            if started.elapsed() >= timeout {
                return Err(HostError::Failed(format!(
                    "the scan of Redis at {} for '{pattern}' did not finish within {} ({} matching keys found so far, {scans} SCAN calls); raise timeout or narrow the pattern",
                    redis.target.address(),
                    crate::timefmt::format_duration(timeout),
                    seen.len()
                )));
            }
            let reply = conn
                .ok(&[
                    b"SCAN",
                    cursor.as_bytes(),
                    b"MATCH",
                    pattern.as_bytes(),
                    b"COUNT",
                    batch.as_bytes(),
                ])
                .await
                .map_err(|e| redis.explain(e))?;
            scans += 1;
            let (next, keys) = scan_reply(reply).ok_or_else(|| {
                redis.explain(Failure::Protocol("SCAN answered without a cursor and keys".into()))
            })?;
            for key in keys {
                seen.insert(hasher.hash_one(key));
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Ok(CountResult {
            pattern,
            count: seen.len() as i64,
            scans,
            address: redis.target.address(),
        })
    })
}

/// `[cursor, [key, …]]`.
fn scan_reply(reply: Value) -> Option<(String, Vec<Vec<u8>>)> {
    let Value::Array(Some(mut parts)) = reply else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let keys = parts.pop()?;
    let cursor = parts.pop()?.text()?;
    let Value::Array(Some(keys)) = keys else {
        return None;
    };
    let keys = keys
        .into_iter()
        .map(|k| match k {
            Value::Bulk(Some(b)) => Some(b),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((cursor, keys))
}
