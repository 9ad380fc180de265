use crate::cli::GlobalArgs;
use crate::error::{Error, Result};
use std::process::ExitCode;
pub fn run(_global: GlobalArgs) -> Result<ExitCode> {
    Err(Error::usage("repl: being written"))
}
