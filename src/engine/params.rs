//! Procedure headers: the leading `//!` lines of a script declare what it does, its parameters
//! and its default time budget, so `rollback run X --help` and `rollback list` never run it.
//!
//! ```text
//! //! Roll one service back to its previous release.
//! //!
//! //! @param service: string              The service to roll back.
//! //! @param revision: int = 0            Helm revision; 0 means the previous one.
//! //! @timeout 10m
//! ```

use crate::engine::catalog::Source;
use crate::error::{Error, Result};
use regex::Regex;
use rhai::Dynamic;
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
    /// Comma-separated on the command line, an array of strings in the script.
    List,
}

impl ParamType {
    fn parse(text: &str) -> Option<ParamType> {
        Some(match text {
            "string" => ParamType::String,
            "int" => ParamType::Int,
            "float" => ParamType::Float,
            "bool" => ParamType::Bool,
            "list" => ParamType::List,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::List => "list",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    /// `None`: the parameter is required.
    pub default: Option<String>,
    pub help: String,
}

impl Param {
    /// The script value for a command-line string, or a message saying what was expected.
    pub fn convert(&self, raw: &str) -> Result<Dynamic, String> {
        let bad = |what: &str| format!("--{} expects {what}, got '{raw}'", self.flag());
        Ok(match self.ty {
            ParamType::String => Dynamic::from(raw.to_string()),
            ParamType::Int => Dynamic::from(
                raw.trim()
                    .parse::<i64>()
                    .map_err(|_| bad("a whole number"))?,
            ),
            ParamType::Float => {
                Dynamic::from(raw.trim().parse::<f64>().map_err(|_| bad("a number"))?)
            }
            ParamType::Bool => Dynamic::from(match raw.trim() {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                _ => return Err(bad("true or false")),
            }),
            ParamType::List => Dynamic::from_array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Dynamic::from(s.to_string()))
                    .collect(),
            ),
        })
    }

    /// The command-line flag: `target_version` is typed `--target-version`.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }
}

#[derive(Debug, Clone, Default)]
pub struct Header {
    /// The first line: what `rollback list` shows.
    pub summary: String,
    /// The rest of the prose, for `--help`.
    pub description: Vec<String>,
    pub params: Vec<Param>,
    pub timeout: Option<Duration>,
}

static PARAM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"^@param\s+([a-z_][a-z0-9_]*)\s*:\s*([a-z]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|\S+))?\s*(.*)$"#,
    )
    .expect("valid regex")
});

/// Flags `rollback run PROCEDURE` itself takes (the global options and `--help`): a procedure
/// parameter with one of these names could never be given. `cli`'s tests keep the list equal
/// to the real options.
pub const RESERVED_FLAGS: &[&str] = &[
    "dry-run",
    "env",
    "help",
    "home",
    "journal",
    "operator",
    "platform",
    "quiet",
    "report",
    "scripts",
    "stdlib",
    "timeout",
    "verbose",
    "wait-lock",
    "yes",
];

