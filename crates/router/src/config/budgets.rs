//! `[budgets]`: dollars a day or a month, in all, per tier, per task and per API key, and
//! what happens to a request that would spend a budget that is spent.
//!
//! ```toml
//! [budgets]
//! daily_usd = 50          # every priced tier together
//! when_exceeded = "local" # or "refuse": 429 budget_exceeded
//! [budgets.tiers.frontier]
//! daily_usd = 20
//! [budgets.tasks.summarize]
//! monthly_usd = 300
//! [budgets.keys.team-a]
//! daily_usd = 5
//! when_exceeded = "refuse"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::validate::{Invalid, invalid};

/// How often spend is read again from the ledger by default: what another replica's spend
/// may lag by, besides its commit window.
pub const DEFAULT_BUDGET_REFRESH: Duration = Duration::from_secs(1);

/// What a request that would spend an exhausted budget gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenExceeded {
    /// Answered on this machine instead (the reason says `budget`); refused when no tier here
    /// can.
    #[default]
    Local,
    /// Refused: 429 `budget_exceeded`.
    Refuse,
}

/// What a budget covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Every priced tier.
    All,
    Tier(String),
    Task(String),
    Key(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("the overall budget"),
            Scope::Tier(t) => write!(f, "tier `{t}`'s budget"),
            Scope::Task(t) => write!(f, "task `{t}`'s budget"),
            Scope::Key(k) => write!(f, "key `{k}`'s budget"),
        }
    }
}

/// One budget: its scope, its limits (UTC days and calendar months), its policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub scope: Scope,
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    pub when_exceeded: WhenExceeded,
}

/// What `[budgets]` says, validated; empty: no budgets.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetsConfig {
    pub budgets: Vec<Budget>,
    /// How often spend is read from the ledger.
    pub refresh: Duration,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            budgets: Vec::new(),
            refresh: DEFAULT_BUDGET_REFRESH,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudgets {
    daily_usd: Option<Spanned<f64>>,
    monthly_usd: Option<Spanned<f64>>,
    when_exceeded: Option<WhenExceeded>,
    refresh_ms: Option<Spanned<u64>>,
    #[serde(default)]
    tiers: BTreeMap<String, RawBudget>,
    #[serde(default)]
    tasks: BTreeMap<String, RawBudget>,
    #[serde(default)]
    keys: BTreeMap<String, RawBudget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    daily_usd: Option<Spanned<f64>>,
    monthly_usd: Option<Spanned<f64>>,
    when_exceeded: Option<WhenExceeded>,
}

fn amount(path: String, v: Option<Spanned<f64>>) -> Result<Option<f64>, Invalid> {
    match v {
        None => Ok(None),
        Some(v) if v.get_ref().is_finite() && *v.get_ref() >= 0.0 => Ok(Some(v.into_inner())),
        Some(v) => invalid(path, v.span(), "must be a number of dollars, 0 or more"),
    }
}

impl RawBudgets {
    /// Validated against the tier names.
    pub(crate) fn validate(self, tiers: &[String]) -> Result<BudgetsConfig, Invalid> {
        let default = self.when_exceeded.unwrap_or_default();
        let mut budgets = Vec::new();
        let all = Budget {
            scope: Scope::All,
            daily_usd: amount("budgets.daily_usd".into(), self.daily_usd)?,
            monthly_usd: amount("budgets.monthly_usd".into(), self.monthly_usd)?,
            when_exceeded: default,
        };
        if all.daily_usd.is_some() || all.monthly_usd.is_some() {
            budgets.push(all);
        }
        let tables = [
            ("tiers", self.tiers, Scope::Tier as fn(String) -> Scope),
            ("tasks", self.tasks, Scope::Task),
            ("keys", self.keys, Scope::Key),
        ];
        for (table, entries, scope) in tables {
            for (name, raw) in entries {
                let path = format!("budgets.{table}.{name}");
                if table == "tiers" && !tiers.contains(&name) {
                    return Err((
                        path,
                        None,
                        format!("no tier is named `{name}` (tiers: {})", tiers.join(", ")),
                    ));
                }
                let b = Budget {
                    scope: scope(name),
                    daily_usd: amount(format!("{path}.daily_usd"), raw.daily_usd)?,
                    monthly_usd: amount(format!("{path}.monthly_usd"), raw.monthly_usd)?,
                    when_exceeded: raw.when_exceeded.unwrap_or(default),
                };
                if b.daily_usd.is_none() && b.monthly_usd.is_none() {
                    return Err((path, None, "give `daily_usd`, `monthly_usd` or both".into()));
                }
                budgets.push(b);
            }
        }
        let refresh = match self.refresh_ms {
            None => DEFAULT_BUDGET_REFRESH,
            Some(ms) if (10..=60_000).contains(ms.get_ref()) => {
                Duration::from_millis(ms.into_inner())
            }
            Some(ms) => {
                return invalid(
                    "budgets.refresh_ms".into(),
                    ms.span(),
                    "must be 10 to 60000 milliseconds",
                );
            }
        };
        Ok(BudgetsConfig { budgets, refresh })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Scope, WhenExceeded};

    const TIERS: &str = "[tiers.local]\nbackend = \"embedded\"\nmodel = \"m.gguf\"\n\
        [tiers.frontier]\nbackend = \"openai\"\nmodel = \"gpt\"\nbase_url = \"http://127.0.0.1:1/v1\"\ncontext_window = 8192\nprice = { input = 1.0, output = 2.0 }\n";

    #[test]
    fn budgets_parse_with_their_policies() {
        let c = Config::parse(&format!(
            "{TIERS}[budgets]\ndaily_usd = 50\nwhen_exceeded = \"refuse\"\n\
             [budgets.tiers.frontier]\nmonthly_usd = 100\nwhen_exceeded = \"local\"\n\
             [budgets.keys.team-a]\ndaily_usd = 5\n"
        ))
        .expect("valid");
        let b = &c.budgets.budgets;
        assert_eq!(b.len(), 3);
        assert_eq!((&b[0].scope, b[0].daily_usd), (&Scope::All, Some(50.0)));
        assert_eq!(b[1].when_exceeded, WhenExceeded::Local);
        assert_eq!(b[1].monthly_usd, Some(100.0));
        // The default policy is the table's.
        assert_eq!(b[2].scope, Scope::Key("team-a".into()));
        assert_eq!(b[2].when_exceeded, WhenExceeded::Refuse);
        assert!(
            Config::parse(TIERS)
                .expect("valid")
                .budgets
                .budgets
                .is_empty()
        );
    }

    #[test]
    fn bad_budgets_are_refused_with_their_place() {
        for (extra, says) in [
            (
                "[budgets.tiers.mid]\ndaily_usd = 1\n",
                "no tier is named `mid`",
            ),
            ("[budgets]\ndaily_usd = -1\n", "0 or more"),
            (
                "[budgets.tasks.x]\nwhen_exceeded = \"local\"\n",
                "give `daily_usd`",
            ),
            ("[budgets]\nwhen_exceeded = \"never\"\n", "unknown variant"),
            ("[budgets]\nrefresh_ms = 1\n", "10 to 60000"),
            ("[budgets]\nweekly_usd = 1\n", "unknown field"),
            (
                "[ledger]\nenabled = false\n[budgets]\ndaily_usd = 1\n",
                "read from the ledger",
            ),
        ] {
            let e = Config::parse(&format!("{TIERS}{extra}")).expect_err(extra);
            assert!(e.to_string().contains(says), "{extra}: {e}");
        }
    }
}
