//! Kubernetes: Deployments, rollouts, blue/green slots, configuration snapshots, labels.
//!
//! Every call goes to the environment's cluster and namespace (platform definition:
//! `kubeconfig`, `kube_context`, `namespace`). Names are checked before any request. Mutating
//! calls read what they need first (also in dry-run), so a dry-run journals the exact request a
//! real run sends, resourceVersion preconditions included.

pub mod client;
pub mod config;
pub mod deployment;
pub mod lease;
pub mod manifests;
pub mod meta;
pub mod names;
pub mod request;
pub mod rollout;
pub mod slot;

use super::{Effect, FnDoc, HostError, Registrar, options};
use crate::console;
use crate::session::Session;
use client::Kube;
use rhai::{Array, Dynamic, EvalAltResult, Map};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const fn doc(
    name: &'static str,
    signature: &'static str,
    summary: &'static str,
    example: &'static str,
    effect: Effect,
) -> FnDoc {
    FnDoc {
        module: Some("k8s"),
        name,
        signature,
        summary,
        example,
        effect,
    }
}

const DEPLOYMENT: FnDoc = doc(
    "deployment",
    "(name: string) -> #{name, namespace, version, images, replicas: #{desired, current, ready, available, updated, unavailable}, revision, generation, observed_generation, paused, conditions, labels, rollout, rolled_out}",
    "Reads a Deployment: its version label, images, replica counts, revision, conditions and whether it is paused.",
    r#"let d = k8s::deployment("analysis-service-blue"); log(d.version + " " + d.replicas.ready + "/" + d.replicas.desired);"#,
    Effect::Read,
);
const SCALE: FnDoc = doc(
    "scale",
    "(name: string, replicas: int, opts?: #{force}) -> #{name, from, to, hpa}",
    "Scales a Deployment through its scale subresource, refusing when a HorizontalPodAutoscaler would undo it unless force is set.",
    r#"k8s::scale("analysis-service-green", 3);"#,
    Effect::Mutate,
);
const ROLLOUT_UNDO: FnDoc = doc(
    "rollout_undo",
    "(name: string, revision?: int) -> #{name, from_revision, to_revision, images, skipped}",
    "Rolls a Deployment back like kubectl rollout undo (the previous revision, or the one given), refusing a paused Deployment and failing if it changed after it was read.",
    r#"let r = k8s::rollout_undo("analysis-service-blue"); k8s::wait_rollout("analysis-service-blue", 300);"#,
    Effect::Mutate,
);
const ROLLOUT_RESTART: FnDoc = doc(
    "rollout_restart",
    "(name: string) -> #{name, restarted_at}",
    "Restarts a Deployment's pods like kubectl rollout restart, through the restartedAt annotation of its pod template.",
    r#"k8s::rollout_restart("file-watcher-blue"); k8s::wait_rollout("file-watcher-blue", 120);"#,
    Effect::Mutate,
);
const WAIT_ROLLOUT: FnDoc = doc(
    "wait_rollout",
    "(name: string, timeout_s?: int | float) -> #{name, revision, version, images, ready, took_ms}",
    "Waits through a watch until a Deployment is rolled out as kubectl rollout status judges it, failing on ProgressDeadlineExceeded or after the timeout (default 300 s).",
    r#"let r = k8s::wait_rollout("analysis-service-blue", 300); log("rolled out in " + r.took_ms + " ms");"#,
    Effect::Read,
);
const WAIT_ROLLOUTS: FnDoc = doc(
    "wait_rollouts",
    "(names: array, timeout_s?: int | float) -> array of #{name, revision, version, images, ready, took_ms}",
    "Waits for several Deployments at once with the rules of wait_rollout, failing with every rollout that did not finish.",
    r#"k8s::wait_rollouts(["analysis-service-blue", "file-watcher-blue"], 300);"#,
    Effect::Read,
);
const PODS: FnDoc = doc(
    "pods",
    "(selector: string | map) -> array of #{name, phase, ready, node, ip, restarts, images, labels, created, reason}",
    "Lists the pods matching a label selector, with readiness and the reason a pod is not ready.",
    r#"let pods = k8s::pods(#{ app: "analysis-service", slot: "green" }); let ready = pods.filter(|p| p.ready).len();"#,
    Effect::Read,
);
const EVENTS: FnDoc = doc(
    "events",
    "(kind: string, name: string) -> array of #{type, reason, message, count, first, last, source}",
    "Lists the events about one object, oldest first, for the report.",
    r#"for e in k8s::events("Deployment", "analysis-service-blue") { log(e.reason + ": " + e.message); }"#,
    Effect::Read,
);
const SERVICE_SELECTOR: FnDoc = doc(
    "service_selector",
    "(service: string) -> map",
    "Reads a Service's pod selector; for a blue/green Service its slot value is the active slot.",
    r#"let active = k8s::service_selector("analysis-service").slot;"#,
    Effect::Read,
);
const SWITCH_SLOT: FnDoc = FnDoc {
    module: None,
    name: "switch_slot",
    signature: "(service: string, to?: string, opts?: #{slot_key, min_ready}) -> #{service, from, to, took_ms, ready_pods, endpoints, changed}",
    summary: "Switches a blue/green Service (Deployments S-blue and S-green, Service S selecting slot=blue|green) to the other or given slot after checking that slot's ready pods and endpoints, then reads the selector back.",
    example: r#"let s = switch_slot("analysis-service"); log("traffic on " + s.to + " (was " + s.from + ")");"#,
    effect: Effect::Mutate,
};
const SNAPSHOT_CONFIG: FnDoc = doc(
    "snapshot_config",
    "(dir: string) -> #{dir, namespace, saved, skipped}",
    "Saves the namespace's ConfigMaps and Secrets to files in a new directory (Secrets 0600), without journaling any value.",
    r#"let snap = k8s::snapshot_config("/var/backups/rollback/config-before");"#,
    Effect::Read,
);
const RESTORE_CONFIG: FnDoc = doc(
    "restore_config",
    "(dir: string) -> #{dir, created, updated, unchanged}",
    "Puts back the ConfigMaps and Secrets saved by snapshot_config, creating missing ones and replacing changed ones.",
    r#"let r = k8s::restore_config("/var/backups/rollback/config-before"); log("restored " + r.updated.len());"#,
    Effect::Mutate,
);
const LABEL: FnDoc = doc(
    "label",
    "(kind: string, name: string, key: string, value: string) -> #{kind, name, key, value, previous}",
    "Sets one label on an object (Deployment, Service, ConfigMap, Secret, Pod, ReplicaSet, StatefulSet, DaemonSet).",
    r#"k8s::label("Deployment", "analysis-service-blue", "rollback.io/state", "bad");"#,
    Effect::Mutate,
);
const GITOPS_MANAGED: FnDoc = doc(
    "gitops_managed",
    "(name: string) | (kind: string, name: string) -> #{managed, tool, owner, advice}",
    "Tells whether Argo CD or Flux manage an object (a Deployment by default) and warns, since their self-heal would re-apply the bad version.",
    r#"let g = k8s::gitops_managed("analysis-service-blue"); if g.managed { log("warn", g.advice); }"#,
    Effect::Read,
);

pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct ScaleOptions {
    force: bool,
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(&DEPLOYMENT, move |name: &str| get_deployment(&s, name));

    let s = session.clone();
    r.func(&SCALE, move |name: &str, n: i64| {
        scale(&s, name, n, Map::new())
    });
    let s = session.clone();
    r.func(&SCALE, move |name: &str, n: i64, opts: Map| {
        scale(&s, name, n, opts)
    });

    let s = session.clone();
    r.func(&ROLLOUT_UNDO, move |name: &str| rollout_undo(&s, name, 0));
    let s = session.clone();
    r.func(&ROLLOUT_UNDO, move |name: &str, revision: i64| {
        rollout_undo(&s, name, revision)
    });

    let s = session.clone();
    r.func(&ROLLOUT_RESTART, move |name: &str| {
        rollout_restart(&s, name)
    });

    let s = session.clone();
    r.func(&WAIT_ROLLOUT, move |name: &str| {
        wait_rollout(&s, name, None)
    });
    let s = session.clone();
    r.func(&WAIT_ROLLOUT, move |name: &str, t: i64| {
        wait_rollout(&s, name, Some(t as f64))
    });
    let s = session.clone();
    r.func(&WAIT_ROLLOUT, move |name: &str, t: f64| {
        wait_rollout(&s, name, Some(t))
    });

    let s = session.clone();
    r.func(&WAIT_ROLLOUTS, move |names: Array| {
        wait_rollouts(&s, names, None)
    });
    let s = session.clone();
    r.func(&WAIT_ROLLOUTS, move |names: Array, t: i64| {
        wait_rollouts(&s, names, Some(t as f64))
    });
    let s = session.clone();
    r.func(&WAIT_ROLLOUTS, move |names: Array, t: f64| {
        wait_rollouts(&s, names, Some(t))
    });

    let s = session.clone();
    r.func(&PODS, move |selector: &str| pods(&s, selector.to_string()));
    let s = session.clone();
    r.func(&PODS, move |selector: Map| {
        let text = meta::selector_from_map(&selector).map_err(|e| e.into_rhai(PODS.name))?;
        pods(&s, text)
    });

    let s = session.clone();
    r.func(&EVENTS, move |kind: &str, name: &str| {
        events(&s, kind, name)
    });

    let s = session.clone();
    r.func(&SERVICE_SELECTOR, move |svc: &str| {
        service_selector(&s, svc)
    });

    let s = session.clone();
    r.func(&SWITCH_SLOT, move |svc: &str| {
        switch_slot(&s, svc, None, Map::new())
    });
    let s = session.clone();
    r.func(&SWITCH_SLOT, move |svc: &str, to: &str| {
        switch_slot(&s, svc, Some(to), Map::new())
    });
    let s = session.clone();
    r.func(&SWITCH_SLOT, move |svc: &str, to: &str, opts: Map| {
        switch_slot(&s, svc, Some(to), opts)
    });

    let s = session.clone();
    r.func(&SNAPSHOT_CONFIG, move |dir: &str| snapshot_config(&s, dir));
    let s = session.clone();
    r.func(&RESTORE_CONFIG, move |dir: &str| restore_config(&s, dir));

    let s = session.clone();
    r.func(
        &LABEL,
        move |kind: &str, name: &str, key: &str, value: &str| label(&s, kind, name, key, value),
    );

    let s = session.clone();
    r.func(&GITOPS_MANAGED, move |name: &str| {
        gitops_managed(&s, "Deployment", name)
    });
    let s = session.clone();
    r.func(&GITOPS_MANAGED, move |kind: &str, name: &str| {
        gitops_managed(&s, kind, name)
    });
    manifests::register(r, session);
}

