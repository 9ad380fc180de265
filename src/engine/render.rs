//! Script errors rendered for people: what went wrong, where (file:line:column, the source
//! line and a caret), how the call got there, and a suggestion when one is likely.

use crate::engine::sources::Sources;
use crate::engine::suggest::did_you_mean;
use crate::error::{Error, Kind};
use crate::host::{ERROR_KIND_INVALID, FnDoc};
use regex::Regex;
use rhai::{EvalAltResult, Position};
use std::sync::LazyLock;

static POSITION_SUFFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s*\(line \d+, position \d+\)").expect("valid regex"));

/// Where an error happened.
struct Location {
    source: String,
    position: Position,
}

/// Renders any engine error into an `Error` whose kind decides the exit code.
pub fn render(err: &EvalAltResult, main_source: &str, sources: &Sources, docs: &[FnDoc]) -> Error {
    let mut frames: Vec<(String, Location)> = Vec::new();
    let mut source = main_source.to_string();
    let mut current = err;
    loop {
        match current {
            EvalAltResult::ErrorInFunctionCall(name, fn_source, inner, pos) => {
                frames.push((
                    format!("in call to '{name}'"),
                    Location {
                        source: source.clone(),
                        position: *pos,
                    },
                ));
                if !fn_source.is_empty() {
                    source = fn_source.clone();
                }
                current = inner;
            }
            EvalAltResult::ErrorInModule(name, inner, pos) => {
                frames.push((
                    format!("while loading module '{name}'"),
                    Location {
                        source: source.clone(),
                        position: *pos,
                    },
                ));
                source = name.clone();
                current = inner;
            }
            _ => break,
        }
    }
    let mut position = current.position();
    if position.is_none()
        && let Some(function) = host_function(current)
    {
        // Rhai leaves no position on errors from native functions called as statements; when
        // the call appears once in its source, that is where it happened.
        position = sources.unique_call(&source, &function).unwrap_or(position);
    }
    let location = Location { source, position };
    let (kind, headline, help) = describe(current, docs);
    let mut message = headline;
    message.push_str(&snippet(&location, sources));
    for (what, at) in frames.iter().rev() {
        if let Some(line) = at.position.line() {
            message.push_str(&format!(
                "\n   = note: {what} at {}:{line}:{}",
                at.source,
                at.position.position().unwrap_or(1)
            ));
        }
    }
    if let Some(help) = help {
        message.push_str(&format!("\n   = help: {help}"));
    }
    Error::new(kind, crate::redact::scrub(&message))
}

fn snippet(at: &Location, sources: &Sources) -> String {
    let Some(line) = at.position.line() else {
        return String::new();
    };
    let column = at.position.position().unwrap_or(1);
    let mut out = format!("\n  --> {}:{line}:{column}", at.source);
    if let Some(text) = sources.line(&at.source, line) {
        let gutter = " ".repeat(line.to_string().len());
        let caret_pad: String = text
            .chars()
            .take(column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!(
            "\n {gutter} |\n {line} | {text}\n {gutter} | {caret_pad}^"
        ));
    }
    out
}

