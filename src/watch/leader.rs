//! Leader election among watcher replicas: a `coordination.k8s.io` Lease
//! (`rollback-watch-leader`), apart from the run lock (`rollback-run-lock`), which the
//! procedure a leader starts takes like any run.
//!
//! Expiry is judged by this replica's own clock: a lease whose resourceVersion has not moved for
//! its duration is free. Comparing the holder's `renewTime` with the local clock would let clock
//! skew between nodes hand leadership to two replicas at once.

use crate::console;
use crate::host::HostError;
use crate::host::k8s::client::{CallError, Kube};
use crate::host::k8s::lease;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const LEASE_NAME: &str = "rollback-watch-leader";

/// What this replica knows about leadership.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Renewed by us at this instant: we lead until it is `duration` old.
    pub renewed: Option<Instant>,
    /// The holder as last read (ourselves included).
    pub holder: Option<String>,
    /// The last error talking to the API, until the next success.
    pub error: Option<String>,
}

pub struct Election {
    pub identity: String,
    pub duration: Duration,
    kube: Kube,
    view: Mutex<View>,
    /// The lease as last seen, and when it last changed, for the local expiry clock.
    observed: Mutex<Option<(String, Instant)>>,
    /// A dry-run acts alone and writes nothing: it never campaigns, and never blocks the
    /// real leader.
    alone: bool,
}

impl Election {
    pub fn new(kube: Kube, identity: String, duration: Duration, alone: bool) -> Arc<Election> {
        Arc::new(Election {
            identity,
            duration,
            kube,
            view: Mutex::new(View::default()),
            observed: Mutex::new(None),
            alone,
        })
    }

    /// Whether this replica may act now: it renewed the lease less than a lease duration ago.
    pub fn is_leader(&self) -> bool {
        self.alone
            || self
                .view()
                .renewed
                .is_some_and(|r| r.elapsed() < self.duration)
    }

    pub fn view(&self) -> View {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Campaigns and renews until `stop`, then hands the lease over by releasing it.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        if self.alone {
            return;
        }
        let period = (self.duration / 3).max(Duration::from_millis(200));
        loop {
            let was_leader = self.is_leader();
            match self.round().await {
                Ok(()) => self.set(|v| v.error = None),
                Err(e) => {
                    let message = e.to_string();
                    if self.view().error.as_deref() != Some(message.as_str()) {
                        console::warn(&format!("leader election: {message}"));
                    }
                    self.set(|v| v.error = Some(message));
                }
            }
            let leader = self.is_leader();
            if leader && !was_leader {
                console::info(&format!(
                    "leading: this replica ({}) holds Lease {}/{LEASE_NAME} and acts on triggers",
                    self.identity, self.kube.namespace
                ));
            } else if was_leader && !leader {
                console::warn(&format!(
                    "no longer leading (Lease {}/{LEASE_NAME} now held by {}); triggers are left to the leader",
                    self.kube.namespace,
                    self.view().holder.unwrap_or_else(|| "nobody".into())
                ));
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
        if self.is_leader() {
            self.release().await;
        }
    }

    fn set(&self, f: impl FnOnce(&mut View)) {
        f(&mut self.view.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// One look at the lease: renew it if ours, take it if free or expired.
    async fn round(&self) -> Result<(), HostError> {
        let current = lease::get(&self.kube, LEASE_NAME).await?;
        let attempt_started = Instant::now();
        let result = match &current {
            None => lease::write(&self.kube, &self.lease(None), false).await,
            Some(lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.clone().unwrap_or_default();
                self.set(|v| v.holder = Some(holder.clone()).filter(|h| !h.is_empty()));
                if holder != self.identity && !holder.is_empty() && !self.expired(lease) {
                    self.set(|v| v.renewed = None);
                    return Ok(());
                }
                if holder != self.identity && !holder.is_empty() {
                    console::warn(&format!(
                        "the watcher leader {holder} stopped renewing Lease {}/{LEASE_NAME}; taking over",
                        self.kube.namespace
                    ));
                }
                lease::write(&self.kube, &self.lease(Some(lease)), true).await
            }
        };
        match result {
            Ok(lease) => {
                self.observe(&lease);
                self.set(|v| {
                    v.renewed = Some(attempt_started);
                    v.holder = Some(self.identity.clone());
                });
                Ok(())
            }
            // Another replica wrote first; the next round reads who.
            Err(CallError::Conflict) => {
                self.set(|v| v.renewed = None);
                Ok(())
            }
            Err(CallError::Other(e)) => Err(e),
        }
    }

    fn expired(&self, lease: &Lease) -> bool {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let ttl = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .unwrap_or(15);
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        match observed.as_ref() {
            Some((v, at)) if *v == version => {
                at.elapsed() >= Duration::from_secs(u64::try_from(ttl).unwrap_or(15))
            }
            _ => {
                *observed = Some((version, Instant::now()));
                false
            }
        }
    }

    fn observe(&self, lease: &Lease) {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        *self.observed.lock().unwrap_or_else(|e| e.into_inner()) = Some((version, Instant::now()));
    }

    fn lease(&self, previous: Option<&Lease>) -> Lease {
        let now = MicroTime(Timestamp::now());
        let spec = previous.and_then(|l| l.spec.clone()).unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let transitions = spec.lease_transitions.unwrap_or(0);
        Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                resource_version: previous.and_then(|l| l.metadata.resource_version.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
                acquire_time: if ours {
                    spec.acquire_time
                } else {
                    Some(now.clone())
                },
                renew_time: Some(now),
                lease_transitions: Some(transitions + i32::from(previous.is_some() && !ours)),
                ..Default::default()
            }),
        }
    }

    /// Empties the holder so another replica takes over at its next round, not after expiry.
    async fn release(&self) {
        let released = lease::release(&self.kube, LEASE_NAME, &self.identity).await;
        self.set(|v| v.renewed = None);
        if released.is_ok_and(|ours| ours) {
            console::info(&format!(
                "released Lease {}/{LEASE_NAME} for another replica",
                self.kube.namespace
            ));
        }
    }
}

/// The lease's holder and how long ago it was renewed, for `status`.
pub async fn holder(kube: &Kube) -> Result<Option<(String, Option<Timestamp>)>, HostError> {
    let lease = lease::get(kube, LEASE_NAME).await?;
    Ok(lease.and_then(|l| {
        let spec = l.spec?;
        let holder = spec.holder_identity.filter(|h| !h.is_empty())?;
        Some((holder, spec.renew_time.map(|t| t.0)))
    }))
}
