//! The policy: ordered rules, per-task settings and built-in defaults that turn a request's
//! [`Features`] into a [`Route`]. [`Policy::decide`] is pure: no I/O, no clock, no model.
//!
//! Order: the first [`Rule`] that matches, else the task's own settings (`[tasks.<name>]`),
//! else the defaults, which are the small-first router: open-ended work and code go to the
//! frontier tier; narrow work with closed outputs (classify, extract, route, tool calls) is
//! answered locally and escalated to the frontier when its confidence is below the threshold;
//! everything else is answered locally. Then what cannot bend: a tier whose context window
//! cannot hold the request, or that lacks a capability it needs, is skipped; a local-only
//! request keeps to tiers on this machine and is never escalated off it.

use crate::confidence::Estimator;
use crate::config::{Capabilities, Config};
pub use crate::config::{DEFAULT_THRESHOLD, LowConfidence, PolicyConfig, Rule, TaskPolicy};
use crate::features::{Features, NARROW_TASKS, OPEN_TASKS};

/// The plan for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The first tier, then the escalation chain.
    pub tiers: Vec<String>,
    /// Escalate from the first tier when its confidence is below this; `None`: no cascade.
    pub threshold: Option<f64>,
    pub local_only: bool,
    pub low_confidence: LowConfidence,
    /// The label set the answer must come from, when the task has one.
    pub labels: Option<Vec<String>>,
    /// The task whose head answers (`[tasks.NAME] head`), unless the request lists labels of
    /// its own.
    pub head: Option<String>,
    /// The task whose verifier judges a decoded local answer (`[tasks.NAME] verifier`),
    /// unless the request lists labels of its own.
    pub verifier: Option<String>,
    /// How the local answer's confidence is estimated: the request's `metadata.confidence`,
    /// else the task's; `None`: from the decode.
    pub estimator: Option<Estimator>,
    pub reason: Reason,
}

/// Why a route: a short stable code (`task=classify`, `context>local_window`) and words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: String,
    pub words: String,
}

impl Reason {
    fn new(code: impl Into<String>, words: impl Into<String>) -> Self {
        Reason {
            code: code.into(),
            words: words.into(),
        }
    }
}

/// No tier can take the request within its constraints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoRoute(pub String);

/// A tier as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TierView {
    pub name: String,
    pub on_machine: bool,
    pub context_window: Option<u32>,
    pub capabilities: Capabilities,
}

/// The policy with the tiers it routes between.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    config: PolicyConfig,
    /// In configuration (name) order.
    tiers: Vec<TierView>,
    start: Option<String>,
    frontier: Option<String>,
}

impl Policy {
    /// `local_window`: the embedded tier's context, known once its model is loaded.
    pub fn new(config: &Config, local_window: Option<u32>) -> Policy {
        let tiers: Vec<TierView> = config
            .tiers
            .iter()
            .map(|t| TierView {
                name: t.name.clone(),
                on_machine: t.on_machine,
                context_window: if t.backend.embedded().is_some() {
                    local_window.or(t.context_window)
                } else {
                    t.context_window
                },
                capabilities: t.capabilities,
            })
            .collect();
        let embedded = config.embedded_tier().map(|(t, _)| t.name.clone());
        let start = config
            .policy
            .start
            .clone()
            .or(embedded)
            .or_else(|| tiers.iter().find(|t| t.on_machine).map(|t| t.name.clone()));
        let frontier = config.policy.frontier.clone().or_else(|| {
            tiers
                .iter()
                .filter(|t| !t.on_machine)
                .max_by_key(|t| t.context_window.unwrap_or(0))
                .map(|t| t.name.clone())
        });
        Policy {
            config: config.policy.clone(),
            tiers,
            start,
            frontier,
        }
    }

    /// Whether a request's `model` asks the policy to decide.
    pub fn decides_for(&self, model: &str) -> bool {
        model == "auto" || self.config.aliases.iter().any(|a| a == model)
    }

    pub fn task(&self, name: &str) -> Option<&TaskPolicy> {
        self.config.tasks.get(name)
    }

    fn tier(&self, name: &str) -> Option<&TierView> {
        self.tiers.iter().find(|t| t.name == name)
    }