/// Reads the `//!` header at the top of a script.
pub fn parse_header(source: &Source) -> Result<Header> {
    let mut header = Header::default();
    let err = |line: usize, what: String| {
        Error::usage(format!(
            "{}:{line}: {what}\nthe header format is: //! @param NAME: string|int|float|bool|list [= DEFAULT] HELP",
            source.display
        ))
    };
    for (index, line) in source.text.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() && header.summary.is_empty() {
            continue;
        }
        let Some(doc) = trimmed.strip_prefix("//!") else {
            break;
        };
        let doc = doc.trim();
        if let Some(rest) = doc.strip_prefix("@timeout") {
            header.timeout = Some(
                crate::timefmt::parse_duration(rest)
                    .map_err(|e| err(line_no, format!("@timeout: {e}")))?,
            );
        } else if doc.starts_with("@param") {
            let caps = PARAM
                .captures(doc)
                .ok_or_else(|| err(line_no, format!("cannot read this parameter: '{doc}'")))?;
            let name = caps[1].to_string();
            let ty = ParamType::parse(&caps[2]).ok_or_else(|| {
                err(
                    line_no,
                    format!("parameter '{name}' has unknown type '{}'", &caps[2]),
                )
            })?;
            let default = caps.get(3).map(|m| unquote(m.as_str()));
            let param = Param {
                name,
                ty,
                default,
                help: caps[4].trim().to_string(),
            };
            if let Some(default) = &param.default
                && let Err(e) = param.convert(default)
            {
                return Err(err(line_no, format!("default value: {e}")));
            }
            if let Some(option) = RESERVED_FLAGS.iter().find(|f| **f == param.flag()) {
                return Err(err(
                    line_no,
                    format!(
                        "parameter '{}' would be --{option}, one of rollback's own options: rename it (e.g. 'rollout_{}')",
                        param.name, param.name
                    ),
                ));
            }
            if header.params.iter().any(|p| p.name == param.name) {
                return Err(err(
                    line_no,
                    format!("parameter '{}' is declared twice", param.name),
                ));
            }
            header.params.push(param);
        } else if doc.starts_with('@') {
            return Err(err(line_no, format!("unknown header tag '{doc}'")));
        } else if header.summary.is_empty() {
            header.summary = doc.to_string();
        } else {
            header.description.push(doc.to_string());
        }
    }
    while header.description.last().is_some_and(|l| l.is_empty()) {
        header.description.pop();
    }
    while header.description.first().is_some_and(|l| l.is_empty()) {
        header.description.remove(0);
    }
    Ok(header)
}

fn unquote(text: &str) -> String {
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source {
        Source {
            display: "t.rhai".into(),
            text: text.into(),
        }
    }

    #[test]
    fn reads_summary_params_and_timeout() {
        let h = parse_header(&src(
            "//! Roll back.\n//! More.\n//!\n//! @param service: string  The service.\n//! @param revision: int = 0 Helm revision.\n//! @param note: string = \"a b\" Note.\n//! @timeout 5m\nlet x = 1;\n//! not header\n",
        ))
        .unwrap();
        assert_eq!(h.summary, "Roll back.");
        assert_eq!(h.description, vec!["More."]);
        assert_eq!(h.params.len(), 3);
        assert!(h.params[0].default.is_none());
        assert_eq!(h.params[1].default.as_deref(), Some("0"));
        assert_eq!(h.params[2].default.as_deref(), Some("a b"));
        assert_eq!(h.timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn bad_headers_name_the_line() {
        let e = parse_header(&src("//! X.\n//! @param n: integer\n")).unwrap_err();
        assert!(
            e.message
                .starts_with("t.rhai:2: parameter 'n' has unknown type 'integer'"),
            "{}",
            e.message
        );
        let e = parse_header(&src("//! X.\n//! @param n: int = many\n")).unwrap_err();
        assert!(
            e.message.contains("--n expects a whole number, got 'many'"),
            "{}",
            e.message
        );
        let e = parse_header(&src("//! X.\n//! @param dry_run: bool = false  Y.\n")).unwrap_err();
        assert!(
            e.message.starts_with(
                "t.rhai:2: parameter 'dry_run' would be --dry-run, one of rollback's own options: rename it (e.g. 'rollout_dry_run')"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn converts_values_by_type() {
        let p = |ty| Param {
            name: "target_version".into(),
            ty,
            default: None,
            help: String::new(),
        };
        assert_eq!(
            p(ParamType::Int).convert("42").unwrap().as_int().unwrap(),
            42
        );
        assert!(
            p(ParamType::Bool)
                .convert("yes")
                .unwrap()
                .as_bool()
                .unwrap()
        );
        assert_eq!(
            p(ParamType::List)
                .convert("a, b,")
                .unwrap()
                .into_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            p(ParamType::Int).convert("x").unwrap_err(),
            "--target-version expects a whole number, got 'x'"
        );
    }
}
