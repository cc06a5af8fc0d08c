//! Privacy hints, and how they combine: failing closed.
//!
//! A request says how private it is with the `x-smallfirst-privacy` header or, for clients
//! that cannot set headers, with `metadata.privacy`. Each hint is `local-only` (never leaves
//! this machine) or `any`, in any case, with spaces around it ignored. The hints of one
//! request combine so that a mistake keeps data in, never lets it out:
//!
//! - a value that is neither is refused (a typo must not fail open);
//! - one `local-only` among the hints makes the request local-only, whatever the others say
//!   (a header sent twice, `any` then `local-only`; a header and a metadata field that
//!   disagree; a comma-separated list);
//! - the request may leave the machine only when every hint it carries says `any`;
//! - with no hint, the policy decides (a task's `privacy = "local-only"` keeps it local).

use serde_json::Value;

/// The header a client sets.
pub const HEADER: &str = "x-smallfirst-privacy";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Privacy {
    /// No hint was given.
    #[default]
    Unset,
    /// Every hint said `any`.
    Any,
    /// Some hint said `local-only`.
    LocalOnly,
}

/// A hint with a value that is neither `local-only` nor `any`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place} must be `local-only` or `any`, got `{value}`")]
pub struct PrivacyError {
    /// Where the hint was: the header's name or `metadata.privacy`.
    pub place: &'static str,
    /// The value, escaped and shortened for showing.
    pub value: String,
}

impl Privacy {
    pub fn local_only(self) -> bool {
        self == Privacy::LocalOnly
    }

    /// One hint's value.
    pub fn parse(v: &str) -> Option<Privacy> {
        let v = v.trim();
        if v.eq_ignore_ascii_case("local-only") {
            Some(Privacy::LocalOnly)
        } else if v.eq_ignore_ascii_case("any") {
            Some(Privacy::Any)
        } else {
            None
        }
    }

    /// The privacy of a request from its header values (`None` for one that is not text)
    /// and every `metadata.privacy` its body holds (all of them, repeated keys included, as
    /// `smallfirst_protocol::Metadata` keeps them while the body is parsed).
    pub fn of_request<'a>(
        header_values: impl IntoIterator<Item = Option<&'a str>>,
        metadata_values: &[Value],
    ) -> Result<Privacy, PrivacyError> {
        let mut out = Privacy::Unset;
        let mut take = |place: &'static str, v: &str| -> Result<(), PrivacyError> {
            let p = Privacy::parse(v).ok_or_else(|| PrivacyError {
                place,
                value: shown(v),
            })?;
            out = out.max(p);
            Ok(())
        };
        for value in header_values {
            let Some(value) = value else {
                return Err(PrivacyError {
                    place: HEADER,
                    value: "(not text)".into(),
                });
            };
            // A header sent as a list (`any, local-only`) is several hints.
            for part in value.split(',') {
                take(HEADER, part)?;
            }
        }
        for value in metadata_values {
            match value {
                Value::Null => {}
                Value::String(s) => take("metadata.privacy", s)?,
                other => {
                    return Err(PrivacyError {
                        place: "metadata.privacy",
                        value: shown(&other.to_string()),
                    });
                }
            }
        }
        Ok(out)
    }
}

impl PartialOrd for Privacy {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Stricter is greater: `Unset` < `Any` < `LocalOnly`.
impl Ord for Privacy {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let rank = |p: &Privacy| match p {
            Privacy::Unset => 0,
            Privacy::Any => 1,
            Privacy::LocalOnly => 2,
        };
        rank(self).cmp(&rank(other))
    }
}

/// A client's value for showing in a message: control characters escaped, at most 64
/// characters.
fn shown(v: &str) -> String {
    let mut out: String = v
        .chars()
        .take(64)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if v.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn of(headers: &[&str], metadata: Option<Value>) -> Result<Privacy, PrivacyError> {
        let values: Vec<Value> = metadata
            .and_then(|m| m.get("privacy").cloned())
            .into_iter()
            .collect();
        Privacy::of_request(headers.iter().map(|h| Some(*h)), &values)
    }

    #[test]
    fn every_value_of_a_repeated_key_counts() {
        let values = [json!("local-only"), json!("any")];
        assert_eq!(Privacy::of_request([], &values), Ok(Privacy::LocalOnly));
    }

    #[test]
    fn one_local_only_hint_wins_over_any_number_of_any() {
        assert_eq!(of(&[], None), Ok(Privacy::Unset));
        assert_eq!(of(&["any"], None), Ok(Privacy::Any));
        assert_eq!(of(&[" Local-Only "], None), Ok(Privacy::LocalOnly));
        assert_eq!(of(&["any", "local-only"], None), Ok(Privacy::LocalOnly));
        assert_eq!(of(&["local-only", "any"], None), Ok(Privacy::LocalOnly));
        assert_eq!(of(&["any, local-only"], None), Ok(Privacy::LocalOnly));
        assert_eq!(of(&["any", "any"], None), Ok(Privacy::Any));
        let local = Some(json!({"privacy": "local-only"}));
        assert_eq!(of(&["any"], local.clone()), Ok(Privacy::LocalOnly));
        assert_eq!(of(&[], local), Ok(Privacy::LocalOnly));
        assert_eq!(of(&[], Some(json!({"privacy": "any"}))), Ok(Privacy::Any));
        assert_eq!(of(&[], Some(json!({"task": "x"}))), Ok(Privacy::Unset));
    }

    #[test]
    fn unknown_values_are_refused_not_read_as_any() {
        for (headers, meta) in [
            (&["locl-only"][..], None),
            (&["any", "secret"][..], None),
            (&["any,"][..], None),
            (&[][..], Some(json!({"privacy": true}))),
            (&[][..], Some(json!({"privacy": "private"}))),
        ] {
            assert!(of(headers, meta.clone()).is_err(), "{headers:?} {meta:?}");
        }
        let e = Privacy::of_request([None], &[]).expect_err("not text");
        assert_eq!(e.place, HEADER);
        let e = of(&["a\r\nb"], None).expect_err("refused");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
