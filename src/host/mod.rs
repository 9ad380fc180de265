//! Host functions: one file per external system, each with `register(&mut Registrar, session)`.
//!
//! `Registrar` is the single place where a function is made visible to scripts: it registers
//! it volatile (the optimizer must never call it at compile time) and records its docs, which
//! `rollback docs`, the REPL's `:help`, `rollback check` and the docs tests read.

pub mod changelog;
pub mod core;
pub mod docs;
pub mod git;
pub mod helm;
pub mod http;
pub mod k8s;
pub mod notify;
pub mod options;
pub mod outcome;
pub mod pg;
pub mod prom;
pub mod redis;
pub mod registry;
pub mod rehearsal;
pub mod runs;
pub mod slots;

use crate::session::{Session, Stop};
use rhai::{
    Dynamic, Engine, EvalAltResult, FuncRegistration, Module, Position, RhaiNativeFunc, Variant,
};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// How a host call went wrong.
#[derive(Debug, Clone)]
pub enum HostError {
    /// The script passed something unusable (exit 2 if uncaught).
    Invalid(String),
    /// The operation was attempted and failed (exit 1 if uncaught).
    Failed(String),
    /// Ctrl-C or the time budget; scripts cannot catch it.
    Stopped(Stop),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Invalid(m) | HostError::Failed(m) => f.write_str(m),
            HostError::Stopped(stop) => f.write_str(stop.describe()),
        }
    }
}

pub const ERROR_KIND_INVALID: &str = "invalid_argument";
pub const ERROR_KIND_FAILED: &str = "failed";

impl HostError {
    /// Scripts see a map they can `catch`: `#{ kind, function, message }`.
    pub fn into_rhai(self, function: &str) -> Box<EvalAltResult> {
        let kind = match &self {
            HostError::Invalid(_) => ERROR_KIND_INVALID,
            HostError::Failed(_) => ERROR_KIND_FAILED,
            HostError::Stopped(stop) => return crate::session::terminated(*stop),
        };
        let mut map = rhai::Map::new();
        map.insert("kind".into(), kind.into());
        map.insert("function".into(), function.into());
        map.insert(
            "message".into(),
            crate::redact::scrub(&self.to_string()).into(),
        );
        Box::new(EvalAltResult::ErrorRuntime(map.into(), Position::NONE))
    }
}

/// An error and its causes on one line; the innermost cause is what an operator acts on.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Whether a call changes the world (and so is only planned in dry-run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Read,
    Mutate,
}

/// The docs of one host function.
#[derive(Debug, Clone)]
pub struct FnDoc {
    /// `None` for top-level functions, else the module (`k8s`, `prom`, …).
    pub module: Option<&'static str>,
    pub name: &'static str,
    /// Parameters and result as shown to people: `(url: string, opts?: map) -> map`.
    pub signature: &'static str,
    /// One sentence, ending with a period.
    pub summary: &'static str,
    /// A Rhai snippet using the function; it must compile.
    pub example: &'static str,
    pub effect: Effect,
}

impl FnDoc {
    pub fn qualified_name(&self) -> String {
        match self.module {
            Some(m) => format!("{m}::{}", self.name),
            None => self.name.to_string(),
        }
    }

    pub fn signature_line(&self) -> String {
        format!("{}{}", self.qualified_name(), self.signature)
    }
}

/// Collects host functions into the engine's global namespace or into static modules.
pub struct Registrar<'e> {
    engine: &'e mut Engine,
    modules: BTreeMap<&'static str, Module>,
    docs: Vec<FnDoc>,
}

impl<'e> Registrar<'e> {
    pub fn new(engine: &'e mut Engine) -> Self {
        Registrar {
            engine,
            modules: BTreeMap::new(),
            docs: Vec::new(),
        }
    }

