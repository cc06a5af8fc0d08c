//! `metadata`: the object as a client sent it, with every `privacy` value in it seen.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A request's `metadata` object. A JSON object keeps the last of repeated keys, so
/// `{"privacy": "local-only", "privacy": "any"}` would read as `any`; here every `privacy`
/// value is kept ([`privacy`](Self::privacy)) as the body is parsed, so that the strictest can
/// win without reading the body twice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// The members (the last of repeated keys).
    pub value: Map<String, Value>,
    /// Every `privacy` value, in order, repeated keys included.
    pub privacy: Vec<Value>,
}

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.value.get(key)
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut out = Metadata::default();
                while let Some(key) = map.next_key::<String>()? {
                    let value: Value = map.next_value()?;
                    if key == "privacy" {
                        out.privacy.push(value.clone());
                    }
                    out.value.insert(key, value);
                }
                Ok(out)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Metadata, E> {
                Ok(Metadata::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_privacy_value_is_kept() {
        let m: Metadata =
            serde_json::from_str(r#"{"privacy": "local-only", "task": "t", "privacy": "any"}"#)
                .expect("an object");
        assert_eq!(m.privacy, [Value::from("local-only"), Value::from("any")]);
        assert_eq!(m.get("task"), Some(&Value::from("t")));
        assert_eq!(
            serde_json::to_string(&m).expect("serializes"),
            r#"{"privacy":"any","task":"t"}"#
        );
        assert!(serde_json::from_str::<Metadata>(r#""text""#).is_err());
    }

    #[test]
    fn a_repeated_metadata_member_is_refused() {
        let e = serde_json::from_str::<crate::ChatRequest>(
            r#"{"model": "m", "messages": [], "metadata": {"privacy": "local-only"}, "metadata": {}}"#,
        )
        .expect_err("two metadata members");
        assert!(e.to_string().contains("duplicate field `metadata`"), "{e}");
    }
}