    /// The route for a request with these features.
    pub fn decide(&self, f: &Features) -> Result<Route, NoRoute> {
        let task = self.config.tasks.get(&f.task);
        let local_only = f.local_only || task.is_some_and(|t| t.local_only);
        let labels = f
            .labels
            .clone()
            .or_else(|| task.and_then(|t| t.labels.clone()));
        let head = task
            .filter(|t| t.head.is_some() && f.labels.is_none())
            .map(|_| f.task.clone());
        // Like a head, a verifier knows the task's own label set, not one a request brings.
        let verifier = task
            .filter(|t| t.verifier.is_some() && f.labels.is_none())
            .map(|_| f.task.clone());
        let default_escalation = || self.frontier.iter().cloned().collect::<Vec<_>>();
        let (mut tiers, threshold, mut reason) = if let Some((i, rule)) = self
            .config
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| self.matches(r, f))
        {
            let mut tiers = vec![rule.tier.clone()];
            tiers.extend(rule.escalate.iter().cloned());
            // A threshold given is kept even with nowhere to escalate: the answer is judged and
            // marked (and a local-only one can be refused).
            let threshold = rule
                .threshold
                .or_else(|| (!rule.escalate.is_empty()).then_some(self.config.threshold));
            let n = i + 1;
            (
                tiers,
                threshold,
                Reason::new(format!("rule={n}"), format!("policy rule {n} matched")),
            )
        } else if let Some(t) = task.filter(|t| t.tier.is_some() || t.escalate.is_some()) {
            let first = t.tier.clone().or_else(|| self.start.clone());
            let escalate = t.escalate.clone().unwrap_or_else(default_escalation);
            let mut tiers: Vec<String> = first.into_iter().collect();
            tiers.extend(escalate);
            let threshold = t
                .threshold
                .or_else(|| (tiers.len() > 1).then_some(self.config.threshold));
            let reason = Reason::new(
                format!("task={}", f.task),
                format!("task `{}` is configured", f.task),
            );
            (tiers, threshold, reason)
        } else if OPEN_TASKS.contains(&f.task.as_str()) && self.frontier.is_some() {
            let reason = Reason::new(
                format!("task={}", f.task),
                format!("`{}` work goes to the frontier tier", f.task),
            );
            (default_escalation(), None, reason)
        } else {
            let narrow = NARROW_TASKS.contains(&f.task.as_str())
                || labels.is_some()
                || head.is_some()
                || verifier.is_some()
                || task.is_some_and(|t| t.threshold.is_some());
            let mut tiers: Vec<String> = self.start.iter().cloned().collect();
            let mut threshold = None;
            let reason = if narrow {
                tiers.extend(default_escalation());
                threshold = task
                    .and_then(|t| t.threshold)
                    .or_else(|| (tiers.len() > 1).then_some(self.config.threshold));
                Reason::new(
                    format!("task={}", f.task),
                    format!("`{}` has a closed answer: local first", f.task),
                )
            } else {
                Reason::new("default", "answered locally")
            };
            (tiers, threshold, reason)
        };
        tiers.dedup();
        // A default threshold is for escalating; with one tier left and none given, none.
        let explicit =
            task.is_some_and(|t| t.threshold.is_some()) || reason.code.starts_with("rule=");
        let threshold = threshold.filter(|_| tiers.len() > 1 || explicit);

