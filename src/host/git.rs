//! Reading a git repository at a ref without touching its working tree: configuration kept in
//! git (manifests, application settings) is read as it was at a tag or commit.
//!
//! The `git` CLI does the work (`rev-parse`, `ls-tree`, `cat-file`): it is on every machine
//! that holds a clone, and it reads the object database only, so a dirty or checked-out tree
//! is never changed.

use super::{Effect, FnDoc, HostError, Registrar};
use crate::session::Session;
use rhai::{Dynamic, EvalAltResult};
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

const SHOW_TREE: FnDoc = FnDoc {
    module: Some("git"),
    name: "show_tree",
    signature: "(repo: string, ref: string, path: string) -> #{repo, ref, commit, path, files: array of #{path, name, content, bytes}}",
    summary: "Reads every file under a path of a git repository as it is at a tag, branch or commit, without changing the working tree.",
    example: r#"let tree = git::show_tree("/srv/config-repo", "v1.2.3", "k8s/production"); for f in tree.files { log(f.path + " (" + f.bytes + " bytes)"); }"#,
    effect: Effect::Read,
};

/// More than this in one call is not a configuration directory: refuse rather than hold it all.
const MAX_TOTAL_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct TreeFile {
    /// Path from the repository's root.
    pub path: String,
    /// The file name alone.
    pub name: String,
    pub content: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tree {
    pub repo: String,
    #[serde(rename = "ref")]
    pub reference: String,
    /// The full commit id the ref resolved to.
    pub commit: String,
    pub path: String,
    /// Files under `path`, sorted by path.
    pub files: Vec<TreeFile>,
}

pub fn register(r: &mut Registrar, session: &Arc<Session>) {
    let s = session.clone();
    r.func(
        &SHOW_TREE,
        move |repo: &str, reference: &str, path: &str| show_tree(&s, repo, reference, path),
    );
}

fn show_tree(
    session: &Session,
    repo: &str,
    reference: &str,
    path: &str,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let f = SHOW_TREE.qualified_name();
    let (repo, reference, path) = check_args(repo, reference, path).map_err(|e| e.into_rhai(&f))?;
    let args = json!({"repo": repo, "ref": reference, "path": path});
    session.read(&f, args, async move {
        read_tree(&repo, &reference, &path).await
    })
}

/// Arguments a git command line can take safely: a ref or path starting with `-` would be read
/// as an option.
fn check_args(
    repo: &str,
    reference: &str,
    path: &str,
) -> Result<(String, String, String), HostError> {
    if repo.trim().is_empty() {
        return Err(HostError::Invalid(
            "repo is empty: give the path of a git repository".into(),
        ));
    }
    if reference.trim().is_empty() || reference.starts_with('-') {
        return Err(HostError::Invalid(format!(
            "'{reference}' is not a ref: give a tag, branch or commit id"
        )));
    }
    let path = path.trim_matches('/');
    if path.starts_with('-') || path.split('/').any(|part| part == "..") {
        return Err(HostError::Invalid(format!(
            "'{path}' is not a path inside the repository: give it from the repository's root, without '..'"
        )));
    }
    Ok((repo.to_string(), reference.to_string(), path.to_string()))
}

async fn git(repo: &str, args: &[&str]) -> Result<std::process::Output, HostError> {
    tokio::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stdin(std::process::Stdio::null())
        // Never prompt, never read the operator's pager or the repository's hooks.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PAGER", "cat")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            HostError::Failed(if e.kind() == std::io::ErrorKind::NotFound {
                "the git binary was not found: install git (apt-get install git) or put it on PATH"
                    .into()
            } else {
                format!("cannot run git: {e}")
            })
        })
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .trim()
        .replace('\n', " | ")
}

