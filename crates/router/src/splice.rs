//! A request body with its `model` put in a tier's terms, every other member copied as the
//! client wrote it: the pass-through backends (OpenAI-compatible, Anthropic's own protocol)
//! change nothing else.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::backend::BackendError;

/// The request with `model` replaced. Other members are copied as raw text, in order, never
/// parsed into values or re-serialized.
/// Also says whether the request asks for a stream.
pub(crate) fn with_model(body: &[u8], model: &str) -> Result<(Vec<u8>, bool), BackendError> {
    let members = Members::parse(body).ok_or(BackendError::Body)?;
    let stream = members
        .0
        .iter()
        .any(|(k, v)| k == "stream" && v.get().trim() == "true");
    let mut out = Vec::with_capacity(body.len() + model.len());
    out.push(b'{');
    let model_json = serde_json::to_vec(model).map_err(|_| BackendError::Body)?;
    let mut placed = false;
    for (i, (key, value)) in members.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key.as_ref()).map_err(|_| BackendError::Body)?;
        out.push(b':');
        if key == "model" {
            out.extend_from_slice(&model_json);
            placed = true;
        } else {
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    if !placed {
        if !members.0.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"model\":");
        out.extend_from_slice(&model_json);
    }
    out.push(b'}');
    Ok((out, stream))
}

/// The request without the `metadata` members named in `keys` (smallfirst's own hints, which
/// a provider's `metadata` refuses), `metadata` left out when nothing else is in it; every
/// other member copied as raw text. `None` when there is nothing to take out (or the body is
/// not an object), so the body goes on as it came.
pub fn without_metadata(body: &[u8], keys: &[&str]) -> Option<Vec<u8>> {
    let members = Members::parse(body)?;
    let (_, raw) = members.0.iter().find(|(k, _)| k == "metadata")?;
    let mut meta: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw.get()).ok()?;
    let before = meta.len();
    meta.retain(|k, _| !keys.contains(&k.as_str()));
    if meta.len() == before {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    out.push(b'{');
    let mut first = true;
    for (key, value) in &members.0 {
        if key == "metadata" && meta.is_empty() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, key.as_ref()).ok()?;
        out.push(b':');
        if key == "metadata" {
            serde_json::to_writer(&mut out, &meta).ok()?;
        } else {
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    out.push(b'}');
    Some(out)
}

/// The request with the top-level member `key` set to `value` (JSON text), replacing it where
/// it is or adding it at the end; every other member copied as raw text. `None` when the body
/// is not an object.
pub fn with_member(body: &[u8], key: &str, value: &str) -> Option<Vec<u8>> {
    let members = Members::parse(body)?;
    let mut out = Vec::with_capacity(body.len() + key.len() + value.len() + 4);
    out.push(b'{');
    let mut placed = false;
    for (i, (k, v)) in members.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k.as_ref()).ok()?;
        out.push(b':');
        if k == key && !placed {
            out.extend_from_slice(value.as_bytes());
            placed = true;
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    if !placed {
        if !members.0.is_empty() {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).ok()?;
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'}');
    Some(out)
}

/// A JSON object's members, values left as raw text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    fn parse(body: &'a [u8]) -> Option<Self> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let members = de.deserialize_map(MembersVisitor).ok()?;
        de.end().ok()?;
        Some(members)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            out.push((key, value));
        }
        Ok(Members(out))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_hints_leave_metadata() {
        let body =
            br#"{"model": "m", "metadata": {"user_id": "u", "privacy": "any"}, "system": [ 1 ]}"#;
        let out = super::without_metadata(body, &["privacy", "task"]).expect("a hint to take out");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf-8"),
            r#"{"model":"m","metadata":{"user_id":"u"},"system":[ 1 ]}"#
        );
        let only = br#"{"metadata": {"task": "t"}, "a": 1}"#;
        assert_eq!(
            super::without_metadata(only, &["task"]).expect("out"),
            br#"{"a":1}"#
        );
        assert!(super::without_metadata(br#"{"metadata": {"user_id": "u"}}"#, &["task"]).is_none());
    }

    #[test]
    fn a_member_is_set_in_place_or_added() {
        let set = super::with_member(br#"{"a": 1, "s": {"x": 2}, "b": [ 3 ]}"#, "s", "true");
        assert_eq!(set.as_deref(), Some(&br#"{"a":1,"s":true,"b":[ 3 ]}"#[..]));
        let added = super::with_member(br#"{"a": 1}"#, "s", r#"{"y":1}"#);
        assert_eq!(added.as_deref(), Some(&br#"{"a":1,"s":{"y":1}}"#[..]));
        assert_eq!(
            super::with_member(b"{}", "s", "1").as_deref(),
            Some(&b"{\"s\":1}"[..])
        );
        assert!(super::with_member(b"[1]", "s", "1").is_none());
    }
}