    /// Registers `func` under `doc`'s name; call again with the same doc for each overload.
    pub fn func<A: 'static, const N: usize, const X: bool, R, const F: bool, FUNC>(
        &mut self,
        doc: &FnDoc,
        func: FUNC,
    ) where
        R: Variant + Clone,
        FUNC: RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
    {
        let registration = FuncRegistration::new(doc.name)
            .with_volatility(true)
            .with_comments([format!("/// {}", doc.summary)]);
        match doc.module {
            Some(module) => {
                let module = self.modules.entry(module).or_default();
                registration.set_into_module(module, func);
            }
            None => {
                registration.register_into_engine(self.engine, func);
            }
        }
        if !self
            .docs
            .iter()
            .any(|d| d.module == doc.module && d.name == doc.name)
        {
            self.docs.push(doc.clone());
        }
    }

    /// Installs the static modules and returns every function's docs, sorted by name.
    pub fn finish(self) -> Vec<FnDoc> {
        for (name, module) in self.modules {
            self.engine.register_static_module(name, module.into());
        }
        let mut docs = self.docs;
        docs.sort_by_key(FnDoc::qualified_name);
        docs
    }
}

/// Every outcome of a batch (one per name, in order), or one error naming each failure: a batch
/// function reports all of its failures at once, not only the first.
pub(crate) fn all_or_failed<T, E: std::fmt::Display>(
    names: &[String],
    outcomes: Vec<Result<T, E>>,
    what_failed: &str,
) -> Result<Vec<T>, HostError> {
    let failed: Vec<String> = names
        .iter()
        .zip(&outcomes)
        .filter_map(|(n, o)| o.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    if !failed.is_empty() {
        return Err(HostError::Failed(format!(
            "{} of {} {what_failed} — {}",
            failed.len(),
            names.len(),
            failed.join(" — ")
        )));
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// Every host module, wired in one list.
pub fn register_all(registrar: &mut Registrar, session: &Arc<Session>) {
    core::register(registrar, session);
    http::register(registrar, session);
    prom::register(registrar, session);
    notify::register(registrar, session);
    k8s::register(registrar, session);
    slots::register(registrar, session);
    rehearsal::register(registrar, session);
    helm::register(registrar, session);
    pg::register(registrar, session);
    registry::register(registrar, session);
    redis::register(registrar, session);
    git::register(registrar, session);
    outcome::register(registrar, session);
    runs::register(registrar, session);
}

/// Converts a script value into JSON for the journal (maps, arrays, scalars).
pub fn dynamic_to_json(value: &Dynamic) -> serde_json::Value {
    rhai::serde::from_dynamic(value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()))
}

#[cfg(test)]
mod tests {
    use crate::engine::ScriptEngine;
    use crate::engine::catalog::{Catalog, Source};
    use crate::engine::lint::Checker;
    use std::collections::BTreeSet;

    fn engine() -> (ScriptEngine, Catalog) {
        let catalog = Catalog::default();
        let session = crate::cli::offline_session(&Default::default(), &catalog).unwrap();
        (ScriptEngine::new(&session, &catalog), catalog)
    }

    #[test]
    fn every_host_function_is_documented() {
        let (engine, _) = engine();
        let documented: BTreeSet<String> = engine.docs.iter().map(|d| d.qualified_name()).collect();
        let registered: BTreeSet<String> = engine
            .engine
            .gen_fn_signatures(false)
            .iter()
            .filter_map(|sig| sig.split('(').next().map(|n| n.trim().to_string()))
            .collect();
        let missing: Vec<&String> = registered.difference(&documented).collect();
        assert!(missing.is_empty(), "registered without docs: {missing:?}");
        assert!(
            documented.len() >= 10,
            "only {} functions documented",
            documented.len()
        );
    }

    #[test]
    fn every_doc_has_a_sentence_a_signature_and_a_checked_example() {
        let (engine, catalog) = engine();
        let mut checker = Checker::new(&engine, &catalog);
        for doc in engine.docs.iter() {
            let name = doc.qualified_name();
            assert!(
                doc.summary.ends_with('.'),
                "{name}: summary must be a sentence ending with a period"
            );
            assert!(doc.summary.len() > 20, "{name}: summary too short");
            assert!(
                doc.signature.starts_with('('),
                "{name}: signature must start with its parameters"
            );
            assert!(
                doc.example.contains(doc.name),
                "{name}: the example must call the function"
            );
            let problems = checker.check(
                &Source {
                    display: format!("example of {name}"),
                    text: doc.example.to_string(),
                },
                true,
            );
            let messages: Vec<String> = problems.into_iter().map(|p| p.message).collect();
            assert!(
                messages.is_empty(),
                "{name}: example does not check: {messages:?}"
            );
        }
    }
}