type Outcome = Result<Dynamic, Box<EvalAltResult>>;

fn invalid(f: &str, e: HostError) -> Box<EvalAltResult> {
    e.into_rhai(f)
}

/// A read on the environment's cluster, journaled once.
fn read<T, F, Fut>(session: &Arc<Session>, f: &str, args: Value, body: F) -> Outcome
where
    T: Serialize,
    F: FnOnce(Kube) -> Fut,
    Fut: Future<Output = Result<T, HostError>>,
{
    let s = session.clone();
    session.read(f, args, async move {
        let kube = client::connect(&s).await?;
        body(kube).await
    })
}

/// A mutation that reads first: `prepare` runs for real (in dry-run too) and yields the plan;
/// `request` is what the journal shows of it, `planned` the result a dry-run returns, and
/// `exec` sends it. A failed `prepare` is journaled as the call's outcome.
pub(crate) fn mutation<P, T, Prep, PrepFut, Exec, ExecFut>(
    session: &Arc<Session>,
    f: &str,
    args: Value,
    prepare: Prep,
    describe: impl FnOnce(&P) -> (Value, T),
    exec: Exec,
) -> Outcome
where
    T: Serialize,
    Prep: FnOnce(Kube) -> PrepFut,
    PrepFut: Future<Output = Result<P, HostError>>,
    Exec: FnOnce(Kube, P) -> ExecFut,
    ExecFut: Future<Output = Result<T, HostError>>,
{
    let s = session.clone();
    let prepared = session.block_on(async move {
        let kube = client::connect(&s).await?;
        let plan = prepare(kube.clone()).await?;
        Ok((kube, plan))
    });
    let (kube, plan) = match prepared {
        Ok(ready) => ready,
        Err(e) => return session.read(f, args, async move { Err::<(), _>(e) }),
    };
    let (request, planned) = describe(&plan);
    if session.dry_run() {
        console::info(&format!("dry-run: {f} would send {request}"));
    }
    session.mutate(f, args, request, move || planned, exec(kube, plan))
}

fn get_deployment(s: &Arc<Session>, name: &str) -> Outcome {
    let f = DEPLOYMENT.name;
    deployment::check_name(name).map_err(|e| invalid(f, e))?;
    let name = name.to_string();
    read(s, f, json!({"name": name}), |kube| async move {
        deployment::get(&kube, &name)
            .await
            .map(|d| deployment::describe(&d))
    })
}

fn scale(s: &Arc<Session>, name: &str, n: i64, opts: Map) -> Outcome {
    let f = SCALE.name;
    deployment::check_name(name).map_err(|e| invalid(f, e))?;
    let to = deployment::check_replicas(n).map_err(|e| invalid(f, e))?;
    let o: ScaleOptions = options::parse(f, opts).map_err(|e| invalid(f, e))?;
    let name = name.to_string();
    let force = o.force;
    mutation(
        s,
        f,
        json!({"name": name, "replicas": n, "opts": o}),
        |kube| async move { deployment::plan_scale(&kube, &name, to, force).await },
        |plan| (plan.request(), plan.result()),
        |kube, plan| async move { deployment::scale(&kube, &plan).await },
    )
}

