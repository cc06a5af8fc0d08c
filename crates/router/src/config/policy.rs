//! `[policy]`, `[[policy.rules]]` and `[tasks.<name>]` in `smallfirst.toml`, parsed raw and
//! validated against the tiers into a [`PolicyConfig`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::validate::{Invalid, invalid};
use crate::confidence::{Estimator, MAX_SAMPLES};

/// What `[policy]`, `[[policy.rules]]` and `[tasks.*]` say, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyConfig {
    /// The tier narrow work starts on (TOML `policy.local`); default: the embedded tier, else
    /// the first one on this machine.
    pub start: Option<String>,
    /// Where escalations and open-ended work go; default: the remote tier with the largest
    /// context window.
    pub frontier: Option<String>,
    /// Escalate when the local answer's confidence is below this.
    pub threshold: f64,
    /// A local-only request whose answer is below its threshold: answered anyway (marked), or
    /// refused.
    pub local_only_low_confidence: LowConfidence,
    /// Model names that mean "let the policy decide", besides `auto`.
    pub aliases: Vec<String>,
    pub rules: Vec<Rule>,
    pub tasks: BTreeMap<String, TaskPolicy>,
}

pub const DEFAULT_THRESHOLD: f64 = 0.7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LowConfidence {
    #[default]
    Answer,
    Refuse,
}

/// `[[policy.rules]]`: when every condition given holds, this route.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub task: Option<String>,
    /// Input plus requested output tokens at least this many.
    pub min_tokens: Option<u32>,
    pub needs_vision: bool,
    pub needs_tools: bool,
    pub needs_json_schema: bool,
    pub tier: String,
    pub escalate: Vec<String>,
    pub threshold: Option<f64>,
}

/// `[tasks.<name>]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskPolicy {
    pub tier: Option<String>,
    pub escalate: Option<Vec<String>>,
    pub threshold: Option<f64>,
    pub local_only: bool,
    /// A classification task's labels: the local answer is exactly one of them.
    pub labels: Option<Vec<String>>,
    /// A head file (`smallfirst train`), as written: a relative path is read from the
    /// configuration file's folder. The task's classifications are answered from it.
    pub head: Option<String>,
    /// A verifier file (`smallfirst train --verifier`), read like `head`: the local answer's
    /// confidence is its probability that the answer is right.
    pub verifier: Option<String>,
    /// How the local answer's confidence is estimated (`confidence`, with `samples`);
    /// `None`: from the decode.
    pub confidence: Option<Estimator>,
    /// How `threshold` was chosen, when `smallfirst calibrate --write` chose it.
    pub calibration: Option<Calibration>,
}

