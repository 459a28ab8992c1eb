//! Prometheus text exposition, by hand: a few counters do not justify a metrics framework.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Builds an exposition: each family once, with its HELP and TYPE lines.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.family(name, help, "counter", &[("", value as f64)])
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, help, "gauge", &[("", value)])
    }

    /// A family whose samples differ by labels (`labels` is the text inside `{}`).
    pub fn family(
        &mut self,
        name: &str,
        help: &str,
        kind: &str,
        samples: &[(&str, f64)],
    ) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {value}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
        self
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let c = Counter::default();
        c.add(3);
        let text = Exposition::default()
            .counter("c19_x_total", "Xs.", c.get())
            .family("c19_y", "Ys.", "gauge", &[("kind=\"a\"", 1.5)])
            .finish();
        assert_eq!(
            text,
            "# HELP c19_x_total Xs.\n# TYPE c19_x_total counter\nc19_x_total 3\n# HELP c19_y Ys.\n# TYPE c19_y gauge\nc19_y{kind=\"a\"} 1.5\n"
        );
    }
}
