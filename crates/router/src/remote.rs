//! A remote tier at work: its backend behind retries with jittered exponential backoff that
//! honour `Retry-After`, a circuit breaker, and a total deadline. Failover to the tier's
//! fallback is the caller's: it walks the chain while [`BackendError::fails_over`] says so.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::anthropic::AnthropicBackend;
use crate::backend::{Answer, Backend, BackendError, BoxFuture, Native, Protocol};
use crate::breaker::{Breaker, Circuit};
use crate::config::{BackendConfig, Faults, Tier};
use crate::gemini::GeminiBackend;
use crate::openai::OpenAiBackend;

/// A remote tier, ready to take requests.
#[derive(Debug)]
pub struct RemoteTier {
    name: String,
    backend: Arc<dyn Backend>,
    faults: Faults,
    breaker: Breaker,
    fallback: Option<String>,
    /// Whether the tier runs on this machine.
    on_machine: bool,
}

/// The tier's backend, or `None` for the embedded tier, which the server's core runs itself.
/// The one place a backend kind becomes a running backend.
pub fn build(tier: &Tier) -> Result<Option<RemoteTier>, BackendError> {
    let f = &tier.faults;
    let backend: Arc<dyn Backend> = match &tier.backend {
        BackendConfig::Embedded { .. } => return Ok(None),
        BackendConfig::OpenAi(r) => Arc::new(OpenAiBackend::new(&tier.name, r, f)?),
        BackendConfig::Anthropic(r) => Arc::new(AnthropicBackend::new(&tier.name, r, f)?),
        BackendConfig::Gemini(r) => Arc::new(GeminiBackend::new(&tier.name, r, f)?),
    };
    Ok(Some(RemoteTier::new(tier, backend)))
}

impl RemoteTier {
    pub fn new(tier: &Tier, backend: Arc<dyn Backend>) -> Self {
        RemoteTier {
            name: tier.name.clone(),
            backend,
            faults: tier.faults,
            breaker: Breaker::new(tier.faults.breaker_failures, tier.faults.breaker_cooldown),
            fallback: tier.fallback.clone(),
            on_machine: tier.on_machine,
        }
    }

    /// Whether the tier runs on this machine (a request kept on it may go there).
    pub fn on_machine(&self) -> bool {
        self.on_machine
    }

    /// Whether requests in `protocol` pass through to this tier untouched.
    pub fn speaks(&self, protocol: Protocol) -> bool {
        self.backend.speaks(protocol)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn model(&self) -> &str {
        self.backend.model()
    }

    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    pub fn circuit(&self) -> Circuit {
        self.breaker.circuit()
    }

    /// `request` (an OpenAI chat completion) answered by this tier: tried up to `attempts`
    /// times while failures are retryable, waiting between tries, all within the total
    /// deadline.
    pub async fn chat(&self, request: &Bytes) -> Result<Answer, BackendError> {
        self.tries(|deadline| self.backend.chat(request, deadline))
            .await
    }

    /// A request in the tier's own protocol, passed through, with the same retries.
    pub async fn pass(&self, native: &Native) -> Result<Answer, BackendError> {
        self.tries(|deadline| self.backend.pass(native, deadline))
            .await
    }

    async fn tries<'a>(
        &'a self,
        mut once: impl FnMut(Instant) -> BoxFuture<'a, Result<Answer, BackendError>>,
    ) -> Result<Answer, BackendError> {
        let deadline = Instant::now() + self.faults.total_timeout;
        let mut attempt = 0;
        let mut last: Option<BackendError> = None;
        loop {
            attempt += 1;
            let permit = match self.breaker.admit() {
                Ok(p) => p,
                // The circuit opened during the retries: the upstream's own error says more.
                Err(retry_in) => {
                    return Err(last.unwrap_or(BackendError::CircuitOpen {
                        tier: self.name.clone(),
                        retry_in,
                    }));
                }
            };
            let outcome = tokio::time::timeout_at(deadline, once(deadline))
                .await
                .unwrap_or_else(|_| {
                    Err(BackendError::Timeout {
                        tier: self.name.clone(),
                        what: "the total deadline passed",
                        after: self.faults.total_timeout,
                    })
                });
            let e = match outcome {
                Ok(answer) => {
                    permit.success();
                    return Ok(answer);
                }
                // Refused before anything was sent: says nothing about the upstream's health.
                Err(e) if e.before_sending() => {
                    permit.release();
                    return Err(e);
                }
                // The upstream answered, if only to say no: it is up.
                Err(e) if !e.is_retryable() => {
                    permit.success();
                    return Err(e);
                }
                Err(e) => {
                    permit.failure();
                    e
                }
            };
            if attempt >= self.faults.attempts {
                return Err(e);
            }
            let wait = self.backoff(attempt, e.retry_after());
            // An upstream that asks for a longer rest than allowed, or past the deadline, is
            // given up on now: the fallback answers sooner.
            let too_long = e.retry_after().is_some_and(|r| r > self.faults.max_backoff);
            if too_long || Instant::now() + wait >= deadline || !self.breaker.closed() {
                return Err(e);
            }
            tracing::debug!(tier = %self.name, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
            tokio::time::sleep(wait).await;
            last = Some(e);
        }
    }

    /// The wait before try `attempt + 1`: `backoff · 2^(attempt-1)` capped at `max_backoff`,
    /// jittered to between half and all of it, and never less than `Retry-After`.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .faults
            .backoff
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.faults.max_backoff);
        let jittered = exp.mul_f64(0.5 + 0.5 * unit_random());
        retry_after.map_or(jittered, |r| r.max(jittered))
    }
}

/// A number in [0, 1), different on each call: enough to spread retries apart.
fn unit_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = RandomState::new().hash_one(n);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_jittered_and_capped() {
        let tier = crate::config::Config::embedded("m").tiers.remove(0);
        let mut faults = Faults {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..Faults::default()
        };
        faults.attempts = 5;
        let mut t = RemoteTier::new(
            &tier,
            Arc::new(
                OpenAiBackend::new(
                    "t",
                    &crate::config::Remote {
                        base_url: url::Url::parse("http://127.0.0.1:9/v1").expect("url"),
                        model: "m".into(),
                        api_key_env: None,
                    },
                    &faults,
                )
                .expect("backend"),
            ),
        );
        t.faults = faults;
        for _ in 0..50 {
            let first = t.backoff(1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let second = t.backoff(2, None);
            assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
            let capped = t.backoff(4, None);
            assert!(capped >= Duration::from_millis(175) && capped <= Duration::from_millis(350));
            assert!(t.backoff(1, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
        }
    }
}
