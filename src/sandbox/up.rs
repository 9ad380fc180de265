//! `rollback sandbox up`: start every piece in order, record each as it starts, and undo all
//! of it if any step fails or the operator presses Ctrl-C.

use super::client::Http;
use super::environment::{self, PAGERDUTY_ROUTING_KEY_ENV, SLACK_WEBHOOK_ENV};
use super::postgres::LocalPostgres;
use super::prometheus::{self, Binaries};
use super::server::ServerConfig;
use super::state::{Export, Paths, Process, Service, State, write_atomic};
use super::{chart, cluster, down, process, receivers, redis, registry, status};
use crate::cli::GlobalArgs;
use crate::console;
use crate::error::{Error, Result, io_context};
use crate::platform::Platform;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by Ctrl-C or SIGTERM during `up`; every step checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn up(global: &GlobalArgs, paths: &Paths) -> Result<ExitCode> {
    let started = Instant::now();
    let _lock = paths.lock()?;
    let http = Http::new(crate::cli::runtime()?);
    let previous = State::load(paths)?;
    if let Some(state) = &previous {
        let rows = status::probe(paths, state, &http);
        let silent: Vec<String> = rows
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.describe())
            .collect();
        if state.complete && silent.is_empty() {
            console::out(&format!(
                "the sandbox is already up (since {}); nothing to do",
                state.started_at
            ));
            print_summary(paths, state);
            return Ok(ExitCode::SUCCESS);
        }
        console::warn(&format!(
            "the sandbox is only partly up ({}); stopping what remains before starting again",
            if silent.is_empty() {
                "its last `up` did not finish".to_string()
            } else {
                silent.join("; ")
            }
        ));
    }
    let platform = crate::cli::load_platform(global, &crate::cli::catalog(global))?;
    let services = services(&platform)?;
    let binaries = preflight()?;
    watch_signals(&http);
    // Whatever an earlier run left behind goes first: a partly started sandbox, or the logs
    // of a failed `up` (and anything still running from the directory, state file or not).
    down::stop(paths, &previous.unwrap_or_default(), false)?;
    std::fs::create_dir_all(&paths.dir)
        .map_err(|e| io_context(e, format!("cannot create {}", paths.dir.display())))?;
    let mut state = State {
        started_at: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        namespace: chart::NAMESPACE.into(),
        services,
        ..State::default()
    };
    match start(paths, &mut state, &platform, &binaries, &http) {
        Ok(()) => {
            console::info(&format!(
                "sandbox up in {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            print_summary(paths, &state);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            console::warn("`up` did not finish; stopping what it started");
            let undone = match down::stop(paths, &state, true) {
                Ok(()) => "what it had started is stopped".to_string(),
                Err(cleanup) => format!(
                    "stopping what it had started failed too: {}",
                    cleanup.message
                ),
            };
            Err(if INTERRUPTED.load(Ordering::SeqCst) {
                Error::aborted(format!("`rollback sandbox up` was interrupted; {undone}"))
            } else {
                Error::new(
                    e.kind,
                    format!(
                        "{}\n{undone}; the logs of this attempt are in {}",
                        e.message,
                        paths.logs().display()
                    ),
                )
            })
        }
    }
}

/// The platform's services as the sandbox deploys them.
fn services(platform: &Platform) -> Result<Vec<Service>> {
    if platform.services.is_empty() {
        return Err(Error::usage(
            "the platform definition has no services to deploy in the sandbox; add [services.NAME] entries",
        ));
    }
    Ok(platform
        .services
        .iter()
        .map(|(name, svc)| Service {
            name: name.clone(),
            release: svc
                .release
                .clone()
                .unwrap_or_else(|| format!("tracktion-{name}")),
            replicas: platform.replicas(svc, environment::ENVIRONMENT),
        })
        .collect())
}

/// Everything needed is checked before anything starts, so a missing package costs nothing.
fn preflight() -> Result<Binaries> {
    for tool in ["bash", "kubectl"] {
        if prometheus::find_on_path(&[tool]).is_none() {
            return Err(Error::failed(format!(
                "{tool} is not installed (not found on PATH); the sandbox needs bash, kubectl, prometheus and prometheus-pushgateway"
            )));
        }
    }
    registry::binary()?;
    redis::binary()?;
    prometheus::binaries()
}

/// Ctrl-C and SIGTERM only set a flag: the running step is told (its child gets SIGTERM), then
/// the normal failure path stops what was started.
fn watch_signals(http: &Http) {
    http.runtime().spawn(async {
        let mut stops = crate::stop_signals::StopSignals::listen();
        stops.next().await;
        console::warn("interrupted: stopping what was started");
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Error::aborted("interrupted"));
    }
    Ok(())
}

fn timed<T>(what: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
    check_interrupted()?;
    let started = Instant::now();
    console::info(&format!("{what} …"));
    let result = step()?;
    check_interrupted()?;
    console::info(&format!(
        "{what}: done in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(result)
}

fn start(
    paths: &Paths,
    state: &mut State,
    platform: &Platform,
    binaries: &Binaries,
    http: &Http,
) -> Result<()> {
    let bin = timed("checking the Kubernetes binaries", || {
        cluster::binaries(paths, &INTERRUPTED)
    })?;
    let kube = cluster::describe(paths, &bin);
    // Recorded before anything starts: a cluster that fails half-way must still be taken down.
    state.cluster = Some(kube.clone());
    // The testbed's Helm is not on PATH: `helm_rollback` finds it through this variable.
    state.exports.push(Export {
        name: "ROLLBACK_HELM".into(),
        value: kube.bin.join("helm").display().to_string(),
    });
    state.save(paths)?;
    // The server, the Pushgateway and Prometheus start first: Prometheus applies new scrape
    // targets only every 5 s, and the server waits for the cluster by itself, so both
    // settle while the cluster comes up.
    let slack_token = uuid::Uuid::new_v4().simple().to_string();
    let routing_key = uuid::Uuid::new_v4().simple().to_string();
    let server = timed("starting the sandbox server", || {
        start_server(paths, state, platform, &slack_token, &routing_key, http)
    })?;
    state.server = Some(server.clone());
    state.save(paths)?;
    let pushgateway = timed("starting the Pushgateway", || {
        prometheus::start_pushgateway(paths, &binaries.pushgateway, http, &INTERRUPTED)
    })?;
    state.pushgateway = Some(pushgateway.clone());
    state.save(paths)?;
    let prom = timed("starting Prometheus", || {
        prometheus::start_prometheus(
            paths,
            &binaries.prometheus,
            server.port,
            pushgateway.port,
            http,
            &INTERRUPTED,
        )
    })?;
    state.prometheus = Some(prom.clone());
    state.save(paths)?;
    timed(
        &format!("starting Kubernetes cluster {}", kube.name),
        || cluster::up(paths, &kube, &INTERRUPTED),
    )?;
    let releases = match state.services.len() {
        1 => "1 Helm release".to_string(),
        n => format!("{n} Helm releases"),
    };
    timed(
        &format!("installing {releases} with 2 revisions each"),
        || chart::install(paths, &kube, &state.services),
    )?;
    timed("waiting for Prometheus to scrape the services", || {
        wait_first_scrape(&prom, &server, http)
    })?;
    start_database(paths, state)?;
    start_registry(paths, state, http)?;
    start_redis(paths, state, http)?;
    state.exports.push(Export {
        name: SLACK_WEBHOOK_ENV.into(),
        value: format!("{}{}", server.url(), receivers::slack_path(&slack_token)),
    });
    state.exports.push(Export {
        name: PAGERDUTY_ROUTING_KEY_ENV.into(),
        value: routing_key,
    });
    write_atomic(&paths.env_sh(), &environment::env_sh(&state.exports))?;
    write_atomic(&paths.environment_file(), &environment::overlay(state))?;
    state.complete = true;
    state.save(paths)
}

/// The sandbox's PostgreSQL 15: WAL archiving on, the Tracktion schema at its newest
/// migration with seed data, and a base backup, so every pg:: function (point-in-time recovery
/// included) works against it. Its URL goes in `environment::DATABASE_URL_ENV`.
fn start_database(paths: &Paths, state: &mut State) -> Result<()> {
    let dir = paths.dir.join("postgres");
    let port = prometheus::free_port()?;
    let pg = timed("starting PostgreSQL with the Tracktion schema", || {
        let pg = LocalPostgres::start(&dir, port)?;
        pg.load_tracktion(DATABASE)?;
        pg.base_backup()?;
        Ok(pg)
    })?;
    let pid = pg
        .postmaster_pid()
        .ok_or_else(|| Error::failed("PostgreSQL started but wrote no postmaster.pid"))?;
    state.database = Some(Process {
        pid,
        port,
        log: pg.cluster().log_file,
    });
    state.database_settings = Some(pg.settings());
    state.exports.push(Export {
        name: environment::DATABASE_URL_ENV.into(),
        value: pg.url(DATABASE),
    });
    state.save(paths)?;
    pg.detach();
    Ok(())
}

/// The registry, recorded as soon as it runs, then the image of every service at every
/// version the Helm revisions deploy, so `registry::image_exists` finds them.
fn start_registry(paths: &Paths, state: &mut State, http: &Http) -> Result<()> {
    let process = timed("starting the container registry", || {
        registry::start(&paths.registry(), &paths.log("registry"), &INTERRUPTED)
    })?;
    state.registry = Some(process.clone());
    state.save(paths)?;
    let services: Vec<String> = state.services.iter().map(|s| s.name.clone()).collect();
    timed(
        &format!(
            "pushing {} images ({})",
            services.len() * registry::VERSIONS.len(),
            registry::VERSIONS.join(", ")
        ),
        || registry::seed(http.runtime(), &process.url(), &services),
    )?;
    Ok(())
}

/// Redis with a random password, recorded as soon as it runs, then seeded with sessions. Its
/// URL goes in `environment::REDIS_URL_ENV`.
fn start_redis(paths: &Paths, state: &mut State, http: &Http) -> Result<()> {
    let started = timed("starting Redis", || {
        redis::start(
            http.runtime(),
            &paths.redis(),
            &paths.log("redis"),
            &INTERRUPTED,
        )
    })?;
    state.redis = Some(started.process);
    state.exports.push(Export {
        name: environment::REDIS_URL_ENV.into(),
        value: started.url.clone(),
    });
    state.save(paths)?;
    timed(
        &format!("seeding {} sessions in Redis", redis::SESSIONS),
        || redis::seed(http.runtime(), &started.url),
    )?;
    Ok(())
}

/// The application database of the sandbox.
const DATABASE: &str = "tracktion";

fn start_server(
    paths: &Paths,
    state: &State,
    platform: &Platform,
    slack_token: &str,
    routing_key: &str,
    http: &Http,
) -> Result<Process> {
    let kube = state
        .cluster
        .as_ref()
        .expect("the cluster is described first");
    let config = ServerConfig {
        namespace: state.namespace.clone(),
        kubeconfig: kube.kubeconfig.clone(),
        services: state.services.iter().map(|s| s.name.clone()).collect(),
        metrics: platform.metrics.clone(),
        slack_token: slack_token.into(),
        pagerduty_routing_key: routing_key.into(),
        incidents: paths.incidents(),
        notifications: paths.notifications(),
        address_file: paths.server_address(),
    };
    write_atomic(
        &paths.server_config(),
        &serde_json::to_string_pretty(&config).expect("config serializes"),
    )?;
    let exe = std::env::current_exe()
        .map_err(|e| io_context(e, "cannot find the rollback executable"))?;
    let mut command = Command::new(exe);
    command
        .args(["sandbox", "serve", "--state"])
        .arg(&paths.dir);
    let log = paths.log("server");
    let mut child = process::spawn_detached(command, &log)?;
    let pid = child.id();
    process::wait_ready(
        &mut child,
        "the sandbox server",
        &log,
        Duration::from_secs(20),
        &INTERRUPTED,
        || {
            let address = std::fs::read_to_string(paths.server_address()).unwrap_or_default();
            let port = address.rsplit(':').next().and_then(|p| p.parse().ok())?;
            let server = Process {
                pid,
                port,
                log: log.clone(),
            };
            http.answers(&format!("{}/_sandbox/ready", server.url()))
                .then_some(server)
        },
    )
}

/// `up` returns once Prometheus holds a sample of the server and the server sees the
/// installed services, so the first query of a rehearsal already has data.
fn wait_first_scrape(prom: &Process, server: &Process, http: &Http) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        check_interrupted()?;
        let scraped = http.prometheus_value(&prom.url(), "up{job=\"tracktion\"}") == Some(1.0);
        let sees_cluster = http
            .get(&format!("{}/_sandbox/state", server.url()))
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .is_some_and(|v| {
                v["services"]
                    .as_object()
                    .is_some_and(|s| s.values().all(|svc| svc["active"].is_string()))
            });
        if scraped && sees_cluster {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::failed(format!(
                "Prometheus has not scraped the sandbox server within 60s (scraped: {scraped}, server reads the cluster: {sees_cluster}); logs: {} and {}",
                prom.log.display(),
                server.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What to use, printed after `up`. The export lines are printed as they are: they hold the
/// sandbox's own throw-away receiver credentials, which the operator has to copy, and the
/// redaction of the console would mask them once they are exported.
pub fn print_summary(paths: &Paths, state: &State) {
    let url = |p: &Option<Process>| p.as_ref().map(Process::url).unwrap_or_default();
    let server = url(&state.server);
    let mut lines = vec![format!(
        "environment `sandbox`: {}",
        paths.environment_file().display()
    )];
    if let Some(kube) = &state.cluster {
        lines.push(format!(
            "  kubernetes   {}   kubectl --kubeconfig {} -n {} get deploy,svc",
            cluster::api_server(kube).unwrap_or_default(),
            kube.kubeconfig.display(),
            state.namespace
        ));
    }
    lines.push(format!(
        "  health       {server}/{{service}}/{{slot}}/health"
    ));
    lines.push(format!("  metrics      {server}/metrics"));
    lines.push(format!("  prometheus   {}", url(&state.prometheus)));
    lines.push(format!("  pushgateway  {}", url(&state.pushgateway)));
    if state.registry.is_some() {
        lines.push(format!(
            "  registry     {}   images {}/{}/<service>:<version>",
            url(&state.registry),
            registry::HOST,
            registry::REPOSITORY
        ));
    }
    if let Some(p) = &state.redis {
        lines.push(format!(
            "  redis        127.0.0.1:{}   URL in ${}",
            p.port,
            environment::REDIS_URL_ENV
        ));
    }
    lines.push(format!(
        "  receivers    Slack and PagerDuty deliveries are recorded in {}",
        paths.notifications().display()
    ));
    let live = chart::live();
    lines.push(format!(
        "\ntraffic goes to {} ({}); blue ({}) is on standby. Rehearse with:\n  rollback sandbox inject --service {} --error-rate 12\n  rollback repl --env sandbox",
        live.active,
        live.green,
        live.blue,
        state
            .services
            .first()
            .map(|s| s.name.as_str())
            .unwrap_or("SERVICE")
    ));
    lines.push(format!(
        "\nnotifications reach the local receivers once these are exported (`source {}`):",
        paths.env_sh().display()
    ));
    console::out(&lines.join("\n"));
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for export in &state.exports {
        let _ = writeln!(out, "export {}='{}'", export.name, export.value);
    }
}
