//! A model's recommended sampling, as its file declares it (`general.sampling.*`, written by
//! the converter from the model's `generation_config.json`) or as the catalog knows it.

use serde::Serialize;

use crate::gguf::Gguf;

/// Recommended values, any of them missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Recommended {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
}

impl Recommended {
    /// The `general.sampling.*` keys of a model file. A value out of its range is ignored, as
    /// if the key were absent: the file is not trusted to set, say, a negative temperature.
    pub fn from_gguf(gguf: &Gguf) -> Recommended {
        let float = |key: &str, lo: f32, hi: f32| {
            let v = match gguf.get(key)? {
                crate::gguf::Value::F32(v) => *v,
                crate::gguf::Value::F64(v) => *v as f32,
                other => other.as_i64()? as f32,
            };
            (v.is_finite() && (lo..=hi).contains(&v)).then_some(v)
        };
        Recommended {
            temperature: float("general.sampling.temp", 0.0, 2.0),
            top_p: float("general.sampling.top_p", 0.0, 1.0),
            top_k: gguf
                .get("general.sampling.top_k")
                .and_then(|v| v.as_u64())
                .and_then(|k| u32::try_from(k).ok()),
            min_p: float("general.sampling.min_p", 0.0, 1.0),
            repetition_penalty: float("general.sampling.penalty_repeat", 0.5, 2.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_key_out_of_range_is_ignored() {
        use crate::gguf::Value;
        let gguf = Gguf {
            version: 3,
            metadata: vec![
                ("general.sampling.temp".into(), Value::F32(-3.0)),
                ("general.sampling.top_p".into(), Value::F32(0.8)),
                ("general.sampling.top_k".into(), Value::U32(20)),
                ("general.sampling.min_p".into(), Value::F64(f64::NAN)),
                ("general.sampling.penalty_repeat".into(), Value::F32(1.05)),
            ],
            tensors: Vec::new(),
            alignment: 32,
            data_offset: 0,
            file_size: 0,
        };
        let r = Recommended::from_gguf(&gguf);
        assert_eq!(r.temperature, None);
        assert_eq!(r.top_p, Some(0.8));
        assert_eq!(r.top_k, Some(20));
        assert_eq!(r.min_p, None);
        assert_eq!(r.repetition_penalty, Some(1.05));
    }
}
