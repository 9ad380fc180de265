//! Resolves `import "name" as name;` to a stdlib module: the file in `--stdlib` if there is
//! one, else the embedded copy. Each module is compiled and evaluated once per engine.

use crate::engine::catalog::Catalog;
use crate::engine::sources::Sources;
use rhai::{Engine, EvalAltResult, Module, Position, Scope, Shared};

type SharedModule = Shared<Module>;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct StdlibResolver {
    catalog: Catalog,
    sources: Sources,
    cache: Mutex<HashMap<String, SharedModule>>,
}

impl StdlibResolver {
    pub fn new(catalog: Catalog, sources: Sources) -> Self {
        StdlibResolver {
            catalog,
            sources,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl rhai::ModuleResolver for StdlibResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        if let Some(module) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Ok(module.clone());
        }
        let source = self
            .catalog
            .module(path)
            .map_err(|e| {
                Box::new(EvalAltResult::ErrorInModule(
                    path.to_string(),
                    Box::new(EvalAltResult::ErrorRuntime(e.message.into(), pos)),
                    pos,
                ))
            })?
            .ok_or_else(|| Box::new(EvalAltResult::ErrorModuleNotFound(path.to_string(), pos)))?;
        self.sources.insert(&source.display, &source.text);
        let mut ast = engine.compile(&source.text).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                source.display.clone(),
                e.into(),
                pos,
            ))
        })?;
        ast.set_source(source.display.as_str());
        let module: SharedModule = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(source.display.clone(), e, pos)))?
            .into();
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_string(), module.clone());
        Ok(module)
    }
}
