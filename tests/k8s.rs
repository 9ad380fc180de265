//! Kubernetes host functions against a real cluster (kwok: real API server and controllers,
//! fake nodes). Each test works in a namespace of its own.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::{Cluster, cluster, deployment, service};
use common::{Run, Test};
use serde_json::{Value, json};

/// A run of `text` on the test environment of namespace `ns`, not yet started.
fn test(c: &Cluster, ns: &str, text: &str) -> Test {
    Test::new().platform(&c.platform(ns)).script(text)
}

fn script(c: &Cluster, ns: &str, text: &str) -> Run {
    test(c, ns, text).run()
}

/// The result a host function returned, from the journal (its last call).
fn result(run: &Run, function: &str) -> Value {
    run.journal()
        .into_iter()
        .rev()
        .find(|r| r["function"] == function)
        .unwrap_or_else(|| panic!("no {function} in the journal\n{}", run.stderr))["outcome"]["result"]
        .clone()
}

fn web(c: &Cluster, ns: &str, image: &str) {
    c.apply(
        ns,
        &deployment("web", &[("app", "web"), ("version", "v1")], image, 2, ""),
    );
    c.rollout_status(ns, "web");
}

/// Starts a rollout of `web` to `image` (callers wait for it where they need to).
fn set_web_image(c: &Cluster, ns: &str, image: &str) {
    c.kubectl(&[
        "-n",
        ns,
        "set",
        "image",
        "deployment/web",
        &format!("app={image}"),
    ]);
}

/// Blue and green Deployments of `shop` and the Service `shop` on `active`.
fn blue_green(c: &Cluster, ns: &str, active: &str, green_pod_spec: &str) {
    c.apply(
        ns,
        &deployment(
            "shop-blue",
            &[("app", "shop"), ("slot", "blue"), ("version", "v1")],
            "shop:1",
            2,
            "",
        ),
    );
    c.apply(
        ns,
        &deployment(
            "shop-green",
            &[("app", "shop"), ("slot", "green"), ("version", "v2")],
            "shop:2",
            2,
            green_pod_spec,
        ),
    );
    c.apply(ns, &service("shop", &[("app", "shop"), ("slot", active)]));
    c.rollout_status(ns, "shop-blue");
}

fn selector(c: &Cluster, ns: &str, svc: &str) -> Value {
    c.json(&["-n", ns, "get", "service", svc])["spec"]["selector"].clone()
}

const UNSCHEDULABLE: &str = r#""nodeSelector": {"rollback.test/nowhere": "true"}"#;

