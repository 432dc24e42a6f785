//! Polling with a deadline, the only way tests wait for the mesh to converge (never a bare sleep).

use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] and [`assert_eventually!`](crate::assert_eventually) re-check.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Re-evaluates `condition` every [`POLL_INTERVAL`] until it returns true (then returns true) or
/// `timeout` has passed (then returns false). The condition always runs at least once.
pub async fn eventually<F>(timeout: Duration, mut condition: F) -> bool
where
    F: AsyncFnMut() -> bool,
{
    let deadline = Deadline::after(timeout);
    loop {
        if condition().await {
            return true;
        }
        if deadline.passed() {
            return false;
        }
        deadline.pause().await;
    }
}

/// A point in (tokio) time after which polling gives up; used by
/// [`assert_eventually!`](crate::assert_eventually).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// The deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The timeout this deadline was made with, for messages.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sleeps one [`POLL_INTERVAL`], or less if the deadline comes sooner.
    pub async fn pause(&self) {
        tokio::time::sleep_until(self.at.min(Instant::now() + POLL_INTERVAL)).await;
    }
}

/// Polls `condition` (an expression that may `.await`) every ~20 ms until it is true, and panics
/// with the message if it is still false after `timeout`. Use it inside an async test.
///
/// ```
/// # async fn example() {
/// use std::time::Duration;
/// let mut polls = 0;
/// trellis_test::assert_eventually!(Duration::from_secs(5), { polls += 1; polls > 2 }, "{polls}");
/// # }
/// ```
#[macro_export]
macro_rules! assert_eventually {
    ($timeout:expr, $condition:expr $(,)?) => {
        $crate::assert_eventually!($timeout, $condition, "{}", stringify!($condition))
    };
    ($timeout:expr, $condition:expr, $($message:tt)+) => {{
        let deadline = $crate::Deadline::after($timeout);
        loop {
            if $condition {
                break;
            }
            if deadline.passed() {
                panic!(
                    "not true within {:?}: {}",
                    deadline.timeout(),
                    format_args!($($message)+)
                );
            }
            deadline.pause().await;
        }
    }};
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_waits_for_the_condition() {
        let calls = AtomicU32::new(0);
        let held = eventually(Duration::from_secs(1), async || {
            calls.fetch_add(1, Ordering::Relaxed) >= 3
        })
        .await;
        assert!(held);
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        assert!(!eventually(Duration::from_millis(100), async || false).await);
    }

    #[tokio::test(start_paused = true)]
    async fn macro_passes_and_panics() {
        let mut polls = 0;
        crate::assert_eventually!(Duration::from_secs(1), {
            polls += 1;
            polls > 2
        });
        let failed = tokio::spawn(async {
            crate::assert_eventually!(Duration::from_millis(50), false, "never {}", "true");
        })
        .await
        .unwrap_err();
        assert!(failed.is_panic());
    }
}
