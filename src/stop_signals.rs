//! Ctrl-C and SIGTERM as one event. Operators press Ctrl-C; Kubernetes, systemd and `kill`
//! send SIGTERM; both mean "stop cleanly", so every long-running command waits on both.

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct StopSignals {
    /// None when SIGTERM cannot be watched (then only Ctrl-C stops).
    term: Option<Signal>,
}

impl StopSignals {
    /// Starts listening; call inside the tokio runtime.
    pub fn listen() -> StopSignals {
        StopSignals {
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Waits for the next Ctrl-C or SIGTERM.
    pub async fn next(&mut self) {
        let terminate = async {
            match self.term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
    }
}
