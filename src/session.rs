//! One run: identity, environment, operator, dry-run, time budget, cancellation, journal.
//!
//! Host functions never talk to the journal or the runtime directly: they hand their future
//! to `Session::read` or `Session::mutate`, which enforce dry-run, the deadline and Ctrl-C,
//! and journal the call once.

use crate::error::Result;
use crate::host::HostError;
use crate::journal::{Entry, Journal, Outcome, Record};
use crate::platform::{Environment, Platform};
use rhai::{Dynamic, EvalAltResult, Position};
use serde::Serialize;
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Why a run stopped before its script finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Interrupted,
    OutOfTime,
}

impl Stop {
    pub fn describe(self) -> &'static str {
        match self {
            Stop::Interrupted => "interrupted by Ctrl-C",
            Stop::OutOfTime => "out of time: the time budget ran out",
        }
    }
}

pub struct Options {
    pub id: String,
    pub procedure: String,
    pub environment: String,
    pub operator: String,
    pub dry_run: bool,
    pub yes: bool,
    pub timeout: Option<Duration>,
    pub journal: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub params: Value,
}

pub struct Session {
    pub id: String,
    pub procedure: String,
    pub operator: String,
    pub host: String,
    pub platform: Platform,
    pub yes: bool,
    pub params: Value,
    pub started: Instant,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub report_path: Option<PathBuf>,
    http: std::sync::OnceLock<reqwest::Client>,
    environment: RwLock<String>,
    dry_run: AtomicBool,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    cancel: Mutex<CancellationToken>,
    stopped: Mutex<Option<Stop>>,
    steps: Mutex<Vec<String>>,
    journal: Mutex<Journal>,
    runtime: Arc<tokio::runtime::Runtime>,
    run_lock: crate::lock::RunLock,
}

/// A run id that sorts by time and is short enough to say on a call: `20261125-172530-3fa9`.
pub fn new_run_id() -> String {
    let now = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{now}-{}", &random[..4])
}

pub fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

impl Session {
    pub fn start(
        options: Options,
        platform: Platform,
        runtime: Arc<tokio::runtime::Runtime>,
    ) -> Result<Arc<Session>> {
        platform.environment(&options.environment)?;
        let id = options.id.clone();
        let journal = Journal::create(&id, options.journal.as_deref())?;
        let started = Instant::now();
        let session = Session {
            id,
            procedure: options.procedure,
            operator: options.operator,
            host: this_host(),
            platform,
            yes: options.yes,
            params: options.params,
            started,
            started_at: chrono::Utc::now(),
            report_path: options.report,
            http: std::sync::OnceLock::new(),
            environment: RwLock::new(options.environment),
            dry_run: AtomicBool::new(options.dry_run),
            deadline: options.timeout.map(|t| started + t),
            timeout: options.timeout,
            cancel: Mutex::new(CancellationToken::new()),
            stopped: Mutex::new(None),
            steps: Mutex::new(Vec::new()),
            journal: Mutex::new(journal),
            runtime,
            run_lock: crate::lock::RunLock::default(),
        };
        session.record_start()?;
        Ok(Arc::new(session))
    }

    fn record_start(&self) -> Result<()> {
        let args = json!({
            "procedure": self.procedure,
            "environment": self.environment(),
            "operator": self.operator,
            "host": self.host,
            "params": self.params,
            "timeout_s": self.timeout.map(|t| t.as_secs_f64()),
            "version": env!("CARGO_PKG_VERSION"),
        });
        self.append(Entry {
            step: None,
            function: crate::journal::SESSION_START.into(),
            args,
            outcome: Outcome::ok(Value::Null),
            duration_ms: 0,
            dry_run: self.dry_run(),
            mutating: false,
        })
    }

    /// Writes the closing record; `status` is how the run ended.
    pub fn finish(&self, status: &str, error: Option<String>) -> Result<()> {
        self.run_lock.release_all(self);
        let elapsed = self.started.elapsed();
        self.append(Entry {
            step: None,
            function: crate::journal::SESSION_END.into(),
            args: json!({}),
            outcome: Outcome::status(status, Value::Null, error),
            duration_ms: elapsed.as_millis() as u64,
            dry_run: self.dry_run(),
            mutating: false,
        })?;
        self.journal().sync();
        Ok(())
    }

    pub fn append(&self, entry: Entry) -> Result<()> {
        self.journal().append(entry).map(|_| ())
    }

    pub fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn records(&self) -> Vec<Record> {
        self.journal().records().to_vec()
    }

    /// The HTTP client, built on first use: loading TLS roots costs start-up time that
    /// `check`, `docs` and runs without HTTP calls should not pay.
    pub fn http(&self) -> reqwest::Client {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .user_agent(concat!("rollback/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(Duration::from_secs(5))
                    .build()
                    .unwrap_or_else(|_| reqwest::Client::new())
            })
            .clone()
    }