fn describe(err: &EvalAltResult, docs: &[FnDoc]) -> (Kind, String, Option<String>) {
    match err {
        EvalAltResult::ErrorTerminated(reason, _) => (
            Kind::Aborted,
            format!("run stopped: {reason}"),
            Some("the journal and the report say which steps completed".into()),
        ),
        EvalAltResult::ErrorRuntime(value, _) => {
            if let Some(map) = value.read_lock::<rhai::Map>() {
                let get = |k: &str| map.get(k).map(|v| v.to_string()).unwrap_or_default();
                if map.contains_key("function") && map.contains_key("message") {
                    let kind = if get("kind") == ERROR_KIND_INVALID {
                        Kind::Usage
                    } else {
                        Kind::Failed
                    };
                    let help = (kind == Kind::Usage)
                        .then(|| doc_for(&get("function"), docs).map(usage_help))
                        .flatten();
                    return (kind, format!("`{}` failed: {}", get("function"), get("message")), help);
                }
            }
            (Kind::Failed, format!("the procedure failed: {value}"), None)
        }
        EvalAltResult::ErrorFunctionNotFound(signature, _) => {
            let name = signature.split(" (").next().unwrap_or(signature).trim();
            if let Some(doc) = doc_for(name, docs) {
                return (
                    Kind::Usage,
                    format!("wrong arguments for `{name}`: called as {}", signature.trim()),
                    Some(usage_help(doc)),
                );
            }
            let names: Vec<String> = docs.iter().map(FnDoc::qualified_name).collect();
            let help = did_you_mean(name, names.iter().map(String::as_str)).map(|s| {
                let doc = doc_for(s, docs).expect("suggested from docs");
                format!("did you mean `{}`?", doc.signature_line())
            });
            (
                Kind::Usage,
                format!("unknown function `{}`", signature.trim()),
                help.or_else(|| Some("`rollback docs` lists every host function".into())),
            )
        }
        EvalAltResult::ErrorParsing(rhai::ParseErrorType::ModuleUndefined(name), _) => (
            Kind::Usage,
            format!("unknown module `{name}`"),
            Some(format!(
                "host modules: {}; stdlib modules are imported first: `import \"{name}\" as {name};`",
                host_modules(docs).join(", ")
            )),
        ),
        EvalAltResult::ErrorModuleNotFound(name, _) => (
            Kind::Usage,
            format!("unknown module \"{name}\""),
            Some("stdlib modules are imported by name, e.g. `import \"health\" as health;`; `rollback docs --modules` lists them".into()),
        ),
        EvalAltResult::ErrorParsing(rhai::ParseErrorType::VariableUndefined(name), _)
        | EvalAltResult::ErrorVariableNotFound(name, _) => (
            Kind::Usage,
            format!("unknown variable `{name}`"),
            Some("declare it with `let`, or declare a parameter with `//! @param`".into()),
        ),
        EvalAltResult::ErrorPropertyNotFound(name, _) => (
            Kind::Usage,
            format!("no property `{name}` in this map"),
            Some("check the result fields in `rollback docs FUNCTION`; use `map.get(\"key\")` or `\"key\" in map` for optional keys".into()),
        ),
        EvalAltResult::ErrorTooManyOperations(_) => (
            Kind::Usage,
            "the script exceeded its operation limit (an endless loop?)".into(),
            None,
        ),
        EvalAltResult::ErrorStackOverflow(_) => (
            Kind::Usage,
            "the script exceeded the call depth limit (unbounded recursion?)".into(),
            None,
        ),
        other => (Kind::Usage, plain(other), None),
    }
}

fn plain(err: &EvalAltResult) -> String {
    let text = err.to_string();
    let text = POSITION_SUFFIX.replace_all(&text, "");
    let mut text = text.trim().to_string();
    if let Some(first) = text.get(..1) {
        text = first.to_lowercase() + &text[1..];
    }
    text
}

/// The host function a thrown error map names, if the error came from one.
fn host_function(err: &EvalAltResult) -> Option<String> {
    let EvalAltResult::ErrorRuntime(value, _) = err else {
        return None;
    };
    let map = value.read_lock::<rhai::Map>()?;
    map.contains_key("message")
        .then(|| map.get("function").map(|f| f.to_string()))
        .flatten()
}

fn host_modules(docs: &[FnDoc]) -> Vec<&'static str> {
    let mut modules: Vec<&'static str> = docs.iter().filter_map(|d| d.module).collect();
    modules.dedup();
    modules
}

fn doc_for<'a>(name: &str, docs: &'a [FnDoc]) -> Option<&'a FnDoc> {
    docs.iter().find(|d| d.qualified_name() == name)
}

fn usage_help(doc: &FnDoc) -> String {
    format!(
        "usage: {}\n     example: {}",
        doc.signature_line(),
        doc.example
    )
}
