//! `[ledger]`: whether every request is recorded, where, what its savings are measured
//! against, and how long a record may wait before it is committed.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Tier;
use super::validate::{Invalid, invalid};

/// How long a record waits, at most, for others to be committed with it.
pub const DEFAULT_COMMIT_WINDOW: Duration = Duration::from_millis(50);
/// The longest commit window a file may ask for.
const MAX_COMMIT_MS: u64 = 10_000;

/// What `[ledger]` says, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    /// Whether requests are recorded at all (TOML `enabled`, default true).
    pub enabled: bool,
    /// The SQLite file; `None`: `ledger.sqlite` in the data directory (unless `postgres`).
    pub path: Option<PathBuf>,
    /// A PostgreSQL server to keep the records in instead, shared by replicas.
    pub postgres: Option<Postgres>,
    /// The tier savings are measured against: the one named, else the tier with the highest
    /// prices; `None` when no tier has a price.
    pub baseline: Option<String>,
    /// Whether prompts and answers are kept with the records (default false: counts only).
    pub store_text: bool,
    /// How long a record may wait before its commit begins: what `kill -9` can lose.
    pub commit_window: Duration,
}

/// Where a PostgreSQL ledger is: its connection URL (`postgres://user@host:5432/db`, or
/// libpq's `host=/run/postgresql dbname=smallfirst`), or the variable that holds one (for a
/// URL with a password in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Postgres {
    Url(String),
    Env(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLedger {
    enabled: Option<bool>,
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    baseline: Option<Spanned<String>>,
    store_text: Option<bool>,
    commit_ms: Option<Spanned<u64>>,
}

impl RawLedger {
    pub(crate) fn validate(self, tiers: &[Tier]) -> Result<LedgerConfig, Invalid> {
        let path = match self.path {
            Some(p) if p.get_ref().trim().is_empty() => {
                return invalid("ledger.path".into(), p.span(), "must not be empty");
            }
            p => p.map(|p| PathBuf::from(p.into_inner())),
        };
        let postgres = match (self.url, self.url_env) {
            (Some(_), Some(e)) => {
                return invalid(
                    "ledger.url_env".into(),
                    e.span(),
                    "give `url` or `url_env`, not both",
                );
            }
            (Some(u), None) => {
                let text = u.get_ref().trim();
                let url_form = text.starts_with("postgres://") || text.starts_with("postgresql://");
                if !url_form && !text.contains('=') {
                    return invalid(
                        "ledger.url".into(),
                        u.span(),
                        "must be a PostgreSQL URL (postgres://user@host/db) or libpq settings (host=… dbname=…)",
                    );
                }
                let userinfo = text
                    .split_once("://")
                    .and_then(|(_, rest)| rest.rsplit_once('@'))
                    .map(|(who, _)| who);
                if userinfo.is_some_and(|who| who.contains(':')) || text.contains("password=") {
                    return invalid(
                        "ledger.url".into(),
                        u.span(),
                        "a password does not belong in the file: name the variable that holds the URL with `url_env`",
                    );
                }
                Some(Postgres::Url(text.to_string()))
            }
            (None, Some(e)) => {
                let name = e.get_ref();
                let ok = name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    return invalid(
                        "ledger.url_env".into(),
                        e.span(),
                        "must be an environment variable's name (e.g. SMALLFIRST_LEDGER_URL)",
                    );
                }
                Some(Postgres::Env(e.into_inner()))
            }
            (None, None) => None,
        };
        if let (Some(p), Some(_)) = (&path, &postgres) {
            return Err((
                "ledger.path".into(),
                None,
                format!(
                    "`{}` is a SQLite file, and the ledger is in PostgreSQL: give one",
                    p.display()
                ),
            ));
        }
        let baseline = match self.baseline {
            Some(b) if tiers.iter().any(|t| t.name == *b.get_ref()) => Some(b.into_inner()),
            Some(b) => {
                let names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
                return invalid(
                    "ledger.baseline".into(),
                    b.span(),
                    format!(
                        "no tier is named `{}` (tiers: {})",
                        b.get_ref(),
                        names.join(", ")
                    ),
                );
            }
            None => priciest(tiers),
        };
        let commit_window = match self.commit_ms {
            None => DEFAULT_COMMIT_WINDOW,
            Some(ms) if (1..=MAX_COMMIT_MS).contains(ms.get_ref()) => {
                Duration::from_millis(ms.into_inner())
            }
            Some(ms) => {
                return invalid(
                    "ledger.commit_ms".into(),
                    ms.span(),
                    format!("must be 1 to {MAX_COMMIT_MS} milliseconds"),
                );
            }
        };
        Ok(LedgerConfig {
            enabled: self.enabled.unwrap_or(true),
            path,
            postgres,
            baseline,
            store_text: self.store_text.unwrap_or(false),
            commit_window,
        })
    }
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            enabled: true,
            path: None,
            postgres: None,
            baseline: None,
            store_text: false,
            commit_window: DEFAULT_COMMIT_WINDOW,
        }
    }
}

/// The tier whose million input and output tokens cost the most, when any has a price.
fn priciest(tiers: &[Tier]) -> Option<String> {
    tiers
        .iter()
        .filter(|t| t.prices.priced())
        .max_by(|a, b| {
            let total = |t: &Tier| t.prices.input + t.prices.output;
            total(a).total_cmp(&total(b))
        })
        .map(|t| t.name.clone())
}
