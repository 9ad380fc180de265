//! `prom::` against a real Prometheus scraping a metrics endpoint this file controls, and a
//! real Pushgateway.

mod common;
mod obs_support;

use common::{Run, Test};
use obs_support::{HttpServer, Prometheus, Pushgateway, Reply, journal_record, journal_result};
use serde_json::json;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests added per scrape to each counter: (service, status, increment).
const REQUESTS: [(&str, &str, u64); 4] = [
    ("analysis-service", "200", 94),
    ("analysis-service", "500", 6),
    ("file-watcher", "200", 45),
    ("file-watcher", "503", 5),
];

/// Cumulative bucket counts added per scrape to analysis-service's duration histogram.
const BUCKETS: [(&str, u64); 6] = [
    ("0.05", 10),
    ("0.1", 40),
    ("0.25", 70),
    ("0.5", 90),
    ("1", 100),
    ("+Inf", 100),
];

/// Every scrape advances every series by its fixed increment, so every rate Prometheus
/// computes is the same multiple of the increments and ratios are exact.
fn exposition(scrape: u64) -> String {
    let mut out = String::from("# TYPE http_requests_total counter\n");
    for (service, status, step) in REQUESTS {
        out.push_str(&format!(
            "http_requests_total{{service=\"{service}\",status=\"{status}\"}} {}\n",
            step * scrape
        ));
    }
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for (le, step) in BUCKETS {
        out.push_str(&format!(
            "http_request_duration_seconds_bucket{{service=\"analysis-service\",le=\"{le}\"}} {}\n",
            step * scrape
        ));
    }
    // Another service's histogram, all fast: the service matcher must keep it out.
    for le in ["0.05", "+Inf"] {
        out.push_str(&format!(
            "http_request_duration_seconds_bucket{{service=\"file-watcher\",le=\"{le}\"}} {}\n",
            7 * scrape
        ));
    }
    out
}

struct Stack {
    prometheus: Prometheus,
    metrics: HttpServer,
}

/// One Prometheus for the whole file, started on first use, with at least 3 scrapes stored.
fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let scrapes = AtomicU64::new(0);
        let metrics = HttpServer::start(move |req| {
            if req.path != "/metrics" {
                return Reply::text(404, "not found");
            }
            let n = scrapes.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::Respond {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: exposition(n),
            }
        });
        let prometheus = Prometheus::start(&format!("127.0.0.1:{}", metrics.port));
        prometheus.wait_for_value(
            r#"count_over_time(http_requests_total{service="analysis-service",status="500"}[1m])"#,
            3.0,
        );
        Stack {
            prometheus,
            metrics,
        }
    })
}

fn pushgateway() -> &'static Pushgateway {
    static PUSHGATEWAY: OnceLock<Pushgateway> = OnceLock::new();
    PUSHGATEWAY.get_or_init(Pushgateway::start)
}

fn platform(prometheus_url: &str, pushgateway_url: &str) -> String {
    format!(
        "[environments.test]\nnamespace = \"tracktion-test\"\nprometheus_url = \"{prometheus_url}\"\npushgateway_url = \"{pushgateway_url}\"\n"
    )
}

fn run_with_prometheus(script: &str) -> Run {
    let url = &stack().prometheus.url;
    Test::new()
        .platform(&platform(url, "http://127.0.0.1:9"))
        .script(script)
        .run()
}