#[test]
fn deployment_reports_version_images_replicas_and_revision() {
    let c = cluster();
    let ns = c.namespace("deploy");
    web(c, &ns, "registry.local/web:1");
    let run = script(
        c,
        &ns,
        r#"let d = k8s::deployment("web"); print(d.version);"#,
    );
    run.success().stdout_has("v1");
    let d = result(&run, "deployment");
    assert_eq!(d["images"], serde_json::json!(["registry.local/web:1"]));
    assert_eq!(d["replicas"]["desired"], 2);
    assert_eq!(d["replicas"]["ready"], 2);
    assert_eq!(d["replicas"]["available"], 2);
    assert_eq!(d["revision"], 1);
    assert_eq!(d["paused"], false);
    assert_eq!(d["rolled_out"], true);
    let conditions: Vec<&str> = d["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert!(conditions.contains(&"Available"), "{conditions:?}");
}

/// The pod template and annotations as kubectl shows them, for comparing two Deployments.
fn template(c: &Cluster, ns: &str, name: &str) -> Value {
    let d = c.json(&["-n", ns, "get", "deployment", name]);
    d["spec"]["template"].clone()
}

#[test]
fn rollout_undo_matches_kubectl_on_a_twin() {
    let c = cluster();
    let ours = c.namespace("undo");
    let twin = c.namespace("undo-twin");
    for ns in [&ours, &twin] {
        web(c, ns, "registry.local/web:1");
        for image in ["registry.local/web:2", "registry.local/web:3"] {
            set_web_image(c, ns, image);
            c.rollout_status(ns, "web");
        }
    }
    c.kubectl(&["-n", &twin, "rollout", "undo", "deployment/web"]);
    let run = script(
        c,
        &ours,
        r#"k8s::rollout_undo("web"); k8s::wait_rollout("web", 120);"#,
    );
    run.success();
    let undo = result(&run, "rollout_undo");
    assert_eq!(
        (undo["from_revision"].as_i64(), undo["to_revision"].as_i64()),
        (Some(3), Some(2))
    );
    c.rollout_status(&twin, "web");
    assert_eq!(template(c, &ours, "web"), template(c, &twin, "web"));
    assert_eq!(
        template(c, &ours, "web")["spec"]["containers"][0]["image"],
        "registry.local/web:2"
    );

    // An exact revision, like `kubectl rollout undo --to-revision=1`.
    c.kubectl(&[
        "-n",
        &twin,
        "rollout",
        "undo",
        "deployment/web",
        "--to-revision=1",
    ]);
    run_ok(
        c,
        &ours,
        r#"k8s::rollout_undo("web", 1); k8s::wait_rollout("web", 120);"#,
    );
    c.rollout_status(&twin, "web");
    assert_eq!(template(c, &ours, "web"), template(c, &twin, "web"));
    assert_eq!(
        template(c, &ours, "web")["spec"]["containers"][0]["image"],
        "registry.local/web:1"
    );

    // Already at that template: nothing is sent.
    let revision = c.json(&["-n", &ours, "get", "deployment", "web"])["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .unwrap()
        .to_string();
    let again = script(
        c,
        &ours,
        &format!(r#"k8s::rollout_undo("web", {revision});"#),
    );
    again.success();
    assert!(
        result(&again, "rollout_undo")["skipped"]
            .as_str()
            .unwrap()
            .contains("already matches")
    );

    let missing = script(c, &ours, r#"k8s::rollout_undo("web", 99);"#);
    missing.code(1).stderr_has("has no revision 99");

    // A paused Deployment is refused with the fix.
    c.kubectl(&["-n", &ours, "rollout", "pause", "deployment/web"]);
    let paused = script(c, &ours, r#"k8s::rollout_undo("web");"#);
    paused
        .code(1)
        .stderr_has("paused")
        .stderr_has("kubectl rollout resume deployment/web");
}

fn run_ok(c: &Cluster, ns: &str, text: &str) -> Run {
    let r = script(c, ns, text);
    r.success();
    r
}

#[test]
fn dry_run_journals_the_exact_patch_and_changes_nothing() {
    let c = cluster();
    let ns = c.namespace("dry");
    web(c, &ns, "registry.local/web:1");
    set_web_image(c, &ns, "registry.local/web:2");
    c.rollout_status(&ns, "web");
    blue_green(c, &ns, "blue", "");
    c.rollout_status(&ns, "shop-green");
    let before = c.json(&["-n", &ns, "get", "deployment", "web"]);
    let run = test(c, &ns, r#"k8s::rollout_undo("web"); k8s::scale("web", 5); switch_slot("shop"); k8s::rollout_restart("web");"#)
        .args(["--dry-run"])
        .run();
    run.success().stderr_has("would send");
    let journal = run.journal();
    let call = |f: &str| journal.iter().find(|r| r["function"] == f).unwrap().clone();
    let undo = call("rollout_undo");
    assert_eq!(undo["outcome"]["status"], "planned");
    let patch = &undo["args"]["request"];
    assert_eq!(patch["content_type"], "application/json-patch+json");
    assert_eq!(patch["body"][0]["path"], "/metadata/resourceVersion");
    assert_eq!(
        patch["body"][0]["value"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(
        patch["body"][1]["value"]["spec"]["containers"][0]["image"],
        "registry.local/web:1"
    );
    let scale = call("scale");
    assert_eq!(
        scale["args"]["request"]["body"],
        serde_json::json!({"spec": {"replicas": 5}})
    );
    assert!(
        scale["args"]["request"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/deployments/web/scale")
    );
    let switch = call("switch_slot");
    assert_eq!(
        switch["args"]["request"]["body"]["spec"]["selector"]["slot"],
        "green"
    );
    assert!(switch["args"]["request"]["body"]["metadata"]["resourceVersion"].is_string());
    assert_eq!(switch["outcome"]["result"]["planned"], true);
    // Nothing changed, and no lock was taken.
    let after = c.json(&["-n", &ns, "get", "deployment", "web"]);
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    assert_eq!(selector(c, &ns, "shop")["slot"], "blue");
    assert!(!journal.iter().any(|r| r["function"] == "lock"));
}

#[test]
fn scale_uses_the_subresource_and_will_not_fight_an_hpa() {
    let c = cluster();
    let ns = c.namespace("scale");
    web(c, &ns, "registry.local/web:1");
    let run = run_ok(
        c,
        &ns,
        r#"k8s::scale("web", 3); k8s::wait_rollout("web", 60);"#,
    );
    let scaled = result(&run, "scale");
    assert_eq!(
        (scaled["from"].as_i64(), scaled["to"].as_i64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        c.json(&["-n", &ns, "get", "deployment", "web"])["spec"]["replicas"],
        3
    );

    c.apply(
        &ns,
        r#"{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web-hpa"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 2, "maxReplicas": 6}}"#,
    );
    let refused = script(c, &ns, r#"k8s::scale("web", 4);"#);
    refused
        .code(1)
        .stderr_has("HorizontalPodAutoscaler web-hpa")
        .stderr_has("force: true");
    assert_eq!(
        c.json(&["-n", &ns, "get", "deployment", "web"])["spec"]["replicas"],
        3
    );
    let forced = script(c, &ns, r#"k8s::scale("web", 4, #{ force: true });"#);
    forced
        .success()
        .stderr_has("the autoscaler will move it again");
    assert_eq!(result(&forced, "scale")["hpa"], "web-hpa");

    let bad = script(c, &ns, r#"k8s::scale("web", -1);"#);
    bad.code(2)
        .stderr_has("replicas must be between 0 and 100000");
    let unknown = script(c, &ns, r#"k8s::scale("web", 1, #{ forse: true });"#);
    unknown.code(2).stderr_has("forse");
}

#[test]
fn rollout_restart_sets_restarted_at_and_rolls_out() {
    let c = cluster();
    let ns = c.namespace("restart");
    web(c, &ns, "registry.local/web:1");
    let run = run_ok(
        c,
        &ns,
        r#"let r = k8s::rollout_restart("web"); k8s::wait_rollout("web", 120);"#,
    );
    let restarted = result(&run, "rollout_restart")["restarted_at"]
        .as_str()
        .unwrap()
        .to_string();
    let d = c.json(&["-n", &ns, "get", "deployment", "web"]);
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        restarted.as_str()
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(result(&run, "wait_rollout")["revision"], 2);
}

#[test]
fn wait_rollout_fails_on_progress_deadline_and_timeout() {
    let c = cluster();
    let ns = c.namespace("wait");
    let stuck = deployment("stuck", &[("app", "stuck")], "stuck:1", 1, UNSCHEDULABLE).replace(
        r#""progressDeadlineSeconds": 600"#,
        r#""progressDeadlineSeconds": 2"#,
    );
    c.apply(&ns, &stuck);
    let failed = script(c, &ns, r#"k8s::wait_rollout("stuck", 120);"#);
    failed
        .code(1)
        .stderr_has("exceeded its progress deadline")
        .stderr_has("k8s::rollout_undo(\"stuck\")");

    c.apply(
        &ns,
        &deployment("slow", &[("app", "slow")], "slow:1", 1, UNSCHEDULABLE),
    );
    let timed_out = script(c, &ns, r#"k8s::wait_rollout("slow", 1);"#);
    timed_out
        .code(1)
        .stderr_has("did not finish rolling out within 1.0s")
        .stderr_has("0 of 1 updated replicas are available");

    let missing = script(c, &ns, r#"k8s::wait_rollout("nothing-here", 5);"#);
    missing
        .code(1)
        .stderr_has("deployments/nothing-here not found in namespace");
}

#[test]
fn wait_rollouts_waits_for_all_and_names_every_failure() {
    let c = cluster();
    let ns = c.namespace("waits");
    c.apply(&ns, &deployment("a", &[("app", "a")], "a:1", 1, ""));
    c.apply(&ns, &deployment("b", &[("app", "b")], "b:1", 2, ""));
    let run = run_ok(
        c,
        &ns,
        r#"let r = k8s::wait_rollouts(["a", "b"], 120); print(r.len());"#,
    );
    run.stdout_has("2");
    let results = result(&run, "wait_rollouts");
    assert_eq!(results[1]["name"], "b");
    assert_eq!(results[1]["ready"], 2);

    c.apply(
        &ns,
        &deployment("c", &[("app", "c")], "c:1", 1, UNSCHEDULABLE),
    );
    let failed = script(c, &ns, r#"k8s::wait_rollouts(["a", "c"], 2);"#);
    failed
        .code(1)
        .stderr_has("1 of 2 rollouts did not finish")
        .stderr_has("c: Deployment c did not finish");
}

#[test]
fn switch_slot_switches_verifies_and_reports() {
    let c = cluster();
    let ns = c.namespace("slot");
    blue_green(c, &ns, "blue", "");
    c.rollout_status(&ns, "shop-green");
    let run = run_ok(
        c,
        &ns,
        r#"let s = switch_slot("shop"); print(s.from + "->" + s.to);"#,
    );
    run.stdout_has("blue->green");
    let s = result(&run, "switch_slot");
    assert_eq!(s["ready_pods"], 2);
    assert_eq!(s["endpoints"], 2);
    assert_eq!(s["changed"], true);
    assert_eq!(
        selector(c, &ns, "shop"),
        serde_json::json!({"app": "shop", "slot": "green"})
    );

    // Back to an explicit slot; a second identical call changes nothing.
    run_ok(c, &ns, r#"switch_slot("shop", "blue");"#);
    assert_eq!(selector(c, &ns, "shop")["slot"], "blue");
    let same = run_ok(c, &ns, r#"switch_slot("shop", "blue");"#);
    assert_eq!(result(&same, "switch_slot")["changed"], false);
    let read = run_ok(c, &ns, r#"print(k8s::service_selector("shop").slot);"#);
    read.stdout_has("blue");
}

#[test]
fn switch_slot_refuses_a_pending_standby_and_changes_nothing() {
    let c = cluster();
    let ns = c.namespace("pending");
    blue_green(c, &ns, "blue", UNSCHEDULABLE);
    let before = c.json(&["-n", &ns, "get", "service", "shop"]);
    let run = script(c, &ns, r#"switch_slot("shop");"#);
    run.code(1)
        .stderr_has("slot green of shop is not ready")
        .stderr_has("0 ready pods")
        .stderr_has("Pending")
        .stderr_has("nothing was changed");
    let after = c.json(&["-n", &ns, "get", "service", "shop"]);
    assert_eq!(after["spec"]["selector"]["slot"], "blue");
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );

    // A standby scaled to zero is just as unready.
    c.kubectl(&["-n", &ns, "scale", "deployment/shop-green", "--replicas=0"]);
    run_fail_unchanged(c, &ns);
}

/// Blue/green service `name` on blue, with both slots ready.
fn ready_pair(c: &Cluster, ns: &str, name: &str) {
    for (slot, version) in [("blue", "v1"), ("green", "v2")] {
        c.apply(
            ns,
            &deployment(
                &format!("{name}-{slot}"),
                &[("app", name), ("slot", slot), ("version", version)],
                &format!("{name}:{version}"),
                2,
                "",
            ),
        );
    }
    c.apply(ns, &service(name, &[("app", name), ("slot", "blue")]));
    c.rollout_status(ns, &format!("{name}-blue"));
    c.rollout_status(ns, &format!("{name}-green"));
}

#[test]
fn switch_slots_checks_each_target_from_one_listing_and_refuses_the_unready() {
    let c = cluster();
    let ns = c.namespace("batch");
    blue_green(c, &ns, "blue", UNSCHEDULABLE);
    ready_pair(c, &ns, "cart");
    ready_pair(c, &ns, "bag");
    let shop_before = c.json(&["-n", &ns, "get", "service", "shop"]);

    // All or nothing: shop's standby is pending, so no Service is switched.
    let run = script(
        c,
        &ns,
        r#"k8s::switch_slots(["shop", "cart", "bag"], #{ all_or_nothing: true });"#,
    );
    run.code(1)
        .stderr_has("1 of 3 target slots are not ready, so no Service was switched")
        .stderr_has("slot green of shop is not ready");
    for name in ["shop", "cart", "bag"] {
        assert_eq!(selector(c, &ns, name)["slot"], "blue", "{name}");
    }

    // Otherwise the ready ones switch and shop is listed as refused, untouched.
    let run = run_ok(c, &ns, r#"k8s::switch_slots(["shop", "cart", "bag"]);"#);
    let r = result(&run, "switch_slots");
    let switched = r["switched"].as_array().unwrap();
    assert_eq!(switched.len(), 2, "{r}");
    for s in switched {
        // Each target counts only its own pods: 4 ready pods are labelled slot=green.
        assert_eq!(
            (&s["ready_pods"], &s["endpoints"]),
            (&json!(2), &json!(2)),
            "{s}"
        );
        assert_eq!(
            (&s["from"], &s["to"]),
            (&json!("blue"), &json!("green")),
            "{s}"
        );
    }
    assert_eq!(r["refused"][0]["service"], "shop", "{r}");
    let error = r["refused"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("0 ready pods") && error.contains("Pending"),
        "{error}"
    );
    assert_eq!(selector(c, &ns, "cart")["slot"], "green");
    assert_eq!(selector(c, &ns, "bag")["slot"], "green");
    let shop_after = c.json(&["-n", &ns, "get", "service", "shop"]);
    assert_eq!(
        shop_before["metadata"]["resourceVersion"],
        shop_after["metadata"]["resourceVersion"]
    );
}

fn run_fail_unchanged(c: &Cluster, ns: &str) {
    let run = script(c, ns, r#"switch_slot("shop", "green");"#);
    run.code(1).stderr_has("not ready");
    assert_eq!(selector(c, ns, "shop")["slot"], "blue");
}

#[test]
fn switch_slot_compare_and_swap_fails_cleanly_on_a_concurrent_change() {
    use rollback::host::k8s::{client, slot};
    let c = cluster();
    let ns = c.namespace("cas");
    blue_green(c, &ns, "blue", "");
    c.rollout_status(&ns, "shop-green");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kube = rt.block_on(async {
        let config = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
        client::from_kubeconfig(config, "test kubeconfig", None, &ns)
            .await
            .unwrap()
    });
    let plan = rt
        .block_on(slot::plan(
            &kube,
            "shop",
            None,
            &slot::SwitchOptions::default(),
        ))
        .unwrap();
    // Someone else changes the Service between our read and our patch.
    c.kubectl(&[
        "-n",
        &ns,
        "patch",
        "service",
        "shop",
        "-p",
        r#"{"spec":{"selector":{"tier":"web"}}}"#,
    ]);
    let err = rt
        .block_on(slot::switch(&kube, plan))
        .unwrap_err()
        .to_string();
    assert!(err.contains("changed after it was read"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(
        selector(c, &ns, "shop"),
        serde_json::json!({"app": "shop", "slot": "blue", "tier": "web"})
    );
}

#[test]
fn snapshot_and_restore_config_keep_secret_values_out_of_every_output() {
    use std::os::unix::fs::PermissionsExt;
    let c = cluster();
    let ns = c.namespace("config");
    let secret_value = "s3cr3t-Value-91x";
    c.kubectl(&[
        "-n",
        &ns,
        "create",
        "configmap",
        "app-config",
        "--from-literal=mode=safe",
    ]);
    c.kubectl(&[
        "-n",
        &ns,
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={secret_value}"),
    ]);
    let snap_dir = tempfile::tempdir().unwrap();
    let dir = snap_dir.path().join("snap");
    let snap = run_ok(
        c,
        &ns,
        &format!(
            r#"let s = k8s::snapshot_config("{}"); print(s.saved);"#,
            dir.display()
        ),
    );
    let s = result(&snap, "snapshot_config");
    assert_eq!(
        s["saved"],
        serde_json::json!(["ConfigMap/app-config", "Secret/db"])
    );
    assert_eq!(
        s["skipped"],
        serde_json::json!(["ConfigMap/kube-root-ca.crt"])
    );
    let secret_file = dir.join("secrets/db.json");
    assert_eq!(
        std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.join("secrets"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    // Break both, then plan (dry-run) and restore.
    c.kubectl(&[
        "-n",
        &ns,
        "patch",
        "configmap",
        "app-config",
        "-p",
        r#"{"data":{"mode":"broken"}}"#,
    ]);
    c.kubectl(&["-n", &ns, "delete", "secret", "db"]);
    let restore = format!(
        r#"let r = k8s::restore_config("{}"); print(r);"#,
        dir.display()
    );
    let plan = test(c, &ns, &restore).args(["--dry-run"]).run();
    plan.success();
    let request = plan
        .journal()
        .into_iter()
        .find(|r| r["function"] == "restore_config")
        .unwrap()["args"]["request"]
        .clone();
    assert_eq!(request[1]["method"], "POST");
    assert_eq!(request[1]["body"]["data"]["password"], "[REDACTED]");
    let restored = run_ok(c, &ns, &restore);
    let r = result(&restored, "restore_config");
    assert_eq!(r["created"], serde_json::json!(["Secret/db"]));
    assert_eq!(r["updated"], serde_json::json!(["ConfigMap/app-config"]));
    assert_eq!(
        c.json(&["-n", &ns, "get", "configmap", "app-config"])["data"]["mode"],
        "safe"
    );
    let password = c.json(&["-n", &ns, "get", "secret", "db"])["data"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(password)
            .unwrap(),
        secret_value.as_bytes()
    );
    for run in [&snap, &plan, &restored] {
        assert!(
            !run.all_output().contains(secret_value),
            "a secret value leaked:\n{}",
            run.all_output()
        );
    }
    let again = run_ok(c, &ns, &restore);
    assert_eq!(
        result(&again, "restore_config")["unchanged"],
        serde_json::json!(["ConfigMap/app-config", "Secret/db"])
    );

    let not_empty = script(
        c,
        &ns,
        &format!(r#"k8s::snapshot_config("{}");"#, dir.display()),
    );
    not_empty.code(2).stderr_has("is not empty");
}

#[test]
fn pods_events_labels_and_gitops_markers() {
    let c = cluster();
    let ns = c.namespace("meta");
    web(c, &ns, "registry.local/web:1");
    let run = run_ok(
        c,
        &ns,
        r#"
        let pods = k8s::pods(#{ app: "web" });
        print(pods.filter(|p| p.ready).len());
        let by_text = k8s::pods("app=web,version=v1");
        let events = k8s::events("deploy", "web");
        k8s::label("Deployment", "web", "rollback.io/state", "bad");
        let g = k8s::gitops_managed("web");
        print(g.managed);
        "#,
    );
    run.stdout_has("2\nfalse");
    assert_eq!(result(&run, "pods").as_array().unwrap().len(), 2);
    let events = result(&run, "events");
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "ScalingReplicaSet"),
        "{events}"
    );
    assert_eq!(
        c.json(&["-n", &ns, "get", "deployment", "web"])["metadata"]["labels"]["rollback.io/state"],
        "bad"
    );
    assert_eq!(result(&run, "label")["previous"], "");

    c.kubectl(&[
        "-n",
        &ns,
        "annotate",
        "deployment",
        "web",
        "argocd.argoproj.io/tracking-id=shop:apps/Deployment:x/web",
    ]);
    let managed = run_ok(c, &ns, r#"k8s::gitops_managed("Deployment", "web");"#);
    managed
        .stderr_has("managed by Argo CD application shop")
        .stderr_has("--sync-policy none");
    assert_eq!(result(&managed, "gitops_managed")["tool"], "argocd");

    let bad_kind = script(c, &ns, r#"k8s::label("Widget", "web", "a", "b");"#);
    bad_kind.code(2).stderr_has("unknown kind 'Widget'");
    let bad_value = script(c, &ns, r#"k8s::label("Deployment", "web", "a", "not ok");"#);
    bad_value.code(2).stderr_has("not a valid label value");
}

#[test]
fn bad_names_are_rejected_before_any_request() {
    // The kubeconfig does not even exist: any request would fail differently.
    let platform =
        "[environments.test]\nnamespace = \"nowhere\"\nkubeconfig = \"/nonexistent/kubeconfig\"\n";
    for (script, message) in [
        (
            r#"k8s::deployment("Web_1");"#,
            "'Web_1' is not a valid Deployment name",
        ),
        (
            r#"switch_slot("1shop");"#,
            "'1shop' is not a valid Service name",
        ),
        (r#"k8s::scale("-web", 1);"#, "not a valid Deployment name"),
        (
            r#"k8s::wait_rollouts(["ok", "NOT ok"], 5);"#,
            "'NOT ok' is not a valid",
        ),
        (
            r#"helm::history("Release");"#,
            "not a valid Helm release name",
        ),
    ] {
        let run = Test::new().platform(platform).script(script).run();
        run.code(2).stderr_has(message).stderr_lacks("kubeconfig");
    }
    let run = Test::new()
        .platform(platform)
        .script(r#"k8s::deployment("web");"#)
        .run();
    run.code(1)
        .stderr_has("cannot read the kubeconfig /nonexistent/kubeconfig");
}

#[test]
fn a_missing_namespace_is_named() {
    let c = cluster();
    let run = script(c, "no-such-namespace", r#"k8s::deployment("web");"#);
    run.code(1)
        .stderr_has("namespace 'no-such-namespace' does not exist");
}

#[test]
fn rbac_forbidden_names_the_verb_and_resource() {
    let c = cluster();
    let ns = c.namespace("rbac");
    web(c, &ns, "registry.local/web:1");
    c.kubectl(&["-n", &ns, "create", "serviceaccount", "narrow"]);
    c.apply(
        &ns,
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "narrow"},
            "rules": [
              {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get", "list", "watch"]},
              {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list"]},
              {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]}"#,
    );
    c.kubectl(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "narrow",
        "--role=narrow",
        &format!("--serviceaccount={ns}:narrow"),
    ]);
    // A token from the TokenRequest API, in a kubeconfig of its own.
    let token = c
        .kubectl(&["-n", &ns, "create", "token", "narrow"])
        .trim()
        .to_string();
    let view = c.json(&["config", "view", "--raw", "--minify"]);
    let cluster_entry = &view["clusters"][0]["cluster"];
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "narrow",
        "clusters": [{"name": "c", "cluster": cluster_entry}],
        "users": [{"name": "narrow", "user": {"token": token}}],
        "contexts": [{"name": "narrow", "context": {"cluster": "c", "user": "narrow", "namespace": ns}}],
    });
    let test = Test::new();
    let path = test.path("narrow.kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    let platform = format!(
        "[environments.test]\nnamespace = \"{ns}\"\nkubeconfig = \"{}\"\n",
        path.display()
    );
    let read = Test::new()
        .platform(&platform)
        .script(r#"print(k8s::deployment("web").replicas.desired);"#)
        .run();
    read.success().stdout_has("2");
    let run = test
        .platform(&platform)
        .script(r#"k8s::scale("web", 3);"#)
        .run();
    run.code(1)
        .stderr_has("forbidden")
        .stderr_has("may not patch deployments/scale/web")
        .stderr_has("grant the 'patch' verb on 'deployments/scale'")
        .stderr_lacks(&token);
    assert_eq!(
        c.json(&["-n", &ns, "get", "deployment", "web"])["spec"]["replicas"],
        2
    );
}

fn lease_holder(c: &Cluster, ns: &str) -> String {
    let out = c.kubectl_output(
        &[
            "-n",
            ns,
            "get",
            "lease",
            "rollback-run-lock",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_runs_contend_for_the_lock() {
    let c = cluster();
    let ns = c.namespace("lock");
    web(c, &ns, "registry.local/web:1");
    let first = test(
        c,
        &ns,
        r#"k8s::label("Deployment", "web", "holder", "first"); sleep(6);"#,
    )
    .env("ROLLBACK_OPERATOR", "alice");
    let mut child = first.spawn();
    c.wait_until(
        std::time::Duration::from_secs(60),
        "the first run to take the lock",
        || lease_holder(c, &ns).starts_with("alice@"),
    );

    let second = script(
        c,
        &ns,
        r#"k8s::label("Deployment", "web", "holder", "second");"#,
    );
    second
        .code(1)
        .stderr_has("environment 'test' is locked by run")
        .stderr_has("of alice on")
        .stderr_has("--wait-lock");
    assert_eq!(
        c.json(&["-n", &ns, "get", "deployment", "web"])["metadata"]["labels"]["holder"],
        "first"
    );

    // A dry-run takes no lock, so it is not blocked.
    test(
        c,
        &ns,
        r#"k8s::label("Deployment", "web", "holder", "plan");"#,
    )
    .args(["--dry-run"])
    .run()
    .success();

    let queued = test(
        c,
        &ns,
        r#"k8s::label("Deployment", "web", "holder", "queued");"#,
    )
    .args(["--wait-lock"])
    .run();
    queued.success().stderr_has("waiting (--wait-lock)");
    assert!(child.wait().unwrap().success());
    assert_eq!(
        c.json(&["-n", &ns, "get", "deployment", "web"])["metadata"]["labels"]["holder"],
        "queued"
    );
    assert_eq!(
        lease_holder(c, &ns),
        "",
        "the lock is released at the end of the run"
    );
}

#[test]
fn a_crashed_holders_lock_expires() {
    let c = cluster();
    let ns = c.namespace("crash");
    web(c, &ns, "registry.local/web:1");
    let doomed = test(
        c,
        &ns,
        r#"k8s::label("Deployment", "web", "holder", "doomed"); sleep(120);"#,
    )
    .env("ROLLBACK_LOCK_TTL", "3");
    let mut child = doomed.spawn();
    c.wait_until(
        std::time::Duration::from_secs(60),
        "the doomed run to take the lock",
        || !lease_holder(c, &ns).is_empty(),
    );
    let holder = lease_holder(c, &ns);
    // Past its 3 s lease the live run still holds the lock: it renews it.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let blocked = script(
        c,
        &ns,
        r#"k8s::label("Deployment", "web", "holder", "blocked");"#,
    );
    blocked.code(1).stderr_has("is locked by run");
    assert_eq!(lease_holder(c, &ns), holder);
    child.kill().unwrap();
    child.wait().unwrap();
    let after = test(
        c,
        &ns,
        r#"k8s::label("Deployment", "web", "holder", "after");"#,
    )
    .args(["--wait-lock"])
    .run();
    after.success().stderr_has("took over the expired run lock");
    let lock = after
        .journal()
        .into_iter()
        .find(|r| r["function"] == "lock")
        .unwrap();
    assert_eq!(
        lock["outcome"]["result"]["taken_over_from"],
        holder.as_str()
    );
}

#[test]
fn a_cluster_stopped_mid_call_gives_a_clear_error_within_the_budget() {
    use std::io::BufRead;
    let own = cluster::start_private("stop");
    let ns = own.namespace("stop");
    own.apply(
        &ns,
        &deployment("stuck", &[("app", "stuck")], "stuck:1", 1, UNSCHEDULABLE),
    );
    let test = Test::new()
        .platform(&own.platform(&ns))
        .script(r#"k8s::wait_rollout("stuck", 600);"#)
        .args(["--timeout", "120s"]);
    let mut child = test.spawn();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("stuck: 0 of 1 updated replicas are available") {
            break;
        }
    }
    own.stop();
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(
        seen.contains("lost the Kubernetes API at https://127.0.0.1:"),
        "{seen}"
    );
    assert!(!seen.contains("out of time"), "{seen}");

    let after = Test::new()
        .platform(&own.platform(&ns))
        .script(r#"k8s::deployment("stuck");"#)
        .run();
    after
        .code(1)
        .stderr_has("cannot reach the Kubernetes API at https://127.0.0.1:")
        .stderr_has("check that the cluster is up");
}

#[test]
fn rollout_undo_compare_and_swap_fails_cleanly_on_a_concurrent_change() {
    use rollback::host::k8s::{client, rollout};
    let c = cluster();
    let ns = c.namespace("undo-cas");
    web(c, &ns, "registry.local/web:1");
    set_web_image(c, &ns, "registry.local/web:2");
    c.rollout_status(&ns, "web");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kube = rt.block_on(async {
        let config = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
        client::from_kubeconfig(config, "test kubeconfig", None, &ns)
            .await
            .unwrap()
    });
    let plan = rt.block_on(rollout::plan_undo(&kube, "web", 0)).unwrap();
    // Another rollout starts between our read and our patch.
    set_web_image(c, &ns, "registry.local/web:3");
    let err = rt
        .block_on(rollout::undo(&kube, plan))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("changed after it was read, so nothing was changed"),
        "{err}"
    );
    assert_eq!(
        c.json(&["-n", &ns, "get", "deployment", "web"])["spec"]["template"]["spec"]["containers"]
            [0]["image"],
        "registry.local/web:3"
    );
}
