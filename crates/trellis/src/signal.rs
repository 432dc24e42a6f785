//! Termination signals.

use tokio::signal::unix::{SignalKind, signal};

/// A termination request: which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Stop {
    /// The signal number, to forward it to a child.
    pub fn raw(self) -> i32 {
        match self {
            Stop::Interrupt => SignalKind::interrupt().as_raw_value(),
            Stop::Terminate => SignalKind::terminate().as_raw_value(),
        }
    }
}

/// Listens for SIGINT and SIGTERM.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.interrupt.recv() => Stop::Interrupt,
            _ = self.terminate.recv() => Stop::Terminate,
        }
    }
}
