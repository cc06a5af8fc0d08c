//! A remote tier's `retry`, `timeouts` and `breaker` tables in `smallfirst.toml`, parsed raw
//! and validated into its [`Faults`].

use serde::Deserialize;
use toml::Spanned;

use crate::config::Faults;
use crate::validate::{Invalid, invalid, seconds};

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
