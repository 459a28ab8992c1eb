//! Running commands, waiting for conditions, and reading the API's times: what every harness
//! step does.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs a command and panics with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `f` every 200 ms until it returns `Some`, or panics once `timeout` has passed.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as the API writes them
/// (`2026-11-30T05:53:27Z`).
pub fn parse_time(t: &str) -> Option<u64> {
    let (date, time) = t.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut h = time.split(':').map(|p| p.parse::<f64>());
    let (hh, mm, ss) = (h.next()?.ok()?, h.next()?.ok()?, h.next()?.ok()?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss;
    Some((secs * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_times_parse() {
        assert_eq!(super::parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            super::parse_time("2026-11-30T05:53:27Z"),
            Some(1_796_018_007_000)
        );
        assert_eq!(super::parse_time("2026-11-30"), None);
    }
}
