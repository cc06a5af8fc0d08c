//! Verifiers: a two-label head ("wrong", "right") that judges a generated answer from the
//! embedding of the request and the answer read together, and from the answer's own features
//! (the confidence its decode gave, its margin, whether the token budget cut it, its length).
//! Trained on a task's labeled rows against the local tier's own answers to them, calibrated
//! like any head; its probability of "right" is the confidence the cascade judges.

use smallfirst_engine::Engine;

use crate::HeadError;
use crate::embed::prompt_for;
use crate::head::Head;

pub use crate::head::{VERIFIER_FEATURES as FEATURES, VERIFIER_LABELS as LABELS};

/// The text a verifier embeds, around [`text`]: the request, then the answer, then the
/// question. A verifier's input is cut from its start ([`InputSpec::keep_end`]), so a long
/// request loses its beginning (a few-shot prompt's examples) and keeps the question nearest
/// the answer; last pooling reads the state after the question.
///
/// [`InputSpec::keep_end`]: crate::InputSpec::keep_end
pub const WRAPPER: &str = "Request: \"{text}\"\nIs the proposed answer right? \"";

/// A generated answer as a verifier reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    /// The request's input: its last user message.
    pub input: &'a str,
    /// The answer's text (the label, for a label answer).
    pub answer: &'a str,
    /// The confidence the answer's own estimator gave it, in [0, 1].
    pub confidence: f64,
    /// Its margin over the runner-up, when the estimator has one.
    pub margin: Option<f64>,
    /// Whether the token budget ended it.
    pub cut: bool,
}

/// What goes in the wrapper's `{text}`: the request, then the answer.
pub fn text(c: &Candidate<'_>) -> String {
    format!("{}\"\nProposed answer: \"{}", c.input, c.answer)
}

/// The answer's features, in [`FEATURES`]' order.
pub fn features(c: &Candidate<'_>) -> Vec<f32> {
    let p = if c.confidence.is_finite() {
        c.confidence.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let margin = c
        .margin
        .filter(|m| m.is_finite())
        .unwrap_or(p)
        .clamp(-1.0, 1.0);
    vec![
        p as f32,
        margin as f32,
        (p + 1e-4).ln() as f32,
        f32::from(u8::from(c.cut)),
        (1.0 + c.answer.chars().count() as f64).ln() as f32,
    ]
}

impl Head {
    /// Whether this head is a verifier (it reads answer features), not a classifier.
    pub fn is_verifier(&self) -> bool {
        !self.features.is_empty()
    }

    /// The calibrated probability that `candidate` is right: one prefill of the request
    /// and the answer, wrapped, and the answer's features.
    pub async fn verify(
        &self,
        engine: &Engine,
        candidate: &Candidate<'_>,
    ) -> Result<f64, HeadError> {
        if !self.is_verifier() {
            return Err(HeadError::Data(format!(
                "the head for task `{}` is a classifier, not a verifier",
                self.task
            )));
        }
        let prompt = prompt_for(engine, &self.input, &text(candidate)).await?;
        let mut v = engine.embed_pooled(vec![prompt], self.pooling()).await?;
        let mut v = v
            .pop()
            .ok_or_else(|| HeadError::Data("no embedding came back".into()))?;
        v.extend(features(candidate));
        let p = self.probabilities(&v)?;
        Ok(p[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(confidence: f64) -> Candidate<'static> {
        Candidate {
            input: "When does my card arrive?",
            answer: "card_arrival",
            confidence,
            margin: None,
            cut: false,
        }
    }

    #[test]
    fn features_are_bounded_and_ordered() {
        let f = features(&candidate(0.5));
        assert_eq!(f.len(), FEATURES.len());
        assert_eq!(f[0], 0.5);
        assert_eq!(f[1], 0.5, "no margin reads as the confidence");
        assert!((f[2] - (0.5f32 + 1e-4).ln()).abs() < 1e-6);
        assert_eq!(f[3], 0.0);
        for bad in [f64::NAN, f64::INFINITY, -3.0, 7.0] {
            let f = features(&candidate(bad));
            assert!(f.iter().all(|x| x.is_finite()), "{bad}: {f:?}");
            assert!((0.0..=1.0).contains(&f[0]), "{bad}: {f:?}");
        }
    }

    #[test]
    fn the_answer_comes_after_the_request() {
        let t = text(&candidate(0.9));
        assert!(t.starts_with("When does my card arrive?\""), "{t}");
        assert!(t.ends_with("Proposed answer: \"card_arrival"), "{t}");
    }
}