pub async fn read_tree(repo: &str, reference: &str, path: &str) -> Result<Tree, HostError> {
    if !Path::new(repo).is_dir() {
        return Err(HostError::Invalid(format!(
            "the repository {repo} does not exist or is not a directory"
        )));
    }
    let inside = git(repo, &["rev-parse", "--git-dir"]).await?;
    if !inside.status.success() {
        return Err(HostError::Invalid(format!(
            "{repo} is not a git repository ({})",
            stderr_of(&inside)
        )));
    }
    let commit = resolve(repo, reference).await?;
    let mut ls_args = vec!["ls-tree", "-r", "-z", "--full-tree", commit.as_str()];
    if !path.is_empty() {
        ls_args.extend(["--", path]);
    }
    let listing = git(repo, &ls_args).await?;
    if !listing.status.success() {
        return Err(HostError::Failed(format!(
            "cannot list {path} at {reference} in {repo}: {}",
            stderr_of(&listing)
        )));
    }
    let entries = parse_ls_tree(&listing.stdout);
    if entries.is_empty() {
        return Err(HostError::Failed(format!(
            "no files under '{path}' at {reference} (commit {}) in {repo}; see what the commit holds with `git -C {repo} ls-tree -r --name-only {reference}`",
            short(&commit)
        )));
    }
    let mut files = Vec::with_capacity(entries.len());
    let mut total = 0u64;
    for (object, file_path) in entries {
        let blob = git(repo, &["cat-file", "blob", &object]).await?;
        if !blob.status.success() {
            return Err(HostError::Failed(format!(
                "cannot read {file_path} at {reference} in {repo}: {}",
                stderr_of(&blob)
            )));
        }
        total += blob.stdout.len() as u64;
        if total > MAX_TOTAL_BYTES {
            return Err(HostError::Invalid(format!(
                "'{path}' at {reference} holds more than {} MiB: give the directory of the configuration only",
                MAX_TOTAL_BYTES / 1024 / 1024
            )));
        }
        let content = String::from_utf8(blob.stdout).map_err(|_| {
            HostError::Invalid(format!(
                "{file_path} at {reference} is not UTF-8 text: give a path that holds text files only"
            ))
        })?;
        // The result is journaled: Secret values committed to the repository must not be.
        crate::host::k8s::manifests::register_secret_values(&file_path, &content);
        files.push(TreeFile {
            name: file_path
                .rsplit('/')
                .next()
                .unwrap_or(&file_path)
                .to_string(),
            bytes: content.len() as u64,
            path: file_path,
            content,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Tree {
        repo: repo.to_string(),
        reference: reference.to_string(),
        commit,
        path: path.to_string(),
        files,
    })
}

/// The commit `reference` names, or an error naming the ref and how to list the real ones.
async fn resolve(repo: &str, reference: &str) -> Result<String, HostError> {
    let spec = format!("{reference}^{{commit}}");
    let out = git(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ],
    )
    .await?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || commit.is_empty() {
        return Err(HostError::Failed(format!(
            "the ref '{reference}' does not exist in {repo}; list the tags with `git -C {repo} tag --list` and the branches with `git -C {repo} branch --all` (run `git -C {repo} fetch --tags` first if it is a clone)"
        )));
    }
    Ok(commit)
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// `(object id, path)` of every blob in `git ls-tree -r -z` output; submodules (commits) and
/// anything else that is not a file are left out.
fn parse_ls_tree(output: &[u8]) -> Vec<(String, String)> {
    output
        .split(|b| *b == 0)
        .filter_map(|record| {
            let text = std::str::from_utf8(record).ok()?;
            let (meta, path) = text.split_once('\t')?;
            let mut parts = meta.split(' ');
            let (_mode, kind, object) = (parts.next()?, parts.next()?, parts.next()?);
            (kind == "blob").then(|| (object.to_string(), path.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_tree_output_keeps_blobs_only() {
        let out = b"100644 blob aaa\tk8s/app.yaml\x00160000 commit bbb\tvendor/lib\x00100755 blob ccc\tk8s/a b.json\x00";
        assert_eq!(
            parse_ls_tree(out),
            vec![
                ("aaa".to_string(), "k8s/app.yaml".to_string()),
                ("ccc".to_string(), "k8s/a b.json".to_string())
            ]
        );
    }

    #[test]
    fn option_like_refs_and_escaping_paths_are_refused() {
        assert!(check_args("/r", "--output=/x", "k8s").is_err());
        assert!(check_args("/r", "v1", "../etc").is_err());
        assert!(check_args("", "v1", "k8s").is_err());
        let (_, _, path) = check_args("/r", "v1", "/k8s/production/").unwrap();
        assert_eq!(path, "k8s/production");
    }
}
