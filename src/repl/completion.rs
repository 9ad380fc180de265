//! Tab completion: host functions and module prefixes, REPL commands, environments, and the
//! variables, functions and modules defined so far in the session.

use super::commands::COMMANDS;
use crate::host::FnDoc;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

pub struct ReplHelper {
    functions: Vec<String>,
    modules: Vec<String>,
    environments: Vec<String>,
    /// Names the session defined: variables, script functions, imported modules.
    defined: Vec<String>,
    files: FilenameCompleter,
}

impl ReplHelper {
    pub fn new(docs: &[FnDoc], environments: Vec<String>) -> Self {
        let functions = docs.iter().map(FnDoc::qualified_name).collect();
        let mut modules: Vec<String> = docs
            .iter()
            .filter_map(|d| d.module.map(|m| format!("{m}::")))
            .collect();
        modules.sort();
        modules.dedup();
        ReplHelper {
            functions,
            modules,
            environments,
            defined: Vec::new(),
            files: FilenameCompleter::new(),
        }
    }

    /// Replaces the session's own names after a line ran.
    pub fn set_defined(&mut self, names: Vec<String>) {
        self.defined = names;
    }

    /// Where the word being completed starts in `before` (the text left of the cursor), and
    /// its candidates.
    pub fn candidates(&self, before: &str) -> (usize, Vec<String>) {
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == ':'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &before[start..];
        let context = before[..start].trim_start();
        let pools: Vec<&[String]> = if context.is_empty() && word.starts_with(':') {
            return (
                start,
                matching(word, COMMANDS.iter().map(|c| c.to_string())),
            );
        } else if let Some(command) = context.strip_prefix(':') {
            match command.split_whitespace().next() {
                Some("help") => vec![&self.functions, &self.modules],
                Some("env") => vec![&self.environments],
                Some("dry-run") => {
                    return (start, matching(word, ["on".into(), "off".into()]));
                }
                _ => Vec::new(),
            }
        } else {
            vec![&self.functions, &self.modules, &self.defined]
        };
        let all = pools.into_iter().flatten().cloned();
        (start, matching(word, all))
    }
}

fn matching(word: &str, names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut found: Vec<String> = names.into_iter().filter(|n| n.starts_with(word)).collect();
    found.sort();
    found.dedup();
    found
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if before.trim_start().starts_with(":load ") {
            return self.files.complete(line, pos, ctx);
        }
        let (start, names) = self.candidates(before);
        let pairs = names
            .into_iter()
            .map(|n| Pair {
                display: n.clone(),
                replacement: n,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {}

impl Validator for ReplHelper {}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Effect;

    const DOCS: [FnDoc; 3] = [
        doc(None, "health_check"),
        doc(None, "health_check_all"),
        doc(Some("prom"), "query"),
    ];

    const fn doc(module: Option<&'static str>, name: &'static str) -> FnDoc {
        FnDoc {
            module,
            name,
            signature: "()",
            summary: "Does it.",
            example: "",
            effect: Effect::Read,
        }
    }

    fn helper() -> ReplHelper {
        let mut h = ReplHelper::new(&DOCS, vec!["production".into(), "staging".into()]);
        h.set_defined(vec!["health_url".into(), "replicas".into()]);
        h
    }

    #[test]
    fn completes_host_functions_modules_and_session_names() {
        let h = helper();
        assert_eq!(
            h.candidates("let r = health_"),
            (
                8,
                vec![
                    "health_check".to_string(),
                    "health_check_all".into(),
                    "health_url".into()
                ]
            )
        );
        assert_eq!(h.candidates("pr").1, vec!["prom::", "prom::query"]);
        assert_eq!(h.candidates("x + prom::q").1, vec!["prom::query"]);
        assert_eq!(h.candidates("rep").1, vec!["replicas"]);
    }

    #[test]
    fn completes_commands_and_their_arguments() {
        let h = helper();
        assert_eq!(h.candidates(":d").1, vec![":dry-run"]);
        assert_eq!(h.candidates(":dry-run o").1, vec!["off", "on"]);
        assert_eq!(h.candidates(":env st"), (5, vec!["staging".to_string()]));
        assert_eq!(h.candidates(":help prom").1, vec!["prom::", "prom::query"]);
        assert!(h.candidates(":help rep").1.is_empty());
    }
}
