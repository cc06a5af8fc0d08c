//! `GET /metrics` in Prometheus' text format, and the admission gate for the embedded engine.
//!
//! Counters and histograms are atomics (no lock on the token path). The gate bounds the local
//! requests queued or running: past it a request is refused at once with 429 and
//! `Retry-After`, rather than waiting without bound.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Bounds on the embedded engine's work.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Local requests that may wait while every slot is generating.
    pub max_queue: usize,
    /// Local requests that generate together (the engine's slots).
    pub slots: usize,
    /// Longest a local request may take, from arrival to its last token.
    pub request_timeout: Duration,
    /// Keep the KV cache of a prompt prefix shared with the previous request.
    pub prefix_reuse: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queue: 64,
            slots: 1,
            request_timeout: Duration::from_secs(600),
            prefix_reuse: true,
        }
    }
}

/// Upper bounds (seconds) of the time-to-first-token buckets.
const TTFT_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upper bounds (seconds) of the inter-token latency buckets.
const ITL_BUCKETS: [f64; 9] = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then +Inf.
    counts: Vec<AtomicU64>,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, secs: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// What the server counts.
#[derive(Debug)]
pub struct Metrics {
    /// Local requests queued or generating.
    in_flight: AtomicUsize,
    /// The most local requests allowed in flight.
    max_in_flight: usize,
    request_timeout: Duration,
    pub(crate) prefix_reuse: bool,
    generating: AtomicUsize,
    rejected: AtomicU64,
    /// Connections closed on arrival because `max_connections` were open.
    connections_refused: AtomicU64,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    reused_tokens: AtomicU64,
    /// Responses by status code (index = status − 100, 100..=599).
    statuses: Vec<AtomicU64>,
    ttft: Histogram,
    itl: Histogram,
    /// The work requests cost on the way to an answer.
    pub(crate) work: Work,
}

/// Body parses, chat template renders and prompt tokenizations, counted so that a request's
/// path can be measured (each should happen once).
#[derive(Debug, Default)]
pub(crate) struct Work {
    parses: AtomicU64,
    renders: AtomicU64,
    tokenizations: AtomicU64,
}

impl Work {
    pub(crate) fn parse(&self) {
        self.parses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self) {
        self.renders.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn tokenize(&self) {
        self.tokenizations.fetch_add(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Metrics {
            in_flight: AtomicUsize::new(0),
            max_in_flight: limits.max_queue + limits.slots.max(1),
            request_timeout: limits.request_timeout,
            prefix_reuse: limits.prefix_reuse,
            generating: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            reused_tokens: AtomicU64::new(0),
            statuses: (100..600).map(|_| AtomicU64::new(0)).collect(),
            ttft: Histogram::new(&TTFT_BUCKETS),
            itl: Histogram::new(&ITL_BUCKETS),
            work: Work::default(),
        })
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A place in the local queue, or `None` when it is full.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let started = Instant::now();
        Some(Ticket {
            metrics: Arc::clone(self),
            started,
            deadline: tokio::time::Instant::from_std(started + self.request_timeout),
            timeout: self.request_timeout,
            last: None,
            generating: false,
        })
    }

    pub(crate) fn status(&self, code: u16) {
        if let Some(c) = self.statuses.get(usize::from(code).wrapping_sub(100)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: usize| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP smallfirst_requests_total HTTP responses by status code.\n# TYPE smallfirst_requests_total counter"
        );
        for (i, c) in self.statuses.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "smallfirst_requests_total{{status=\"{}\"}} {n}",
                    i + 100
                );
            }
        }
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let generating = self.generating.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "smallfirst_queue_depth",
            "Local requests waiting for the engine.",
            in_flight.saturating_sub(generating),
        );
        gauge(
            &mut out,
            "smallfirst_active_slots",
            "Local sequences generating.",
            generating,
        );
        gauge(
            &mut out,
            "smallfirst_queue_limit",
            "Local requests allowed in flight (queued + generating).",
            self.max_in_flight,
        );
        counter(
            &mut out,
            "smallfirst_rejected_total",
            "Local requests refused with 429 because the queue was full.",
            self.rejected.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "smallfirst_connections_refused_total",
            "Connections closed on arrival because the most allowed were open.",
            self.connections_refused.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "smallfirst_prompt_tokens_total",
            "Prompt tokens prefilled by the engine.",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "smallfirst_generated_tokens_total",
            "Tokens generated by the engine.",
            self.generated_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "smallfirst_prefix_reuse_tokens_total",
            "Prompt tokens whose KV cache was kept from the previous request, not prefilled again.",
            self.reused_tokens.load(Ordering::Relaxed),
        );
        for (name, help, n) in [
            (
                "smallfirst_body_parses_total",
                "Request bodies parsed.",
                &self.work.parses,
            ),
            (
                "smallfirst_template_renders_total",
                "Chat template renders.",
                &self.work.renders,
            ),
            (
                "smallfirst_tokenizations_total",
                "Rendered prompts tokenized.",
                &self.work.tokenizations,
            ),
        ] {
            counter(&mut out, name, help, n.load(Ordering::Relaxed));
        }
        self.ttft.render(
            &mut out,
            "smallfirst_ttft_seconds",
            "Time from a local request's arrival to its first token.",
        );
        self.itl.render(
            &mut out,
            "smallfirst_inter_token_seconds",
            "Time between a local answer's successive token deltas.",
        );
        out
    }
}

