//! The run lock: at most one mutating run per environment, held as a `coordination.k8s.io`
//! Lease in the environment's namespace.
//!
//! It is taken lazily, by the first real mutation of a run (a dry-run never takes it), renewed
//! in the background while the run goes on, and released when the session finishes. A run that
//! dies keeps it only until the lease expires (`ROLLBACK_LOCK_TTL` seconds, default 30, after
//! the last renewal). A second run fails at its first change, naming the holder, or waits with
//! `--wait-lock`.
//!
//! Where there is no lease to hold, the run goes on unlocked with a warning in the log and the
//! journal: an environment with no Kubernetes configured, or an API that cannot be reached (the
//! lock must not turn a cluster outage into a blocked database restore or notification). An API
//! that answers but refuses (RBAC) fails the change: that is a setup to fix.

use crate::console;
use crate::host::HostError;
use crate::host::k8s::client::{self, CallError, Kube, Op};
use crate::host::k8s::lease;
use crate::journal::{Entry, Outcome};
use crate::session::Session;
use crate::timefmt::format_duration;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::WatchParams;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const LEASE_NAME: &str = "rollback-run-lock";
const DEFAULT_TTL_SECS: i32 = 30;
const ANNOTATION_PREFIX: &str = "rollback.io/";

fn ttl_secs() -> i32 {
    std::env::var("ROLLBACK_LOCK_TTL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| (2..=3600).contains(v))
        .unwrap_or(DEFAULT_TTL_SECS)
}

/// Who holds (or wants) the lock.
#[derive(Debug, Clone)]
struct Identity {
    holder: String,
    operator: String,
    host: String,
    run: String,
    procedure: String,
}

impl Identity {
    fn of(session: &Session) -> Identity {
        Identity {
            holder: format!("{}@{}/{}", session.operator, session.host, session.id),
            operator: session.operator.clone(),
            host: session.host.clone(),
            run: session.id.clone(),
            procedure: session.procedure.clone(),
        }
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        [
            ("operator", &self.operator),
            ("host", &self.host),
            ("run", &self.run),
            ("procedure", &self.procedure),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{ANNOTATION_PREFIX}{k}"), v.clone()))
        .collect()
    }
}

struct Held {
    kube: Kube,
    identity: Identity,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
}

/// The session's locks, one per environment it mutated.
#[derive(Default)]
pub struct RunLock {
    wait: AtomicBool,
    held: tokio::sync::Mutex<HashMap<String, Held>>,
    unlocked_warned: Mutex<HashSet<String>>,
}

/// A lease held by someone else.
struct Holder {
    holder: String,
    annotations: BTreeMap<String, String>,
    since: Option<Timestamp>,
    renewed: Option<Timestamp>,
    expires: Timestamp,
    resource_version: String,
}

enum State {
    /// Nobody holds it, its holder released it, or its lease ran out (the holder, if any).
    Free(Option<String>),
    Ours,
    Taken(Holder),
}

fn state(lease: &Lease, me: &str, now: Timestamp) -> State {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return State::Free(None);
    }
    if holder == me {
        return State::Ours;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(DEFAULT_TTL_SECS));
    let expires = renewed
        .and_then(|r| r.checked_add(jiff_secs(ttl)).ok())
        .unwrap_or(now);
    if expires <= now {
        return State::Free(Some(holder));
    }
    State::Taken(Holder {
        holder,
        annotations: lease.metadata.annotations.clone().unwrap_or_default(),
        since: spec.acquire_time.map(|t| t.0),
        renewed,
        expires,
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
    })
}

fn jiff_secs(secs: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(secs)
}

fn ago(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => {
            let secs = now.duration_since(t).as_secs_f64().max(0.0);
            format!("{} ago", format_duration(Duration::from_secs_f64(secs)))
        }
        None => "at an unknown time".into(),
    }
}

impl Holder {
    fn describe(&self, env: &str, now: Timestamp) -> String {
        let get = |k: &str| {
            self.annotations
                .get(&format!("{ANNOTATION_PREFIX}{k}"))
                .cloned()
        };
        let who = match (get("run"), get("operator"), get("host")) {
            (Some(run), Some(op), Some(host)) => format!(
                "run {run} of {op} on {host}{}",
                get("procedure")
                    .map(|p| format!(" (procedure {p})"))
                    .unwrap_or_default()
            ),
            _ => self.holder.clone(),
        };
        format!(
            "environment '{env}' is locked by {who} since {} ({}; last renewed {}); wait for that run to finish, or re-run with --wait-lock to queue behind it (a crashed run's lock expires {} after its last renewal)",
            self.since
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "an unknown time".into()),
            ago(self.since, now),
            ago(self.renewed, now),
            format_duration(Duration::from_secs(
                self.expires
                    .duration_since(self.renewed.unwrap_or(now))
                    .as_secs()
                    .max(0) as u64
            )),
        )
    }
}