        // What cannot bend: room for the request, capabilities, privacy.
        let needed = f
            .input_tokens
            .saturating_add(f.max_output_tokens.unwrap_or(1));
        let fits = |t: &TierView| t.context_window.is_none_or(|w| w >= needed);
        let able = |t: &TierView| !f.needs.vision || t.capabilities.vision;
        let allowed = |t: &TierView| !local_only || t.on_machine;
        let first = tiers.first().cloned();
        tiers.retain(|name| {
            self.tier(name)
                .is_some_and(|t| fits(t) && able(t) && allowed(t))
        });
        if tiers.first() != first.as_ref() {
            // The planned first tier cannot take it: say why, and find one that can.
            if let Some(t) = first.as_deref().and_then(|n| self.tier(n)) {
                reason = if !fits(t) {
                    Reason::new(
                        format!("context>{}_window", t.name),
                        format!(
                            "{needed} tokens do not fit `{}`'s window of {}",
                            t.name,
                            t.context_window.unwrap_or(0)
                        ),
                    )
                } else if !able(t) {
                    Reason::new("needs=vision", format!("`{}` cannot read images", t.name))
                } else {
                    Reason::new(
                        "privacy=local-only",
                        format!("`{}` is not on this machine", t.name),
                    )
                };
            }
        }
        // Nothing planned can take it (or nothing was planned: no local tier for local work):
        // the first tier that can.
        if tiers.is_empty()
            && let Some(t) = self.tiers.iter().find(|t| fits(t) && able(t) && allowed(t))
        {
            tiers.push(t.name.clone());
        }
        if tiers.is_empty() {
            return Err(NoRoute(if local_only {
                format!(
                    "no tier on this machine can serve this local-only request ({needed} tokens{})",
                    if f.needs.vision { ", with images" } else { "" }
                )
            } else {
                format!(
                    "no tier can serve this request ({needed} tokens{})",
                    if f.needs.vision { ", with images" } else { "" }
                )
            }));
        }
        if local_only && reason.code != "privacy=local-only" {
            reason.words.push_str("; local-only");
        }
        Ok(Route {
            tiers,
            threshold,
            local_only,
            low_confidence: self.config.local_only_low_confidence,
            labels,
            head,
            verifier,
            estimator: match &f.confidence {
                Some(Ok(e)) => Some(*e),
                _ => task.and_then(|t| t.confidence),
            },
            reason,
        })
    }

    fn matches(&self, rule: &Rule, f: &Features) -> bool {
        let tokens = f
            .input_tokens
            .saturating_add(f.max_output_tokens.unwrap_or(0));
        rule.task.as_ref().is_none_or(|t| *t == f.task)
            && rule.min_tokens.is_none_or(|n| tokens >= n)
            && (!rule.needs_vision || f.needs.vision)
            && (!rule.needs_tools || f.needs.tools)
            && (!rule.needs_json_schema || f.needs.json_schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Needs, TaskSource};

    const FILE: &str = r#"
[tiers.local]
backend = "embedded"

[tiers.mid]
backend = "openai"
model = "qwen2.5:7b"
base_url = "http://127.0.0.1:11434/v1"
context_window = 32768
local = true

[tiers.frontier]
backend = "openai"
model = "gpt-4o-mini"
base_url = "https://api.openai.com/v1"
context_window = 128000
capabilities = ["tools", "json_schema", "vision"]

[policy]
threshold = 0.7
aliases = ["smart"]

[[policy.rules]]
task = "summarize"
min_tokens = 1000
tier = "mid"

[tasks.banking]
labels = ["card_arrival", "lost_card"]
threshold = 0.6

[tasks.hr]
privacy = "local-only"
tier = "local"
escalate = ["mid", "frontier"]
"#;

    fn policy() -> Policy {
        Policy::new(&Config::parse(FILE).expect("valid"), Some(2048))
    }

    fn features(task: &str, input_tokens: u32) -> Features {
        Features {
            task: task.into(),
            task_source: TaskSource::Inferred,
            input_tokens,
            max_output_tokens: None,
            needs: Needs::default(),
            local_only: false,
            labels: None,
            confidence: None,
        }
    }

    fn route(f: &Features) -> (Vec<&'static str>, Option<f64>, String) {
        let r = policy().decide(f).expect("a route");
        let tiers = r
            .tiers
            .iter()
            .map(|t| match t.as_str() {
                "local" => "local",
                "mid" => "mid",
                _ => "frontier",
            })
            .collect();
        (tiers, r.threshold, r.reason.code)
    }

    #[test]
    fn without_a_local_tier_everything_goes_where_it_can() {
        let text = "[tiers.frontier]\nbackend = \"openai\"\nmodel = \"m\"\nbase_url = \"https://x.test/v1\"\ncontext_window = 8000\n";
        let p = Policy::new(&Config::parse(text).expect("valid"), None);
        let r = p.decide(&features("chat", 10)).expect("a route");
        assert_eq!(r.tiers, ["frontier"]);
    }

    #[test]
    fn the_defaults_are_small_first() {
        assert_eq!(
            route(&features("classify", 100)),
            (vec!["local", "frontier"], Some(0.7), "task=classify".into())
        );
        assert_eq!(
            route(&features("open_ended", 100)),
            (vec!["frontier"], None, "task=open_ended".into())
        );
        assert_eq!(
            route(&features("chat", 100)),
            (vec!["local"], None, "default".into())
        );
        let p = policy();
        assert!(p.decides_for("auto") && p.decides_for("smart") && !p.decides_for("local"));
    }

    #[test]
    fn rules_then_tasks_then_defaults() {
        assert_eq!(
            route(&features("summarize", 1500)),
            (vec!["mid"], None, "rule=1".into())
        );
        assert_eq!(
            route(&features("summarize", 10)),
            (vec!["local"], None, "default".into())
        );
        let banking = policy().decide(&features("banking", 50)).expect("route");
        assert_eq!(banking.tiers, ["local", "frontier"]);
        assert_eq!(banking.threshold, Some(0.6));
        assert_eq!(banking.labels.as_deref().map(<[String]>::len), Some(2));
        assert_eq!(banking.reason.code, "task=banking");
    }

    #[test]
    fn what_does_not_fit_the_local_window_skips_to_a_tier_it_fits() {
        let (tiers, threshold, code) = route(&features("classify", 5000));
        assert_eq!(
            (tiers, code.as_str()),
            (vec!["frontier"], "context>local_window")
        );
        assert_eq!(
            threshold,
            Some(0.7),
            "kept, though nothing is left to escalate to"
        );
        let mut f = features("chat", 2000);
        f.max_output_tokens = Some(100);
        assert_eq!(route(&f).2, "context>local_window", "the output counts too");
    }

    #[test]
    fn images_go_where_they_can_be_read() {
        let mut f = features("chat", 10);
        f.needs.vision = true;
        assert_eq!(route(&f), (vec!["frontier"], None, "needs=vision".into()));
    }

    #[test]
    fn local_only_never_leaves_the_machine() {
        let mut f = features("classify", 100);
        f.local_only = true;
        let r = policy().decide(&f).expect("route");
        assert_eq!(r.tiers, ["local"], "the frontier is dropped from the chain");
        assert!(r.local_only && r.threshold.is_some());
        // A task marked local-only escalates only to tiers on this machine.
        let hr = policy().decide(&features("hr", 100)).expect("route");
        assert_eq!(hr.tiers, ["local", "mid"]);
        // With nowhere to escalate, a task's own threshold still judges the answer.
        let mut cfg = Config::embedded("m");
        cfg.policy.tasks.insert(
            "t".into(),
            TaskPolicy {
                threshold: Some(0.9),
                local_only: true,
                ..TaskPolicy::default()
            },
        );
        let r = Policy::new(&cfg, Some(2048))
            .decide(&features("t", 10))
            .expect("route");
        assert_eq!((r.tiers.len(), r.threshold), (1, Some(0.9)));
        let alone = Policy::new(&Config::embedded("m"), Some(2048));
        let r = alone.decide(&features("classify", 10)).expect("route");
        assert_eq!(
            (r.tiers.len(), r.threshold),
            (1, None),
            "no threshold given, none to use"
        );
        // A task with a head is answered by it, locally first, unless the request brings
        // labels of its own.
        let mut cfg = Config::embedded("m");
        cfg.policy.tasks.insert(
            "intent".into(),
            TaskPolicy {
                head: Some("intent.head.json".into()),
                ..TaskPolicy::default()
            },
        );
        let p = Policy::new(&cfg, Some(2048));
        let r = p.decide(&features("intent", 10)).expect("route");
        assert_eq!(
            (r.head.as_deref(), r.tiers[0].as_str()),
            (Some("intent"), "local")
        );
        let mut own = features("intent", 10);
        own.labels = Some(vec!["a".into(), "b".into()]);
        assert_eq!(p.decide(&own).expect("route").head, None);
        assert_eq!(p.decide(&features("other", 10)).expect("route").head, None);
        // So is a verifier: it judges the task's own label set.
        let mut cfg = Config::embedded("m");
        cfg.policy.tasks.insert(
            "intent".into(),
            TaskPolicy {
                verifier: Some("intent.verifier.json".into()),
                ..TaskPolicy::default()
            },
        );
        let p = Policy::new(&cfg, Some(2048));
        let r = p.decide(&features("intent", 10)).expect("route");
        assert_eq!(r.verifier.as_deref(), Some("intent"));
        assert_eq!(r.tiers[0], "local");
        assert_eq!(p.decide(&own).expect("route").verifier, None);
        // The task's confidence method, unless the request names its own.
        let mut cfg = Config::embedded("m");
        cfg.policy.tasks.insert(
            "t".into(),
            TaskPolicy {
                confidence: Some(Estimator::Debiased),
                ..TaskPolicy::default()
            },
        );
        let p = Policy::new(&cfg, Some(2048));
        let r = p.decide(&features("t", 10)).expect("route");
        assert_eq!(r.estimator, Some(Estimator::Debiased));
        let mut own = features("t", 10);
        own.confidence = Some(Ok(Estimator::SelfConsistency { samples: 3 }));
        assert_eq!(
            p.decide(&own).expect("route").estimator,
            Some(Estimator::SelfConsistency { samples: 3 })
        );
        assert_eq!(p.decide(&features("x", 10)).expect("route").estimator, None);
        // Too long for every local tier: an error, never the frontier.
        f.input_tokens = 50_000;
        let e = policy().decide(&f).expect_err("no local tier fits");
        assert!(e.0.contains("local-only"), "{e}");
        f.input_tokens = 5_000;
        let r = policy().decide(&f).expect("mid fits");
        assert_eq!(
            (r.tiers[0].as_str(), r.reason.code.as_str()),
            ("mid", "context>local_window")
        );
    }
}
