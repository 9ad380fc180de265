use std::process::ExitCode;

fn main() -> ExitCode {
    rollback::cli::main()
}