fn rollout_undo(s: &Arc<Session>, name: &str, revision: i64) -> Outcome {
    let f = ROLLOUT_UNDO.name;
    deployment::check_name(name).map_err(|e| invalid(f, e))?;
    if revision < 0 {
        return Err(invalid(
            f,
            HostError::Invalid(format!(
                "revision must be 1 or more (or omitted for the previous one), got {revision}"
            )),
        ));
    }
    let name = name.to_string();
    mutation(
        s,
        f,
        json!({"name": name, "revision": revision}),
        |kube| async move { rollout::plan_undo(&kube, &name, revision).await },
        |plan| (plan.request(), plan.result.clone()),
        |kube, plan| async move { rollout::undo(&kube, plan).await },
    )
}

fn rollout_restart(s: &Arc<Session>, name: &str) -> Outcome {
    let f = ROLLOUT_RESTART.name;
    deployment::check_name(name).map_err(|e| invalid(f, e))?;
    let name = name.to_string();
    mutation(
        s,
        f,
        json!({"name": name}),
        |kube| async move { rollout::plan_restart(&kube, &name).await },
        |plan| (plan.request(), plan.result.clone()),
        |kube, plan| async move { rollout::restart(&kube, plan).await },
    )
}

fn wait_timeout(f: &str, seconds: Option<f64>) -> Result<Duration, Box<EvalAltResult>> {
    match seconds {
        None => Ok(DEFAULT_WAIT),
        Some(t) if t > 0.0 => options::seconds(f, "timeout", t).map_err(|e| invalid(f, e)),
        Some(t) => Err(invalid(
            f,
            HostError::Invalid(format!("timeout must be more than 0 seconds, got {t}")),
        )),
    }
}

fn wait_rollout(s: &Arc<Session>, name: &str, timeout: Option<f64>) -> Outcome {
    let f = WAIT_ROLLOUT.name;
    deployment::check_name(name).map_err(|e| invalid(f, e))?;
    let limit = wait_timeout(f, timeout)?;
    let name = name.to_string();
    let args = json!({"name": name, "timeout_s": limit.as_secs_f64()});
    read(s, f, args, |kube| async move {
        rollout::wait(&kube, &name, limit).await
    })
}

fn wait_rollouts(s: &Arc<Session>, list: Array, timeout: Option<f64>) -> Outcome {
    let f = WAIT_ROLLOUTS.name;
    let limit = wait_timeout(f, timeout)?;
    let mut names = Vec::with_capacity(list.len());
    for item in list {
        let name = item.into_string().map_err(|t| {
            invalid(
                f,
                HostError::Invalid(format!("every name must be a string, found a {t}")),
            )
        })?;
        deployment::check_name(&name).map_err(|e| invalid(f, e))?;
        names.push(name);
    }
    let args = json!({"names": names, "timeout_s": limit.as_secs_f64()});
    read(s, f, args, |kube| async move {
        let waits = names.iter().map(|n| rollout::wait(&kube, n, limit));
        let outcomes = futures::future::join_all(waits).await;
        super::all_or_failed(&names, outcomes, "rollouts did not finish")
    })
}

fn pods(s: &Arc<Session>, selector: String) -> Outcome {
    let f = PODS.name;
    read(s, f, json!({"selector": selector}), |kube| async move {
        meta::pods(&kube, &selector).await
    })
}

fn events(s: &Arc<Session>, kind: &str, name: &str) -> Outcome {
    let f = EVENTS.name;
    let kind = meta::kind(kind).map_err(|e| invalid(f, e))?;
    names::object(kind.name, name).map_err(|e| invalid(f, e))?;
    let name = name.to_string();
    read(
        s,
        f,
        json!({"kind": kind.name, "name": name}),
        |kube| async move { meta::events(&kube, &kind, &name).await },
    )
}

fn service_selector(s: &Arc<Session>, svc: &str) -> Outcome {
    let f = SERVICE_SELECTOR.name;
    names::service(svc).map_err(|e| invalid(f, e))?;
    let svc = svc.to_string();
    read(s, f, json!({"service": svc}), |kube| async move {
        slot::selector(&kube, &svc).await
    })
}

