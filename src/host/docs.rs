//! `rollback docs` and the REPL's `:help`: text made from the registered functions' metadata.

use super::FnDoc;
use crate::error::{Error, Result};

/// All functions grouped by module, one function in full, or one module's functions.
pub fn render(docs: &[FnDoc], name: Option<&str>) -> Result<String> {
    let Some(name) = name else {
        let mut out = String::new();
        let mut module: Option<Option<&str>> = None;
        for doc in docs {
            if module != Some(doc.module) {
                module = Some(doc.module);
                let heading = doc
                    .module
                    .map(|m| format!("{m}::"))
                    .unwrap_or_else(|| "top level".into());
                out.push_str(&format!("\n{heading}\n"));
            }
            out.push_str(&format!("  {:<28} {}\n", doc.qualified_name(), doc.summary));
        }
        out.push_str("\n`rollback docs NAME` shows a function's signature and example.");
        return Ok(out.trim_start().to_string());
    };
    if let Some(doc) = docs.iter().find(|d| d.qualified_name() == name) {
        return Ok(full(doc));
    }
    let module = name.trim_end_matches("::");
    let in_module: Vec<String> = docs
        .iter()
        .filter(|d| d.module == Some(module))
        .map(full)
        .collect();
    if !in_module.is_empty() {
        return Ok(in_module.join("\n\n"));
    }
    let names: Vec<String> = docs.iter().map(FnDoc::qualified_name).collect();
    let hint = crate::engine::suggest::did_you_mean(name, names.iter().map(String::as_str))
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    Err(Error::usage(format!(
        "no host function or module named `{name}`{hint}\n`rollback docs` lists them all"
    )))
}

/// One function: signature, summary, whether it changes anything, example.
pub fn full(doc: &FnDoc) -> String {
    let effect = match doc.effect {
        super::Effect::Read => "reads only; runs for real in a dry-run",
        super::Effect::Mutate => "changes things; only planned in a dry-run",
    };
    format!(
        "{}\n  {}\n  ({effect})\n  example: {}",
        doc.signature_line(),
        doc.summary,
        doc.example
    )
}
