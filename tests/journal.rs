//! `rollback journal verify` and `report` on real run journals, and secrets in every artifact.

mod common;
use common::Test;

fn finished_run() -> common::Run {
    let run = Test::new()
        .script("log(\"one\");\nstep(\"two\", || { log(\"inside\"); });\nlog(\"three\");\n")
        .run();
    run.success();
    run
}

fn verify(path: &std::path::Path) -> common::Run {
    Test::new()
        .args(["journal", "verify", path.to_str().unwrap()])
        .run()
}

fn rewrite(path: &std::path::Path, f: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    f(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn intact_journal_verifies() {
    let run = finished_run();
    verify(&run.dir.join("journal.jsonl"))
        .success()
        .stdout_has("is intact: 6 records");
}

#[test]
fn hand_edited_line_fails_verification() {
    let run = finished_run();
    let path = run.dir.join("journal.jsonl");
    rewrite(&path, |l| l[1] = l[1].replace("one", "uno"));
    verify(&path)
        .code(1)
        .stderr_has("fails verification at line 3")
        .stderr_has("line 2 was edited");
}

#[test]
fn removed_line_fails_verification() {
    let run = finished_run();
    let path = run.dir.join("journal.jsonl");
    rewrite(&path, |l| {
        l.remove(2);
    });
    verify(&path).code(1).stderr_has("1 line(s) were removed");
}

#[test]
fn cut_journal_fails_verification() {
    let run = finished_run();
    let path = run.dir.join("journal.jsonl");
    rewrite(&path, |l| {
        l.truncate(4);
    });
    verify(&path)
        .code(1)
        .stderr_has("without its session end record");
}

#[test]
fn report_can_be_rebuilt_from_the_journal() {
    let run = finished_run();
    let original = run.report();
    let rebuilt = Test::new()
        .args([
            "journal",
            "report",
            run.dir.join("journal.jsonl").to_str().unwrap(),
        ])
        .run();
    rebuilt.success();
    assert_eq!(rebuilt.stdout.trim_end(), original.trim_end());
}

#[test]
fn secrets_from_the_environment_never_reach_any_output() {
    let secret_url = "postgres://app:Pg-Very-Secret-42@127.0.0.1:5432/tracktion";
    let run = Test::new()
        .platform(&format!(
            "{}\n",
            common::TEST_PLATFORM.replace(
                "namespace = \"tracktion-test\"",
                "namespace = \"tracktion-test\"\ndatabase_url_env = \"TRACKTION_TEST_DATABASE_URL\""
            )
        ))
        .env("TRACKTION_TEST_DATABASE_URL", secret_url)
        .env("DEPLOY_API_TOKEN", "tok_4f9a8b7c6d5e")
        .script(
            "log(\"db Pg-Very-Secret-42 and tok_4f9a8b7c6d5e\");\nprint(\"again tok_4f9a8b7c6d5e\");\nthrow \"failed with Pg-Very-Secret-42\";\n",
        )
        .run();
    run.code(1);
    let all = run.all_output();
    for secret in ["Pg-Very-Secret-42", "tok_4f9a8b7c6d5e"] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
    assert!(all.contains("[REDACTED]"));
}