/// One local request's place in flight, and its timing. Dropped when the answer is done or the
/// client went away: its place is freed.
#[derive(Debug)]
pub(crate) struct Ticket {
    metrics: Arc<Metrics>,
    started: Instant,
    /// When the request's time is up.
    pub deadline: tokio::time::Instant,
    pub timeout: Duration,
    last: Option<Instant>,
    generating: bool,
}

impl Ticket {
    /// The engine took the request (the prompt was accepted).
    pub(crate) fn started(&mut self, prompt_tokens: u32) {
        if !self.generating {
            self.generating = true;
            self.metrics.generating.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics
            .prompt_tokens
            .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
    }

    /// Text arrived from the engine.
    pub(crate) fn delta(&mut self) {
        let now = Instant::now();
        match self.last {
            None => self
                .metrics
                .ttft
                .observe((now - self.started).as_secs_f64()),
            Some(prev) => self.metrics.itl.observe((now - prev).as_secs_f64()),
        }
        self.last = Some(now);
    }

    pub(crate) fn done(&mut self, completion_tokens: u32, reused_tokens: u32) {
        self.metrics
            .generated_tokens
            .fetch_add(u64::from(completion_tokens), Ordering::Relaxed);
        self.metrics
            .reused_tokens
            .fetch_add(u64::from(reused_tokens), Ordering::Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.generating {
            self.metrics.generating.fetch_sub(1, Ordering::Relaxed);
        }
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_holds_its_limit_and_frees_places() {
        let m = Metrics::new(Limits {
            max_queue: 1,
            ..Limits::default()
        });
        let a = m.admit().expect("one generating");
        let mut b = m.admit().expect("one queued");
        assert!(m.admit().is_none(), "full");
        b.started(10);
        b.delta();
        b.delta();
        b.done(2, 0);
        drop(a);
        let text = m.render();
        assert!(text.contains("smallfirst_queue_depth 0"), "{text}");
        assert!(text.contains("smallfirst_active_slots 1"));
        assert!(text.contains("smallfirst_rejected_total 1"));
        assert!(text.contains("smallfirst_prompt_tokens_total 10"));
        assert!(text.contains("smallfirst_ttft_seconds_count 1"));
        assert!(text.contains("smallfirst_inter_token_seconds_count 1"));
        drop(b);
        assert!(m.admit().is_some(), "places are freed");
    }
}
