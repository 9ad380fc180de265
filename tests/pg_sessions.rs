//! pg::connections, block/allow_connections and terminate_connections against real sessions.

mod common;
use common::pg::Pg;
use std::process::Child;

/// A psql session on tracktion named `name`: running a long statement, or idle on a silent stdin.
fn session(pg: &Pg, busy: bool, name: &str) -> Child {
    pg.session("tracktion", busy)
        .env("PGAPPNAME", name)
        .spawn()
        .unwrap()
}

fn pids_of(pg: &Pg, app_prefix: &str) -> Vec<String> {
    pg.sql_in(
        "postgres",
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE '{app_prefix}%' ORDER BY pid"
        ),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn wait_for(pg: &Pg, app_prefix: &str, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let pids = pids_of(pg, app_prefix);
        if pids.len() >= n {
            return pids;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("sessions did not connect");
}

#[test]
fn terminate_ends_other_sessions_and_keeps_its_own() {
    let pg = Pg::start();
    let mut busy = session(&pg, true, "app-busy");
    let mut idle1 = session(&pg, false, "app-idle-1");
    let mut idle2 = session(&pg, false, "app-idle-2");
    let pids = wait_for(&pg, "app-", 3);
    let run = pg
        .test()
        .script(
            r#"
let listed = pg::connections();
let mine = listed.filter(|c| c.is_self);
print("listed=" + listed.len() + " self_listed=" + mine.len());
let t = pg::terminate_connections(#{ grace: 1, timeout: 5 });
if t.terminated.contains(t.own_pid) || t.cancelled.contains(t.own_pid) { throw "it ended itself"; }
// `remaining` was read on the same session after the terminations: it survived them.
print("cancelled=" + t.cancelled.len() + " remaining=" + t.remaining.len() + " ok=" + t.ok);
"#,
        )
        .run();
    run.success()
        .stdout_has("listed=4 self_listed=1")
        .stdout_has("cancelled=1 remaining=0 ok=true");
    assert!(pids_of(&pg, "app-").is_empty(), "{pids:?} still connected");
    assert!(!busy.wait().unwrap().success());
    let _ = (idle1.wait(), idle2.wait());
}

#[test]
fn blocking_refuses_new_connections_until_allowed_again() {
    let pg = Pg::start();
    let mut idle = session(&pg, false, "app-idle");
    wait_for(&pg, "app-", 1);
    pg.test()
        .script(r#"let b = pg::block_connections(); if b.allow_connections || !b.previous { throw b; }"#)
        .run()
        .success();
    let refused = pg.server.psql("tracktion", "SELECT 1").unwrap_err();
    assert!(
        refused
            .message
            .contains("is not currently accepting connections"),
        "{}",
        refused.message
    );
    assert_eq!(pids_of(&pg, "app-").len(), 1, "sessions already in stay");
    // Reading the sessions still works: it falls back to the maintenance database.
    pg.test()
        .script(
            r#"let c = pg::connections(); if c.len() != 1 { throw c; } pg::allow_connections();"#,
        )
        .run()
        .success();
    assert_eq!(pg.sql("SELECT 1"), "1");
    let _ = idle.wait();
}

#[test]
fn dry_run_plans_blocking_without_doing_it() {
    let pg = Pg::start();
    let run = pg
        .test()
        .args(["--dry-run"])
        .script(r#"pg::block_connections(); pg::terminate_connections();"#)
        .run();
    run.success()
        .stderr_has("ALTER DATABASE \"tracktion\" ALLOW_CONNECTIONS false")
        .stderr_has("pg_terminate_backend(pid, $2)");
    assert_eq!(
        pg.sql_in(
            "postgres",
            "SELECT datallowconn FROM pg_database WHERE datname = 'tracktion'"
        ),
        "t"
    );
}
