//! How sure the local answer is, as a number in [0, 1] that says how it was computed.
//!
//! - **Closed choices** (a label set, an enum-only schema, which tool to call): the probability
//!   of the chosen option among the allowed ones. Under a constraint, the model's distribution
//!   renormalized over the allowed tokens at each step is a distribution over the allowed
//!   answers, so the chosen answer's probability is the product of its sampled tokens' step
//!   probabilities (forced tokens are certain). The runner-up is bounded from above by the best
//!   branch off the chosen path (the prefix's probability times the best other token there);
//!   the margin reported is chosen − that bound, a lower bound on the true margin.
//! - **Free text**: the geometric mean of the sampled tokens' probabilities, `exp(mean log p)`.
//! - **A task head** (`smallfirst train`): the head's probability of its label, calibrated by
//!   a temperature fitted on held-out rows.
//! - **Debiased labels** (contextual calibration, Zhao et al. 2021, "Calibrate Before Use"):
//!   every label's probability is read in one pass, for the request and for content-free
//!   twins of it (its last user message replaced by `N/A`, `` and `[MASK]`); dividing by the
//!   twins' average removes the prior the model puts on labels whatever the input, such as
//!   the first one listed. **Permuted labels** average the distribution over cyclic shifts of
//!   the order the labels are listed in, which cancels a prior on positions.
//! - **Self-consistency** (Wang et al. 2023): the share of `n` sampled answers that agree
//!   with the most common one, compared as the task's kind says (a label, JSON fields, text).

use std::fmt;

/// One sampled token: where its text starts (bytes), its probability, the best other's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub offset: u32,
    pub p: f64,
    pub runner_up: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The chosen label among the allowed labels.
    Label,
    /// The chosen tool (and calling one rather than answering in text) among the allowed.
    ToolChoice,
    /// Geometric mean token probability of free text.
    TokenProb,
    /// A task head's calibrated probability of the label it chose.
    Head,
    /// The label distribution divided by the model's prior on a content-free input.
    Debiased,
    /// The label distribution averaged over cyclic shifts of the listed label order.
    Permuted,
    /// Agreement among sampled answers.
    SelfConsistency,
    /// A task's verifier: its calibrated probability that the answer is right, read from the
    /// request, the answer, and the confidence the answer's estimator gave it.
    Verifier,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Label => "label_probability",
            Method::ToolChoice => "tool_choice_probability",
            Method::TokenProb => "mean_token_probability",
            Method::Head => "head_probability",
            Method::Debiased => "debiased_label_probability",
            Method::Permuted => "permuted_label_probability",
            Method::SelfConsistency => "self_consistency",
            Method::Verifier => "verifier_probability",
        }
    }

    /// Whether the value is a probability (or share) of one label out of a label set.
    pub fn is_label(self) -> bool {
        matches!(
            self,
            Method::Label | Method::Head | Method::Debiased | Method::Permuted
        )
    }
}

/// How a route's local answer is judged, as `[tasks.NAME] confidence` or
/// `metadata.confidence` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// Read from the decode that produced the answer (label, tool-choice or token
    /// probability, by the answer's kind).
    Decoded,
    /// Labels scored in one pass, divided by the content-free prior.
    Debiased,
    /// Labels scored in one pass under each cyclic shift of their listed order, averaged.
    Permuted,
    /// `samples` answers sampled from one prefill; the agreement with the most common.
    SelfConsistency { samples: u8 },
}

/// Samples a self-consistency estimate takes unless told otherwise.
pub const DEFAULT_SAMPLES: u8 = 5;
/// The most samples one estimate may take (the most choices `n` allows).
pub const MAX_SAMPLES: u8 = 16;
/// The most labels permuted averaging scores (one prompt per label).
pub const MAX_PERMUTED_LABELS: usize = 8;

impl Estimator {
    /// The names a configuration or a request may use.
    pub const NAMES: [&'static str; 4] = ["label", "debiased", "permuted", "self_consistency"];

    /// The name it is configured by.
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Decoded => "label",
            Estimator::Debiased => "debiased",
            Estimator::Permuted => "permuted",
            Estimator::SelfConsistency { .. } => "self_consistency",
        }
    }

    /// `name` as an estimator, with `samples` for self-consistency.
    pub fn parse(name: &str, samples: Option<u8>) -> Option<Estimator> {
        Some(match name {
            "label" | "decoded" => Estimator::Decoded,
            "debiased" => Estimator::Debiased,
            "permuted" => Estimator::Permuted,
            "self_consistency" => Estimator::SelfConsistency {
                samples: samples.unwrap_or(DEFAULT_SAMPLES),
            },
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    pub value: f64,
    pub method: Method,
    /// For choices: chosen − (an upper bound on) the runner-up.
    pub margin: Option<f64>,
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}", self.value)
    }
}

