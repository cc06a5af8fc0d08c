//! A per-tier circuit breaker: after `failures` consecutive failed tries the tier is left
//! alone for `cooldown`; then one probe goes through, and its outcome closes the circuit or
//! opens it again. A std `Mutex`, not tokio's: it is held across no `.await`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out.
    HalfOpen,
}

/// Leave to try the tier once. Dropped without an outcome (the caller went away), a probe
/// counts as failed so that the next caller can probe again after the cooldown.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

/// What the breaker's state looks like from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

impl Breaker {
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Breaker {
            failures: failures.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Leave to try, or how long until the tier may be tried again.
    pub fn admit(&self) -> Result<Permit<'_>, Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(self.permit(false)),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } => {
                *state = State::HalfOpen;
                Ok(self.permit(true))
            }
            // Another caller is probing; this one waits its turn elsewhere.
            State::HalfOpen => Err(self.cooldown),
        }
    }

    /// Whether calls go through without question.
    pub fn closed(&self) -> bool {
        matches!(*self.lock(), State::Closed { .. })
    }

    pub fn circuit(&self) -> Circuit {
        match *self.lock() {
            State::Closed { .. } => Circuit::Closed,
            State::Open { .. } => Circuit::Open,
            State::HalfOpen => Circuit::HalfOpen,
        }
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            settled: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere while holding it; the state is a
        // plain value and still valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, ok: bool) {
        let mut state = self.lock();
        *state = match (*state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.failures => State::Closed {
                failures: failures + 1,
            },
            // Open already: a try admitted before it opened failed too; keep the deadline.
            (State::Open { until }, false) => State::Open { until },
            (_, false) => State::Open {
                until: Instant::now() + self.cooldown,
            },
        };
    }
}

impl Permit<'_> {
    /// The tier answered (an error that is the request's own fault counts: the tier is up).
    pub fn success(mut self) {
        self.settled = true;
        self.breaker.record(true);
    }

    pub fn failure(mut self) {
        self.settled = true;
        self.breaker.record(false);
    }

    /// The try never reached the upstream: nothing is learnt. A probe hands the circuit back
    /// open, due now, so that the next caller probes.
    pub fn release(mut self) {
        self.settled = true;
        if self.probe {
            let mut state = self.breaker.lock();
            if *state == State::HalfOpen {
                *state = State::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breaker.record(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_probes() {
        let b = Breaker::new(3, Duration::from_secs(10));
        b.admit().expect("closed").failure();
        b.admit().expect("closed").failure();
        b.admit().expect("closed").success();
        assert_eq!(b.circuit(), Circuit::Closed, "a success resets the count");
        for _ in 0..3 {
            b.admit().expect("closed").failure();
        }
        assert_eq!(b.circuit(), Circuit::Open);
        let wait = b.admit().expect_err("open");
        assert!(wait <= Duration::from_secs(10) && wait > Duration::from_secs(9));
        tokio::time::advance(Duration::from_secs(11)).await;
        let probe = b.admit().expect("half-open lets one probe");
        assert!(b.admit().is_err(), "only one probe at a time");
        probe.failure();
        assert_eq!(b.circuit(), Circuit::Open, "a failed probe opens it again");
        tokio::time::advance(Duration::from_secs(11)).await;
        let probe = b.admit().expect("probe");
        probe.release();
        assert_eq!(
            b.circuit(),
            Circuit::Open,
            "a try that sent nothing proves nothing"
        );
        b.admit().expect("the next caller probes at once").success();
        assert_eq!(b.circuit(), Circuit::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_does_not_wedge_the_circuit() {
        let b = Breaker::new(1, Duration::from_secs(1));
        b.admit().expect("closed").failure();
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(b.admit().expect("probe"));
        assert_eq!(b.circuit(), Circuit::Open);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(b.admit().is_ok());
    }
}
