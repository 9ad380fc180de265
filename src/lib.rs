//! `rollback`: run rollback procedures written in Rhai against real infrastructure.
//!
//! The table of contents: each module holds one concept and is named after it.

pub mod cli;
pub mod console;
pub mod engine;
pub mod error;
pub mod host;
pub mod journal;
pub mod lock;
pub mod platform;
pub mod redact;
pub mod repl;
pub mod report;
pub mod sandbox;
pub mod session;
pub mod stop_signals;
pub mod timefmt;
pub mod watch;