fn number(value: &serde_json::Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

#[test]
fn error_rate_is_the_ratio_of_the_served_counters() {
    let run = run_with_prometheus(
        r#"
        prom::error_rate(#{ service: "analysis-service", window: "1m" });
        prom::error_rate(#{ window: "1m" });
        prom::error_rate(#{ service: "no-such-service", window: "1m" });
        prom::error_rate();
        "#,
    );
    run.success();
    let one = journal_result(&run, "prom::error_rate", 0);
    // 6 of every 100 requests of analysis-service end in 500.
    assert!((number(&one["value"]) - 6.0).abs() < 1e-6, "{one}");
    assert_eq!(one["has_data"], true);
    assert_eq!(
        one["query"],
        r#"sum(rate(http_requests_total{service="analysis-service",status=~"5.."}[1m])) / sum(rate(http_requests_total{service="analysis-service"}[1m])) * 100"#
    );
    let all = journal_result(&run, "prom::error_rate", 1);
    let expected_all = (6.0 + 5.0) / (100.0 + 50.0) * 100.0;
    assert!((number(&all["value"]) - expected_all).abs() < 1e-6, "{all}");
    let none = journal_result(&run, "prom::error_rate", 2);
    assert_eq!(none["has_data"], false, "{none}");
    assert_eq!(number(&none["value"]), 0.0);
    let default_window = journal_result(&run, "prom::error_rate", 3);
    assert!(
        default_window["query"]
            .as_str()
            .unwrap()
            .ends_with("[5m])) * 100")
    );
}

/// What `histogram_quantile` gives for cumulative `buckets`: linear interpolation inside the
/// first bucket whose count reaches the rank, the lowest bucket starting at 0.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let total = buckets.last().unwrap().1;
    let rank = q * total;
    let i = buckets
        .iter()
        .position(|&(_, count)| count >= rank)
        .unwrap();
    let (upper, count) = buckets[i];
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    lower + (upper - lower) * (rank - below) / (count - below)
}

#[test]
fn p95_latency_matches_the_histogram_interpolation() {
    let run = run_with_prometheus(
        r#"
        prom::p95_latency(#{ service: "analysis-service", window: "1m" });
        prom::p95_latency(#{ service: "tracklist-service", window: "1m" });
        "#,
    );
    run.success();
    let finite: Vec<(f64, f64)> = BUCKETS
        .iter()
        .filter(|(le, _)| *le != "+Inf")
        .map(|(le, count)| (le.parse().unwrap(), *count as f64))
        .collect();
    let expected_ms = histogram_quantile(0.95, &finite) * 1000.0;
    assert!(
        (expected_ms - 750.0).abs() < 1e-9,
        "the layout puts p95 at 750 ms"
    );
    let p95 = journal_result(&run, "prom::p95_latency", 0);
    assert!((number(&p95["value"]) - expected_ms).abs() < 1e-6, "{p95}");
    assert_eq!(p95["has_data"], true);
    assert_eq!(
        p95["query"],
        r#"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{service="analysis-service"}[1m]))) * 1000"#
    );
    let none = journal_result(&run, "prom::p95_latency", 1);
    assert_eq!(none["has_data"], false, "{none}");
}

#[test]
fn the_many_service_forms_give_each_service_what_the_one_service_form_gives() {
    let run = run_with_prometheus(
        r#"
        let names = ["analysis-service", "file-watcher", "no-such-service"];
        let rates = prom::error_rates(names, #{ window: "1m" });
        let p95s = prom::p95_latencies(names, #{ window: "1m" });
        for name in names {
            let one = prom::error_rate(#{ service: name, window: "1m" });
            let p95 = prom::p95_latency(#{ service: name, window: "1m" });
            // Approximately: the two queries may see a different number of scrapes.
            let same_rate = (rates[name].value - one.value).abs() < 0.000001;
            let same_p95 = (p95s[name].value - p95.value).abs() < 0.000001;
            print(`${name} rate=${same_rate} ${rates[name].has_data == one.has_data} p95=${same_p95} ${p95s[name].has_data == p95.has_data}`);
        }
        "#,
    );
    run.success()
        .stdout_has("analysis-service rate=true true p95=true true")
        .stdout_has("file-watcher rate=true true p95=true true")
        .stdout_has("no-such-service rate=true true p95=true true");
    let rates = journal_result(&run, "prom::error_rates", 0);
    // 6 of 100 and 5 of 50 requests end in 5xx; a service with no requests has no data.
    assert!(
        (number(&rates["analysis-service"]["value"]) - 6.0).abs() < 1e-6,
        "{rates}"
    );
    assert!(
        (number(&rates["file-watcher"]["value"]) - 10.0).abs() < 1e-6,
        "{rates}"
    );
    assert_eq!(rates["no-such-service"]["has_data"], false, "{rates}");
    assert_eq!(
        rates["file-watcher"]["query"],
        r#"sum by (service) (rate(http_requests_total{service=~"analysis-service|file-watcher|no-such-service",status=~"5.."}[1m])) / sum by (service) (rate(http_requests_total{service=~"analysis-service|file-watcher|no-such-service"}[1m])) * 100"#
    );
    let p95s = journal_result(&run, "prom::p95_latencies", 0);
    assert!(
        (number(&p95s["analysis-service"]["value"]) - 750.0).abs() < 1e-6,
        "{p95s}"
    );
    // file-watcher's requests all take under 50 ms: its own histogram, not analysis-service's.
    assert!(number(&p95s["file-watcher"]["value"]) <= 50.0, "{p95s}");
    let records: Vec<_> = run
        .journal()
        .into_iter()
        .filter(|r| r["function"] == "prom::error_rates")
        .collect();
    assert_eq!(records.len(), 1, "one call, one journal record");
    assert_eq!(
        records[0]["args"]["services"],
        json!(["analysis-service", "file-watcher", "no-such-service"])
    );
}

#[test]
fn the_many_service_forms_refuse_what_they_cannot_query() {
    run_with_prometheus(r#"prom::error_rates([]);"#)
        .code(2)
        .stderr_has("no services given");
    run_with_prometheus(r#"prom::p95_latencies(["analysis-service", 42]);"#)
        .code(2)
        .stderr_has("every service must be a string, found a");
    run_with_prometheus(r#"prom::error_rates(["analysis-service"], #{ window: "5 m" });"#)
        .code(2)
        .stderr_has("is not a Prometheus duration");
    // A name with regex characters matches only itself.
    let run = run_with_prometheus(r#"prom::error_rates(["analysis.service", "file-.*"]);"#);
    run.success();
    let rates = journal_result(&run, "prom::error_rates", 0);
    assert_eq!(rates["analysis.service"]["has_data"], false, "{rates}");
    assert_eq!(rates["file-.*"]["has_data"], false, "{rates}");
}

#[test]
fn query_returns_labels_values_and_time() {
    let stack = stack();
    let run = run_with_prometheus(
        r#"
        let series = prom::query(`http_requests_total{service="analysis-service",status="500"}`);
        print(`series=${series.len()} status=${series[0].metric.status}`);
        let scalar = prom::query("42", #{ timeout: 5 });
        print(`scalar=${scalar[0].value} labels=${scalar[0].metric.len()}`);
        let nan = prom::query("0/0");
        print(`nan_is_unit=${nan[0].value == ()}`);
        "#,
    );
    run.success()
        .stdout_has("series=1 status=500")
        .stdout_has("scalar=42.0 labels=0")
        .stdout_has("nan_is_unit=true");
    let series = journal_result(&run, "prom::query", 0);
    let sample = &series[0];
    assert_eq!(
        sample["metric"],
        json!({
            "__name__": "http_requests_total",
            "instance": format!("127.0.0.1:{}", stack.metrics.port),
            "job": "tracktion",
            "service": "analysis-service",
            "status": "500",
        })
    );
    let value = number(&sample["value"]);
    assert!(
        value >= 18.0 && value % 6.0 == 0.0,
        "a multiple of 6: {value}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((number(&sample["time"]) - now).abs() < 120.0, "{sample}");
}

#[test]
fn invalid_promql_is_a_script_error_with_prometheus_message() {
    let run = run_with_prometheus(r#"prom::query("sum(rate(http_requests_total[5m])");"#);
    run.code(2)
        .stderr_has("`prom::query` failed: Prometheus rejected the query:")
        .stderr_has("parse error")
        .stderr_has("fix the PromQL");
}

#[test]
fn a_range_vector_asks_for_an_instant_query() {
    let run = run_with_prometheus(r#"prom::query("http_requests_total[1m]");"#);
    run.code(2).stderr_has("use an instant query");
}

#[test]
fn bad_windows_and_options_are_script_errors() {
    let run = run_with_prometheus(r#"prom::error_rate(#{ window: "5 minutes" });"#);
    run.code(2)
        .stderr_has("window '5 minutes' is not a Prometheus duration");
    let run = run_with_prometheus(r#"prom::p95_latency(#{ windw: "5m" });"#);
    run.code(2).stderr_has("unknown field `windw`");
}

#[test]
fn label_values_are_quoted_not_injected() {
    let run = run_with_prometheus(
        r#"prom::error_rate(#{ service: "x\"} or vector(1) or up{a=\"", window: "1m" });"#,
    );
    run.success();
    let result = journal_result(&run, "prom::error_rate", 0);
    assert_eq!(result["has_data"], false, "{result}");
    assert!(
        result["query"]
            .as_str()
            .unwrap()
            .contains(r#"{service="x\"} or vector(1) or up{a=\"",status=~"5.."}"#),
        "{result}"
    );
}

#[test]
fn unreachable_prometheus_names_the_url_and_what_to_check() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let run = Test::new()
        .platform(&platform(&url, "http://127.0.0.1:9"))
        .script(r#"prom::error_rate(#{ service: "analysis-service" });"#)
        .run();
    run.code(1)
        .stderr_has(&format!(
            "`prom::error_rate` failed: cannot reach Prometheus at {url}: cannot connect:"
        ))
        .stderr_has("check prometheus_url and that Prometheus is up");
    assert_eq!(
        journal_record(&run, "prom::error_rate", 0)["outcome"]["status"],
        "error"
    );
}

#[test]
fn an_answer_that_is_not_json_is_a_failure() {
    let page = HttpServer::start(|_| Reply::Respond {
        status: 200,
        content_type: "text/html",
        body: "<html><body>Grafana login</body></html>".into(),
    });
    let run = Test::new()
        .platform(&platform(&page.url(), "http://127.0.0.1:9"))
        .script(r#"prom::query("up");"#)
        .run();
    run.code(1)
        .stderr_has(&format!("Prometheus at {} answered HTTP 200 with something that is not a Prometheus API response", page.url()))
        .stderr_has("Grafana login");
    assert!(
        page.requests()[0]
            .path
            .starts_with("/api/v1/query?query=up")
    );
}

#[test]
fn an_environment_without_prometheus_is_told_where_to_add_it() {
    let run = Test::new().script(r#"prom::query("up");"#).run();
    run.code(2)
        .stderr_has("environment 'test' has no prometheus_url: add it to the platform definition");
    let run = Test::new()
        .script(r#"prom::push("rollback", #{ x: 1 });"#)
        .run();
    run.code(2)
        .stderr_has("environment 'test' has no pushgateway_url");
}

fn run_with_pushgateway(script: &str, args: &[&str]) -> Run {
    Test::new()
        .platform(&platform("http://127.0.0.1:9", &pushgateway().url))
        .script(script)
        .args(args)
        .run()
}

/// The value the Pushgateway holds for `metric` in a group, as its API reports it.
fn pushed_value(group: &serde_json::Value, metric: &str) -> serde_json::Value {
    group[metric]["metrics"][0]["value"].clone()
}

#[test]
fn push_reaches_the_pushgateway_with_grouping_labels() {
    let run = run_with_pushgateway(
        r#"
        let r = prom::push("rollback-live", #{ rollback_runs_total: 3, rollback_duration_seconds: 12.5 },
            #{ labels: #{ service: "analysis-service", release: "tracktion/analysis", attempt: 2 } });
        print(`pushed ${r.metrics} to ${r.url}`);
        "#,
        &[],
    );
    run.success();
    let expected_url = format!(
        "{}/metrics/job/rollback-live/attempt/2/release@base64/dHJhY2t0aW9uL2FuYWx5c2lz/service/analysis-service",
        pushgateway().url
    );
    run.stdout_has(&format!("pushed 2 to {expected_url}"));
    let group = pushgateway()
        .group("rollback-live")
        .expect("the group is on the Pushgateway");
    assert_eq!(
        group["labels"],
        json!({"job": "rollback-live", "service": "analysis-service", "release": "tracktion/analysis", "attempt": "2"})
    );
    assert_eq!(pushed_value(&group, "rollback_runs_total"), "3");
    assert_eq!(pushed_value(&group, "rollback_duration_seconds"), "12.5");
    assert_eq!(
        group["rollback_runs_total"]["metrics"][0]["labels"]["release"],
        "tracktion/analysis"
    );
    let record = journal_record(&run, "prom::push", 0);
    assert_eq!(record["mutating"], true);
    assert_eq!(
        record["outcome"]["result"],
        json!({"url": expected_url, "job": "rollback-live", "metrics": 2, "planned": false})
    );
}

#[test]
fn dry_run_push_sends_nothing_and_journals_the_request() {
    let run = run_with_pushgateway(
        r#"prom::push("rollback-dry", #{ rollback_runs_total: 1 }, #{ labels: #{ service: "file-watcher" } });"#,
        &["--dry-run"],
    );
    run.success();
    let url = format!(
        "{}/metrics/job/rollback-dry/service/file-watcher",
        pushgateway().url
    );
    let record = journal_record(&run, "prom::push", 0);
    assert_eq!(record["outcome"]["status"], "planned");
    assert_eq!(
        record["args"]["request"],
        json!({
            "method": "POST",
            "url": url,
            "content_type": "text/plain; version=0.0.4",
            "body": "rollback_runs_total 1\n",
        })
    );
    assert_eq!(record["outcome"]["result"]["planned"], true);
    // A push from another test is on the Pushgateway by now or never; this one must not be.
    assert!(pushgateway().group("rollback-dry").is_none());
}

#[test]
fn bad_metric_and_label_names_are_named() {
    let run = run_with_pushgateway(
        r#"prom::push("rollback-bad", #{ "rollback-runs": 1 });"#,
        &[],
    );
    run.code(2)
        .stderr_has("`prom::push` failed: 'rollback-runs' is not a valid Prometheus metric name");
    let run = run_with_pushgateway(
        r#"prom::push("rollback-bad", #{ runs: 1 }, #{ labels: #{ "bad-label": "x" } });"#,
        &[],
    );
    run.code(2)
        .stderr_has("'bad-label' is not a valid Prometheus label name");
    let run = run_with_pushgateway(r#"prom::push("rollback-bad", #{ runs: "one" });"#, &[]);
    run.code(2)
        .stderr_has("metric 'runs' must be a number, not a string");
    assert!(pushgateway().group("rollback-bad").is_none());
}

#[test]
fn unreachable_pushgateway_is_a_failure() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let run = Test::new()
        .platform(&platform("http://127.0.0.1:9", &url))
        .script(r#"prom::push("rollback", #{ runs: 1 });"#)
        .run();
    run.code(1)
        .stderr_has(&format!(
            "cannot reach the Pushgateway at {url}: cannot connect:"
        ))
        .stderr_has("check pushgateway_url and that the Pushgateway is up");
}

#[test]
fn docs_list_the_prometheus_functions() {
    let run = Test::new().args(["docs", "prom"]).run();
    run.success();
    for name in [
        "prom::query",
        "prom::error_rate",
        "prom::p95_latency",
        "prom::error_rates",
        "prom::p95_latencies",
        "prom::push",
    ] {
        run.stdout_has(&format!("{name}("));
    }
    run.stdout_has("changes things; only planned in a dry-run");
}

/// The example of a function as `rollback docs` prints it.
fn documented_example(name: &str) -> String {
    let run = Test::new().args(["docs", name]).run();
    run.success();
    run.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("example: "))
        .unwrap_or_else(|| panic!("no example for {name}:\n{}", run.stdout))
        .to_string()
}

#[test]
fn the_documented_examples_run() {
    let platform = platform(&stack().prometheus.url, &pushgateway().url);
    for name in ["prom::query", "prom::error_rate", "prom::p95_latency"] {
        let example = documented_example(name);
        let run = Test::new().platform(&platform).script(&example).run();
        run.success();
        assert_eq!(journal_record(&run, name, 0)["outcome"]["status"], "ok");
    }
    let example = documented_example("prom::push");
    let run = Test::new()
        .platform(&platform)
        .script(&example)
        .args(["--dry-run"])
        .run();
    run.success();
    assert_eq!(
        journal_record(&run, "prom::push", 0)["outcome"]["status"],
        "planned"
    );
}

#[test]
fn query_at_a_given_time() {
    let run = run_with_prometheus(
        r#"
        let before = prom::query("http_requests_total", #{ time: "2001-01-01T00:00:00Z" });
        print(`before=${before.len()}`);
        let at_now = prom::query("http_requests_total", #{ time: now() });
        print(`at_now=${at_now.len()}`);
        "#,
    );
    run.success().stdout_has("before=0").stdout_has("at_now=4");
    let run = run_with_prometheus(r#"prom::query("up", #{ time: "yesterday" });"#);
    run.code(2)
        .stderr_has("Prometheus rejected the query:")
        .stderr_has("yesterday");
}
