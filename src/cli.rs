//! Command-line definitions and dispatch; the only place that prints errors and picks exit
//! codes.

use crate::console;
use crate::engine::ScriptEngine;
use crate::engine::catalog::{Catalog, Source};
use crate::engine::lint::Checker;
use crate::engine::params::{Header, parse_header};
use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::session::{self, Session};
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "rollback",
    version,
    about = "Run rollback procedures written in Rhai against Kubernetes, Helm, PostgreSQL and Prometheus.",
    args_override_self = true,
    after_help = "Exit codes: 0 success, 1 procedure failed, 2 usage or script error, 3 aborted or out of time; 10-19 a verdict of a procedure that finished (assess: 10 consider, 11 recommended, 12 immediate rollback)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Environment from the platform definition (production, staging, sandbox, …).
    #[arg(long, global = true, env = "ROLLBACK_ENV", value_name = "NAME")]
    pub env: Option<String>,
    /// Plan only: mutating calls are journaled, not sent; reads run for real.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Answer yes to every confirm(); needed to run destructive steps without a terminal.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// If another run holds the environment's lock, wait for it instead of failing.
    #[arg(long, global = true)]
    pub wait_lock: bool,
    /// Time budget for the run (90s, 5m, 1h); the procedure's own default otherwise.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Journal file to write (default: $ROLLBACK_HOME/runs/<run-id>/journal.jsonl).
    #[arg(long, global = true, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Report file to write (default: beside the journal, report.md).
    #[arg(long, global = true, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Who runs this, for the journal, the report and the lock (default: $USER).
    #[arg(long, global = true, env = "ROLLBACK_OPERATOR", value_name = "NAME")]
    pub operator: Option<String>,
    /// More output (-v debug).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Less output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub quiet: u8,
    /// Directory of procedures (and platform.toml) that override the built-in ones.
    #[arg(long, global = true, env = "ROLLBACK_SCRIPTS", value_name = "DIR")]
    pub scripts: Option<PathBuf>,
    /// Directory of stdlib modules that override the built-in ones.
    #[arg(long, global = true, env = "ROLLBACK_STDLIB", value_name = "DIR")]
    pub stdlib: Option<PathBuf>,
    /// Platform definition file to use instead of the built-in one.
    #[arg(long, global = true, env = "ROLLBACK_PLATFORM", value_name = "FILE")]
    pub platform: Option<PathBuf>,
    /// State directory: runs and extra environments (default: ~/.rollback).
    #[arg(long, global = true, env = "ROLLBACK_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
}

fn parse_timeout(text: &str) -> std::result::Result<Duration, String> {
    crate::timefmt::parse_duration(text)
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a procedure: `rollback run service --service analysis-service --env production`.
    #[command(disable_help_flag = true)]
    Run {
        /// Show help; after a procedure name, the procedure's parameters.
        #[arg(short = 'h', long = "help")]
        help: bool,
        /// Procedure name (see `rollback list`) or path to a .rhai file.
        procedure: Option<String>,
        /// The procedure's parameters as --name value (see `rollback run PROCEDURE --help`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PARAMS"
        )]
        params: Vec<String>,
    },
    /// List the procedures with their one-line descriptions.
    List,
    /// Compile and lint procedures and modules (all of them by default); non-zero on any error.
    Check {
        /// Files to check instead of every procedure and module.
        files: Vec<PathBuf>,
    },
    /// Show host function docs: all, one function, or a module (`k8s`).
    Docs { name: Option<String> },
    /// Interactive Rhai shell with the host functions, journaled like a run.
    Repl,
    /// Work with run journals.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// The local rehearsal platform: `up`, `status`, `inject` an incident, `down`.
    Sandbox {
        #[command(subcommand)]
        command: crate::sandbox::SandboxCommand,
    },
    /// Watch the environment's rollback triggers and run their procedure when one fires.
    Watch(crate::watch::WatchArgs),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum JournalCommand {
    /// Check a journal's hash chain; names the first edited, inserted or removed line.
    Verify { file: PathBuf },
    /// Rebuild the markdown report from a journal.
    Report { file: PathBuf },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    console::set_verbosity(cli.global.verbose, cli.global.quiet);
    crate::redact::register_secret_env();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            console::error(&e.message);
            e.exit_code()
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        Command::Run {
            help,
            procedure: Some(procedure),
            mut params,
        } => {
            if help {
                params.push("--help".into());
            }
            run(global, &procedure, params)
        }
        Command::Run {
            procedure: None, ..
        } => {
            let mut cli = Cli::command();
            let run = cli.find_subcommand_mut("run").expect("run is defined");
            let _ = run.print_help();
            Ok(ExitCode::SUCCESS)
        }
        Command::List => list(&global),
        Command::Check { files } => check(&global, &files),
        Command::Docs { name } => docs(&global, name.as_deref()),
        Command::Repl => crate::repl::run(global),
        Command::Journal { command } => journal(command),
        Command::Sandbox { command } => crate::sandbox::run(&global, command),
        Command::Watch(args) => crate::watch::run(global, args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "rollback",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn catalog(global: &GlobalArgs) -> Catalog {
    Catalog {
        scripts_dir: global.scripts.clone(),
        stdlib_dir: global.stdlib.clone(),
        platform_file: global.platform.clone(),
    }
}

pub fn home(global: &GlobalArgs) -> PathBuf {
    global.home.clone().unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".rollback")
    })
}

