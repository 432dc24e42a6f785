//! Graceful shutdown: a signal every task watches (drain, then close) and a count of the tasks
//! still holding a watch, so shutdown can wait for in-flight work with a bound.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    Draining,
    Closed,
}

/// The owner's side: starts draining and waits for watchers to finish.
#[derive(Debug)]
pub(crate) struct Drain {
    phase: watch::Sender<Phase>,
    released: mpsc::Receiver<()>,
}

/// A task's side: tells it when to stop taking work and when to stop entirely. Dropping every
/// clone tells the [`Drain`] that the work is done.
#[derive(Debug, Clone)]
pub(crate) struct DrainWatch {
    phase: watch::Receiver<Phase>,
    _held: mpsc::Sender<()>,
}

impl Drain {
    /// A running drain and the first watch on it (clone it for more).
    pub(crate) fn new() -> (Self, DrainWatch) {
        let (held, released) = mpsc::channel(1);
        let phase = watch::Sender::new(Phase::Running);
        let watch = DrainWatch {
            phase: phase.subscribe(),
            _held: held,
        };
        (Self { phase, released }, watch)
    }

    /// Asks watchers to finish, waits up to `grace` for them, then tells the rest to stop now
    /// and waits up to `grace` again for them to go.
    pub(crate) async fn shutdown(mut self, grace: Duration) {
        self.phase.send_replace(Phase::Draining);
        if tokio::time::timeout(grace, self.released.recv())
            .await
            .is_err()
        {
            tracing::warn!(?grace, "in-flight work did not finish in time; closing it");
            self.phase.send_replace(Phase::Closed);
            let _ = tokio::time::timeout(grace, self.released.recv()).await;
        }
    }
}

impl DrainWatch {
    /// Resolves when shutdown starts: stop accepting, finish what is in flight.
    pub(crate) async fn draining(&mut self) {
        let _ = self.phase.wait_for(|p| *p >= Phase::Draining).await;
    }

    /// Resolves when in-flight work must stop now.
    pub(crate) async fn closed(&mut self) {
        let _ = self.phase.wait_for(|p| *p >= Phase::Closed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_watchers_then_closes_them() {
        let (drain, mut polite) = Drain::new();
        let mut stubborn = polite.clone();
        let polite_task = tokio::spawn(async move { polite.draining().await });
        let stubborn_task = tokio::spawn(async move { stubborn.closed().await });
        drain.shutdown(Duration::from_secs(5)).await;
        polite_task.await.unwrap();
        stubborn_task.await.unwrap();
    }
}
