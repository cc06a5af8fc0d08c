//! A remote tier's `retry`, `timeouts` and `breaker` tables in `smallfirst.toml`, parsed raw
//! and validated into its [`Faults`].

use serde::Deserialize;
use toml::Spanned;

use std::time::Duration;

use super::validate::{Invalid, invalid, seconds};

/// How a remote tier's failures are handled. Ignored for the embedded tier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The delay before the first retry; it doubles with each retry, jittered.
    pub backoff: Duration,
    /// The longest wait between tries, `Retry-After` included: an upstream that asks for
    /// longer is given up on (and the fallback tried) rather than waited for.
    pub max_backoff: Duration,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time from sending a request to the response head, and between two chunks of a body.
    pub first_byte_timeout: Duration,
    /// Time for the whole call, retries and the streamed body included.
    pub total_timeout: Duration,
    /// Consecutive failed tries that open the tier's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before it lets one probe through.
    pub breaker_cooldown: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            attempts: 3,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(600),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    attempts: Option<Spanned<u32>>,
    backoff: Option<Spanned<f64>>,
    max_backoff: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    connect: Option<Spanned<f64>>,
    first_byte: Option<Spanned<f64>>,
    total: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    failures: Option<Spanned<u32>>,
    cooldown: Option<Spanned<f64>>,
}

/// The fault handling a tier's `retry`, `timeouts` and `breaker` tables describe, defaults
/// filling what they leave out.
pub(crate) fn faults(
    name: &str,
    retry: Option<Spanned<RawRetry>>,
    timeouts: Option<Spanned<RawTimeouts>>,
    breaker: Option<Spanned<RawBreaker>>,
) -> Result<Faults, Invalid> {
    let mut f = Faults::default();
    let secs = |field: &str, v: Spanned<f64>| seconds(&format!("tiers.{name}.{field}"), v);
    if let Some(r) = retry.map(Spanned::into_inner) {
        if let Some(a) = r.attempts {
            if *a.get_ref() == 0 || *a.get_ref() > 10 {
                return invalid(
                    format!("tiers.{name}.retry.attempts"),
                    a.span(),
                    "must be 1 to 10 (tries in all, the first included)",
                );
            }
            f.attempts = a.into_inner();
        }
        if let Some(b) = r.backoff {
            f.backoff = secs("retry.backoff", b)?;
        }
        if let Some(m) = r.max_backoff {
            let span = m.span();
            f.max_backoff = secs("retry.max_backoff", m)?;
            if f.max_backoff < f.backoff {
                return invalid(
                    format!("tiers.{name}.retry.max_backoff"),
                    span,
                    "must not be shorter than `retry.backoff`",
                );
            }
        }
    }
    if let Some(t) = timeouts.map(Spanned::into_inner) {
        if let Some(c) = t.connect {
            f.connect_timeout = secs("timeouts.connect", c)?;
        }
        if let Some(b) = t.first_byte {
            f.first_byte_timeout = secs("timeouts.first_byte", b)?;
        }
        if let Some(total) = t.total {
            f.total_timeout = secs("timeouts.total", total)?;
        }
    }
    if let Some(b) = breaker.map(Spanned::into_inner) {
        if let Some(n) = b.failures {
            if *n.get_ref() == 0 {
                return invalid(
                    format!("tiers.{name}.breaker.failures"),
                    n.span(),
                    "must be at least 1",
                );
            }
            f.breaker_failures = n.into_inner();
        }
        if let Some(c) = b.cooldown {
            f.breaker_cooldown = secs("breaker.cooldown", c)?;
        }
    }
    Ok(f)
}
