//! The `coordination.k8s.io` Lease requests shared by the run lock (`crate::lock`) and the
//! watcher's leader election (`crate::watch::leader`), which judge holders and expiry each in
//! their own way.

use super::client::{CallError, Kube, Op};
use crate::host::HostError;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;

/// The lease `name`, or `None` when it does not exist yet.
pub async fn get(kube: &Kube, name: &str) -> Result<Option<Lease>, HostError> {
    kube.call_opt(
        Op::new("get", "leases", name),
        kube.api::<Lease>().get(name),
    )
    .await
}

/// Creates `lease` (when none existed) or replaces it; a 409 means another writer came first.
pub async fn write(kube: &Kube, lease: &Lease, exists: bool) -> Result<Lease, CallError> {
    let api = kube.api::<Lease>();
    let name = lease.metadata.name.as_deref().unwrap_or_default();
    if exists {
        kube.call_checked(
            Op::new("update", "leases", name),
            api.replace(name, &PostParams::default(), lease),
        )
        .await
    } else {
        kube.call_checked(
            Op::new("create", "leases", name),
            api.create(&PostParams::default(), lease),
        )
        .await
    }
}

/// Empties the holder of lease `name` if it is still `holder`, so the next candidate takes it
/// at once instead of after expiry. True when this call released it.
pub async fn release(kube: &Kube, name: &str, holder: &str) -> Result<bool, HostError> {
    for _ in 0..3 {
        let Some(mut lease) = get(kube, name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(holder) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match write(kube, &lease, true).await {
            Ok(_) => return Ok(true),
            Err(CallError::Conflict) => continue,
            Err(CallError::Other(e)) => return Err(e),
        }
    }
    Err(HostError::Failed(
        "the lease kept changing while being released".into(),
    ))
}
