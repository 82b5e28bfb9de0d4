//! How everything that retries waits between attempts: exponentially longer, with jitter, so that
//! many clients cut off at once (agents, terminals, deliveries) do not all come back at once.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Waits starting at `first` and doubling up to `max`, each with up to as much again added at
/// random; never runs out. Start a new one to start again from `first`.
pub fn backoff(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_and_never_run_out() {
        let second = Duration::from_secs(1);
        let waits: Vec<Duration> = backoff(second, 8 * second).take(50).collect();
        assert_eq!(waits.len(), 50);
        assert!(waits[0] >= second && waits[0] < 2 * second, "{waits:?}");
        assert!(waits[1] >= 2 * second && waits[1] < 4 * second, "{waits:?}");
        assert!(waits.iter().all(|w| *w < 16 * second), "{waits:?}");
        assert!(waits[40..].iter().all(|w| *w >= 8 * second), "{waits:?}");
    }
}
