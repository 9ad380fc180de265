//! The REPL's state between lines: one scope, the functions and modules defined so far, and
//! the text of everything run, so an error in a function defined twenty lines ago still shows
//! its own source line.

use super::commands;
use crate::console;
use crate::engine::ScriptEngine;
use crate::engine::catalog::Catalog;
use crate::error::{Error, Kind, Result};
use crate::journal::{Entry, Outcome};
use crate::session::{Session, Stop};
use rhai::{AST, Dynamic, Expr, Scope, Stmt};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Instant;

/// The source name of everything typed or loaded in the REPL.
pub const SOURCE: &str = "<repl>";

/// Collections up to this wide print on one line; wider ones one field per line.
const COMPACT_WIDTH: usize = 72;

/// What the read loop does after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

pub struct Shell {
    pub engine: ScriptEngine,
    pub session: Arc<Session>,
    pub catalog: Catalog,
    scope: Scope<'static>,
    /// Every function defined so far; each line runs merged with it.
    functions: AST,
    /// Aliases of the modules imported so far, kept for the following lines.
    modules: Vec<String>,
    /// All code run so far, one line per line: the `<repl>` source errors point into.
    transcript: String,
    transcript_lines: usize,
}

impl Shell {
    pub fn new(engine: ScriptEngine, session: Arc<Session>, catalog: Catalog) -> Self {
        Shell {
            engine,
            session,
            catalog,
            scope: Scope::new(),
            functions: AST::empty(),
            modules: Vec::new(),
            transcript: String::new(),
            transcript_lines: 0,
        }
    }

    pub fn prompt(&self) -> String {
        let mode = if self.session.dry_run() {
            " dry-run"
        } else {
            ""
        };
        format!("rollback[{}{mode}]> ", self.session.environment())
    }

    /// As wide as the prompt, so continued lines stay aligned.
    pub fn continuation_prompt(&self) -> String {
        let width = self.prompt().chars().count().saturating_sub(2);
        format!("{:>width$}> ", "...")
    }

    pub fn is_incomplete(&self, text: &str) -> bool {
        commands::parse(text).is_none()
            && super::input::is_incomplete(&self.engine.engine, &self.scope, text)
    }

    /// Variables, functions and module prefixes the session defined, for completion.
    pub fn defined_names(&self) -> Vec<String> {
        let variables = self.scope.iter_raw().map(|(name, ..)| name.to_string());
        let functions = self.functions.iter_functions().map(|f| f.name.to_string());
        let modules = self.modules.iter().map(|m| format!("{m}::"));
        variables.chain(functions).chain(modules).collect()
    }

    /// Runs one input (code or a `:command`), prints its result or error, and journals it.
    pub fn handle(&mut self, input: &str) -> Flow {
        let started = Instant::now();
        let dry_run = self.session.dry_run();
        let mut args = Map::new();
        args.insert("line".into(), Value::String(input.to_string()));
        let (flow, result) = match commands::parse(input) {
            Some(Ok(command)) => match commands::execute(self, command, &mut args) {
                Ok(flow) => (flow, Ok(())),
                Err(e) => (Flow::Continue, Err(e)),
            },
            Some(Err(e)) => (Flow::Continue, Err(e)),
            None => (
                Flow::Continue,
                self.eval(input).map(|value| self.show(&value)),
            ),
        };
        let outcome = match &result {
            Ok(()) => Outcome::ok(Value::Null),
            Err(e) => {
                console::error(&e.message);
                let status = if e.kind == Kind::Aborted {
                    "cancelled"
                } else {
                    "error"
                };
                Outcome::status(status, Value::Null, Some(e.message.clone()))
            }
        };
        let entry = Entry {
            step: None,
            function: "repl".into(),
            args: Value::Object(args),
            outcome,
            duration_ms: started.elapsed().as_millis() as u64,
            dry_run,
            mutating: false,
        };
        if let Err(e) = self.session.append(entry) {
            console::error(&format!(
                "{}\nthis line is missing from the journal",
                e.message
            ));
        }
        flow
    }

    /// The transcript lines `text` will occupy when it runs next: (first, last).
    pub fn next_lines(&self, text: &str) -> (usize, usize) {
        let first = self.transcript_lines + 1;
        (first, first + text.trim_end().matches('\n').count())
    }

    /// Compiles and runs code in the persistent scope; functions it defines stay defined,
    /// its statements run once.
    pub fn eval(&mut self, text: &str) -> Result<Dynamic> {
        // Blank lines in front put the text at its transcript position, so every position
        // Rhai reports (now, or later from a function defined here) is a transcript line.
        let placed = format!("{}{text}", "\n".repeat(self.transcript_lines));
        self.transcript.push_str(text);
        self.transcript.push('\n');
        self.transcript_lines += text.matches('\n').count() + 1;
        self.engine.sources.insert(SOURCE, &self.transcript);

        let mut ast = self
            .engine
            .engine
            .compile_with_scope(&self.scope, &placed)
            .map_err(|e| self.render(&e.into()))?;
        ast.set_source(SOURCE);
        let program = self.functions.merge(&ast);
        let result = self
            .engine
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &program);
        self.functions = program.clone_functions_only();
        self.keep_imports(&ast);
        result.map_err(|e| self.render(&e))
    }

    fn render(&self, err: &rhai::EvalAltResult) -> Error {
        let mut e = self.engine.render(err, SOURCE);
        // The renderer speaks of runs; here only the line stopped and the session goes on.
        if e.kind == Kind::Aborted
            && let Some(rest) = e.message.strip_prefix("run stopped:")
        {
            e.message = format!("line stopped:{rest}");
            if self.session.should_stop() == Some(Stop::OutOfTime) {
                e.message.push_str(
                    "\n   = note: the session's --timeout budget is spent: every line now stops at once; :quit writes the report",
                );
            }
        }
        e
    }

    /// Prints a value the way the operator reads it: collections as JSON, others as Rhai
    /// literals; nothing for `()`.
    pub fn show(&self, value: &Dynamic) {
        if value.is_unit() {
            return;
        }
        let text = if value.is_map() || value.is_array() {
            let json = crate::host::dynamic_to_json(value);
            let compact = json.to_string();
            if compact.chars().count() <= COMPACT_WIDTH {
                compact
            } else {
                serde_json::to_string_pretty(&json).unwrap_or(compact)
            }
        } else {
            format!("{value:?}")
        };
        console::out(&format!("=> {text}"));
    }

    /// An `import` lasts for one evaluation in Rhai; the REPL keeps the module under its alias
    /// for the following lines, as the operator expects of a session.
    fn keep_imports(&mut self, ast: &AST) {
        for stmt in ast.statements() {
            let Stmt::Import(import, pos) = stmt else {
                continue;
            };
            let (Expr::StringConstant(path, _), alias) = import.as_ref() else {
                continue;
            };
            let alias = alias.name.as_str();
            if alias.is_empty() {
                continue;
            }
            if self.engine.docs.iter().any(|d| d.module == Some(alias)) {
                console::warn(&format!(
                    "`{alias}` is a host module: this import lasted for its line only; import it under another name"
                ));
                continue;
            }
            let engine = &self.engine.engine;
            // A failed import already failed its line, with the reason; nothing to keep.
            if let Ok(module) = engine.module_resolver().resolve(engine, None, path, *pos) {
                // Registering an alias again replaces its module, as a new import would.
                self.engine.engine.register_static_module(alias, module);
                if !self.modules.iter().any(|m| m == alias) {
                    self.modules.push(alias.to_string());
                }
            }
        }
    }
}
