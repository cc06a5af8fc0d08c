//! A head file: what a trained head is, what it was trained on, and how it reads an input.
//! Files are read as hostile: bounded in size and shape, every number finite.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::HeadError;

/// The `format` a head file carries.
pub const FORMAT: &str = "smallfirst-head/1";
/// The largest head file read (a head of 1,000 labels over 8,192 dimensions is ~90 MB).
pub(crate) const MAX_FILE_BYTES: u64 = 256 << 20;
/// As many labels as a request may list.
pub const MAX_LABELS: usize = 1_000;
pub(crate) const MAX_DIM: usize = 16_384;

/// A verifier's labels, in this order ([`crate::verifier`]).
pub const VERIFIER_LABELS: [&str; 2] = ["wrong", "right"];
/// The answer features a verifier reads, appended to the embedding in this order.
pub const VERIFIER_FEATURES: [&str; 5] =
    ["confidence", "margin", "log_confidence", "cut", "log_chars"];

/// A classifier over the embedded model's pooled embedding of a wrapped input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub format: String,
    pub task: String,
    pub model: ModelBinding,
    pub input: InputSpec,
    pub labels: Vec<String>,
    /// Per input dimension: subtracted, then divided by `scale`, before the weights.
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    /// One row of `dim` weights per label.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
    /// The logits are divided by it before the softmax (fitted on held-out rows).
    pub temperature: f64,
    pub trained: Trained,
    /// A verifier's answer features, by name, appended to the embedding in this order (its
    /// last `features.len()` dimensions); empty for a classification head.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// A verifier's: the confidence method (`label_probability`, …) its `confidence` and
    /// `margin` features were read from; it judges answers of that method only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judges: Option<String>,
}

/// The model file a head's embeddings come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBinding {
    pub sha256: String,
    /// The file's name when trained, for messages.
    pub file: String,
}

/// How an input becomes the text that is embedded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The text around the input; `{text}` is replaced by it.
    pub wrapper: String,
    /// `mean` or `last` (see [`smallfirst_engine::Pooling`]).
    pub pooling: String,
    /// Tokens kept of a longer input: from its start, or with `keep_end`, from its end.
    pub max_tokens: usize,
    /// Cut a longer input from its start rather than its end (a verifier's: the answer and
    /// the question nearest it are at the end).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_end: bool,
}

/// What training saw and measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trained {
    pub rows: usize,
    pub holdout_rows: usize,
    /// L2 regularization strength.
    pub alpha: f64,
    /// Accuracy on the held-out rows.
    pub holdout_accuracy: f64,
    /// Expected calibration error on the held-out rows (15 equal-width bins), before and after
    /// the temperature.
    pub holdout_ece_raw: f64,
    pub holdout_ece: f64,
    pub seconds: f64,
}

/// A head's answer for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub index: usize,
    pub probability: f64,
    /// The chosen label's probability minus the runner-up's.
    pub margin: f64,
}

