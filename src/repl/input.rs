//! When a typed line is not yet a whole input: the operator opened a block, a list, a call or
//! a backtick string and pressed Enter to go on writing it.

use rhai::{Engine, LexError, ParseError, ParseErrorType, Position, Scope};

/// Whether `text` stops in the middle of something, so the REPL should read another line
/// instead of reporting a parse error.
pub fn is_incomplete(engine: &Engine, scope: &Scope, text: &str) -> bool {
    match engine.compile_with_scope(scope, text) {
        Ok(_) => false,
        Err(err) => ends_early(&err, text),
    }
}

fn ends_early(err: &ParseError, text: &str) -> bool {
    match err.err_type() {
        ParseErrorType::UnexpectedEOF => true,
        // A missing `}`, `]` or `)` is only "unfinished" when the parser got to the end
        // looking for it; one missing in the middle is a real mistake to report.
        ParseErrorType::MissingToken(..) => at_end(err.position(), text),
        // Backtick strings may span lines; a double-quoted one left open is a typo.
        ParseErrorType::BadInput(LexError::UnterminatedString) => {
            char_at(err.position(), text) == Some('`')
        }
        _ => false,
    }
}

/// Whether `pos` is at or past the last non-blank character of `text`.
fn at_end(pos: Position, text: &str) -> bool {
    let (Some(line), Some(column)) = (pos.line(), pos.position()) else {
        return true;
    };
    let trimmed = text.trim_end();
    let last_line = trimmed.split('\n').count();
    let last_column = trimmed.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    line > last_line || (line == last_line && column >= last_column)
}

fn char_at(pos: Position, text: &str) -> Option<char> {
    let line = text.split('\n').nth(pos.line()?.checked_sub(1)?)?;
    line.chars().nth(pos.position()?.checked_sub(1)?)
}

/// A line ending in `\` asks for another line: the text without the backslash, or `None`.
pub fn continued(line: &str) -> Option<&str> {
    line.trim_end().strip_suffix('\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incomplete(text: &str) -> bool {
        let engine = Engine::new();
        is_incomplete(&engine, &Scope::new(), text)
    }

    #[test]
    fn open_brackets_and_trailing_operators_continue() {
        for text in [
            "fn f() {",
            "if true {\n  1",
            "let x = [1,",
            "let m = #{a: 1,",
            "foo(1,",
            "let x = 1 +",
            "let x = (1",
            "let s = `two\nlines",
            "fn f() { // note",
        ] {
            assert!(incomplete(text), "{text:?} should continue");
        }
    }

    #[test]
    fn complete_input_and_real_mistakes_do_not_continue() {
        for text in [
            "1 + 1",
            "fn f() { 1 }",
            "fn f() { 1 }}",
            "let s = \"open",
            "let = 3;",
            "let x = (1; let y = 2;",
            "",
        ] {
            assert!(!incomplete(text), "{text:?} should not continue");
        }
    }

    #[test]
    fn backslash_continues() {
        assert_eq!(continued("let x = 1 + \\"), Some("let x = 1 + "));
        assert_eq!(continued("let x = 1 + \\  "), Some("let x = 1 + "));
        assert_eq!(continued("let x = 1"), None);
    }
}
