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
}