impl Head {
    /// Reads and checks a head file.
    pub fn load(path: &Path) -> Result<Head, HeadError> {
        let at = |message: String| HeadError::File {
            path: path.display().to_string(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| at(format!("cannot read it: {e}")))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(at(format!(
                "{} bytes is more than a head file may be ({MAX_FILE_BYTES})",
                meta.len()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| at(format!("cannot read it: {e}")))?;
        let head: Head =
            serde_json::from_slice(&bytes).map_err(|e| at(format!("not a head file: {e}")))?;
        head.check().map_err(at)?;
        Ok(head)
    }

    /// Writes the head as JSON.
    pub fn save(&self, path: &Path) -> Result<(), HeadError> {
        let at = |message: String| HeadError::File {
            path: path.display().to_string(),
            message,
        };
        self.check().map_err(at)?;
        let text = serde_json::to_vec(self).map_err(|e| at(e.to_string()))?;
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, text).map_err(|e| at(format!("cannot write it: {e}")))?;
        std::fs::rename(&tmp, path).map_err(|e| at(format!("cannot write it: {e}")))
    }

    /// Its shape and numbers are consistent.
    fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format `{}` is not `{FORMAT}`",
                self.format.chars().take(64).collect::<String>()
            ));
        }
        let n = self.labels.len();
        if !(2..=MAX_LABELS).contains(&n) {
            return Err(format!("{n} labels (a head has 2 to {MAX_LABELS})"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.labels.iter().find(|l| !seen.insert(l.as_str())) {
            return Err(format!("label `{dup}` is listed twice"));
        }
        let dim = self.mean.len();
        if !(1..=MAX_DIM).contains(&dim) {
            return Err(format!("{dim} dimensions (a head has 1 to {MAX_DIM})"));
        }
        if self.scale.len() != dim
            || self.bias.len() != n
            || self.weights.len() != n
            || self.weights.iter().any(|w| w.len() != dim)
        {
            return Err(format!(
                "its weights are not {n} labels × {dim} dimensions with a bias per label"
            ));
        }
        if !self.features.is_empty() {
            self.check_verifier()?;
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite(&self.mean)
            || !finite(&self.bias)
            || !self.scale.iter().all(|s| s.is_finite() && *s > 0.0)
            || !self.weights.iter().all(|w| finite(w))
        {
            return Err("a weight, mean or scale is not a finite number (scales > 0)".into());
        }
        let t = &self.trained;
        if ![
            t.holdout_accuracy,
            t.holdout_ece_raw,
            t.holdout_ece,
            t.alpha,
            t.seconds,
        ]
        .iter()
        .all(|v| v.is_finite())
        {
            return Err("a training figure is not a finite number".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err("the temperature must be a positive number".into());
        }
        if smallfirst_engine::Pooling::parse(&self.input.pooling).is_none() {
            return Err(format!(
                "pooling `{}` is not `mean`, `last` or `model`",
                self.input.pooling.chars().take(32).collect::<String>()
            ));
        }
        if !self.input.wrapper.contains("{text}") {
            return Err("its input wrapper has no `{text}`".into());
        }
        if self.input.max_tokens == 0 {
            return Err("its inputs keep 0 tokens".into());
        }
        if self.model.sha256.len() != 64
            || !self.model.sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("its model sha256 is not 64 hex digits".into());
        }
        Ok(())
    }

    /// A verifier file's own checks: its labels and features are the ones this build reads.
    fn check_verifier(&self) -> Result<(), String> {
        if self.labels != VERIFIER_LABELS || self.features != VERIFIER_FEATURES {
            return Err(format!(
                "a verifier must have labels {VERIFIER_LABELS:?} and features {VERIFIER_FEATURES:?} (hint: retrain it with `smallfirst train --verifier`)"
            ));
        }
        if self.mean.len() <= VERIFIER_FEATURES.len() {
            return Err("a verifier's weights must cover an embedding and its features".into());
        }
        Ok(())
    }

    /// Refuses a head trained on another model file: its embeddings mean nothing to it.
    pub fn check_model(&self, task: &str, sha256: &str, file: &str) -> Result<(), HeadError> {
        if self.model.sha256.eq_ignore_ascii_case(sha256) {
            return Ok(());
        }
        Err(HeadError::OtherModel {
            task: task.to_string(),
            trained: format!("{} (sha256 {})", self.model.file, short(&self.model.sha256)),
            serving: format!("{file} (sha256 {})", short(sha256)),
        })
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    pub fn pooling(&self) -> smallfirst_engine::Pooling {
        smallfirst_engine::Pooling::parse(&self.input.pooling)
            .unwrap_or(smallfirst_engine::Pooling::Mean)
    }

    /// The input as the text that is embedded.
    pub fn wrap(&self, text: &str) -> String {
        wrap(&self.input.wrapper, text)
    }

    /// The calibrated probability of each label for an embedding of [`dim`](Self::dim).
    pub fn probabilities(&self, embedding: &[f32]) -> Result<Vec<f64>, HeadError> {
        let t = self.temperature;
        let z: Vec<f64> = self.logits(embedding)?.iter().map(|z| z / t).collect();
        Ok(softmax(&z))
    }

    /// Each label's logit, before the temperature.
    pub(crate) fn logits(&self, embedding: &[f32]) -> Result<Vec<f64>, HeadError> {
        if embedding.len() != self.dim() {
            return Err(HeadError::Dimension {
                head: self.dim(),
                embedding: embedding.len(),
            });
        }
        let x: Vec<f64> = embedding
            .iter()
            .zip(self.mean.iter().zip(&self.scale))
            .map(|(v, (m, s))| f64::from((v - m) / s))
            .collect();
        let logits: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| {
                let z = w
                    .iter()
                    .zip(&x)
                    .map(|(w, x)| f64::from(*w) * x)
                    .sum::<f64>();
                z + f64::from(*b)
            })
            .collect();
        Ok(logits)
    }

    /// The most probable label, with its probability and margin.
    pub fn predict(&self, embedding: &[f32]) -> Result<Prediction, HeadError> {
        let p = self.probabilities(embedding)?;
        Ok(best(&p))
    }
}

/// `text` put into `wrapper` at `{text}` (the first one; the rest stay as written).
pub fn wrap(wrapper: &str, text: &str) -> String {
    wrapper.replacen("{text}", text, 1)
}

pub(crate) fn best(p: &[f64]) -> Prediction {
    let mut index = 0;
    let mut first = f64::NEG_INFINITY;
    let mut second = 0.0f64;
    for (i, &v) in p.iter().enumerate() {
        if v > first {
            second = first.max(0.0);
            first = v;
            index = i;
        } else if v > second {
            second = v;
        }
    }
    Prediction {
        index,
        probability: first.max(0.0),
        margin: (first - second).max(0.0),
    }
}

pub(crate) fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|z| (z - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Head {
        Head {
            format: FORMAT.into(),
            task: "t".into(),
            model: ModelBinding {
                sha256: "ab".repeat(32),
                file: "m.gguf".into(),
            },
            input: InputSpec {
                wrapper: "{text}".into(),
                pooling: "mean".into(),
                max_tokens: 64,
                keep_end: false,
            },
            labels: vec!["a".into(), "b".into()],
            mean: vec![0.0, 0.0],
            scale: vec![1.0, 1.0],
            weights: vec![vec![2.0, 0.0], vec![0.0, 2.0]],
            bias: vec![0.0, 0.0],
            temperature: 1.0,
            trained: Trained {
                rows: 2,
                holdout_rows: 0,
                alpha: 0.0,
                holdout_accuracy: 1.0,
                holdout_ece_raw: 0.0,
                holdout_ece: 0.0,
                seconds: 0.0,
            },
            features: Vec::new(),
            judges: None,
        }
    }

    fn refused(h: &Head) -> String {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("h.json");
        std::fs::write(&path, serde_json::to_vec(h).expect("json")).expect("write");
        match Head::load(&path) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_head_round_trips_and_predicts_with_its_temperature() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("h.json");
        let h = head();
        h.save(&path).expect("saves");
        let back = Head::load(&path).expect("loads");
        assert_eq!(back, h);
        let p = back.predict(&[1.0, 0.0]).expect("predicts");
        assert_eq!(p.index, 0);
        let sharp = p.probability;
        assert!((sharp - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-9);
        let mut warm = back.clone();
        warm.temperature = 4.0;
        let flat = warm.predict(&[1.0, 0.0]).expect("predicts").probability;
        assert!(flat < sharp && flat > 0.5);
        assert!(matches!(
            back.predict(&[1.0]),
            Err(HeadError::Dimension {
                head: 2,
                embedding: 1
            })
        ));
        assert_eq!(wrap("Q: {text} / {text}", "x"), "Q: x / {text}");
    }

    #[test]
    fn hostile_head_files_are_refused_with_what_is_wrong() {
        let mut h = head();
        // NaN is written as null, which is not a number; a number beyond f32 is infinite.
        h.weights[1][0] = f32::NAN;
        assert!(refused(&h).contains("not a head file"));
        let dir = tempfile::tempdir().expect("dir");
        let huge = dir.path().join("huge.json");
        let text = serde_json::to_string(&head()).expect("json");
        std::fs::write(&huge, text.replacen("\"bias\":[0.0,", "\"bias\":[1e39,", 1))
            .expect("write");
        // Refused either way: parsed as infinity and caught by the check, or refused by the
        // parser where a workspace feature (float_roundtrip) reads numbers exactly.
        let e = Head::load(&huge).expect_err("infinite").to_string();
        assert!(e.contains("finite") || e.contains("out of range"), "{e}");
        let mut h = head();
        h.weights[1].push(0.0);
        assert!(refused(&h).contains("2 labels × 2 dimensions"));
        let mut h = head();
        h.labels[1] = "a".into();
        assert!(refused(&h).contains("listed twice"));
        let mut h = head();
        h.format = "other/9".into();
        assert!(refused(&h).contains("format"));
        let mut h = head();
        h.scale[0] = 0.0;
        assert!(refused(&h).contains("scales"));
        let mut h = head();
        h.input.wrapper = "no place".into();
        assert!(refused(&h).contains("{text}"));
        let mut h = head();
        h.input.pooling = "max".into();
        assert!(refused(&h).contains("pooling"));
        let mut h = head();
        h.model.sha256 = "xyz".into();
        assert!(refused(&h).contains("sha256"));
        let mut h = head();
        h.temperature = -1.0;
        assert!(refused(&h).contains("temperature"));
        let mut h = head();
        h.labels.truncate(1);
        assert!(refused(&h).contains("1 labels"));

        let dir = tempfile::tempdir().expect("dir");
        let big = dir.path().join("big.json");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(MAX_FILE_BYTES + 1))
            .expect("sparse file");
        assert!(
            Head::load(&big)
                .expect_err("too big")
                .to_string()
                .contains("more than")
        );
        let junk = dir.path().join("junk.json");
        std::fs::write(&junk, b"{\"format\": 1").expect("write");
        assert!(
            Head::load(&junk)
                .expect_err("junk")
                .to_string()
                .contains("not a head file")
        );
    }

    #[test]
    fn another_models_sha256_is_refused_naming_both_files() {
        let h = head();
        assert!(h.check_model("t", &"AB".repeat(32), "m.gguf").is_ok());
        let e = h
            .check_model("t", &"cd".repeat(32), "n.gguf")
            .expect_err("refused");
        let m = e.to_string();
        assert!(
            m.contains("m.gguf (sha256 abababababab)")
                && m.contains("n.gguf (sha256 cdcdcdcdcdcd)")
        );
        assert!(m.contains("smallfirst train t --data"));
    }
}
