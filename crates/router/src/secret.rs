//! API keys: read from the environment variable a tier names, never printed.

use std::fmt;

use crate::backend::BackendError;

/// A key that prints as `*****`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The key in `var`, when the tier names one; an error when it names one that is unset.
    pub fn from_env(tier: &str, var: Option<&str>) -> Result<Option<Secret>, BackendError> {
        let Some(var) = var else {
            return Ok(None);
        };
        match std::env::var(var) {
            // A trailing newline from a `.env` file or a mounted secret is not part of the key.
            Ok(v) if !v.trim().is_empty() => Ok(Some(Secret(v.trim().to_string()))),
            _ => Err(BackendError::MissingKey {
                tier: tier.into(),
                var: var.into(),
            }),
        }
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("sk-123".into())), "*****");
    }
}
