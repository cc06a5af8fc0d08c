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
    /// and every `metadata.privacy` its body holds ([`in_body`]).
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

/// Every `metadata.privacy` value in a request body, duplicates included: a JSON parser keeps
/// the last of repeated keys, so `{"privacy": "local-only", "privacy": "any"}` would read as
/// `any`; here both are seen, and the strictest wins. Empty for a body that is not an object.
pub fn in_body(body: &[u8]) -> Vec<Value> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::fmt;

    struct Top<'v>(&'v mut Vec<Value>);
    struct Meta<'v>(&'v mut Vec<Value>);

    impl<'de> Visitor<'de> for Top<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a request object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "metadata" {
                    map.next_value_seed(Meta(&mut *self.0))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }

    impl<'de> serde::de::DeserializeSeed<'de> for Meta<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Meta<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("metadata")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "privacy" {
                    self.0.push(map.next_value::<Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
        // Metadata of any other type holds no hint.
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(())
        }
    }

    let mut found = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    if (&mut de).deserialize_map(Top(&mut found)).is_err() {
        // Not a request this server will read anyway: whatever was seen still counts.
        return found;
    }
    found
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
        let body = serde_json::json!({"model": "m", "metadata": metadata});
        let values = in_body(body.to_string().as_bytes());
        Privacy::of_request(headers.iter().map(|h| Some(*h)), &values)
    }

    #[test]
    fn a_repeated_metadata_key_is_read_every_time() {
        let body = br#"{"model": "m", "metadata": {"privacy": "local-only", "privacy": "any"}}"#;
        assert_eq!(in_body(body).len(), 2);
        assert_eq!(
            Privacy::of_request([], &in_body(body)),
            Ok(Privacy::LocalOnly)
        );
        let twice = br#"{"metadata": {"privacy": "local-only"}, "x": 1, "metadata": {}}"#;
        assert_eq!(
            Privacy::of_request([], &in_body(twice)),
            Ok(Privacy::LocalOnly)
        );
        assert!(in_body(b"not json").is_empty());
        assert!(in_body(br#"{"metadata": "text"}"#).is_empty());
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
