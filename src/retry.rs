//! The retry policy of the daemon's stages (stream, backfill): what a failed attempt waits
//! before the next, and when to give up. The verdict on an error is the error's own
//! (`Error::is_retryable`, which asks each module's error whether it is transient).
//!
//! Owns the back-off. Must never decide an error is transient itself.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::metrics::Metrics;

/// Restarting a stage after retryable errors: back-off from 250 ms doubling to 30 s (each wait
/// jittered to 50–100 %), back to 250 ms after a minute of healthy running. The verdict itself is `Error::is_retryable`.
pub struct Retry {
    backoff: Duration,
    started: Instant,
}

impl Retry {
    pub fn new() -> Self {
        Retry {
            backoff: Duration::from_millis(250),
            started: Instant::now(),
        }
    }

    /// A new attempt starts now (a minute of it running healthy resets the back-off).
    pub fn attempt(&mut self) {
        self.started = Instant::now();
    }

    /// What to do after `e`: `Some(end)` stops the stage with `end`; `None` means retry (the
    /// back-off has been waited).
    pub async fn after(
        &mut self,
        e: Error,
        stage: &str,
        resume: &str,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Option<Result<(), Error>> {
        if shutdown.is_cancelled() {
            tracing::warn!(error = %e, "{stage}: error while stopping");
            return Some(Ok(()));
        }
        metrics.errors.with_label_values(&[e.kind()]).inc();
        if !e.is_retryable() {
            return Some(Err(e));
        }
        if self.started.elapsed() > Duration::from_secs(60) {
            self.backoff = Duration::from_millis(250);
        }
        let wait = jittered(self.backoff);
        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{stage}: retryable error; resuming from {resume}");
        tokio::select! {
            _ = shutdown.cancelled() => return Some(Ok(())),
            _ = tokio::time::sleep(wait) => {}
        }
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        None
    }
}

/// "Full jitter" over the upper half: a wait in [backoff/2, backoff], so daemons (and the
/// stream and backfill of one daemon) that lost the same server do not reconnect in lockstep.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::random::<f64>())
}

impl Default for Retry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_waits_are_jittered_within_half_to_full() {
        let b = Duration::from_millis(1000);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(b)).collect();
        assert!(waits.iter().all(|w| *w >= b / 2 && *w <= b), "{waits:?}");
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(
            distinct.len() > 100,
            "not jittered: {} distinct",
            distinct.len()
        );
    }
}
