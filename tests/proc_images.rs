//! A rollback never points a service at an image the registry no longer has: `service` and
//! `full` check their target images in the sandbox's real registry before changing anything.

mod common;
use common::sandbox::Sandbox;
use rollback::sandbox::registry::delete_manifest;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Deletes `repository:tag` from the sandbox registry, as a cleanup job would.
fn delete_image(sandbox: &Sandbox, repository: &str, tag: &str) {
    let base = sandbox.url("registry");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let head = client
            .head(format!("{base}/v2/{repository}/manifests/{tag}"))
            .header("Accept", MANIFEST_TYPES)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.status(),
            200,
            "{repository}:{tag} is not in the registry"
        );
        let digest = head.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string();
        delete_manifest(&client, &base, repository, &digest, None)
            .await
            .unwrap();
    });
}

#[test]
fn service_and_full_refuse_a_target_whose_image_is_gone() {
    let sandbox = Sandbox::up();
    let image = "registry.tracktion.local/tracktion/file-watcher:v1.2.3";
    delete_image(&sandbox, "tracktion/file-watcher", "v1.2.3");
    let before = sandbox.cluster_state();

    sandbox
        .procedure(&["--yes"], "service", &["--service", "file-watcher"])
        .code(1)
        .stderr_has(&format!("image {image} is not in the registry"))
        .stderr_has("Nothing was changed");
    assert_eq!(sandbox.cluster_state(), before);

    // Another service's image is still there: its rollback goes ahead.
    sandbox
        .procedure(&["--yes"], "service", &["--service", "analysis-service"])
        .success();
    assert_eq!(sandbox.selector("analysis-service"), "blue");
    let before = sandbox.cluster_state();

    let full = sandbox.procedure(&["--yes"], "full", &[]);
    full.code(1)
        .stderr_has("target image(s) are not in the registry")
        .stderr_has(image);
    assert_eq!(sandbox.cluster_state(), before);
    assert!(full.report().contains("target images in the registry"));
    let failed: Vec<String> = sandbox
        .notifications("slack")
        .iter()
        .map(|n| n["body"].to_string())
        .filter(|b| b.contains("Full application rollback FAILED"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains(image), "{}", failed[0]);
}