pub fn load_platform(global: &GlobalArgs, catalog: &Catalog) -> Result<Platform> {
    let source = catalog.platform()?;
    let platform = Platform::load(
        &source.display,
        &source.text,
        Some(&home(global).join("environments")),
    )?;
    platform.register_secrets();
    Ok(platform)
}

pub fn runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| Error::failed(format!("cannot start the I/O runtime: {e}")))
}

/// The environment to run against: `--env`, else an error listing the choices (there is
/// deliberately no default: running against production by accident is the worst outcome).
pub fn require_env(global: &GlobalArgs, platform: &Platform) -> Result<String> {
    match &global.env {
        Some(env) => {
            platform.environment(env)?;
            Ok(env.clone())
        }
        None => Err(Error::usage(format!(
            "no environment given: pass --env NAME or set ROLLBACK_ENV (defined: {})",
            platform
                .environments
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub fn operator(global: &GlobalArgs) -> String {
    global
        .operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Where a run's journal and report go.
pub fn run_paths(global: &GlobalArgs, run_id: &str) -> (PathBuf, PathBuf) {
    let dir = home(global).join("runs").join(run_id);
    let journal = global
        .journal
        .clone()
        .unwrap_or_else(|| dir.join("journal.jsonl"));
    let report = global.report.clone().unwrap_or_else(|| {
        journal
            .parent()
            .map(|p| p.join("report.md"))
            .unwrap_or_else(|| dir.join("report.md"))
    });
    (journal, report)
}

/// Installs Ctrl-C and SIGTERM handling: the first signal stops the session's current
/// operation; a second one during a run ends the process at once.
pub fn watch_signals(session: &Arc<Session>, exit_on_second: bool) {
    let s = session.clone();
    session.runtime().spawn(async move {
        let mut stops = crate::stop_signals::StopSignals::listen();
        let mut count = 0;
        loop {
            stops.next().await;
            count += 1;
            if exit_on_second && count >= 2 {
                console::error("second interrupt: exiting now; the journal is complete up to the interrupted call, the report was not written");
                std::process::exit(130);
            }
            if exit_on_second {
                console::warn("interrupt: stopping after the current operation (press Ctrl-C again to exit at once)");
            } else {
                console::warn("interrupt: cancelling the running line");
            }
            s.interrupt();
        }
    });
}

fn run(global: GlobalArgs, procedure: &str, raw_params: Vec<String>) -> Result<ExitCode> {
    run_with(global, procedure, raw_params, session::new_run_id(), None)
}

/// What started a run when no person did (`rollback watch`): journaled as the run's first
/// record and announced through `notify` before the procedure starts.
pub struct Cause {
    pub record: serde_json::Value,
    pub message: String,
}

/// `rollback run`, with the run id chosen by the caller and, for an automatic run, its cause.
pub fn run_with(
    global: GlobalArgs,
    procedure: &str,
    raw_params: Vec<String>,
    run_id: String,
    cause: Option<Cause>,
) -> Result<ExitCode> {
    let catalog = catalog(&global);
    let source = catalog.procedure(procedure)?;
    let header = parse_header(&source)?;
    let (global, params) = match parse_params(global, procedure, &header, raw_params) {
        Ok(parsed) => parsed,
        Err(ParamsOutcome::Exit(code)) => return Ok(code),
        Err(ParamsOutcome::Error(e)) => return Err(e),
    };
    console::set_verbosity(global.verbose, global.quiet);
    let platform = load_platform(&global, &catalog)?;
    let environment = require_env(&global, &platform)?;
    let (journal_path, report_path) = run_paths(&global, &run_id);
    let params_json: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), crate::host::dynamic_to_json(v)))
        .collect();
    let session = Session::start(
        session::Options {
            id: run_id,
            procedure: procedure.to_string(),
            environment,
            operator: operator(&global),
            dry_run: global.dry_run,
            yes: global.yes,
            timeout: global.timeout.or(header.timeout).or(Some(DEFAULT_TIMEOUT)),
            journal: Some(journal_path),
            report: Some(report_path),
            params: serde_json::Value::Object(params_json),
        },
        platform,
        runtime()?,
    )?;
    session.set_wait_lock(global.wait_lock);
    watch_signals(&session, true);
    let script_engine = ScriptEngine::new(&session, &catalog);
    console::info(&format!(
        "run {} — {} on {}{} by {}",
        session.id,
        session.procedure,
        session.environment(),
        if session.dry_run() {
            " (dry-run: nothing will be changed)"
        } else {
            ""
        },
        session.operator
    ));
    if let Some(cause) = cause {
        announce(&script_engine, &session, cause);
    }
    let result = execute(&script_engine, &session, &source, params);
    let code = crate::report::conclude(&session, result)?;
    // A procedure that finished may report a verdict through its exit status (`exit_code`).
    Ok(match crate::host::outcome::chosen(&session.records()) {
        Some((verdict, reason)) => {
            console::info(&format!("  exit status {verdict}: {reason}"));
            ExitCode::from(verdict)
        }
        None => code,
    })
}

/// Journals why an automatic run started and notifies through the same `notify` scripts use
/// (a failed notification is journaled there and never stops the run).
fn announce(script_engine: &ScriptEngine, session: &Arc<Session>, cause: Cause) {
    let _ = session.append(crate::journal::Entry {
        step: None,
        function: "trigger".into(),
        args: cause.record,
        outcome: crate::journal::Outcome::ok(serde_json::Value::Null),
        duration_ms: 0,
        dry_run: session.dry_run(),
        mutating: false,
    });
    let mut scope = rhai::Scope::new();
    scope.push_constant("message", cause.message);
    let notice = r#"notify(message, #{ severity: "critical", mention: true })"#;
    if let Err(e) = script_engine.engine.run_with_scope(&mut scope, notice) {
        console::warn(&format!("could not announce the automatic run: {e}"));
    }
}

/// The runbook's recovery time objective: a run without a budget of its own gets this one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn execute(
    script_engine: &ScriptEngine,
    session: &Arc<Session>,
    source: &Source,
    params: Vec<(String, rhai::Dynamic)>,
) -> Result<()> {
    let mut scope = rhai::Scope::new();
    for (name, value) in params {
        scope.push_constant(name, value);
    }
    let ast = script_engine.compile(source, &scope)?;
    script_engine
        .engine
        .run_ast_with_scope(&mut scope, &ast)
        .map_err(|e| script_engine.render(&e, &source.display))?;
    if let Some(stop) = session.should_stop() {
        return Err(Error::aborted(format!("run stopped: {}", stop.describe())));
    }
    Ok(())
}

enum ParamsOutcome {
    Exit(ExitCode),
    Error(Error),
}

/// Parses the procedure's own flags with clap, built from the script header, so `--help`,
/// missing values and "did you mean" behave like any other command. Global options may come
/// after the procedure name too.
fn parse_params(
    global: GlobalArgs,
    procedure: &str,
    header: &Header,
    raw: Vec<String>,
) -> std::result::Result<(GlobalArgs, Vec<(String, rhai::Dynamic)>), ParamsOutcome> {
    let mut about = header.summary.clone();
    if !header.description.is_empty() {
        about = format!("{about}\n\n{}", header.description.join("\n"));
    }
    let mut command = clap::Command::new(format!("rollback run {procedure}"))
        .about(about)
        .no_binary_name(true)
        .disable_version_flag(true)
        .args_override_self(true)
        .help_template("{about}\n\n{usage-heading} {usage}\n\n{all-args}");
    command = GlobalArgs::augment_args(command);
    for param in &header.params {
        let mut arg = clap::Arg::new(param.name.clone())
            .long(param.flag())
            .value_name(param.ty.name().to_uppercase())
            .help(param.help.clone())
            .allow_hyphen_values(true);
        if param.flag() != param.name {
            arg = arg.alias(param.name.clone());
        }
        arg = match &param.default {
            Some(default) => arg.default_value(default.clone()),
            None => arg.required(true),
        };
        command = command.arg(arg);
    }
    let matches = command.try_get_matches_from(raw).map_err(|e| {
        let _ = e.print();
        ParamsOutcome::Exit(ExitCode::from(e.exit_code() as u8))
    })?;
    let late = GlobalArgs::from_arg_matches(&matches)
        .map_err(|e| ParamsOutcome::Error(Error::usage(e.to_string())))?;
    let mut values = Vec::new();
    for param in &header.params {
        let raw: &String = matches
            .get_one::<String>(&param.name)
            .expect("required or defaulted by clap");
        let value = param.convert(raw).map_err(|e| {
            ParamsOutcome::Error(Error::usage(format!(
                "{e}\nsee `rollback run {procedure} --help`"
            )))
        })?;
        values.push((param.name.clone(), value));
    }
    Ok((merge_globals(global, late), values))
}

fn merge_globals(early: GlobalArgs, late: GlobalArgs) -> GlobalArgs {
    GlobalArgs {
        env: late.env.or(early.env),
        dry_run: early.dry_run || late.dry_run,
        yes: early.yes || late.yes,
        wait_lock: early.wait_lock || late.wait_lock,
        timeout: late.timeout.or(early.timeout),
        journal: late.journal.or(early.journal),
        report: late.report.or(early.report),
        operator: late.operator.or(early.operator),
        verbose: early.verbose + late.verbose,
        quiet: early.quiet + late.quiet,
        scripts: late.scripts.or(early.scripts),
        stdlib: late.stdlib.or(early.stdlib),
        platform: late.platform.or(early.platform),
        home: late.home.or(early.home),
    }
}

fn list(global: &GlobalArgs) -> Result<ExitCode> {
    let catalog = catalog(global);
    let names = catalog.procedure_names();
    let width = names.iter().map(String::len).max().unwrap_or(0);
    for name in names {
        let source = catalog.procedure(&name)?;
        let summary = match parse_header(&source) {
            Ok(h) => h.summary,
            Err(e) => format!(
                "(header error: {})",
                e.message.lines().next().unwrap_or_default()
            ),
        };
        console::out(&format!("{name:<width$}  {summary}"));
    }
    Ok(ExitCode::SUCCESS)
}

/// A session for commands that only compile or document: dry-run, no journal file.
pub fn offline_session(global: &GlobalArgs, catalog: &Catalog) -> Result<Arc<Session>> {
    let platform = load_platform(global, catalog)?;
    let environment = global
        .env
        .clone()
        .or_else(|| platform.environments.keys().next().cloned())
        .ok_or_else(|| Error::usage("the platform definition has no environments"))?;
    Session::start(
        session::Options {
            id: session::new_run_id(),
            procedure: "check".into(),
            environment,
            operator: operator(global),
            dry_run: true,
            yes: false,
            timeout: None,
            journal: None,
            report: None,
            params: serde_json::json!({}),
        },
        platform,
        runtime()?,
    )
}

fn check(global: &GlobalArgs, files: &[PathBuf]) -> Result<ExitCode> {
    let catalog = catalog(global);
    let session = offline_session(global, &catalog)?;
    let engine = ScriptEngine::new(&session, &catalog);
    let mut checker = Checker::new(&engine, &catalog);
    let mut targets: Vec<(Source, bool)> = Vec::new();
    if files.is_empty() {
        for name in catalog.procedure_names() {
            targets.push((catalog.procedure(&name)?, false));
        }
        for name in catalog.module_names() {
            if let Some(source) = catalog.module(&name)? {
                targets.push((source, true));
            }
        }
    } else {
        for file in files {
            let source = catalog.procedure(&file.display().to_string())?;
            targets.push((source, is_stdlib_path(file)));
        }
    }
    let mut failed = 0;
    for (source, is_module) in &targets {
        let problems = checker.check(source, *is_module);
        if problems.is_empty() {
            console::out(&format!("ok      {}", source.display));
        } else {
            failed += 1;
            for p in problems {
                console::error(&p.message);
            }
        }
    }
    if failed > 0 {
        return Err(Error::usage(format!(
            "{failed} of {} scripts have errors",
            targets.len()
        )));
    }
    console::out(&format!("{} scripts checked, no errors", targets.len()));
    Ok(ExitCode::SUCCESS)
}

fn is_stdlib_path(path: &Path) -> bool {
    path.parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "stdlib")
}

fn docs(global: &GlobalArgs, name: Option<&str>) -> Result<ExitCode> {
    let catalog = catalog(global);
    let session = offline_session(global, &catalog)?;
    let engine = ScriptEngine::new(&session, &catalog);
    let text = crate::host::docs::render(&engine.docs, name)?;
    console::out(&text);
    Ok(ExitCode::SUCCESS)
}

fn journal(command: JournalCommand) -> Result<ExitCode> {
    match command {
        JournalCommand::Verify { file } => {
            let verified = crate::journal::verify(&file)?;
            let first = &verified.records[0];
            console::out(&format!(
                "journal {} is intact: {} records of run {}, head sha256:{}",
                file.display(),
                verified.records.len(),
                first.run,
                verified.head
            ));
            Ok(ExitCode::SUCCESS)
        }
        JournalCommand::Report { file } => {
            let records = crate::journal::read(&file)?;
            console::out(&crate::report::render(&records, Some(&file)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_parameter_names_are_the_options_of_run() {
        // The same options a procedure's own command gets (the dynamic `rollback run X`).
        let command = GlobalArgs::augment_args(clap::Command::new("procedure"));
        let mut flags: Vec<&str> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .chain(["help"])
            .collect();
        flags.sort_unstable();
        let mut reserved = crate::engine::params::RESERVED_FLAGS.to_vec();
        reserved.sort_unstable();
        assert_eq!(reserved, flags);
    }
}
