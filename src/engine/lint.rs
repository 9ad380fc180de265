//! `rollback check`: compile every procedure and module and find what would only fail at run
//! time otherwise: unknown functions, unknown modules, functions missing from a module.

use crate::engine::ScriptEngine;
use crate::engine::catalog::{Catalog, Source};
use crate::engine::params::parse_header;
use crate::engine::suggest::did_you_mean;
use rhai::{AST, ASTNode, Dynamic, Expr, FnAccess, Position, Scope, Stmt};
use std::collections::{BTreeSet, HashMap};

/// Functions the parser handles itself; they never appear among registered signatures.
const LANGUAGE_FUNCTIONS: &[&str] = &[
    "Fn",
    "call",
    "curry",
    "type_of",
    "print",
    "debug",
    "is_def_var",
    "is_def_fn",
    "is_shared",
];

pub struct Problem {
    pub message: String,
}

/// Everything wrong with one script; empty means it passed.
pub struct Checker<'a> {
    engine: &'a ScriptEngine,
    catalog: &'a Catalog,
    global: BTreeSet<String>,
    module_exports: HashMap<String, Option<BTreeSet<String>>>,
}

impl<'a> Checker<'a> {
    pub fn new(engine: &'a ScriptEngine, catalog: &'a Catalog) -> Self {
        let mut global: BTreeSet<String> = engine
            .engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|sig| sig.split('(').next())
            .map(|name| name.trim().to_string())
            .collect();
        global.extend(LANGUAGE_FUNCTIONS.iter().map(|s| s.to_string()));
        Checker {
            engine,
            catalog,
            global,
            module_exports: HashMap::new(),
        }
    }

    /// Checks a procedure (with its parameter header) or a stdlib module.
    pub fn check(&mut self, source: &Source, is_module: bool) -> Vec<Problem> {
        let mut scope = Scope::new();
        if !is_module {
            match parse_header(source) {
                Ok(header) => {
                    for param in header.params {
                        scope.push_constant(param.name, Dynamic::UNIT);
                    }
                }
                Err(e) => return vec![Problem { message: e.message }],
            }
        }
        let ast = match self.engine.compile(source, &scope) {
            Ok(ast) => ast,
            Err(e) => return vec![Problem { message: e.message }],
        };
        self.check_calls(source, &ast)
    }

    fn check_calls(&mut self, source: &Source, ast: &AST) -> Vec<Problem> {
        let script_fns: BTreeSet<String> =
            ast.iter_functions().map(|f| f.name.to_string()).collect();
        let mut imports: Vec<(String, String, Position)> = Vec::new();
        let mut variables: BTreeSet<String> = BTreeSet::new();
        let mut calls: Vec<(String, String, Position)> = Vec::new();
        ast.walk(&mut |path: &[ASTNode]| {
            match path.last() {
                Some(ASTNode::Stmt(Stmt::Import(x, pos))) => {
                    if let Expr::StringConstant(name, _) = &x.0 {
                        imports.push((name.to_string(), x.1.name.to_string(), *pos));
                    }
                }
                Some(ASTNode::Stmt(Stmt::Var(x, ..))) => {
                    variables.insert(x.0.name.to_string());
                }
                Some(ASTNode::Expr(Expr::FnCall(call, pos)))
                | Some(ASTNode::Stmt(Stmt::FnCall(call, pos)))
                    if !call.is_operator_call() =>
                {
                    calls.push((call.namespace.to_string(), call.name.to_string(), *pos));
                }
                _ => {}
            }
            true
        });
        for f in ast.iter_functions() {
            variables.extend(f.params.iter().map(|p| p.to_string()));
        }

        let mut problems = Vec::new();
        let mut aliases: HashMap<String, String> = HashMap::new();
        for (module, alias, pos) in imports {
            if self.exports(&module).is_none() {
                let names = self.catalog.module_names();
                let hint = did_you_mean(&module, names.iter().map(String::as_str))
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_else(|| format!("; stdlib modules: {}", names.join(", ")));
                problems.push(problem(
                    source,
                    pos,
                    format!("unknown module \"{module}\"{hint}"),
                ));
            }
            aliases.insert(alias, module);
        }
        for (namespace, name, pos) in calls {
            if namespace.is_empty() {
                if self.global.contains(&name)
                    || script_fns.contains(&name)
                    || variables.contains(&name)
                {
                    continue;
                }
                let hint = did_you_mean(&name, self.global.iter().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                problems.push(problem(
                    source,
                    pos,
                    format!("unknown function `{name}`{hint}"),
                ));
            } else if let Some(module) = aliases.get(&namespace) {
                let Some(Some(exports)) = self.module_exports.get(module) else {
                    continue;
                };
                if !exports.contains(&name) {
                    let hint = did_you_mean(&name, exports.iter().map(String::as_str))
                        .map(|s| format!("; did you mean `{namespace}::{s}`?"))
                        .unwrap_or_default();
                    problems.push(problem(
                        source,
                        pos,
                        format!("module \"{module}\" has no function `{name}`{hint}"),
                    ));
                }
            } else {
                let qualified = format!("{namespace}::{name}");
                if self.global.contains(&qualified) {
                    continue;
                }
                let is_module = self
                    .global
                    .iter()
                    .any(|g| g.starts_with(&format!("{namespace}::")));
                let message = if is_module {
                    let hint = did_you_mean(&qualified, self.global.iter().map(String::as_str))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    format!("unknown function `{qualified}`{hint}")
                } else {
                    format!(
                        "unknown module `{namespace}`: import it first (`import \"{namespace}\" as {namespace};`) or use a host module such as `prom::`"
                    )
                };
                problems.push(problem(source, pos, message));
            }
        }
        problems
    }

    /// Public functions of a stdlib module, compiled once; `None` when it does not exist or
    /// does not compile (its own check reports why).
    fn exports(&mut self, module: &str) -> Option<&BTreeSet<String>> {
        if !self.module_exports.contains_key(module) {
            let exports = self
                .catalog
                .module(module)
                .ok()
                .flatten()
                .and_then(|source| {
                    let ast = self.engine.compile(&source, &Scope::new()).ok()?;
                    Some(
                        ast.iter_functions()
                            .filter(|f| f.access == FnAccess::Public)
                            .map(|f| f.name.to_string())
                            .collect(),
                    )
                });
            self.module_exports.insert(module.to_string(), exports);
        }
        self.module_exports.get(module).and_then(Option::as_ref)
    }
}

fn problem(source: &Source, pos: Position, message: String) -> Problem {
    let at = match pos.line() {
        Some(line) => format!("{}:{line}:{}", source.display, pos.position().unwrap_or(1)),
        None => source.display.clone(),
    };
    Problem {
        message: format!("{message}\n  --> {at}"),
    }
}
