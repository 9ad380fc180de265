//! The text of every script and module compiled in this process, by display name, so an error
//! anywhere can be shown with its source line and a caret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Sources(Arc<Mutex<HashMap<String, String>>>);

impl Sources {
    pub fn insert(&self, name: &str, text: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), text.to_string());
    }

    /// Line `line` (1-based) of the named source.
    pub fn line(&self, name: &str, line: usize) -> Option<String> {
        let sources = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sources
            .get(name)?
            .lines()
            .nth(line.checked_sub(1)?)
            .map(String::from)
    }

    /// The position of the only call to `function` in the named source, ignoring comment lines.
    pub fn unique_call(&self, name: &str, function: &str) -> Option<rhai::Position> {
        let sources = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let text = sources.get(name)?;
        let needle = format!("{function}(");
        let mut found = None;
        for (index, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let mut from = 0;
            while let Some(at) = line[from..].find(&needle) {
                let column = from + at;
                let preceded_by_name = line[..column]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                if !preceded_by_name {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(rhai::Position::new(index as u16 + 1, column as u16 + 1));
                }
                from = column + needle.len();
            }
        }
        found
    }
}
