//! A cloneable shutdown signal for the demo's servers and load generator.

use tokio::sync::watch;

/// Fires the paired [`ShutdownSignal`]s. Dropping the trigger also fires them, so a service
/// never outlives the code that owns its trigger.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Resolves once the paired [`ShutdownTrigger`] fires or is dropped; clone it for each task.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

/// Makes a connected trigger/signal pair.
pub fn shutdown_channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), ShutdownSignal(rx))
}

impl ShutdownTrigger {
    /// Tells every signal to shut down. Idempotent.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl ShutdownSignal {
    /// Whether shutdown has been requested (or the trigger is gone).
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Waits until shutdown is requested; pass `signal.clone().wait()` as a `shutdown` future.
    pub async fn wait(mut self) {
        // An error means the trigger was dropped, which counts as a shutdown too.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_and_drop_both_fire() {
        let (trigger, signal) = shutdown_channel();
        assert!(!signal.is_triggered());
        trigger.trigger();
        assert!(signal.is_triggered());
        signal.clone().wait().await;

        let (trigger, signal) = shutdown_channel();
        drop(trigger);
        assert!(signal.is_triggered());
        signal.wait().await;
    }
}