    pub fn environment(&self) -> String {
        self.environment
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn env_config(&self) -> &Environment {
        self.platform
            .environments
            .get(&self.environment())
            .expect("the session environment was checked when it was set")
    }

    /// Switches environment (the REPL's `:env`).
    pub fn set_environment(&self, name: &str) -> Result<()> {
        self.platform.environment(name)?;
        *self.environment.write().unwrap_or_else(|e| e.into_inner()) = name.to_string();
        Ok(())
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run.load(Ordering::Relaxed)
    }

    pub fn set_dry_run(&self, on: bool) {
        self.dry_run.store(on, Ordering::Relaxed);
    }

    /// `--wait-lock`: queue behind the run holding the environment's lock instead of failing.
    pub fn set_wait_lock(&self, on: bool) {
        self.run_lock.set_wait(on);
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    pub fn deadline_left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The token the current operation is cancelled through.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ctrl-C: stop the script between operations and cancel the call in flight.
    pub fn interrupt(&self) {
        self.mark_stopped(Stop::Interrupted);
        self.cancel_token().cancel();
    }

    /// A fresh token, so the REPL goes on after Ctrl-C cancelled one line.
    pub fn reset_cancel(&self) {
        *self.cancel.lock().unwrap_or_else(|e| e.into_inner()) = CancellationToken::new();
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn mark_stopped(&self, stop: Stop) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        stopped.get_or_insert(stop);
    }

    pub fn stopped(&self) -> Option<Stop> {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checked by the engine between operations: whether the script must stop now.
    pub fn should_stop(&self) -> Option<Stop> {
        if self.cancel_token().is_cancelled() {
            return Some(self.stopped().unwrap_or(Stop::Interrupted));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.mark_stopped(Stop::OutOfTime);
            return Some(Stop::OutOfTime);
        }
        None
    }

    pub fn current_step(&self) -> Option<String> {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
    }

    pub fn enter_step(&self, name: &str) {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_string());
    }

    pub fn leave_step(&self) {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).pop();
    }

    /// Runs `fut` on the I/O runtime until it ends, Ctrl-C cancels it, or the budget runs out.
    pub fn block_on<T>(
        &self,
        fut: impl Future<Output = Result<T, HostError>>,
    ) -> Result<T, HostError> {
        if let Some(stop) = self.should_stop() {
            return Err(HostError::Stopped(stop));
        }
        let token = self.cancel_token();
        let deadline = self.deadline.map(tokio::time::Instant::from_std);
        let outcome = self.runtime.block_on(async move {
            tokio::select! {
                result = fut => result,
                _ = token.cancelled() => Err(HostError::Stopped(Stop::Interrupted)),
                _ = sleep_until(deadline) => Err(HostError::Stopped(Stop::OutOfTime)),
            }
        });
        if let Err(HostError::Stopped(stop)) = &outcome {
            self.mark_stopped(*stop);
        }
        outcome
    }

    /// A call that only reads: it runs for real, in dry-run too, and is journaled.
    pub fn read<T: Serialize>(
        &self,
        function: &str,
        args: Value,
        fut: impl Future<Output = Result<T, HostError>>,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let started = Instant::now();
        let outcome = self.block_on(fut).and_then(to_json);
        self.journal_result(function, args, started, outcome, false)
    }

    /// A call that changes something. In dry-run the future is dropped unrun; the journal gets
    /// the exact `request` it would have sent and the script gets `planned` marked
    /// `planned: true`, shaped like a real result so the rest of the script still runs.
    pub fn mutate<T: Serialize>(
        &self,
        function: &str,
        args: Value,
        request: Value,
        planned: impl FnOnce() -> T,
        fut: impl Future<Output = Result<T, HostError>>,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let started = Instant::now();
        if self.dry_run() {
            let mut result = to_json(planned()).map_err(|e| e.into_rhai(function))?;
            mark_planned(&mut result, true);
            let mut args = args;
            if let Value::Object(map) = &mut args {
                map.insert("request".into(), request);
            }
            return self.journal_result(function, args, started, Ok(result), true);
        }
        // The first real change of a run takes the environment's run lock (see `lock`).
        let locked = async {
            self.run_lock.ensure(self).await?;
            fut.await
        };
        let outcome = self.block_on(locked).and_then(to_json).map(|mut v| {
            mark_planned(&mut v, false);
            v
        });
        self.journal_result(function, args, started, outcome, true)
    }

    fn journal_result(
        &self,
        function: &str,
        args: Value,
        started: Instant,
        outcome: Result<Value, HostError>,
        mutating: bool,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let planned = mutating && self.dry_run();
        let journal_outcome = match &outcome {
            Ok(v) if planned => Outcome::status("planned", v.clone(), None),
            Ok(v) => Outcome::ok(v.clone()),
            Err(HostError::Stopped(stop)) => {
                Outcome::status("cancelled", Value::Null, Some(stop.describe().into()))
            }
            Err(e) => Outcome::status("error", Value::Null, Some(e.to_string())),
        };
        let entry = Entry {
            step: self.current_step(),
            function: function.to_string(),
            args,
            outcome: journal_outcome,
            duration_ms: started.elapsed().as_millis() as u64,
            dry_run: self.dry_run(),
            mutating,
        };
        if let Err(e) = self.append(entry) {
            return Err(HostError::Failed(e.message).into_rhai(function));
        }
        match outcome {
            Ok(value) => rhai::serde::to_dynamic(value),
            Err(e) => Err(e.into_rhai(function)),
        }
    }
}

fn to_json<T: Serialize>(value: T) -> Result<Value, HostError> {
    serde_json::to_value(value)
        .map_err(|e| HostError::Failed(format!("result not representable: {e}")))
}

fn mark_planned(value: &mut Value, planned: bool) {
    if let Value::Object(map) = value {
        map.insert("planned".into(), Value::Bool(planned));
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// An uncatchable stop for the script: Ctrl-C or the budget.
pub fn terminated(stop: Stop) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::from(stop.describe().to_string()),
        Position::NONE,
    ))
}
