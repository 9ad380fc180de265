//! Every shipped procedure and stdlib module passes `rollback check`, and `rollback list` shows
//! every procedure with the one-line description its header declares.

mod common;
use common::Test;
use common::sandbox::SHIPPED_PLATFORM;
use std::path::PathBuf;

/// `(name, first //! line)` of every `scripts/*.rhai`, sorted by name.
fn shipped_procedures() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let mut found: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let summary = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("//!"))
                .unwrap_or_else(|| panic!("{} does not start with a //! summary", p.display()))
                .trim()
                .to_string();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, summary)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn rollback_check_passes_on_every_shipped_script() {
    let run = Test::new().platform(SHIPPED_PLATFORM).args(["check"]).run();
    run.success().stdout_has("scripts checked, no errors");
    let procedures = shipped_procedures();
    assert!(procedures.len() >= 5, "{procedures:?}");
    for (name, _) in &procedures {
        run.stdout_has(&format!("ok      scripts/{name}.rhai"));
    }
    let stdlib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("stdlib");
    for entry in std::fs::read_dir(stdlib).unwrap().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        run.stdout_has(&format!("ok      stdlib/{file}"));
    }
}

#[test]
fn rollback_list_shows_every_procedure_with_its_description() {
    let run = Test::new().platform(SHIPPED_PLATFORM).args(["list"]).run();
    run.success();
    let procedures = shipped_procedures();
    assert_eq!(
        run.stdout.lines().count(),
        procedures.len(),
        "{}",
        run.stdout
    );
    for (name, summary) in &procedures {
        assert!(
            summary.ends_with('.') && summary.len() > 20,
            "{name}: the description must be one sentence: {summary:?}"
        );
        let line = run
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("`rollback list` lacks {name}:\n{}", run.stdout));
        assert_eq!(line[name.len()..].trim(), summary, "{line}");
    }
}
