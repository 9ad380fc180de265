//! The one error type the CLI turns into a message and an exit code.

use std::fmt;
use std::process::ExitCode;

/// How a command ended badly; each kind owns one exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The procedure ran and failed (a host call failed, a check failed, the script threw).
    Failed,
    /// The command line, a parameter or the script itself is wrong.
    Usage,
    /// Ctrl-C or the time budget stopped the run.
    Aborted,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Failed => 1,
            Kind::Usage => 2,
            Kind::Aborted => 3,
        }
    }
}

/// An error whose message is already rendered for the operator: what happened and what to do.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Kind::Failed, message)
    }

    pub fn aborted(message: impl Into<String>) -> Self {
        Self::new(Kind::Aborted, message)
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind.exit_code())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds "while doing X" context to I/O errors at the boundary where X is known.
pub fn io_context(err: std::io::Error, what: impl fmt::Display) -> Error {
    Error::failed(format!("{what}: {err}"))
}
