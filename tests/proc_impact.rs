//! `impact` on the sandbox: versions per service, the release notes a rollback takes away,
//! migrations since the previous release, active sessions, and what users will see.

mod common;
use common::golden::assert_golden;
use common::sandbox::{SERVICES, Sandbox};

#[test]
fn impact_on_the_sandbox() {
    let sandbox = Sandbox::up();
    let cluster = sandbox.cluster_state();
    let database = sandbox.database_state();

    let plan = sandbox.procedure(&["--dry-run"], "impact", &[]);
    plan.success();
    assert_golden("impact-dry-run", &plan.report());
    assert_eq!(sandbox.cluster_state(), cluster);
    assert_eq!(sandbox.database_state(), database);
    for service in SERVICES {
        plan.stdout_has(&format!(
            "- {service}: green v1.2.4 → blue v1.2.3; Helm revision 2 (1.2.4) → 1 (1.2.3)"
        ));
    }

    // Two services: their shared release notes once, the migration v1.2.3 does not know.
    let run = sandbox.procedure(
        &[],
        "impact",
        &["--services", "analysis-service,file-watcher"],
    );
    run.success()
        .stdout_has("- analysis-service, file-watcher (v1.2.4 → v1.2.3):")
        .stdout_has("  - added: Cue-point detection in track analysis")
        .stdout_has("  - fixed: The file watcher missed files renamed on network shares")
        .stdout_has("- Schema at version 3 (analysis_status")
        .stdout_has("1 migration(s) since the previous release: 3 analysis_status — the previous release expects schema 2")
        .stdout_has("DATABASE ROLLBACK MAY BE NEEDED: unless the previous release works on schema 3, revert to 2")
        .stdout_has("Not counted: the platform defines no [environments.sandbox.sessions]")
        .stdout_has("- Features that disappear: Cue-point detection in track analysis")
        .stdout_has("- Fixed problems that come back: The file watcher missed files renamed on network shares");
    assert!(!run.stdout.contains("tracklist-service"), "{}", run.stdout);
    assert!(run.journal().iter().all(|r| r["mutating"] != true));
    assert!(run.report().contains("## Findings"));

    // Sessions counted the way the platform says: here, analysis jobs queued in the database.
    let overlay = std::fs::read_to_string(sandbox.environment_file()).unwrap();
    std::fs::write(
        sandbox.environment_file(),
        format!(
            "{overlay}\n[environments.sandbox.sessions]\nlabel = \"queued analysis jobs\"\nsql = \"SELECT count(*) AS n FROM analysis_results WHERE status = 'queued'\"\n"
        ),
    )
    .unwrap();
    let queued = sandbox.psql("SELECT count(*) FROM analysis_results WHERE status = 'queued'");
    sandbox
        .procedure(&[], "impact", &["--services", "analysis-service"])
        .success()
        .stdout_has(&format!("- {queued} queued analysis jobs"))
        .stdout_has(&format!(
            "moves {queued} queued analysis jobs to the previous version"
        ));
    // A Redis session store: its session keys counted with SCAN (the sandbox seeds 250).
    std::fs::write(
        sandbox.environment_file(),
        format!("{overlay}\n[environments.sandbox.sessions]\nredis_pattern = \"session:*\"\n"),
    )
    .unwrap();
    sandbox
        .procedure(&[], "impact", &["--services", "analysis-service"])
        .success()
        .stdout_has("- 250 active sessions (Redis keys session:*)")
        .stdout_has("moves 250 active sessions to the previous version");
    std::fs::write(sandbox.environment_file(), &overlay).unwrap();

    // With the schema back at what v1.2.3 expects, a rollback needs no database rollback.
    sandbox.psql("DELETE FROM schema_migrations WHERE version = 3");
    sandbox
        .procedure(&[], "impact", &["--services", "analysis-service"])
        .success()
        .stdout_has(
            "✅ No migration since the previous release (the previous release expects schema 2",
        )
        .stdout_has("needs no database rollback");

    sandbox
        .procedure(&[], "impact", &["--services", "billing"])
        .code(2)
        .stderr_has("unknown service 'billing': the platform defines");
}