fn switch_slot(s: &Arc<Session>, svc: &str, to: Option<&str>, opts: Map) -> Outcome {
    let f = SWITCH_SLOT.name;
    names::service(svc).map_err(|e| invalid(f, e))?;
    let o: slot::SwitchOptions = options::parse(f, opts).map_err(|e| invalid(f, e))?;
    let svc = svc.to_string();
    let to = to.map(str::to_string);
    let args = json!({"service": svc, "to": to, "opts": o});
    mutation(
        s,
        f,
        args,
        |kube| async move { slot::plan(&kube, &svc, to.as_deref(), &o).await },
        |plan| (plan.request(), plan.result.clone()),
        |kube, plan| async move { slot::switch(&kube, plan).await },
    )
}

fn dir_arg(f: &str, dir: &str) -> Result<PathBuf, Box<EvalAltResult>> {
    if dir.trim().is_empty() {
        return Err(invalid(
            f,
            HostError::Invalid("the directory must not be empty".into()),
        ));
    }
    Ok(PathBuf::from(dir))
}

fn snapshot_config(s: &Arc<Session>, dir: &str) -> Outcome {
    let f = SNAPSHOT_CONFIG.name;
    let path = dir_arg(f, dir)?;
    read(s, f, json!({"dir": dir}), |kube| async move {
        config::snapshot(&kube, &path).await
    })
}

fn restore_config(s: &Arc<Session>, dir: &str) -> Outcome {
    let f = RESTORE_CONFIG.name;
    let path = dir_arg(f, dir)?;
    mutation(
        s,
        f,
        json!({"dir": dir}),
        |kube| async move { config::plan_restore(&kube, &path).await },
        |plan| (plan.request(), plan.result()),
        |kube, plan| async move { config::restore(&kube, plan).await },
    )
}

fn label(s: &Arc<Session>, kind: &str, name: &str, key: &str, value: &str) -> Outcome {
    let f = LABEL.name;
    let kind = meta::kind(kind).map_err(|e| invalid(f, e))?;
    names::object(kind.name, name).map_err(|e| invalid(f, e))?;
    names::label_key(key).map_err(|e| invalid(f, e))?;
    names::label_value(value).map_err(|e| invalid(f, e))?;
    let args = json!({"kind": kind.name, "name": name, "key": key, "value": value});
    let (name, key, value) = (name.to_string(), key.to_string(), value.to_string());
    mutation(
        s,
        f,
        args,
        |kube| async move { meta::plan_label(&kube, kind, &name, &key, &value).await },
        |plan| (plan.request(), plan.result.clone()),
        |kube, plan| async move { meta::label(&kube, plan).await },
    )
}

fn gitops_managed(s: &Arc<Session>, kind: &str, name: &str) -> Outcome {
    let f = GITOPS_MANAGED.name;
    let kind = meta::kind(kind).map_err(|e| invalid(f, e))?;
    names::object(kind.name, name).map_err(|e| invalid(f, e))?;
    let name = name.to_string();
    read(
        s,
        f,
        json!({"kind": kind.name, "name": name}),
        |kube| async move { meta::gitops_managed(&kube, kind, &name).await },
    )
}

#[cfg(test)]
mod tests {
    use crate::engine::ScriptEngine;
    use crate::engine::catalog::Catalog;
    use crate::platform::Platform;
    use crate::session::{Options, Session};

    #[test]
    fn every_function_is_documented_and_its_example_compiles() {
        let platform =
            Platform::load("test", "[environments.t]\nnamespace = \"t\"\n", None).unwrap();
        let runtime = std::sync::Arc::new(tokio::runtime::Runtime::new().unwrap());
        let session = Session::start(
            Options {
                id: "docs".into(),
                procedure: "docs".into(),
                environment: "t".into(),
                operator: "test".into(),
                dry_run: true,
                yes: false,
                timeout: None,
                journal: None,
                report: None,
                params: serde_json::json!({}),
            },
            platform,
            runtime,
        )
        .unwrap();
        let engine = ScriptEngine::new(&session, &Catalog::default());
        let ours: Vec<_> = engine
            .docs
            .iter()
            .filter(|d| {
                matches!(d.module, Some("k8s" | "helm"))
                    || ["switch_slot", "helm_rollback"].contains(&d.name)
            })
            .collect();
        // 19 here, 3 batch functions in host::slots, helm::histories.
        assert_eq!(ours.len(), 23);
        for doc in ours {
            let name = doc.qualified_name();
            assert!(doc.summary.ends_with('.'), "{name}: {}", doc.summary);
            assert!(doc.signature.starts_with('('), "{name}: {}", doc.signature);
            if let Err(e) = engine.engine.compile(doc.example) {
                panic!(
                    "the example of {name} does not compile: {e}\n{}",
                    doc.example
                );
            }
            assert!(
                doc.example.contains(doc.name),
                "{name}: its example does not call it"
            );
        }
    }
}
