//! Field readers that say what they expected: integers that accept JSON numbers with no
//! fraction (`42.0` is a valid JSON Schema integer, and some clients send it), and the
//! "one of these shapes" fields (`stop`, `content`, `tool_choice`) whose untagged-enum errors
//! would otherwise read "data did not match any variant".

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// An integer in `[min, max]`, given as a JSON integer or as a number with no fraction.
struct Integer {
    min: i128,
    max: i128,
}

impl Visitor<'_> for Integer {
    type Value = i128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer between {} and {}", self.min, self.max)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        self.check(i128::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        self.check(i128::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
        // Only whole numbers, and only where an i128 holds them exactly.
        if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e30 {
            return self.check(v as i128);
        }
        Err(E::invalid_value(de::Unexpected::Float(v), &self))
    }
}

impl Integer {
    fn check<E: de::Error>(&self, v: i128) -> Result<i128, E> {
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(E::custom(format_args!(
                "{v} is out of range: expected an integer between {} and {}",
                self.min, self.max
            )))
        }
    }
}

fn integer<'de, D: Deserializer<'de>>(d: D, min: i128, max: i128) -> Result<i128, D::Error> {
    d.deserialize_any(Integer { min, max })
}

/// `u32` that takes `4` or `4.0`.
pub(crate) fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    integer(d, 0, i128::from(u32::MAX)).map(|v| v as u32)
}

/// `Option<u32>` that takes `4` or `4.0`; `null` is `None`.
pub(crate) fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an integer between 0 and {}", u32::MAX)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            integer(d, 0, i128::from(u32::MAX)).map(|v| Some(v as u32))
        }
    }
    d.deserialize_option(V)
}

/// `Option<i64>` that takes `42` or `42.0`; `null` is `None`.
pub(crate) fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an integer between {} and {}", i64::MIN, i64::MAX)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            integer(d, i128::from(i64::MIN), i128::from(i64::MAX)).map(|v| Some(v as i64))
        }
    }
    d.deserialize_option(V)
}

/// The JSON type of a value, for "expected X, got Y" messages.
pub(crate) fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "super::opt_u32")]
        n: Option<u32>,
        #[serde(default, deserialize_with = "super::opt_i64")]
        seed: Option<i64>,
    }

    fn t(v: serde_json::Value) -> Result<T, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn whole_floats_are_integers() {
        let v = t(json!({"n": 4.0, "seed": -42.0})).expect("integral floats");
        assert_eq!((v.n, v.seed), (Some(4), Some(-42)));
        let v = t(json!({"n": 7, "seed": null})).expect("plain");
        assert_eq!((v.n, v.seed), (Some(7), None));
        assert_eq!(t(json!({})).expect("absent").n, None);
    }

    #[test]
    fn fractions_ranges_and_types_are_refused_with_what_was_expected() {
        for (v, words) in [
            (json!({"n": 4.5}), "expected an integer"),
            (json!({"n": -1}), "out of range"),
            (json!({"n": 5_000_000_000u64}), "out of range"),
            (json!({"n": "4"}), "invalid type: string"),
            (json!({"seed": 1e300}), "expected an integer"),
        ] {
            let e = t(v.clone()).expect_err("refused").to_string();
            assert!(e.contains(words), "{v}: {e}");
        }
    }
}