/// `[tasks.<name>] calibration`: the guarantee a calibrated threshold carries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// The method, e.g. `learn-then-test`.
    pub method: String,
    /// The error allowed among answers kept locally.
    pub alpha: f64,
    /// The chance that the guarantee fails (it holds with probability 1 − δ).
    pub delta: f64,
    /// Whether a threshold met it; if not, the threshold escalates everything.
    pub certified: bool,
    /// The eval set and the embedded model it was calibrated on.
    pub set_sha256: String,
    #[serde(default)]
    pub model_sha256: Option<String>,
    /// Calibration rows.
    pub rows: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    local: Option<Spanned<String>>,
    frontier: Option<Spanned<String>>,
    threshold: Option<Spanned<f64>>,
    local_only_low_confidence: Option<RawLowConfidence>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawLowConfidence {
    Answer,
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Need {
    Vision,
    Tools,
    JsonSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    task: Option<String>,
    min_tokens: Option<u32>,
    #[serde(default)]
    needs: Vec<Need>,
    tier: Spanned<String>,
    #[serde(default)]
    escalate: Vec<Spanned<String>>,
    threshold: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Privacy {
    LocalOnly,
    Any,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTask {
    tier: Option<Spanned<String>>,
    escalate: Option<Vec<Spanned<String>>>,
    threshold: Option<Spanned<f64>>,
    privacy: Option<Privacy>,
    labels: Option<Spanned<Vec<String>>>,
    head: Option<Spanned<String>>,
    verifier: Option<Spanned<String>>,
    confidence: Option<Spanned<String>>,
    samples: Option<Spanned<i64>>,
    calibration: Option<Spanned<Calibration>>,
}

/// Validates the policy tables against the tier names.
pub(crate) fn validate(
    policy: RawPolicy,
    tasks: BTreeMap<String, RawTask>,
    names: &[String],
) -> Result<PolicyConfig, Invalid> {
    let tier = |path: String, t: Spanned<String>| -> Result<String, Invalid> {
        if names.contains(t.get_ref()) {
            Ok(t.into_inner())
        } else {
            invalid(
                path,
                t.span(),
                format!(
                    "no tier is named `{}` (tiers: {})",
                    t.get_ref(),
                    names.join(", ")
                ),
            )
        }
    };
    let threshold = |path: String, t: Spanned<f64>| -> Result<f64, Invalid> {
        let v = *t.get_ref();
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            invalid(path, t.span(), "must be a confidence between 0 and 1")
        }
    };
    let chain = |path: &str, list: Vec<Spanned<String>>| -> Result<Vec<String>, Invalid> {
        list.into_iter()
            .enumerate()
            .map(|(i, t)| tier(format!("{path}[{i}]"), t))
            .collect()
    };
    let mut out = PolicyConfig {
        start: policy
            .local
            .map(|t| tier("policy.local".into(), t))
            .transpose()?,
        frontier: policy
            .frontier
            .map(|t| tier("policy.frontier".into(), t))
            .transpose()?,
        threshold: policy
            .threshold
            .map(|t| threshold("policy.threshold".into(), t))
            .transpose()?
            .unwrap_or(DEFAULT_THRESHOLD),
        local_only_low_confidence: match policy.local_only_low_confidence {
            Some(RawLowConfidence::Refuse) => LowConfidence::Refuse,
            _ => LowConfidence::Answer,
        },
        aliases: policy.aliases,
        rules: Vec::new(),
        tasks: BTreeMap::new(),
    };
    for (i, r) in policy.rules.into_iter().enumerate() {
        let path = |f: &str| format!("policy.rules[{i}].{f}");
        out.rules.push(Rule {
            task: r.task,
            min_tokens: r.min_tokens,
            needs_vision: r.needs.contains(&Need::Vision),
            needs_tools: r.needs.contains(&Need::Tools),
            needs_json_schema: r.needs.contains(&Need::JsonSchema),
            tier: tier(path("tier"), r.tier)?,
            escalate: chain(&path("escalate"), r.escalate)?,
            threshold: r
                .threshold
                .map(|t| threshold(path("threshold"), t))
                .transpose()?,
        });
    }
    for (name, t) in tasks {
        let path = |f: &str| format!("tasks.{name}.{f}");
        let labels = match t.labels {
            Some(l) if l.get_ref().is_empty() => {
                return invalid(path("labels"), l.span(), "must list at least one label");
            }
            Some(l) => Some(l.into_inner()),
            None => None,
        };
        let samples_at = t.samples.as_ref().map(Spanned::span);
        let samples = match t.samples {
            Some(n) if !(2..=i64::from(MAX_SAMPLES)).contains(n.get_ref()) => {
                return invalid(
                    path("samples"),
                    n.span(),
                    format!("must be between 2 and {MAX_SAMPLES}"),
                );
            }
            Some(n) => Some(*n.get_ref() as u8),
            None => None,
        };
        let confidence = match t.confidence {
            Some(c) => match Estimator::parse(c.get_ref(), samples) {
                Some(e) => Some(e),
                None => {
                    return invalid(
                        path("confidence"),
                        c.span(),
                        format!(
                            "unknown confidence method `{}` (methods: {})",
                            c.get_ref(),
                            Estimator::NAMES.join(", ")
                        ),
                    );
                }
            },
            None => None,
        };
        if let Some(at) = samples_at
            && !matches!(confidence, Some(Estimator::SelfConsistency { .. }))
        {
            return invalid(
                path("samples"),
                at,
                "is for `confidence = \"self_consistency\"`",
            );
        }
        let policy = TaskPolicy {
            tier: t.tier.map(|x| tier(path("tier"), x)).transpose()?,
            escalate: t
                .escalate
                .map(|e| chain(&path("escalate"), e))
                .transpose()?,
            threshold: t
                .threshold
                .map(|x| threshold(path("threshold"), x))
                .transpose()?,
            local_only: t.privacy == Some(Privacy::LocalOnly),
            labels,
            head: match t.head {
                Some(h) if h.get_ref().trim().is_empty() => {
                    return invalid(path("head"), h.span(), "must be a file's path");
                }
                h => h.map(Spanned::into_inner),
            },
            verifier: match t.verifier {
                Some(v) if v.get_ref().trim().is_empty() => {
                    return invalid(path("verifier"), v.span(), "must be a file's path");
                }
                v => v.map(Spanned::into_inner),
            },
            confidence,
            calibration: match t.calibration {
                Some(c) => {
                    let (at, c) = (c.span(), c.into_inner());
                    let unit = |v: f64| v > 0.0 && v < 1.0;
                    if !unit(c.alpha) || !unit(c.delta) {
                        return invalid(
                            path("calibration"),
                            at,
                            "`alpha` and `delta` must be above 0 and below 1",
                        );
                    }
                    Some(c)
                }
                None => None,
            },
        };
        out.tasks.insert(name, policy);
    }
    Ok(out)
}
