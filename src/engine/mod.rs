//! The Rhai engine: safety limits, the stdlib resolver, host functions, compilation and the
//! hooks that stop a script on Ctrl-C or when its time budget runs out.

pub mod catalog;
pub mod lint;
pub mod params;
pub mod render;
pub mod resolver;
pub mod sources;
pub mod suggest;

use crate::error::Error;
use crate::host::{self, FnDoc, Registrar};
use crate::session::Session;
use catalog::{Catalog, Source};
use rhai::{AST, Engine, Scope};
use sources::Sources;
use std::sync::Arc;

/// Limits sized for procedures, not for general computation: generous enough for loops over a
/// few hundred services, tight enough that a runaway script stops instead of hanging a pager.
pub const MAX_OPERATIONS: u64 = 5_000_000;
pub const MAX_CALL_LEVELS: usize = 64;
pub const MAX_EXPR_DEPTH: usize = 64;
pub const MAX_FN_EXPR_DEPTH: usize = 32;
pub const MAX_STRING_SIZE: usize = 4 * 1024 * 1024;
pub const MAX_ARRAY_SIZE: usize = 100_000;
pub const MAX_MAP_SIZE: usize = 10_000;
pub const MAX_MODULES: usize = 64;

pub struct ScriptEngine {
    pub engine: Engine,
    pub docs: Arc<Vec<FnDoc>>,
    pub sources: Sources,
}

/// A bare engine with the limits and language rules, but no host functions.
fn configured_engine() -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FN_EXPR_DEPTH)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_ARRAY_SIZE)
        .set_max_map_size(MAX_MAP_SIZE)
        .set_max_modules(MAX_MODULES)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(true);
    // `eval` would let a procedure run text it built at run time, past `rollback check`.
    engine.disable_symbol("eval");
    engine
}

impl ScriptEngine {
    pub fn new(session: &Arc<Session>, catalog: &Catalog) -> ScriptEngine {
        let mut engine = configured_engine();
        let sources = Sources::default();
        engine.set_module_resolver(resolver::StdlibResolver::new(
            catalog.clone(),
            sources.clone(),
        ));
        let progress = session.clone();
        engine.on_progress(move |_| progress.should_stop().map(|stop| stop.describe().into()));
        engine.on_print(crate::console::out);
        engine.on_debug(|text, source, pos| {
            let at = match (source, pos.line()) {
                (Some(src), Some(line)) => format!("{src}:{line}: "),
                _ => String::new(),
            };
            crate::console::debug(&format!("{at}{text}"));
        });
        let mut registrar = Registrar::new(&mut engine);
        host::register_all(&mut registrar, session);
        let docs = Arc::new(registrar.finish());
        ScriptEngine {
            engine,
            docs,
            sources,
        }
    }

    /// Compiles a script with `scope` as its known variables (strict mode checks them).
    pub fn compile(&self, source: &Source, scope: &Scope) -> Result<AST, Error> {
        self.sources.insert(&source.display, &source.text);
        let mut ast = self
            .engine
            .compile_with_scope(scope, &source.text)
            .map_err(|e| self.render(&e.into(), &source.display))?;
        ast.set_source(source.display.as_str());
        Ok(ast)
    }

    pub fn render(&self, err: &rhai::EvalAltResult, main_source: &str) -> Error {
        render::render(err, main_source, &self.sources, &self.docs)
    }
}
