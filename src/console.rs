//! Operator-facing output on stderr: levelled, timestamped, always redacted.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static VERBOSITY: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// `-q` lowers, `-v` raises the level shown; errors are always shown.
pub fn set_verbosity(verbose: u8, quiet: u8) {
    let level = (Level::Info as i16 + verbose as i16 - quiet as i16).clamp(0, Level::Debug as i16);
    VERBOSITY.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= VERBOSITY.load(Ordering::Relaxed)
}

/// Writes one log line to stderr if the level is shown.
pub fn log(level: Level, message: &str) {
    if !enabled(level) {
        return;
    }
    let time = chrono::Local::now().format("%H:%M:%S");
    let line = crate::redact::scrub(message);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{time} {:<5} {line}", level.name());
}

pub fn info(message: &str) {
    log(Level::Info, message);
}

pub fn warn(message: &str) {
    log(Level::Warn, message);
}

pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Prints to stdout, redacted: for results the operator asked for (docs, lists, `print`).
pub fn out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", crate::redact::scrub(text));
}

/// Prints an error for the operator, redacted: `error: …`.
pub fn error(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {}", crate::redact::scrub(message));
}
