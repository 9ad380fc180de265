//! The Rhai engine as procedures see it: limits, strict rules, error rendering, stdlib imports.

mod common;
use common::Test;

#[test]
fn unknown_function_gets_caret_and_suggestion() {
    let run = Test::new()
        .script("log(\"start\");\nlet h = helth_check(\"http://127.0.0.1:9/\");\n")
        .run();
    run.code(2);
    let expected = "error: unknown function `helth_check (&str | ImmutableString | String)`
  --> PROC:2:9
   |
 2 | let h = helth_check(\"http://127.0.0.1:9/\");
   |         ^
   = help: did you mean `health_check(url: string, opts?: #{timeout, retries, backoff, expect_status, max_latency_ms, expect_body}) -> #{url, ok, status, latency_ms, attempts, error}`?
";
    let proc_path = run.dir.join("proc.rhai").display().to_string();
    let stderr_error = &run.stderr[run.stderr.find("error: ").expect("an error line")..];
    assert_eq!(stderr_error, expected.replace("PROC", &proc_path));
}

#[test]
fn wrong_argument_types_show_the_signature() {
    let run = Test::new().script("health_check(42);\n").run();
    run.code(2)
        .stderr_has("wrong arguments for `health_check`: called as health_check (i64)")
        .stderr_has("= help: usage: health_check(url: string");
}

#[test]
fn syntax_error_names_line_and_column() {
    let run = Test::new().script("let x = 1;\nlet y = (x + ;\n").run();
    run.code(2)
        .stderr_has("proc.rhai:2:")
        .stderr_has(" 2 | let y = (x + ;");
}

#[test]
fn undefined_variable_is_a_compile_error() {
    let run = Test::new()
        .script("log(\"never runs\");\nlog(servce);\n")
        .run();
    run.code(2)
        .stderr_has("unknown variable `servce`")
        .stderr_lacks("never runs");
}

#[test]
fn unknown_map_property_is_an_error() {
    Test::new()
        .script("let h = #{ ok: true };\nif h.okay { log(\"x\"); }\n")
        .run()
        .code(2)
        .stderr_has("okay");
}

#[test]
fn eval_is_disabled() {
    Test::new()
        .script("eval(\"log(1)\");\n")
        .run()
        .code(2)
        .stderr_has("eval");
}

#[test]
fn endless_loop_hits_the_operation_limit() {
    Test::new()
        .script("let i = 0;\nloop { i += 1; }\n")
        .args(["--timeout", "5m"])
        .run()
        .code(2)
        .stderr_has("operation limit");
}

#[test]
fn unbounded_recursion_hits_the_call_depth_limit() {
    Test::new()
        .script("fn down(n) { down(n + 1) }\ndown(0);\n")
        .run()
        .code(2)
        .stderr_has("call depth");
}

#[test]
fn call_depth_allows_real_procedures() {
    // Rhai's debug default (8 levels) would break ordinary helper chains; ours allows 64.
    Test::new()
        .script("fn down(n) { if n == 0 { 0 } else { down(n - 1) } }\nlog(`depth ${down(40)}`);\n")
        .run()
        .success()
        .stderr_has("depth 0");
}

#[test]
fn throw_is_a_procedure_failure_with_exit_1() {
    let run = Test::new().script("throw \"standby not ready\";\n").run();
    run.code(1)
        .stderr_has("the procedure failed: standby not ready");
    assert!(run.report().contains("FAILED"));
}

#[test]
fn host_errors_can_be_caught_by_scripts() {
    Test::new()
        .script(
            "try {\n  health_check(\"not a url\");\n} catch (err) {\n  log(`caught ${err.kind}: ${err.message}`);\n}\n",
        )
        .run()
        .success()
        .stderr_has("caught invalid_argument: 'not a url' is not a valid URL");
}

#[test]
fn stdlib_modules_import_by_name() {
    Test::new()
        .script("import \"platform\" as plat;\nlog(`services: ${plat::service_names()}`);\n")
        .run()
        .success()
        .stderr_has("services: [\"analysis-service\"]");
}

#[test]
fn unknown_module_is_named() {
    Test::new()
        .script("import \"helth\" as health;\n")
        .run()
        .code(2)
        .stderr_has("unknown module \"helth\"");
}

#[test]
fn errors_inside_stdlib_point_into_the_module() {
    let run = Test::new()
        .script("import \"platform\" as plat;\nplat::service(\"nope\");\n")
        .run();
    run.code(1)
        .stderr_has("unknown service 'nope': the platform defines [\"analysis-service\"]")
        .stderr_has("--> stdlib/platform.rhai:")
        .stderr_has("= note: in call to 'service' at ");
}

#[test]
fn stdlib_override_from_disk_wins() {
    let t = Test::new().file(
        "lib/platform.rhai",
        "fn service_names() { [\"overridden\"] }\n",
    );
    let lib = t.path("lib");
    t.script("import \"platform\" as plat;\nlog(`${plat::service_names()}`);\n")
        .args(["--stdlib", lib.to_str().unwrap()])
        .run()
        .success()
        .stderr_has("[\"overridden\"]");
}

#[test]
fn host_functions_are_not_run_at_compile_time() {
    // `now()` inside a constant expression must be evaluated when the script runs, not folded
    // by the optimizer: two calls a little apart differ.
    Test::new()
        .script(
            "const A = now();\nsleep(0.01);\nconst B = now();\nif A == B { throw \"folded\"; }\n",
        )
        .run()
        .success();
}

#[test]
fn print_is_redacted() {
    Test::new()
        .script("print(\"postgres://app:hunter2secret@db/x\");\n")
        .run()
        .success()
        .stdout_has("postgres://app:[REDACTED]@db/x");
}
