//! `config` on the sandbox: ConfigMaps restored from tags of a real git repository made by the
//! test, and ConfigMaps and Secrets from a snapshot directory; the dry-run plan; refs that do
//! not exist, broken manifests and missing Secrets refused or undone; Secret values never shown.

mod common;
use common::Run;
use common::golden::assert_golden;
use common::sandbox::{SERVICES, Sandbox};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Config",
            "-c",
            "user.email=config@tracktion.local",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sandbox's ConfigMaps as a release of the configuration repository holds them.
fn manifests(release: &str, log_level: &str, features_json: &str) -> String {
    let mut text = String::new();
    for service in SERVICES {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {service}-config\n  labels:\n    config-release: \"{release}\"\ndata:\n  app.yaml: |\n    service: {service}\n    release: \"{release}\"\n    log_level: {log_level}\n  features.json: '{features_json}'\n"
        ));
    }
    // A Secret committed by mistake: never applied, its value never shown.
    text.push_str("---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: leaked-credentials\nstringData:\n  password: repo-secret-value-4711\n");
    text
}

/// A configuration repository with tags v1, v2 and v3-broken (features.json invalid).
fn config_repo(dir: &Path) {
    let path = dir.join("k8s/sandbox/configmaps.yaml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    let releases = [
        (
            "v1",
            manifests("1.2.3", "info", r#"{"batch_analysis": true}"#),
        ),
        (
            "v2",
            manifests("1.2.4", "debug", r#"{"batch_analysis": false}"#),
        ),
        (
            "v3-broken",
            manifests("1.2.5", "debug", r#"{"batch_analysis": }"#),
        ),
    ];
    for (tag, text) in releases {
        std::fs::write(&path, text).unwrap();
        git(dir, &["add", "."]);
        git(dir, &["commit", "-qm", tag]);
        git(dir, &["tag", tag]);
    }
}

fn config_of(sandbox: &Sandbox) -> Value {
    sandbox.cluster_state()["config"].clone()
}

/// The directory after `current configuration saved to ` in the run's output.
fn saved_dir(run: &Run) -> String {
    run.stderr
        .lines()
        .find_map(|l| l.split("current configuration saved to ").nth(1))
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("no saved directory:\n{}", run.stderr))
        .to_string()
}

/// Output, journal and report of a run, where no Secret value may appear.
fn everything(run: &Run) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        run.stdout,
        run.stderr,
        run.file("journal.jsonl"),
        run.report()
    )
}

fn assert_no_secret_values(run: &Run) {
    let text = everything(run);
    for secret in ["sandbox-token-", "-pw@", "repo-secret-value-4711"] {
        assert!(!text.contains(secret), "a Secret value leaked ({secret})");
    }
}