/// The chosen option's probability among the allowed ones, from the steps that chose it.
pub fn of_choice<'a>(steps: impl IntoIterator<Item = &'a Step>, method: Method) -> Confidence {
    let mut prefix = 1.0f64;
    let mut runner_up = 0.0f64;
    for s in steps {
        runner_up = runner_up.max(prefix * s.runner_up);
        prefix *= s.p;
    }
    let value = prefix.clamp(0.0, 1.0);
    Confidence {
        value,
        method,
        margin: Some((value - runner_up.min(1.0 - value)).clamp(-1.0, 1.0)),
    }
}

/// Free text: `exp(mean log p)` over its sampled tokens; 1 for an answer with none.
pub fn of_text(steps: &[Step]) -> Confidence {
    let value = if steps.is_empty() {
        1.0
    } else {
        let mean = steps.iter().map(|s| s.p.max(1e-12).ln()).sum::<f64>() / steps.len() as f64;
        mean.exp()
    };
    Confidence {
        value: value.clamp(0.0, 1.0),
        method: Method::TokenProb,
        margin: None,
    }
}

/// Tool calls written as `<tool_call>\n{"name": "…", "arguments": …}`: the steps that chose
/// whether to call (everything before the first call's name) and which function (tokens that
/// overlap a call's name). Argument values never count. Text with no call is judged as text.
pub fn of_tool_calls(text: &str, steps: &[Step]) -> Confidence {
    const OPEN: &str = "<tool_call>\n{\"name\": \"";
    let mut regions = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(OPEN) {
        let start = from + i + OPEN.len();
        let end = text[start..].find('"').map_or(text.len(), |j| start + j);
        regions.push(start..end);
        from = end;
    }
    let Some(first) = regions.first().map(|r| r.start) else {
        return of_text(steps);
    };
    // A step's token spans from its offset to the next step's (or the end).
    let chosen: Vec<Step> = steps
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            let start = s.offset as usize;
            let end = steps.get(i + 1).map_or(text.len(), |n| n.offset as usize);
            start < first || regions.iter().any(|r| start < r.end && end > r.start)
        })
        .map(|(_, s)| *s)
        .collect();
    of_choice(&chosen, Method::ToolChoice)
}

/// The probabilities of `log_probs` (one per label, as scored), normalized over the labels.
pub fn normalized(log_probs: &[f64]) -> Vec<f64> {
    let max = log_probs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        let n = log_probs.len().max(1) as f64;
        return vec![1.0 / n; log_probs.len()];
    }
    let e: Vec<f64> = log_probs.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

/// `p` with the prior `prior` divided out and renormalized: `q ∝ p / prior` (the diagonal
/// correction of contextual calibration). A label the prior gives no mass keeps its share
/// undivided rather than dividing by zero.
pub fn debias(p: &[f64], prior: &[f64]) -> Vec<f64> {
    let floor = 1e-6;
    let q: Vec<f64> = p
        .iter()
        .zip(prior)
        .map(|(&x, &c)| x / c.max(floor))
        .collect();
    let sum: f64 = q.iter().sum();
    if !(sum.is_finite() && sum > 0.0) {
        return p.to_vec();
    }
    q.into_iter().map(|x| x / sum).collect()
}

/// The element-wise mean of several distributions over the same labels.
pub fn mean(distributions: &[Vec<f64>]) -> Vec<f64> {
    let n = distributions.first().map_or(0, Vec::len);
    let mut out = vec![0.0; n];
    for d in distributions {
        for (o, x) in out.iter_mut().zip(d) {
            *o += x;
        }
    }
    let k = distributions.len().max(1) as f64;
    out.iter_mut().for_each(|o| *o /= k);
    out
}

/// The chosen label of a distribution (its most probable; the first of equals) and the
/// confidence: its probability, and its margin over the runner-up.
pub fn of_distribution(p: &[f64], method: Method) -> (usize, Confidence) {
    let mut best = 0;
    for (i, &x) in p.iter().enumerate() {
        if x > p[best] {
            best = i;
        }
    }
    let value = p.get(best).copied().unwrap_or(0.0).clamp(0.0, 1.0);
    let second = p
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .map(|(_, &x)| x)
        .fold(0.0, f64::max);
    (
        best,
        Confidence {
            value,
            method,
            margin: Some((value - second).clamp(-1.0, 1.0)),
        },
    )
}

