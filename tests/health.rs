//! health_check and health_check_all against real HTTP endpoints on loopback.

mod common;
use common::Test;
use common::http::{HttpServer, Reply};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn healthy_endpoint_reports_status_and_latency() {
    let server = HttpServer::start(|_| Reply::ok("{\"status\":\"ok\"}"));
    let run = Test::new()
        .script(&format!(
            "let h = health_check(\"{}\", #{{ expect_body: \"ok\" }});\nif !h.ok || h.status != 200 || h.attempts != 1 {{ throw h; }}\nlog(`latency ${{h.latency_ms}}`);\n",
            server.url() + "/health"
        ))
        .run();
    run.success().stderr_has("latency ");
    assert_eq!(server.requests()[0].path, "/health");
    assert!(run.report().contains("| healthy |"));
}

#[test]
fn retries_with_backoff_until_healthy() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let server = HttpServer::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::status(503)
        } else {
            Reply::ok("ok")
        }
    });
    Test::new()
        .script(&format!(
            "let h = health_check(\"{}\", #{{ retries: 3, backoff: 0.05 }});\nif !h.ok || h.attempts != 3 {{ throw h; }}\n",
            server.url() + "/"
        ))
        .run()
        .success();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn failures_are_results_not_errors() {
    let server = HttpServer::start(|_| Reply::status(500));
    let slow = HttpServer::start(|_| Reply::ok("ok").after(Duration::from_millis(400)));
    let closed = common::free_port();
    let run = Test::new()
        .script(&format!(
            r#"
let a = health_check("{}", #{{ retries: 1, backoff: 0 }});
let b = health_check("{}", #{{ retries: 0, max_latency_ms: 100 }});
let c = health_check("http://127.0.0.1:{closed}/", #{{ retries: 0 }});
let d = health_check("{}", #{{ retries: 0, timeout: 0.1 }});
log(`a=${{a.ok}} ${{a.status}} ${{a.error}} attempts=${{a.attempts}}`);
log(`b=${{b.ok}} ${{b.error}}`);
log(`c=${{c.ok}} ${{c.error}}`);
log(`d=${{d.ok}} ${{d.error}}`);
"#,
            server.url() + "/",
            slow.url() + "/",
            slow.url() + "/"
        ))
        .run();
    run.success()
        .stderr_has("a=false 500 HTTP 500, expected 200 attempts=2")
        .stderr_has("b=false answered in ")
        .stderr_has("above the 100 ms limit")
        .stderr_has("c=false cannot connect: Connection refused")
        .stderr_has("d=false no answer within 100ms");
    assert!(run.report().contains("**unhealthy**"));
}

#[test]
fn check_all_keeps_order_and_reports_each() {
    let good = HttpServer::start(|_| Reply::ok("ok"));
    let bad = HttpServer::start(|_| Reply::status(502));
    let urls: Vec<String> = (0..10)
        .map(|i| {
            if i % 3 == 0 {
                format!("{}/{i}", bad.url())
            } else {
                format!("{}/{i}", good.url())
            }
        })
        .collect();
    let list = urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let run = Test::new()
        .script(&format!(
            "let r = health_check_all([{list}], #{{ retries: 0 }});\nlet flags = r.map(|x| if x.ok {{ \"+\" }} else {{ \"-\" }});\nlog(`flags ${{flags}} first=${{r[0].url}}`);\n"
        ))
        .run();
    run.success()
        .stderr_has("flags [\"-\", \"+\", \"+\", \"-\", \"+\", \"+\", \"-\", \"+\", \"+\", \"-\"]")
        .stderr_has(&format!("first={}", urls[0]));
}

#[test]
fn invalid_options_and_urls_are_usage_errors() {
    Test::new()
        .script("health_check(\"http://127.0.0.1:9/\", #{ timout: 3 });\n")
        .run()
        .code(2)
        .stderr_has("`health_check` failed: invalid options: unknown field `timout`, expected one of `timeout`")
        .stderr_has("proc.rhai:1:1\n")
        .stderr_has(" 1 | health_check(");
    Test::new()
        .script("health_check(\"ftp://host/\");\n")
        .run()
        .code(2)
        .stderr_has("'ftp://host/' is not an http or https URL");
    Test::new()
        .script("health_check_all([\"http://127.0.0.1:9/\", 3]);\n")
        .run()
        .code(2)
        .stderr_has("every URL must be a string, found a i64");
    Test::new()
        .script("health_check(\"http://127.0.0.1:9/\", #{ retries: 99 });\n")
        .run()
        .code(2)
        .stderr_has("retries must be between 0 and 20");
}

#[test]
fn credentials_in_health_urls_never_leak() {
    let server = HttpServer::start(|_| Reply::ok("ok"));
    let url = format!(
        "http://monitor:Sup3rS3cretPw@127.0.0.1:{}/health",
        server.port
    );
    let run = Test::new()
        .script(&format!(
            "let h = health_check(\"{url}\");\nlog(`checked ${{h.url}}`);\nprint(h);\n"
        ))
        .run();
    run.success();
    let all = run.all_output();
    assert!(all.contains("monitor:[REDACTED]@127.0.0.1"), "{all}");
    assert!(!all.contains("Sup3rS3cretPw"), "{all}");
}