fn lease_for(identity: &Identity, ttl: i32, previous: Option<&Lease>) -> Lease {
    let now = MicroTime(Timestamp::now());
    let transitions = previous
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0);
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.into()),
            annotations: Some(identity.annotations()),
            resource_version: previous.and_then(|l| l.metadata.resource_version.clone()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.holder.clone()),
            lease_duration_seconds: Some(ttl),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions + i32::from(previous.is_some())),
            ..Default::default()
        }),
    }
}

impl RunLock {
    pub fn set_wait(&self, on: bool) {
        self.wait.store(on, Ordering::Relaxed);
    }

    /// Holds the lock of the session's environment, taking it if this is the first mutation.
    pub async fn ensure(&self, session: &Session) -> Result<(), HostError> {
        let env = session.environment();
        let mut held = self.held.lock().await;
        if let Some(h) = held.get(&env) {
            if !h.lost.load(Ordering::Relaxed) {
                return Ok(());
            }
            h.stop.cancel();
            held.remove(&env);
        }
        if !client::configured(session.env_config()) {
            self.warn_unlocked(session, &env);
            return Ok(());
        }
        let started = Instant::now();
        let identity = Identity::of(session);
        let kube = client::connect(session).await.map_err(|e| {
            HostError::Failed(format!(
                "cannot take the run lock of environment '{env}': {e}"
            ))
        })?;
        let ttl = ttl_secs();
        let wait = self.wait.load(Ordering::Relaxed);
        let previous = match acquire(&kube, &env, &identity, ttl, wait).await {
            Ok(previous) => previous,
            // The lock lives in the cluster; with the API down, blocking every change (a
            // notification, a database restore) would make the outage worse. Say so loudly,
            // journal it, and try again at the next change.
            Err(e) if client::unreachable(&e) => {
                let message = format!(
                    "going on WITHOUT the run lock of environment '{env}': {e}; nothing stops a second run from changing the same things"
                );
                console::warn(&message);
                let _ = session.append(Entry {
                    step: session.current_step(),
                    function: "lock".into(),
                    args: json!({"environment": env, "holder": identity.holder}),
                    outcome: Outcome::status("skipped", json!(null), Some(message)),
                    duration_ms: started.elapsed().as_millis() as u64,
                    dry_run: false,
                    mutating: false,
                });
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let lost = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        tokio::spawn(renew(
            kube.clone(),
            identity.clone(),
            env.clone(),
            ttl,
            lost.clone(),
            stop.clone(),
        ));
        console::info(&format!(
            "took the run lock of environment '{env}' (Lease {}/{LEASE_NAME})",
            kube.namespace
        ));
        let _ = session.append(Entry {
            step: session.current_step(),
            function: "lock".into(),
            args: json!({"environment": env, "lease": format!("{}/{LEASE_NAME}", kube.namespace), "holder": identity.holder, "ttl_s": ttl}),
            outcome: Outcome::ok(json!({"taken_over_from": previous})),
            duration_ms: started.elapsed().as_millis() as u64,
            dry_run: false,
            mutating: false,
        });
        held.insert(
            env,
            Held {
                kube,
                identity,
                lost,
                stop,
            },
        );
        Ok(())
    }

    fn warn_unlocked(&self, session: &Session, env: &str) {
        let mut warned = self
            .unlocked_warned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if warned.insert(env.to_string()) {
            let message = format!(
                "environment '{env}' has no Kubernetes configured, so this run holds no run lock: nothing stops a second run from changing the same things"
            );
            console::warn(&message);
            let _ = session.append(Entry {
                step: session.current_step(),
                function: "lock".into(),
                args: json!({"environment": env}),
                outcome: Outcome::status("skipped", json!(null), Some(message)),
                duration_ms: 0,
                dry_run: false,
                mutating: false,
            });
        }
    }

    /// Releases every lock this session holds; failures are warnings (the lease expires).
    pub fn release_all(&self, session: &Session) {
        let held: Vec<(String, Held)> = match self.held.try_lock() {
            Ok(mut held) => held.drain().collect(),
            Err(_) => return,
        };
        for (env, h) in held {
            h.stop.cancel();
            let outcome = session.runtime().block_on(async {
                tokio::time::timeout(Duration::from_secs(5), release(&h.kube, &h.identity)).await
            });
            let (status, error) = match outcome {
                Ok(Ok(())) => ("ok", None),
                Ok(Err(e)) => ("error", Some(e.to_string())),
                Err(_) => (
                    "error",
                    Some("the API did not answer within 5s".to_string()),
                ),
            };
            if let Some(e) = &error {
                console::warn(&format!(
                    "could not release the run lock of environment '{env}' ({e}); it expires by itself"
                ));
            }
            let _ = session.append(Entry {
                step: None,
                function: "unlock".into(),
                args: json!({"environment": env, "holder": h.identity.holder}),
                outcome: Outcome::status(status, json!(null), error),
                duration_ms: 0,
                dry_run: false,
                mutating: false,
            });
        }
    }
}

/// Takes the lease, waiting for its holder when `wait` is set. Returns the holder of an
/// expired lease it took over.
async fn acquire(
    kube: &Kube,
    env: &str,
    me: &Identity,
    ttl: i32,
    wait: bool,
) -> Result<Option<String>, HostError> {
    let mut announced = false;
    loop {
        let current = lease::get(kube, LEASE_NAME).await?;
        let now = Timestamp::now();
        let (attempt, previous_holder) = match &current {
            None => {
                let sent = lease::write(kube, &lease_for(me, ttl, None), false).await;
                (sent.map(|_| ()), None)
            }
            Some(current) => match state(current, &me.holder, now) {
                State::Taken(holder) => {
                    let message = holder.describe(env, now);
                    if !wait {
                        return Err(HostError::Failed(message));
                    }
                    if !announced {
                        console::warn(&format!("waiting (--wait-lock): {message}"));
                        announced = true;
                    }
                    wait_for_change(kube, &holder.resource_version, holder.expires).await;
                    continue;
                }
                State::Free(previous) => {
                    let sent = lease::write(kube, &lease_for(me, ttl, Some(current)), true).await;
                    (sent.map(|_| ()), previous)
                }
                State::Ours => return Ok(None),
            },
        };
        match attempt {
            Ok(()) => {
                if let Some(p) = &previous_holder {
                    console::warn(&format!(
                        "took over the expired run lock of environment '{env}' from {p}"
                    ));
                }
                return Ok(previous_holder);
            }
            // Someone else created or changed it at the same moment: read it again.
            Err(CallError::Conflict) => continue,
            Err(CallError::Other(e)) => {
                return Err(HostError::Failed(format!(
                    "cannot take the run lock of environment '{env}': {e}"
                )));
            }
        }
    }
}

/// Returns when the lease changes or may have expired.
async fn wait_for_change(kube: &Kube, resource_version: &str, expires: Timestamp) {
    let left = expires
        .duration_since(Timestamp::now())
        .as_secs_f64()
        .max(0.0);
    let limit = Duration::from_secs_f64(left + 0.2).min(Duration::from_secs(60));
    let api = kube.api::<Lease>();
    let params = WatchParams::default()
        .fields(&format!("metadata.name={LEASE_NAME}"))
        .timeout(limit.as_secs().max(1) as u32);
    let watched = tokio::time::timeout(limit, async {
        match api.watch(&params, resource_version).await {
            Ok(stream) => {
                let mut stream = stream.boxed();
                let _ = stream.next().await;
            }
            // No watch (an old resourceVersion, a blip): look again after a short pause.
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    });
    let _ = watched.await;
}

async fn renew(
    kube: Kube,
    me: Identity,
    env: String,
    ttl: i32,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let period = Duration::from_secs_f64(f64::from(ttl) / 3.0);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let current = match kube
            .call(
                Op::new("get", "leases", LEASE_NAME),
                kube.api::<Lease>().get(LEASE_NAME),
            )
            .await
        {
            Ok(lease) => lease,
            Err(e) => {
                if !warned {
                    console::warn(&format!(
                        "cannot renew the run lock of environment '{env}': {e}"
                    ));
                    warned = true;
                }
                continue;
            }
        };
        let holder = current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder != me.holder {
            lost.store(true, Ordering::Relaxed);
            console::warn(&format!(
                "lost the run lock of environment '{env}' to {}: the next change will try to take it back",
                if holder.is_empty() {
                    "nobody (it was released)".to_string()
                } else {
                    holder
                }
            ));
            return;
        }
        let mut renewed = current.clone();
        if let Some(spec) = renewed.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match lease::write(&kube, &renewed, true).await {
            Ok(_) => warned = false,
            Err(CallError::Conflict) => {}
            Err(CallError::Other(e)) => {
                if !warned {
                    console::warn(&format!(
                        "cannot renew the run lock of environment '{env}': {e}"
                    ));
                    warned = true;
                }
            }
        }
    }
}

async fn release(kube: &Kube, me: &Identity) -> Result<(), HostError> {
    lease::release(kube, LEASE_NAME, &me.holder)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: i64, ttl: i32) -> Lease {
        let renewed = Timestamp::now()
            .checked_sub(jiff_secs(renewed_secs_ago))
            .unwrap();
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(ttl),
                acquire_time: Some(MicroTime(renewed)),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn lease_states() {
        let now = Timestamp::now();
        assert!(matches!(
            state(&lease("", 0, 30), "me", now),
            State::Free(None)
        ));
        assert!(matches!(state(&lease("me", 0, 30), "me", now), State::Ours));
        assert!(matches!(
            state(&lease("other", 5, 30), "me", now),
            State::Taken(_)
        ));
        assert!(
            matches!(state(&lease("other", 31, 30), "me", now), State::Free(Some(h)) if h == "other")
        );
    }
}