/// How sampled answers are compared for self-consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Equal after trimming (labels, tool calls written canonically).
    Exact,
    /// Equal after case folding and collapsing whitespace (free text).
    Text,
    /// JSON objects: the share of the mode's fields each sample agrees on.
    JsonFields,
}

/// Self-consistency over `answers`: the index of the mode (the first answer of the most
/// common class) and the agreement with it. Under [`Compare::JsonFields`] a sample agrees
/// with the mode by the share of the mode's top-level fields it has equal; the mode is the
/// answer whose canonical form is most common.
pub fn agreement(answers: &[String], compare: Compare) -> (usize, Confidence) {
    let n = answers.len();
    if n == 0 {
        return (
            0,
            Confidence {
                value: 0.0,
                method: Method::SelfConsistency,
                margin: None,
            },
        );
    }
    let keys: Vec<String> = answers.iter().map(|a| canonical(a, compare)).collect();
    let mut counts: Vec<(usize, usize)> = Vec::new(); // (first index, count)
    for (i, k) in keys.iter().enumerate() {
        match counts.iter_mut().find(|(j, _)| keys[*j] == *k) {
            Some((_, c)) => *c += 1,
            None => counts.push((i, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let (mode, top) = counts[0];
    let second = counts.get(1).map_or(0, |c| c.1);
    let share = |c: usize| c as f64 / n as f64;
    let value = match compare {
        Compare::JsonFields => field_agreement(answers, mode),
        _ => share(top),
    };
    (
        mode,
        Confidence {
            value: value.clamp(0.0, 1.0),
            method: Method::SelfConsistency,
            margin: Some(share(top) - share(second)),
        },
    )
}

fn canonical(answer: &str, compare: Compare) -> String {
    match compare {
        Compare::Exact => answer.trim().to_string(),
        Compare::Text => answer
            .split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" "),
        // serde_json's maps are ordered by key, so this is canonical.
        Compare::JsonFields => serde_json::from_str::<serde_json::Value>(answer)
            .map_or_else(|_| answer.trim().to_string(), |v| v.to_string()),
    }
}

/// The mean, over the samples, of the share of the mode's fields each has equal. A mode that
/// is not a JSON object counts whole answers instead.
fn field_agreement(answers: &[String], mode: usize) -> f64 {
    use serde_json::Value;
    let parse = |s: &str| serde_json::from_str::<Value>(s).ok();
    let Some(Value::Object(m)) = parse(&answers[mode]) else {
        let key = canonical(&answers[mode], Compare::JsonFields);
        let same = answers
            .iter()
            .filter(|a| canonical(a, Compare::JsonFields) == key)
            .count();
        return same as f64 / answers.len() as f64;
    };
    if m.is_empty() {
        let same = answers
            .iter()
            .filter(|a| matches!(parse(a), Some(Value::Object(o)) if o.is_empty()))
            .count();
        return same as f64 / answers.len() as f64;
    }
    let total: f64 = answers
        .iter()
        .map(|a| match parse(a) {
            Some(Value::Object(o)) => {
                m.iter().filter(|(k, v)| o.get(*k) == Some(v)).count() as f64 / m.len() as f64
            }
            _ => 0.0,
        })
        .sum();
    total / answers.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(offset: u32, p: f64, runner_up: f64) -> Step {
        Step {
            offset,
            p,
            runner_up,
        }
    }

    #[test]
    fn a_choice_multiplies_its_steps_and_bounds_the_runner_up() {
        // "card_" (0.8, other 0.15) then "arrival" (0.5, other 0.4).
        let c = of_choice(&[step(0, 0.8, 0.15), step(5, 0.5, 0.4)], Method::Label);
        assert!((c.value - 0.4).abs() < 1e-9);
        // Runner-up bound: max(0.15, 0.8 · 0.4 = 0.32), capped by the mass left (0.6).
        assert!((c.margin.expect("margin") - (0.4 - 0.32)).abs() < 1e-9);
        let sure = of_choice(&[], Method::Label);
        assert_eq!(
            (sure.value, sure.margin),
            (1.0, Some(1.0)),
            "all forced: certain"
        );
    }

    #[test]
    fn free_text_is_the_geometric_mean() {
        let c = of_text(&[step(0, 0.9, 0.05), step(3, 0.1, 0.8)]);
        assert!((c.value - 0.3).abs() < 1e-9);
        assert_eq!(c.method, Method::TokenProb);
    }

    #[test]
    fn tool_choice_counts_only_the_decision_and_the_name() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"name\": \"Paris\"}}";
        let name_at = text.find("get_weather").expect("name") as u32;
        let args_at = text.find("Paris").expect("arg") as u32;
        let steps = [
            step(0, 0.9, 0.1),
            step(name_at, 0.5, 0.5),
            step(args_at, 0.01, 0.9),
        ];
        let c = of_tool_calls(text, &steps);
        assert_eq!(c.method, Method::ToolChoice);
        assert!(
            (c.value - 0.45).abs() < 1e-9,
            "argument tokens do not count"
        );
        assert_eq!(
            of_tool_calls("plain text", &steps[..1]).method,
            Method::TokenProb
        );
    }

    #[test]
    fn debiasing_removes_a_label_prior() {
        // A model that puts 70% on the first listed label whatever the input: its scores on
        // a row whose evidence favours the third label 2:1:4, times that prior.
        let prior = [0.7, 0.15, 0.15];
        let evidence = [2.0, 1.0, 4.0];
        let raw: Vec<f64> = prior.iter().zip(evidence).map(|(c, e)| c * e).collect();
        let raw = normalized(&raw.iter().map(|x: &f64| x.ln()).collect::<Vec<_>>());
        let (chosen, _) = of_distribution(&raw, Method::Label);
        assert_eq!(chosen, 0, "the prior wins raw");
        let q = debias(&raw, &prior);
        let (chosen, c) = of_distribution(&q, Method::Debiased);
        assert_eq!(chosen, 2, "the evidence wins debiased");
        // The evidence itself, normalized: 2/7, 1/7, 4/7.
        for (x, want) in q.iter().zip([2.0 / 7.0, 1.0 / 7.0, 4.0 / 7.0]) {
            assert!((x - want).abs() < 1e-9, "{q:?}");
        }
        assert!((c.value - 4.0 / 7.0).abs() < 1e-9);
        assert!((c.margin.expect("margin") - 2.0 / 7.0).abs() < 1e-9);
        // A uniform prior changes nothing; a zero prior does not divide by zero.
        assert_eq!(debias(&raw, &[1.0 / 3.0; 3]).len(), 3);
        assert!(
            debias(&[0.5, 0.5], &[0.0, 1.0])
                .iter()
                .all(|x| x.is_finite())
        );
    }

    #[test]
    fn scores_normalize_and_average() {
        let p = normalized(&[0.0, (3.0f64).ln()]);
        assert!((p[1] - 0.75).abs() < 1e-12);
        assert_eq!(normalized(&[f64::NEG_INFINITY; 2]), vec![0.5, 0.5]);
        assert_eq!(mean(&[vec![1.0, 0.0], vec![0.0, 1.0]]), vec![0.5, 0.5]);
    }

    #[test]
    fn self_consistency_counts_agreement_by_kind() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (mode, c) = agreement(&s(&["b", "a", "b", "b", "c"]), Compare::Exact);
        assert_eq!((mode, c.value), (0, 0.6));
        assert!((c.margin.expect("margin") - 0.4).abs() < 1e-12);
        let (_, same) = agreement(&s(&["x"; 4]), Compare::Exact);
        assert_eq!(same.value, 1.0, "identical answers agree fully");
        let (_, text) = agreement(
            &s(&["Paris is  big", "paris is big", "Lyon"]),
            Compare::Text,
        );
        assert!((text.value - 2.0 / 3.0).abs() < 1e-12);
        // JSON: key order does not matter; a sample agreeing on one of two fields counts half.
        let json = s(&[
            r#"{"a": 1, "b": "x"}"#,
            r#"{"b": "x", "a": 1}"#,
            r#"{"a": 1, "b": "y"}"#,
            "not json",
        ]);
        let (mode, c) = agreement(&json, Compare::JsonFields);
        assert_eq!(mode, 0);
        assert!((c.value - (1.0 + 1.0 + 0.5 + 0.0) / 4.0).abs() < 1e-12);
        assert_eq!(agreement(&[], Compare::Exact).1.value, 0.0);
    }

    #[test]
    fn estimators_parse_by_name() {
        for name in Estimator::NAMES {
            let e = Estimator::parse(name, None).expect(name);
            assert_eq!(e.name(), name);
        }
        assert_eq!(
            Estimator::parse("self_consistency", Some(3)),
            Some(Estimator::SelfConsistency { samples: 3 })
        );
        assert_eq!(Estimator::parse("vibes", None), None);
    }
}
