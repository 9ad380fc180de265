//! Starting the sandbox's long-running processes detached from the terminal, and stopping
//! them again by pid from another invocation.
//!
//! A pid alone is not proof: after a reboot or a long time it may belong to something else.
//! Every process the sandbox starts names the sandbox directory on its command line, so a pid
//! is only signalled when `/proc/PID/cmdline` still mentions that directory.

use crate::error::{Error, Result, io_context};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Starts `command` in its own process group (Ctrl-C in the terminal that ran `up` must not
/// reach it) with stdin closed and its output appended to `log`. Nothing is inherited that
/// would keep the caller's pipes open after it exits.
pub fn spawn_detached(mut command: Command, log: &Path) -> Result<Child> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_context(e, format!("cannot create {}", dir.display())))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io_context(e, format!("cannot open {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| io_context(e, format!("cannot open {}", log.display())))?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start {program}: {e}")))
}

/// Runs `command` to its end in its own process group with its output appended to `log`.
/// When `interrupted` becomes true, the command's process group gets one SIGTERM (kwokctl
/// ignores SIGINT; cluster.sh's traps handle both) and is still waited for, so nothing it
/// started is left half-done.
pub fn run_logged(
    command: Command,
    log: &Path,
    interrupted: &AtomicBool,
) -> Result<std::process::ExitStatus> {
    let mut child = spawn_detached(command, log)?;
    let mut forwarded = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(io_context(e, "cannot wait for a child process")),
        }
        if interrupted.load(Ordering::SeqCst) && !forwarded {
            // SAFETY: kill(2) on our own child's process group; no memory effects.
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGTERM);
            }
            forwarded = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `ready` finds the just-started `child` answering (and returns what it found),
/// checking every 50 ms for at most `limit`. A child that exits first fails with the end of its log; one that does not answer
/// in time, or an interrupt, stops it and fails the same way. `what` names it in the message.
pub fn wait_ready<T>(
    child: &mut Child,
    what: &str,
    log: &Path,
    limit: Duration,
    interrupted: &AtomicBool,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::failed(format!(
                "{what} exited at start ({status}). Log {}:\n{}",
                log.display(),
                log_tail(log, 10)
            )));
        }
        if let Some(found) = ready() {
            return Ok(found);
        }
        if Instant::now() > deadline || interrupted.load(Ordering::SeqCst) {
            stop(child.id(), Duration::from_secs(5));
            let _ = child.wait();
            return Err(Error::failed(format!(
                "{what} did not answer within {}s. Log {}:\n{}",
                limit.as_secs(),
                log.display(),
                log_tail(log, 10)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The process's state letter from `/proc/PID/stat` (R, S, D, Z, …), if it exists.
fn state_letter(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Running, and not a zombie waiting for a parent that never reaps it.
pub fn is_running(pid: u32) -> bool {
    matches!(state_letter(pid), Some(c) if c != 'Z' && c != 'X')
}

pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The process runs and its command line names `marker` (the sandbox directory).
pub fn is_ours(pid: u32, marker: &Path) -> bool {
    is_running(pid) && cmdline(pid).is_some_and(|c| mentions(&c, marker))
}

fn mentions(cmdline: &str, marker: &Path) -> bool {
    let marker = marker.to_string_lossy();
    // Followed by a separator, so /x/sandbox does not match /x/sandbox-old.
    cmdline.match_indices(marker.as_ref()).any(|(at, m)| {
        matches!(
            cmdline[at + m.len()..].chars().next(),
            None | Some('/') | Some(' ') | Some('"') | Some('\'')
        )
    })
}

/// The file name of the process's executable (`prometheus`, `etcd`, …).
pub fn executable_name(pid: u32) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    // A binary replaced on disk (a rebuild) while it runs shows as "name (deleted)".
    Some(name.trim_end_matches(" (deleted)").to_string())
}

/// Every running process (other than this one) whose command line names `marker`.
pub fn pids_mentioning(marker: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && is_ours(*pid, marker))
        .collect();
    pids.sort_unstable();
    pids
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Sends SIGTERM, waits up to `grace` for the process to end, then SIGKILL. True if it is gone.
pub fn stop(pid: u32, grace: Duration) -> bool {
    if !is_running(pid) {
        return true;
    }
    signal(pid, libc::SIGTERM);
    if wait_gone(pid, grace) {
        return true;
    }
    signal(pid, libc::SIGKILL);
    wait_gone(pid, Duration::from_secs(5))
}

fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !is_running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !is_running(pid)
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_must_end_at_a_separator() {
        let dir = Path::new("/h/sandbox");
        assert!(mentions("serve --state /h/sandbox", dir));
        assert!(mentions("--config.file=/h/sandbox/prometheus/p.yml", dir));
        assert!(!mentions("serve --state /h/sandbox-old", dir));
        assert!(!mentions("serve --state /h/other", dir));
    }

    #[test]
    fn detached_process_is_found_stopped_and_reported_gone() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/sleep.log");
        // One process that never forks: a shell loop's children would briefly carry the
        // same command line and race the exact-pids assertion below.
        let mut command = Command::new("python3");
        command.args([
            "-c",
            "import time; print('started', flush=True); time.sleep(600)",
            &dir.path().display().to_string(),
        ]);
        let mut child = spawn_detached(command, &log).unwrap();
        let pid = child.id();
        let reaper = std::thread::spawn(move || child.wait());
        // The shell has run its first command, so it is past exec.
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_tail(&log, 1) != "started" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_ours(pid, dir.path()), "{:?}", cmdline(pid));
        assert_eq!(pids_mentioning(dir.path()), [pid]);
        assert!(stop(pid, Duration::from_secs(5)));
        reaper.join().unwrap().unwrap();
        assert!(!is_running(pid));
        assert!(pids_mentioning(dir.path()).is_empty());
        assert_eq!(log_tail(&log, 5), "started");
    }
}
