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
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Label => "label_probability",
            Method::ToolChoice => "tool_choice_probability",
            Method::TokenProb => "mean_token_probability",
            Method::Head => "head_probability",
        }
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
}