#[test]
fn configuration_rolls_back_from_git_tags_and_snapshots() {
    let sandbox = Sandbox::up();
    let repo = sandbox.dir.path().join("config-repo");
    config_repo(&repo);
    let repo = repo.to_str().unwrap().to_string();
    let saves = sandbox.dir.path().join("saves");
    let saves = saves.to_str().unwrap().to_string();
    let cluster = sandbox.cluster_state();
    let database = sandbox.database_state();
    let original = cluster["config"].clone();
    assert!(
        original["configmaps/analysis-service-config"]["app.yaml"]
            .as_str()
            .unwrap()
            .contains("log_level: info"),
        "the chart creates the ConfigMaps: {original}"
    );
    let git_args = |reference: &str| {
        vec![
            "--git-repo".to_string(),
            repo.clone(),
            "--git-ref".to_string(),
            reference.to_string(),
            "--save-to".to_string(),
            saves.clone(),
        ]
    };
    let run = |global: &[&str], args: Vec<String>| {
        let params: Vec<&str> = args.iter().map(String::as_str).collect();
        sandbox.procedure(global, "config", &params)
    };

    // The plan changes nothing.
    let plan = run(&["--dry-run"], git_args("v2"));
    plan.success();
    assert_golden("config-dry-run", &plan.report());
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);
    assert_no_secret_values(&plan);

    // A ref that does not exist, and a release with a broken key: refused before any change.
    let missing = run(&["--yes"], git_args("v9.9.9"));
    missing
        .code(1)
        .stderr_has("the ref 'v9.9.9' does not exist in")
        .stderr_has("tag --list");
    let broken = run(&["--yes"], git_args("v3-broken"));
    broken
        .code(1)
        .stderr_has("are not usable, nothing was changed")
        .stderr_has("key features.json does not parse");
    assert_eq!(config_of(&sandbox), original);
    assert!(sandbox.notifications("slack").is_empty());

    // v2 for real: ConfigMaps replaced (Helm's labels kept), Secrets untouched, every
    // Deployment restarted.
    let v2 = run(&["--yes"], git_args("v2"));
    v2.success()
        .stderr_has("is in the repository but is not applied");
    assert_no_secret_values(&v2);
    let config = config_of(&sandbox);
    for service in SERVICES {
        let data = &config[format!("configmaps/{service}-config")];
        assert!(
            data["app.yaml"]
                .as_str()
                .unwrap()
                .contains("log_level: debug"),
            "{data}"
        );
        assert_eq!(data["features.json"], r#"{"batch_analysis": false}"#);
        assert_eq!(
            config[format!("secrets/{service}-credentials")],
            original[format!("secrets/{service}-credentials")]
        );
    }
    let cm = sandbox.kubectl_json(&["get", "configmap", "analysis-service-config"]);
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    assert_eq!(cm["metadata"]["labels"]["config-release"], "1.2.4");
    assert!(
        !sandbox
            .kubectl(&["get", "secrets"])
            .contains("leaked-credentials"),
        "a Secret from git was applied"
    );
    for (name, d) in sandbox.cluster_state()["deployments"].as_object().unwrap() {
        assert!(
            d["template_annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(),
            "{name} was not restarted"
        );
        assert_eq!(d["replicas"], cluster["deployments"][name]["replicas"]);
    }
    let report = v2.report();
    assert!(report.contains("— SUCCEEDED"), "{report}");
    assert!(report.contains("`apply_configmaps`"), "{report}");
    assert!(report.contains("milestone **validated**"), "{report}");
    let before_v2 = saved_dir(&v2);
    assert!(Path::new(&before_v2).join("secrets").is_dir());

    // A restore whose result fails validation (a required Secret is gone) is undone.
    sandbox.kubectl(&["delete", "secret", "analysis-service-credentials"]);
    let invalid = run(&["--yes"], git_args("v1"));
    invalid
        .code(1)
        .stderr_has("Secret/analysis-service-credentials does not exist")
        .stderr_has("was put back");
    let after_undo = config_of(&sandbox);
    assert_eq!(
        after_undo["configmaps/analysis-service-config"],
        config["configmaps/analysis-service-config"],
        "the ConfigMaps are v2's again"
    );

    // The snapshot taken before v2 brings back everything the chart made, the deleted Secret
    // included.
    let snapshot = run(
        &["--yes"],
        vec![
            "--snapshot".into(),
            before_v2.clone(),
            "--save-to".into(),
            saves.clone(),
        ],
    );
    snapshot.success();
    assert_no_secret_values(&snapshot);
    assert_eq!(config_of(&sandbox), original);
    assert!(snapshot.report().contains("`restore_config`"));

    let slack = sandbox.notifications("slack");
    let texts: Vec<String> = slack.iter().map(|n| n["body"].to_string()).collect();
    assert_eq!(texts.len(), 6, "{texts:?}");
    assert!(
        texts[3].contains("Configuration rollback FAILED"),
        "{texts:?}"
    );
    assert!(
        texts[5].contains("Configuration rollback completed"),
        "{texts:?}"
    );
}
