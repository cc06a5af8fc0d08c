//! What every part of the configuration's validation shares: a failure's shape, and checks of
//! values found in more than one table.

use std::time::Duration;

use toml::Spanned;

/// A validation failure: field path, where it is, what is wrong.
pub(crate) type Invalid = (String, Option<std::ops::Range<usize>>, String);

pub(crate) fn invalid<T>(
    path: String,
    span: std::ops::Range<usize>,
    message: impl Into<String>,
) -> Result<T, Invalid> {
    Err((path, Some(span), message.into()))
}

/// A positive number of seconds, no larger than a day.
pub(crate) fn seconds(path: &str, v: Spanned<f64>) -> Result<Duration, Invalid> {
    let x = *v.get_ref();
    if x.is_finite() && x > 0.0 && x <= 86_400.0 {
        Ok(Duration::from_secs_f64(x))
    } else {
        invalid(
            path.to_string(),
            v.span(),
            "must be a positive number of seconds (at most 86400)",
        )
    }
}
