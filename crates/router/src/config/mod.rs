//! `smallfirst.toml`: parsed raw, then validated into a [`Config`] with no leftover options.
//! One file per table, each owning its raw type, its validated type and the validation
//! between them: `tiers`, `faults` (a tier's retries, deadlines, breaker), `policy` (with
//! `[tasks.*]`), `server`; `validate` holds what they share.
//!
//! Every mistake is reported with the field's path (`tiers.frontier.base_url`) and the line
//! of the file it is on: unknown fields (a typo is never silently ignored), wrong types, bad
//! values, fields that do not apply to a tier's backend, fallbacks that name no tier or go in
//! a circle. Secrets are never in the file: a tier names the environment variable that holds
//! its key (`api_key_env`), read when the server starts.

mod budgets;
mod faults;
mod ledger;
mod policy;
mod server;
mod tiers;
pub(crate) mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use budgets::RawBudgets;
pub use budgets::{Budget, BudgetsConfig, DEFAULT_BUDGET_REFRESH, Scope, WhenExceeded};
pub use faults::Faults;
use ledger::RawLedger;
pub use ledger::{DEFAULT_COMMIT_WINDOW, LedgerConfig, Postgres};
pub use policy::{Calibration, DEFAULT_THRESHOLD, LowConfidence, PolicyConfig, Rule, TaskPolicy};
use policy::{RawPolicy, RawTask};
use server::RawServer;
pub use server::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_HOST, DEFAULT_MAX_QUEUE, DEFAULT_PORT, DEFAULT_REQUEST_TIMEOUT,
    ServerConfig,
};
use tiers::RawTier;
pub use tiers::{
    BackendConfig, Capabilities, DEFAULT_EMBEDDED_MODEL, EngineSettings, Prices, Remote, Tier,
};
use validate::Invalid;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    /// In name order; names are unique.
    pub tiers: Vec<Tier>,
    /// How `model: "auto"` requests are routed between the tiers.
    pub policy: PolicyConfig,
    /// Where every request is recorded, and against what its savings are measured.
    pub ledger: LedgerConfig,
    /// Dollars a day or a month, read from the ledger.
    pub budgets: BudgetsConfig,
}

/// The most requests an embedded tier decodes together.
pub const MAX_PARALLEL: usize = 64;

/// A configuration mistake: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, when the configuration came from one.
    pub file: Option<String>,
    /// 1-based line of the offending field, when known.
    pub line: Option<usize>,
    /// Dotted path of the field (`tiers.frontier.base_url`); empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if !self.path.is_empty() {
            write!(f, "`{}`: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl Config {
    /// What serving with no file means: one local tier on the embedded `model`.
    pub fn embedded(model: &str) -> Config {
        Config {
            server: ServerConfig::default(),
            tiers: vec![Tier {
                name: "local".into(),
                backend: BackendConfig::Embedded {
                    model: model.into(),
                    threads: None,
                    ctx: None,
                    parallel: None,
                },
                prices: Prices::default(),
                context_window: None,
                capabilities: Capabilities {
                    tools: true,
                    json_schema: true,
                    vision: false,
                },
                on_machine: true,
                fallback: None,
                faults: Faults::default(),
            }],
            policy: PolicyConfig {
                threshold: DEFAULT_THRESHOLD,
                ..PolicyConfig::default()
            },
            ledger: LedgerConfig::default(),
            budgets: BudgetsConfig::default(),
        }
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(file.clone()),
            line: None,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text).map_err(|e| ConfigError {
            file: Some(file),
            ..e
        })
    }

    /// Parses and validates the text of a file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let at = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        };
        let de = toml::de::Deserializer::parse(text).map_err(|e| ConfigError {
            file: None,
            line: at(e.span()),
            path: String::new(),
            message: first_line(e.message()),
        })?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = clean_path(&e.path().to_string());
            let inner = e.into_inner();
            ConfigError {
                file: None,
                line: at(inner.span()),
                path: if path == "." { String::new() } else { path },
                message: first_line(inner.message()),
            }
        })?;
        raw.validate().map_err(|(path, span, message)| ConfigError {
            file: None,
            line: at(span),
            path,
            message,
        })
    }

    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name == name)
    }

    /// The embedded tier (there is at most one) and its engine settings.
    pub fn embedded_tier(&self) -> Option<(&Tier, EngineSettings<'_>)> {
        self.tiers
            .iter()
            .find_map(|t| t.backend.embedded().map(|e| (t, e)))
    }
}

/// The field path without the segments `toml::Spanned` adds on the way.
fn clean_path(path: &str) -> String {
    path.split('.')
        .filter(|s| !s.starts_with("$__serde_spanned_private"))
        .collect::<Vec<_>>()
        .join(".")
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    tiers: BTreeMap<String, RawTier>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    tasks: BTreeMap<String, RawTask>,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    budgets: RawBudgets,
}

impl RawConfig {
    fn validate(self) -> Result<Config, Invalid> {
        let server = self.server.validate()?;
        if self.tiers.is_empty() {
            return Err((
                "tiers".into(),
                None,
                "at least one tier is needed, e.g. [tiers.local] with backend = \"embedded\""
                    .into(),
            ));
        }
        let names: Vec<String> = self.tiers.keys().cloned().collect();
        let mut tiers = Vec::with_capacity(self.tiers.len());
        for (name, raw) in self.tiers {
            if !valid_name(&name) {
                return Err((
                    format!("tiers.{name}"),
                    None,
                    "tier names are letters, digits, `_` and `-`".into(),
                ));
            }
            tiers.push(raw.validate(&name, &names)?);
        }
        let embedded: Vec<&Tier> = tiers
            .iter()
            .filter(|t| t.backend.embedded().is_some())
            .collect();
        if embedded.len() > 1 {
            return Err((
                format!("tiers.{}.backend", embedded[1].name),
                None,
                format!(
                    "only one embedded tier can be served; `{}` is one already",
                    embedded[0].name
                ),
            ));
        }
        check_fallbacks(&tiers)?;
        let policy = policy::validate(self.policy, self.tasks, &names)?;
        let ledger = self.ledger.validate(&tiers)?;
        let budgets = self.budgets.validate(&names)?;
        if !budgets.budgets.is_empty() && !ledger.enabled {
            return Err((
                "budgets".into(),
                None,
                "budgets are read from the ledger, and `[ledger] enabled = false`".into(),
            ));
        }
        Ok(Config {
            server,
            tiers,
            policy,
            ledger,
            budgets,
        })
    }
}

fn check_fallbacks(tiers: &[Tier]) -> Result<(), Invalid> {
    for start in tiers {
        let mut seen = vec![start.name.as_str()];
        let mut at = start;
        while let Some(next) = at.fallback.as_deref() {
            if seen.contains(&next) {
                seen.push(next);
                return Err((
                    format!("tiers.{}.fallback", start.name),
                    None,
                    format!("fallbacks go in a circle: {}", seen.join(" → ")),
                ));
            }
            seen.push(next);
            match tiers.iter().find(|t| t.name == next) {
                Some(t) => at = t,
                None => break,
            }
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
