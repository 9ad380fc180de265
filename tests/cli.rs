//! The command line: procedures, parameters, environments, check, docs, completions.

mod common;
use common::Test;

const PARAMS_SCRIPT: &str = "//! Roll one service back.
//!
//! Longer words about it.
//!
//! @param service: string  The service to roll back.
//! @param revision: int = 0  Helm revision; 0 means the previous one.
//! @param services: list = \"\"  More services.
log(`service=${service} revision=${revision} type=${type_of(revision)} more=${services.len()}`);
";

#[test]
fn parameters_are_typed_and_defaulted() {
    Test::new()
        .script(PARAMS_SCRIPT)
        .args(["--service", "file-watcher", "--services", "a,b"])
        .run()
        .success()
        .stderr_has("service=file-watcher revision=0 type=i64 more=2");
}

#[test]
fn global_options_may_follow_the_procedure() {
    let run = Test::new()
        .script(PARAMS_SCRIPT)
        .args(["--service", "x", "--dry-run", "--operator", "alice"])
        .run();
    run.success();
    let journal = run.journal();
    assert_eq!(journal[0]["dry_run"], true);
    assert_eq!(journal[0]["args"]["operator"], "alice");
}

#[test]
fn missing_parameter_is_a_usage_error() {
    Test::new()
        .script(PARAMS_SCRIPT)
        .run()
        .code(2)
        .stderr_has("the following required arguments were not provided")
        .stderr_has("--service <STRING>");
}

#[test]
fn unknown_parameter_suggests_the_near_miss() {
    Test::new()
        .script(PARAMS_SCRIPT)
        .args(["--servce", "x"])
        .run()
        .code(2)
        .stderr_has("unexpected argument '--servce'")
        .stderr_has("a similar argument exists: '--service'");
}

#[test]
fn badly_typed_parameter_names_the_flag() {
    Test::new()
        .script(PARAMS_SCRIPT)
        .args(["--service", "x", "--revision", "two"])
        .run()
        .code(2)
        .stderr_has("--revision expects a whole number, got 'two'");
}

#[test]
fn procedure_help_lists_parameters() {
    let run = Test::new().script(PARAMS_SCRIPT).args(["--help"]).run();
    run.success()
        .stdout_has("Roll one service back.")
        .stdout_has("Longer words about it.")
        .stdout_has("--service <STRING>")
        .stdout_has("The service to roll back.")
        .stdout_has("[default: 0]");
}

#[test]
fn unknown_procedure_is_named_with_choices() {
    Test::new()
        .args(["run", "nope", "--env", "test"])
        .run()
        .code(2)
        .stderr_has("unknown procedure 'nope'")
        .stderr_has("`rollback list` describes them");
}

#[test]
fn environment_is_required_and_checked() {
    let t = Test::new().script("log(\"x\");\n");
    // The builder passes --env test; a second --env overrides it.
    t.args(["--env", "prodution"])
        .run()
        .code(2)
        .stderr_has("unknown environment 'prodution'")
        .stderr_has("defined environments: test");
}

#[test]
fn no_environment_is_a_usage_error() {
    let t = Test::new().file("p.rhai", "log(\"x\");\n");
    let path = t.path("p.rhai");
    t.args(["run", path.to_str().unwrap()])
        .run()
        .code(2)
        .stderr_has("no environment given: pass --env NAME or set ROLLBACK_ENV (defined: test)");
}

#[test]
fn malformed_platform_definition_names_the_key() {
    Test::new()
        .platform(
            "[environments.test]\nnamespace = \"x\"\nprometheus = \"http://127.0.0.1:9090\"\n",
        )
        .script("log(\"x\");\n")
        .run()
        .code(2)
        .stderr_has("unknown field `prometheus`");
}

#[test]
fn check_passes_on_every_shipped_script() {
    let run = Test::new().args(["check"]).run();
    run.success().stdout_has("scripts checked, no errors");
}

#[test]
fn check_finds_unknown_functions_and_modules_without_running() {
    let t = Test::new().file(
        "bad.rhai",
        "//! Bad.\nimport \"helth\" as health;\nimport \"platform\" as plat;\nlog(\"x\");\nhealth_chek(\"u\");\nplat::servce(\"a\");\n",
    );
    let path = t.path("bad.rhai");
    let run = t.args(["check", path.to_str().unwrap()]).run();
    run.code(2)
        .stderr_has("unknown module \"helth\"; did you mean \"health\"?")
        .stderr_has("unknown function `health_chek`; did you mean `health_check`?")
        .stderr_has("module \"platform\" has no function `servce`; did you mean `plat::service`?")
        .stderr_has("bad.rhai:5:1")
        .stderr_has("1 of 1 scripts have errors");
    assert!(!run.stdout.contains("x\n"), "check must not run the script");
}

#[test]
fn check_reports_unknown_namespaces() {
    let t = Test::new().file("bad.rhai", "//! Bad.\nnosuch::thing();\n");
    let path = t.path("bad.rhai");
    t.args(["check", path.to_str().unwrap()])
        .run()
        .code(2)
        .stderr_has("unknown module `nosuch`")
        .stderr_has("bad.rhai:2:1")
        .stderr_has("import \"nosuch\" as nosuch;");
}

#[test]
fn check_reports_syntax_errors() {
    let t = Test::new().file("bad.rhai", "//! Bad.\nlet = 3;\n");
    let path = t.path("bad.rhai");
    t.args(["check", path.to_str().unwrap()])
        .run()
        .code(2)
        .stderr_has("bad.rhai:2:");
}

#[test]
fn list_shows_procedures_with_descriptions() {
    let t = Test::new()
        .file("procs/alpha.rhai", "//! First procedure.\nlog(\"a\");\n")
        .file("procs/beta.rhai", "//! Second procedure.\n");
    let dir = t.path("procs");
    let run = t.args(["list", "--scripts", dir.to_str().unwrap()]).run();
    run.success();
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{}", run.stdout))
            .to_string()
    };
    assert!(line("alpha").ends_with("  First procedure."));
    assert!(line("beta").ends_with("  Second procedure."));
    assert!(line("validate").contains("Validate the platform after a rollback"));
    let column = |l: String| l.find(char::is_uppercase).unwrap();
    assert_eq!(
        column(line("alpha")),
        column(line("communicate")),
        "descriptions line up"
    );
}

#[test]
fn docs_cover_functions_and_suggest() {
    Test::new()
        .args(["docs", "health_check"])
        .run()
        .success()
        .stdout_has("Checks one HTTP endpoint")
        .stdout_has("example: let h = health_check(");
    Test::new()
        .args(["docs", "helth_check"])
        .run()
        .code(2)
        .stderr_has("did you mean `health_check`?");
    Test::new()
        .args(["docs"])
        .run()
        .success()
        .stdout_has("deadline_left");
}

#[test]
fn completions_are_generated() {
    Test::new()
        .args(["completions", "bash"])
        .run()
        .success()
        .stdout_has("_rollback()");
}

#[test]
fn version_prints() {
    Test::new()
        .args(["--version"])
        .run()
        .success()
        .stdout_has(concat!("rollback ", env!("CARGO_PKG_VERSION")));
}
