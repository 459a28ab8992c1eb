//! How long the operator's watches wait after an error.
//!
//! kube-runtime applies one backoff to all of a controller's watches together, so when the API
//! server restarts, each of the six watches failing once doubles a shared delay during which no
//! event at all is seen. With its default (0.8 s doubling to 30 s, reset only after two calm
//! minutes) the e2e suite saw the operator blind for 80 s after a 3 s outage; a short cap keeps
//! the tail of an outage to seconds while still not hammering a server that is down.

use std::time::{Duration, Instant};

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(250);
const CAP: Duration = Duration::from_secs(4);
/// Calm after which the delay starts again from `FIRST`.
const RESET_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct WatchBackoff {
    next: Duration,
    last: Option<Instant>,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: FIRST,
            last: None,
        }
    }
}

impl WatchBackoff {
    /// The delay after an error at `now`.
    fn delay_at(&mut self, now: Instant) -> Duration {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) > RESET_AFTER)
        {
            self.next = FIRST;
        }
        self.last = Some(now);
        let delay = self.next;
        self.next = (self.next * 2).min(CAP);
        delay
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.delay_at(Instant::now()))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_cap_and_starts_over_after_calm_or_success() {
        let mut b = WatchBackoff::default();
        let t = Instant::now();
        let delays: Vec<u64> = (0..7)
            .map(|i| b.delay_at(t + Duration::from_secs(i)).as_millis() as u64)
            .collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(b.delay_at(t + Duration::from_secs(60)), FIRST);
        b.delay_at(t + Duration::from_secs(61));
        b.reset();
        assert_eq!(b.delay_at(t + Duration::from_secs(62)), FIRST);
    }
}
