//! `git::show_tree` against a real repository made by the test: files at two tags and a
//! commit id, the working tree and HEAD left alone, and the refs and paths that must fail.

mod common;
use common::Test;
use std::path::Path;
use std::process::Command;

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Config Bot",
            "-c",
            "user.email=bot@tracktion.local",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn write(repo: &Path, path: &str, text: &str) {
    let path = repo.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A repository with `config/` at v1 (one file) and v2 (two files), and an uncommitted edit.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    write(repo, "config/app.yaml", "log_level: info\n");
    write(repo, "README", "not config\n");
    git(repo, &["add", "."]);
    git(repo, &["commit", "-qm", "v1"]);
    git(repo, &["tag", "v1"]);
    write(repo, "config/app.yaml", "log_level: debug\n");
    write(repo, "config/nested/flags.json", "{\"beta\": true}\n");
    git(repo, &["add", "."]);
    git(repo, &["commit", "-qm", "v2"]);
    git(repo, &["tag", "-a", "v2", "-m", "release v2"]);
    write(repo, "config/app.yaml", "uncommitted: yes\n");
    dir
}

#[test]
fn reads_files_at_tags_and_commits_without_touching_the_working_tree() {
    let repo = repo();
    let path = repo.path().display().to_string();
    let v1_commit = git(repo.path(), &["rev-parse", "v1"]);
    let head = git(repo.path(), &["rev-parse", "HEAD"]);
    let run = Test::new()
        .script(&format!(
            r#"
fn line(s) {{ s.trim(); s }}
let v1 = git::show_tree("{path}", "v1", "config");
print("v1 " + v1.commit + " " + v1.files.len() + " " + v1.files[0].path + "=" + line(v1.files[0].content));
let v2 = git::show_tree("{path}", "v2", "/config/");
for f in v2.files {{ print("v2 " + f.path + " " + f.name + " " + f.bytes + " " + line(f.content)); }}
let by_id = git::show_tree("{path}", "{v1_commit}", "config/app.yaml");
print("id " + by_id.ref + " " + line(by_id.files[0].content));
let all = git::show_tree("{path}", "main", "");
print("all " + all.files.map(|f| f.path));
"#
        ))
        .run();
    run.success()
        .stdout_has(&format!("v1 {v1_commit} 1 config/app.yaml=log_level: info"))
        .stdout_has("v2 config/app.yaml app.yaml 17 log_level: debug")
        .stdout_has("v2 config/nested/flags.json flags.json 15 {\"beta\": true}")
        .stdout_has(&format!("id {v1_commit} log_level: info"))
        .stdout_has(r#"all ["README", "config/app.yaml", "config/nested/flags.json"]"#);
    // An annotated tag resolves to its commit, not to the tag object.
    let v2_commit = git(repo.path(), &["rev-parse", "v2^{commit}"]);
    let journal = run.journal();
    let v2_call = journal
        .iter()
        .find(|l| l["function"] == "git::show_tree" && l["args"]["ref"] == "v2")
        .expect("v2 read journaled");
    assert_eq!(v2_call["outcome"]["result"]["commit"], v2_commit.as_str());
    // Nothing of the repository changed: the uncommitted edit and HEAD are as they were.
    assert_eq!(
        std::fs::read_to_string(repo.path().join("config/app.yaml")).unwrap(),
        "uncommitted: yes\n"
    );
    assert_eq!(git(repo.path(), &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git(repo.path(), &["status", "--porcelain"]),
        "M config/app.yaml"
    );
}

#[test]
fn a_missing_ref_names_the_ref_and_how_to_list_the_real_ones() {
    let repo = repo();
    let path = repo.path().display().to_string();
    let run = Test::new()
        .script(&format!(r#"git::show_tree("{path}", "v9.9.9", "config");"#))
        .run();
    run.code(1)
        .stderr_has("the ref 'v9.9.9' does not exist in")
        .stderr_has(&format!("git -C {path} tag --list"))
        .stderr_has("branch --all");

    // A script can catch it and fall back.
    let run = Test::new()
        .script(&format!(
            r#"
try {{ git::show_tree("{path}", "v9.9.9", "config"); }}
catch (e) {{ print("caught " + e.kind + ": " + e.function); }}
"#
        ))
        .run();
    run.success().stdout_has("caught failed: git::show_tree");
}

#[test]
fn empty_paths_non_repositories_and_option_like_refs_are_refused() {
    let repo = repo();
    let path = repo.path().display().to_string();
    let run = Test::new()
        .script(&format!(
            r#"git::show_tree("{path}", "v1", "config/nested");"#
        ))
        .run();
    run.code(1)
        .stderr_has("no files under 'config/nested' at v1")
        .stderr_has("ls-tree -r --name-only v1");

    let not_repo = tempfile::tempdir().unwrap();
    let run = Test::new()
        .script(&format!(
            r#"git::show_tree("{}", "v1", "config");"#,
            not_repo.path().display()
        ))
        .run();
    run.code(2).stderr_has("is not a git repository");

    let run = Test::new()
        .script(&format!(
            r#"git::show_tree("{path}", "--output=/tmp/x", "config");"#
        ))
        .run();
    run.code(2).stderr_has("is not a ref");

    let run = Test::new()
        .script(&format!(r#"git::show_tree("{path}", "v1", "../outside");"#))
        .run();
    run.code(2)
        .stderr_has("is not a path inside the repository");
}

#[test]
fn it_is_a_read_so_a_dry_run_reads_for_real() {
    let repo = repo();
    let path = repo.path().display().to_string();
    let run = Test::new()
        .script(&format!(
            r#"fn line(s) {{ s.trim(); s }} let t = git::show_tree("{path}", "v1", "config"); print("dry " + line(t.files[0].content) + " planned=" + ("planned" in t));"#
        ))
        .args(["--dry-run"])
        .run();
    run.success()
        .stdout_has("dry log_level: info planned=false");
}
