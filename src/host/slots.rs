//! Blue/green traffic for many services in one call: which slot each Service selects, and
//! switching them all at once.
//!
//! A platform rollback moves every service's traffic to its standby. Done one `switch_slot`
//! after another, its time grows with the number of services; these batch functions plan and
//! send every switch concurrently (the same checks and the same requests as `switch_slot`), so
//! 40 services take about as long as 4.

use super::k8s::client::{self, Kube};
use super::k8s::{deployment, mutation, names, slot};
use super::{Effect, FnDoc, HostError, Registrar, options};
use crate::session::Session;
use rhai::{Array, Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

const ACTIVE_SLOTS: FnDoc = FnDoc {
    module: Some("k8s"),
    name: "active_slots",
    signature: "(services: array, opts?: #{slot_key}) -> map of service to slot",
    summary: "Reads the active slot of several blue/green Services at once, failing with every Service that has none.",
    example: r#"let live = k8s::active_slots(["analysis-service", "file-watcher"]); log("analysis on " + live["analysis-service"]);"#,
    effect: Effect::Read,
};
const DEPLOYMENTS: FnDoc = FnDoc {
    module: Some("k8s"),
    name: "deployments",
    signature: "(names: array) -> array of #{name, namespace, version, images, replicas, revision, generation, observed_generation, paused, conditions, labels, rollout, rolled_out}",
    summary: "Reads several Deployments at once, as k8s::deployment does, in the order given, failing with every one that cannot be read.",
    example: r#"for d in k8s::deployments(["analysis-service-blue", "analysis-service-green"]) { log(d.name + " " + d.version); }"#,
    effect: Effect::Read,
};
const SWITCH_SLOTS: FnDoc = FnDoc {
    module: Some("k8s"),
    name: "switch_slots",
    signature: "(targets: map of service to slot | services: array, opts?: #{slot_key, min_ready, all_or_nothing}) -> #{switched: [#{service, from, to, took_ms, ready_pods, endpoints, changed}], refused: [#{service, to, error}], took_ms}",
    summary: "Switches several blue/green Services at once, each after the checks of switch_slot; a Service whose target slot is not ready is refused and left as it is, or with all_or_nothing nothing is switched.",
    example: r#"let r = k8s::switch_slots(#{ "analysis-service": "blue", "file-watcher": "blue" }, #{ all_or_nothing: true }); log(r.switched.len() + " switched");"#,
    effect: Effect::Mutate,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct BatchOptions {
    slot_key: String,
    min_ready: i64,
    /// Refuse every switch when one target slot is not ready (a platform-wide switch that must
    /// not leave services on different versions).
    all_or_nothing: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            slot_key: "slot".into(),
            min_ready: 0,
            all_or_nothing: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct SelectorOptions {
    slot_key: String,
}

impl Default for SelectorOptions {
    fn default() -> Self {
        SelectorOptions {
            slot_key: "slot".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Refused {
    service: String,
    /// Empty when the target was "the other slot" and the current one could not be read.
    to: String,
    error: String,
}

#[derive(Debug, Clone, Serialize)]
struct BatchResult {
    switched: Vec<slot::SwitchResult>,
    refused: Vec<Refused>,
    took_ms: u64,
}

struct BatchPlan {
    started: Instant,
    plans: Vec<slot::SwitchPlan>,
    refused: Vec<Refused>,
}

type Outcome = Result<Dynamic, Box<EvalAltResult>>;

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&ACTIVE_SLOTS, move |services: Array| {
        active_slots(&s, services, Map::new())
    });
    let s = session.clone();
    r.func(&ACTIVE_SLOTS, move |services: Array, opts: Map| {
        active_slots(&s, services, opts)
    });

    let s = session.clone();
    r.func(&DEPLOYMENTS, move |names: Array| deployments(&s, names));

    let s = session.clone();
    r.func(&SWITCH_SLOTS, move |targets: Map| {
        switch_slots(&s, from_map(targets), Map::new())
    });
    let s = session.clone();
    r.func(&SWITCH_SLOTS, move |targets: Map, opts: Map| {
        switch_slots(&s, from_map(targets), opts)
    });
    let s = session.clone();
    r.func(&SWITCH_SLOTS, move |services: Array| {
        switch_slots(&s, from_array(services), Map::new())
    });
    let s = session.clone();
    r.func(&SWITCH_SLOTS, move |services: Array, opts: Map| {
        switch_slots(&s, from_array(services), opts)
    });
}

/// `(service, target)` pairs; `None` means the other slot.
type Targets = Result<Vec<(String, Option<String>)>, HostError>;

fn from_map(targets: Map) -> Targets {
    targets
        .into_iter()
        .map(|(service, to)| {
            let to = to.into_string().map_err(|t| {
                HostError::Invalid(format!(
                    "the target slot of {service} must be a string such as \"blue\", found a {t}"
                ))
            })?;
            Ok((service.to_string(), Some(to)))
        })
        .collect()
}

fn from_array(services: Array) -> Targets {
    names_of(services).map(|names| names.into_iter().map(|n| (n, None)).collect())
}

fn names_of(list: Array) -> Result<Vec<String>, HostError> {
    options::strings(list, "service")
}

fn check_services<'a>(names: impl Iterator<Item = &'a String>) -> Result<(), HostError> {
    let mut count = 0;
    for name in names {
        names::service(name)?;
        count += 1;
    }
    if count == 0 {
        return Err(HostError::Invalid(
            "no services given: pass at least one Service name".into(),
        ));
    }
    Ok(())
}

fn active_slots(s: &Arc<Session>, services: Array, opts: Map) -> Outcome {
    let f = ACTIVE_SLOTS.name;
    let names = names_of(services).map_err(|e| e.into_rhai(f))?;
    check_services(names.iter()).map_err(|e| e.into_rhai(f))?;
    let o: SelectorOptions = options::parse(f, opts).map_err(|e| e.into_rhai(f))?;
    let args = json!({"services": names, "opts": o});
    let session = s.clone();
    s.read(f, args, async move {
        let kube = client::connect(&session).await?;
        let reads = names.iter().map(|n| slot::selector(&kube, n));
        let selectors = futures::future::join_all(reads).await;
        let mut slots = BTreeMap::new();
        let mut failed = Vec::new();
        for (name, selector) in names.iter().zip(selectors) {
            match selector.map(|mut sel| sel.remove(&o.slot_key)) {
                Ok(Some(slot)) => {
                    slots.insert(name.clone(), slot);
                }
                Ok(None) => failed.push(format!(
                    "{name}: its selector has no '{}' key, so it is not a blue/green Service",
                    o.slot_key
                )),
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        if !failed.is_empty() {
            return Err(HostError::Failed(format!(
                "{} of {} Services have no active slot — {}",
                failed.len(),
                names.len(),
                failed.join(" — ")
            )));
        }
        Ok(slots)
    })
}

fn deployments(s: &Arc<Session>, list: Array) -> Outcome {
    let f = DEPLOYMENTS.name;
    let names = names_of(list).map_err(|e| e.into_rhai(f))?;
    for name in &names {
        deployment::check_name(name).map_err(|e| e.into_rhai(f))?;
    }
    let session = s.clone();
    s.read(f, json!({"names": names}), async move {
        let kube = client::connect(&session).await?;
        let reads = names.iter().map(|n| deployment::get(&kube, n));
        let outcomes = futures::future::join_all(reads).await;
        Ok(
            super::all_or_failed(&names, outcomes, "Deployments could not be read")?
                .iter()
                .map(deployment::describe)
                .collect::<Vec<_>>(),
        )
    })
}

fn switch_slots(s: &Arc<Session>, targets: Targets, opts: Map) -> Outcome {
    let f = SWITCH_SLOTS.name;
    let targets = targets.map_err(|e| e.into_rhai(f))?;
    check_services(targets.iter().map(|(n, _)| n)).map_err(|e| e.into_rhai(f))?;
    let o: BatchOptions = options::parse(f, opts).map_err(|e| e.into_rhai(f))?;
    let args = json!({"targets": targets_json(&targets), "opts": o});
    let single = slot::SwitchOptions {
        slot_key: o.slot_key.clone(),
        min_ready: o.min_ready,
    };
    let all_or_nothing = o.all_or_nothing;
    mutation(
        s,
        f,
        args,
        |kube| async move { plan(&kube, targets, &single, all_or_nothing).await },
        |plan| {
            let request: Vec<Value> = plan.plans.iter().map(|p| p.request()).collect();
            let planned = BatchResult {
                switched: plan.plans.iter().map(|p| p.result.clone()).collect(),
                refused: plan.refused.clone(),
                took_ms: 0,
            };
            (json!(request), planned)
        },
        |kube, plan| async move { send(&kube, plan).await },
    )
}

fn targets_json(targets: &[(String, Option<String>)]) -> Value {
    targets
        .iter()
        .map(|(n, to)| (n.clone(), json!(to.as_deref().unwrap_or("other"))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Every target is read and checked concurrently; nothing is sent yet.
async fn plan(
    kube: &Kube,
    targets: Vec<(String, Option<String>)>,
    options: &slot::SwitchOptions,
    all_or_nothing: bool,
) -> Result<BatchPlan, HostError> {
    let started = Instant::now();
    let listed = slot::Listed::read(kube).await?;
    let checks = targets
        .iter()
        .map(|(service, to)| slot::plan_in(kube, service, to.as_deref(), options, &listed));
    let outcomes = futures::future::join_all(checks).await;
    let mut plans = Vec::new();
    let mut refused = Vec::new();
    for ((service, to), outcome) in targets.into_iter().zip(outcomes) {
        match outcome {
            Ok(p) => plans.push(p),
            Err(e) => refused.push(Refused {
                service,
                to: to.unwrap_or_default(),
                error: e.to_string(),
            }),
        }
    }
    if all_or_nothing && !refused.is_empty() {
        let total = plans.len() + refused.len();
        return Err(HostError::Failed(format!(
            "{} of {total} target slots are not ready, so no Service was switched (all_or_nothing) — {}",
            refused.len(),
            refused
                .iter()
                .map(|r| format!("{}: {}", r.service, r.error))
                .collect::<Vec<_>>()
                .join(" — ")
        )));
    }
    Ok(BatchPlan {
        started,
        plans,
        refused,
    })
}

/// Sends every planned switch at once; one that fails (a concurrent change) joins the refused.
async fn send(kube: &Kube, batch: BatchPlan) -> Result<BatchResult, HostError> {
    let services: Vec<(String, String)> = batch
        .plans
        .iter()
        .map(|p| (p.result.service.clone(), p.result.to.clone()))
        .collect();
    let switches = batch.plans.into_iter().map(|p| slot::switch(kube, p));
    let outcomes = futures::future::join_all(switches).await;
    let mut switched = Vec::new();
    let mut refused = batch.refused;
    for ((service, to), outcome) in services.into_iter().zip(outcomes) {
        match outcome {
            Ok(r) => switched.push(r),
            Err(e) => refused.push(Refused {
                service,
                to,
                error: e.to_string(),
            }),
        }
    }
    Ok(BatchResult {
        switched,
        refused,
        took_ms: batch.started.elapsed().as_millis() as u64,
    })
}
