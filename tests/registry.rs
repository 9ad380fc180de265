//! `registry::` against a real registry (Debian's `docker-registry`) started by each test on a
//! free loopback port, with images pushed over the distribution API; the bearer-token flow
//! against a local token server in front of a stand-in registry.

mod common;

use common::{Run, Test, free_port};
use rollback::sandbox::registry::{Login, config_yaml, delete_manifest, push_image, sha256};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HOST: &str = "registry.tracktion.local";
const USER: &str = "deployer";
const PASSWORD: &str = "correct-horse-battery";

/// A `docker-registry` on a free port with its storage in a temp dir; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(with_users: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = with_users.then(|| {
            // bcrypt, the only hash the registry accepts.
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd (apt-get install -y apache2-utils)");
            assert!(out.status.success());
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, out.stdout).unwrap();
            path
        });
        let port = free_port();
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        std::fs::write(&config, config_yaml(&storage, port, htpasswd.as_deref())).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (apt-get install -y docker-registry)");
        let registry = Registry {
            child,
            port,
            _dir: dir,
        };
        common::wait_until("the registry", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        registry
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn push(&self, repository: &str, tag: &str, login: Option<&Login>) -> String {
        runtime()
            .block_on(push_image(
                &reqwest::Client::new(),
                &self.url(),
                repository,
                tag,
                login,
            ))
            .unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An environment whose registry `HOST` answers at `url`, with credentials if named.
fn platform(url: &str, credentials: bool) -> String {
    let mut text = format!(
        "[environments.test]\nnamespace = \"tracktion-test\"\n[environments.test.registry]\nhost = \"{HOST}\"\nurl = \"{url}\"\nrepository = \"tracktion\"\n"
    );
    if credentials {
        text.push_str(
            "username_env = \"TEST_REGISTRY_USER\"\npassword_env = \"TEST_REGISTRY_PASSWORD\"\n",
        );
    }
    text.push_str("[services.analysis-service]\n[services.file-watcher]\n");
    text
}

fn results(run: &Run, function: &str) -> Vec<Value> {
    run.journal()
        .into_iter()
        .filter(|r| r["function"] == function)
        .map(|r| r["outcome"]["result"].clone())
        .collect()
}

#[test]
fn pushed_images_exist_with_their_digest_and_deleted_ones_do_not() {
    let registry = Registry::start(false);
    let kept = registry.push("tracktion/analysis-service", "v1.2.3", None);
    let deleted = registry.push("tracktion/analysis-service", "v1.2.4", None);
    runtime()
        .block_on(delete_manifest(
            &reqwest::Client::new(),
            &registry.url(),
            "tracktion/analysis-service",
            &deleted,
            None,
        ))
        .unwrap();
    let script = format!(
        r#"
        let image = registry::image_ref("analysis-service", "v1.2.3");
        print(`ref=${{image}}`);
        registry::image_exists(image);
        registry::image_exists("{HOST}/tracktion/analysis-service:v1.2.4");
        registry::image_exists("{HOST}/tracktion/never-pushed:v1");
        registry::image_exists("{HOST}/tracktion/analysis-service@{kept}");
        import "images" as images;
        let found = images::require("analysis-service", "v1.2.3");
        print(`required=${{found.digest}}`);
        images::require("analysis-service", "v1.2.4");
        "#
    );
    // Dry-run: the checks are reads, so they run for real.
    let run = Test::new()
        .platform(&platform(&registry.url(), false))
        .script(&script)
        .args(["--dry-run"])
        .run();
    run.code(1)
        .stdout_has(&format!("ref={HOST}/tracktion/analysis-service:v1.2.3"))
        .stdout_has(&format!("required={kept}"))
        .stderr_has(&format!(
            "image {HOST}/tracktion/analysis-service:v1.2.4 is not in the registry {HOST}"
        ));
    let r = results(&run, "registry::image_exists");
    assert_eq!(r[0]["exists"], true, "{r:?}");
    assert_eq!(r[0]["digest"], kept.as_str());
    let record = run
        .journal()
        .into_iter()
        .find(|r| r["function"] == "registry::image_exists")
        .unwrap();
    // Journaled as a read (no `mutating`) that ran although the run is a dry-run.
    assert_eq!(
        (&record["dry_run"], &record["mutating"]),
        (&Value::Bool(true), &Value::Null)
    );
    assert_eq!(r[0]["registry"], HOST);
    assert_eq!(
        r[0]["reference"],
        format!("{HOST}/tracktion/analysis-service:v1.2.3")
    );
    assert_eq!(
        r[0]["media_type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        (&r[1]["exists"], &r[1]["digest"]),
        (&Value::Bool(false), &Value::Null)
    );
    assert_eq!(r[2]["exists"], false);
    assert_eq!(
        (&r[3]["exists"], &r[3]["digest"]),
        (&Value::Bool(true), &Value::String(kept.clone()))
    );
    assert_eq!(kept, sha256_of_manifest(&registry, &kept));
}

#[test]
fn many_images_are_checked_in_one_call_in_their_order() {
    let registry = Registry::start(false);
    let analysis = registry.push("tracktion/analysis-service", "v1.2.3", None);
    let watcher = registry.push("tracktion/file-watcher", "v2.0.0", None);
    // More images than are checked at once, so the batch is answered in several rounds.
    let mut images = Vec::new();
    for i in 0..10 {
        images.push(format!("{HOST}/tracktion/analysis-service:v1.2.3"));
        images.push(format!("{HOST}/tracktion/never-pushed:v{i}"));
    }
    images.push(format!("{HOST}/tracktion/file-watcher:v2.0.0"));
    let list = images
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let run = Test::new()
        .platform(&platform(&registry.url(), false))
        .script(&format!(
            "let found = registry::images_exist([{list}]); print(`checked=${{found.len()}}`);"
        ))
        .run();
    run.success().stdout_has("checked=21");
    let found = results(&run, "registry::images_exist");
    assert_eq!(found.len(), 1, "one call, one journal record");
    let found = found[0].as_array().unwrap();
    for (i, image) in images.iter().enumerate() {
        let expected = !image.contains("never-pushed");
        assert_eq!(found[i]["exists"], expected, "{i}: {image}");
        assert_eq!(found[i]["reference"], image.as_str());
    }
    assert_eq!(found[0]["digest"], analysis.as_str());
    assert_eq!(found[20]["digest"], watcher.as_str());

    // One bad reference: a usage error before anything is asked.
    let run = Test::new()
        .platform(&platform(&registry.url(), false))
        .script(&format!(
            r#"registry::images_exist(["{HOST}/tracktion/file-watcher:v2.0.0", "Bad Name:1"]);"#
        ))
        .run();
    run.code(2).stderr_has("is not a valid image reference");
    assert!(results(&run, "registry::images_exist").is_empty());

    // A registry that is down: one error naming every image that could not be checked.
    let url = format!("http://127.0.0.1:{}", free_port());
    let run = Test::new()
        .platform(&platform(&url, false))
        .script(&format!(
            r#"registry::images_exist(["{HOST}/tracktion/analysis-service:v1", "{HOST}/tracktion/file-watcher:v2"]);"#
        ))
        .run();
    run.code(1)
        .stderr_has("2 of 2 images could not be checked")
        .stderr_has(&format!(
            "{HOST}/tracktion/analysis-service:v1: cannot reach the registry {HOST} at {url}"
        ))
        .stderr_has(&format!("{HOST}/tracktion/file-watcher:v2: cannot reach"));
}

/// The digest of the manifest as the registry serves it.
fn sha256_of_manifest(registry: &Registry, digest: &str) -> String {
    let url = format!(
        "{}/v2/tracktion/analysis-service/manifests/{digest}",
        registry.url()
    );
    let body = runtime().block_on(async {
        let response = reqwest::Client::new()
            .get(&url)
            .header("Accept", rollback::host::registry::MANIFEST_TYPES)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap()
    });
    sha256(&body)
}

#[test]
fn a_registry_that_is_down_or_a_bad_reference_are_clear_errors() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let run = Test::new()
        .platform(&platform(&url, false))
        .script(&format!(
            r#"registry::image_exists("{HOST}/tracktion/analysis-service:v1.2.3");"#
        ))
        .run();
    run.code(1)
        .stderr_has(&format!("cannot reach the registry {HOST} at {url}"))
        .stderr_has("check that it is up");
    let run = Test::new()
        .platform(&platform(&url, false))
        .script(r#"registry::image_exists("Registry.Local/Bad Name:1");"#)
        .run();
    run.code(2).stderr_has("is not a valid image reference");
    let run = Test::new()
        .platform(&platform(&url, false))
        .script(r#"registry::image_ref("no-such-service", "v1");"#)
        .run();
    run.code(2).stderr_has("unknown service 'no-such-service'");
}

#[test]
fn basic_auth_uses_the_environment_credentials_and_names_them_when_refused() {
    let registry = Registry::start(true);
    let login = Login {
        username: USER,
        password: PASSWORD,
    };
    let digest = registry.push("tracktion/file-watcher", "v1.2.3", Some(&login));
    let script = format!(r#"registry::image_exists("{HOST}/tracktion/file-watcher:v1.2.3");"#);
    let run = Test::new()
        .platform(&platform(&registry.url(), true))
        .script(&script)
        .env("TEST_REGISTRY_USER", USER)
        .env("TEST_REGISTRY_PASSWORD", PASSWORD)
        .run();
    run.success();
    assert_eq!(results(&run, "registry::image_exists")[0]["digest"], digest);
    assert!(!run.all_output().contains(PASSWORD));

    let wrong = "wrong-password-1234";
    let run = Test::new()
        .platform(&platform(&registry.url(), true))
        .script(&script)
        .env("TEST_REGISTRY_USER", USER)
        .env("TEST_REGISTRY_PASSWORD", wrong)
        .run();
    run.code(1)
        .stderr_has(&format!("the registry {HOST} refused access (HTTP 401)"))
        .stderr_has("TEST_REGISTRY_PASSWORD");
    assert!(!run.all_output().contains(wrong));

    let run = Test::new()
        .platform(&platform(&registry.url(), false))
        .script(&script)
        .run();
    run.code(1)
        .stderr_has("refused access (HTTP 401)")
        .stderr_has("set username_env and password_env in [environments.test.registry]");

    let run = Test::new()
        .platform(&platform(&registry.url(), true))
        .script(&script)
        .env("TEST_REGISTRY_USER", USER)
        .run();
    run.code(1)
        .stderr_has("the variable TEST_REGISTRY_PASSWORD (password_env of [environments.test.registry]) is not set");
}

/// A stand-in registry that wants a bearer token, and its token endpoint, on one port.
fn token_registry(digest: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_token_flow(stream, port, digest));
        }
    });
    port
}

const TOKEN: &str = "tok-0123456789abcdef";

fn answer_token_flow(stream: std::net::TcpStream, port: u16, digest: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        headers.push(line.trim().to_string());
    }
    let header = |name: &str| {
        headers
            .iter()
            .find_map(|h| {
                h.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let (status, extra, body) = if path.starts_with("/token?") {
        let scoped = path.contains("scope=repository%3Atracktion%2Fanalysis-service%3Apull")
            && path.contains("service=test-registry");
        if header("authorization") == basic && scoped {
            (
                200,
                String::new(),
                format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#),
            )
        } else {
            (401, String::new(), String::new())
        }
    } else if header("authorization") == format!("Bearer {TOKEN}") {
        let accept = header("accept");
        assert!(
            accept.contains("application/vnd.oci.image.index.v1+json"),
            "{accept}"
        );
        if path == "/v2/tracktion/analysis-service/manifests/v1.2.3" {
            (
                200,
                format!(
                    "Docker-Content-Digest: {digest}\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\n"
                ),
                String::new(),
            )
        } else {
            (404, String::new(), String::new())
        }
    } else {
        (
            401,
            format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test-registry\",scope=\"repository:tracktion/analysis-service:pull\"\r\n"
            ),
            String::new(),
        )
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
}

#[test]
fn bearer_tokens_are_fetched_from_the_challenge_realm() {
    let digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let port = token_registry(digest);
    let url = format!("http://127.0.0.1:{port}");
    let script = format!(r#"registry::image_exists("{HOST}/tracktion/analysis-service:v1.2.3");"#);
    let run = Test::new()
        .platform(&platform(&url, true))
        .script(&script)
        .env("TEST_REGISTRY_USER", USER)
        .env("TEST_REGISTRY_PASSWORD", PASSWORD)
        .run();
    run.success();
    let r = &results(&run, "registry::image_exists")[0];
    assert_eq!(
        (&r["exists"], &r["digest"]),
        (&Value::Bool(true), &Value::String(digest.into()))
    );
    assert!(!run.all_output().contains(TOKEN));

    let run = Test::new()
        .platform(&platform(&url, true))
        .script(&script)
        .env("TEST_REGISTRY_USER", USER)
        .env("TEST_REGISTRY_PASSWORD", "not-the-password")
        .run();
    run.code(1)
        .stderr_has("refused access (HTTP 401)")
        .stderr_has("TEST_REGISTRY_PASSWORD");
}
