//! `smallfirst.toml`: parsed raw, then validated into a [`Config`] with no leftover options.
//!
//! Every mistake is reported with the field's path (`tiers.frontier.base_url`) and the line
//! of the file it is on: unknown fields (a typo is never silently ignored), wrong types, bad
//! values, fields that do not apply to a tier's backend, fallbacks that name no tier or go in
//! a circle. Secrets are never in the file: a tier names the environment variable that holds
//! its key (`api_key_env`), read when the server starts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::faults_config::{RawBreaker, RawRetry, RawTimeouts, faults};
use crate::policy::PolicyConfig;
use crate::policy_config::{RawPolicy, RawTask};
use crate::server_config::RawServer;
pub use crate::server_config::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_HOST, DEFAULT_MAX_QUEUE, DEFAULT_PORT, DEFAULT_REQUEST_TIMEOUT,
    ServerConfig,
};
use crate::validate::{Invalid, invalid};

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    /// In name order; names are unique.
    pub tiers: Vec<Tier>,
    /// How `model: "auto"` requests are routed between the tiers.
    pub policy: PolicyConfig,
}

/// The most requests an embedded tier decodes together.
pub const MAX_PARALLEL: usize = 64;

/// A named place a request can be answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    pub backend: BackendConfig,
    /// US dollars per million tokens.
    pub prices: Prices,
    /// Tokens the tier's model accepts; for an embedded tier, `None` until the model is loaded
    /// (its context is then the engine's).
    pub context_window: Option<u32>,
    pub capabilities: Capabilities,
    /// Whether the tier runs on this machine (TOML `local`; privacy rules keep some requests
    /// to these).
    pub on_machine: bool,
    /// The tier to try when this one fails after its retries.
    pub fallback: Option<String>,
    /// How a remote tier's failures are retried, bounded in time and cut off.
    pub faults: Faults,
}

/// How a remote tier's failures are handled. Ignored for the embedded tier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The delay before the first retry; it doubles with each retry, jittered.
    pub backoff: Duration,
    /// The longest wait between tries, `Retry-After` included: an upstream that asks for
    /// longer is given up on (and the fallback tried) rather than waited for.
    pub max_backoff: Duration,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time from sending a request to the response head, and between two chunks of a body.
    pub first_byte_timeout: Duration,
    /// Time for the whole call, retries and the streamed body included.
    pub total_timeout: Duration,
    /// Consecutive failed tries that open the tier's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before it lets one probe through.
    pub breaker_cooldown: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            attempts: 3,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(600),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// How a tier is reached. The one place that turns this into a running backend matches on it.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    /// The in-process engine.
    Embedded {
        /// A catalog name, a pulled model's name, or a GGUF path.
        model: String,
        threads: Option<usize>,
        /// Positions one request may use.
        ctx: Option<u32>,
        /// Requests decoded together.
        parallel: Option<usize>,
    },
    /// Any OpenAI-compatible server (OpenAI, Ollama, vLLM, llama.cpp server, smallfirst).
    OpenAi(Remote),
    /// Anthropic's Messages API.
    Anthropic(Remote),
    /// Google's Gemini API.
    Gemini(Remote),
}

/// An upstream reached over HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    pub base_url: Url,
    pub model: String,
    /// The environment variable that holds the API key, if the upstream needs one.
    pub api_key_env: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prices {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub tools: bool,
    pub json_schema: bool,
    pub vision: bool,
}

impl BackendConfig {
    /// The word used in the file for this backend.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Embedded { .. } => "embedded",
            BackendConfig::OpenAi(_) => "openai",
            BackendConfig::Anthropic(_) => "anthropic",
            BackendConfig::Gemini(_) => "gemini",
        }
    }

    /// Where and how an upstream tier is reached; `None` for the embedded one.
    pub fn remote(&self) -> Option<&Remote> {
        match self {
            BackendConfig::Embedded { .. } => None,
            BackendConfig::OpenAi(r) | BackendConfig::Anthropic(r) | BackendConfig::Gemini(r) => {
                Some(r)
            }
        }
    }

    /// The model the tier answers with.
    pub fn model(&self) -> &str {
        match self {
            BackendConfig::Embedded { model, .. } => model,
            BackendConfig::OpenAi(r) | BackendConfig::Anthropic(r) | BackendConfig::Gemini(r) => {
                &r.model
            }
        }
    }
}

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
                threshold: crate::policy::DEFAULT_THRESHOLD,
                ..PolicyConfig::default()
            },
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BackendKind {
    Embedded,
    OpenAi,
    Anthropic,
    Gemini,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    backend: BackendKind,
    model: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    threads: Option<Spanned<usize>>,
    ctx: Option<Spanned<u32>>,
    parallel: Option<Spanned<usize>>,
    #[serde(default)]
    price: RawPrice,
    context_window: Option<Spanned<u32>>,
    capabilities: Option<Vec<Capability>>,
    local: Option<bool>,
    fallback: Option<Spanned<String>>,
    retry: Option<Spanned<RawRetry>>,
    timeouts: Option<Spanned<RawTimeouts>>,
    breaker: Option<Spanned<RawBreaker>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input: Option<Spanned<f64>>,
    cached_input: Option<Spanned<f64>>,
    output: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Capability {
    Tools,
    JsonSchema,
    Vision,
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
            .filter(|t| matches!(t.backend, BackendConfig::Embedded { .. }))
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
        let policy = crate::policy_config::validate(self.policy, self.tasks, &names)?;
        Ok(Config {
            server,
            tiers,
            policy,
        })
    }
}

impl RawTier {
    fn validate(self, name: &str, names: &[String]) -> Result<Tier, Invalid> {
        let path = |field: &str| format!("tiers.{name}.{field}");
        let kind = match self.backend {
            BackendKind::Embedded => "embedded",
            BackendKind::OpenAi => "openai",
            BackendKind::Anthropic => "anthropic",
            BackendKind::Gemini => "gemini",
        };
        let not_for = |field: &str, span: std::ops::Range<usize>| -> Result<(), Invalid> {
            invalid(
                path(field),
                span,
                format!("does not apply to backend `{kind}`"),
            )
        };
        let backend = if self.backend == BackendKind::Embedded {
            for (field, span) in [
                ("base_url", self.base_url.as_ref().map(Spanned::span)),
                ("api_key_env", self.api_key_env.as_ref().map(Spanned::span)),
                ("retry", self.retry.as_ref().map(Spanned::span)),
                ("timeouts", self.timeouts.as_ref().map(Spanned::span)),
                ("breaker", self.breaker.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    not_for(field, span)?;
                }
            }
            if let Some(t) = &self.threads
                && *t.get_ref() == 0
            {
                return invalid(path("threads"), t.span(), "must be at least 1");
            }
            if let Some(c) = &self.ctx
                && *c.get_ref() < 16
            {
                return invalid(path("ctx"), c.span(), "must be at least 16 tokens");
            }
            if let Some(p) = &self.parallel
                && !(1..=MAX_PARALLEL).contains(p.get_ref())
            {
                return invalid(
                    path("parallel"),
                    p.span(),
                    format!("must be 1 to {MAX_PARALLEL}"),
                );
            }
            BackendConfig::Embedded {
                model: self
                    .model
                    .map(Spanned::into_inner)
                    .unwrap_or_else(|| DEFAULT_EMBEDDED_MODEL.to_string()),
                threads: self.threads.map(Spanned::into_inner),
                ctx: self.ctx.map(Spanned::into_inner),
                parallel: self.parallel.map(Spanned::into_inner),
            }
        } else {
            for (field, span) in [
                ("threads", self.threads.as_ref().map(Spanned::span)),
                ("ctx", self.ctx.as_ref().map(Spanned::span)),
                ("parallel", self.parallel.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    not_for(field, span)?;
                }
            }
            let Some(model) = self.model else {
                return Err((
                    path("model"),
                    None,
                    format!("is required for backend `{kind}`"),
                ));
            };
            if model.get_ref().trim().is_empty() {
                return invalid(path("model"), model.span(), "must not be empty");
            }
            let Some(base_url) = self.base_url else {
                return Err((
                    path("base_url"),
                    None,
                    format!(
                        "is required for backend `{kind}` (e.g. {})",
                        example_url(self.backend)
                    ),
                ));
            };
            let url = match Url::parse(base_url.get_ref()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
                Ok(_) => {
                    return invalid(
                        path("base_url"),
                        base_url.span(),
                        "must be an http:// or https:// URL",
                    );
                }
                Err(e) => {
                    return invalid(path("base_url"), base_url.span(), format!("not a URL: {e}"));
                }
            };
            if let Some(env) = &self.api_key_env
                && !valid_env_name(env.get_ref())
            {
                return invalid(
                    path("api_key_env"),
                    env.span(),
                    format!(
                        "`{}` is not an environment variable name; give the variable's name \
                         (e.g. OPENAI_API_KEY), never the key itself",
                        env.get_ref()
                    ),
                );
            }
            let remote = Remote {
                base_url: url,
                model: model.into_inner(),
                api_key_env: self.api_key_env.map(Spanned::into_inner),
            };
            match self.backend {
                BackendKind::Anthropic => BackendConfig::Anthropic(remote),
                BackendKind::Gemini => BackendConfig::Gemini(remote),
                _ => BackendConfig::OpenAi(remote),
            }
        };
        let price = |field: &str, v: Option<Spanned<f64>>| -> Result<f64, Invalid> {
            match v {
                None => Ok(0.0),
                Some(p) if p.get_ref().is_finite() && *p.get_ref() >= 0.0 => Ok(p.into_inner()),
                Some(p) => invalid(
                    path(&format!("price.{field}")),
                    p.span(),
                    "must be a non-negative number of dollars per million tokens",
                ),
            }
        };
        let input = price("input", self.price.input)?;
        let prices = Prices {
            input,
            // Unpriced cached input costs what input does.
            cached_input: match self.price.cached_input {
                None => input,
                v => price("cached_input", v)?,
            },
            output: price("output", self.price.output)?,
        };
        let context_window = match self.context_window {
            Some(c) if *c.get_ref() == 0 => {
                return invalid(path("context_window"), c.span(), "must be at least 1 token");
            }
            Some(c) => Some(c.into_inner()),
            None if self.backend == BackendKind::Embedded => None,
            None => {
                return Err((
                    path("context_window"),
                    None,
                    format!("is required for backend `{kind}`: the tokens its model accepts"),
                ));
            }
        };
        let capabilities = match self.capabilities {
            // The embedded engine enforces tools and schemas itself.
            None if self.backend == BackendKind::Embedded => Capabilities {
                tools: true,
                json_schema: true,
                vision: false,
            },
            None => Capabilities::default(),
            Some(list) => Capabilities {
                tools: list.contains(&Capability::Tools),
                json_schema: list.contains(&Capability::JsonSchema),
                vision: list.contains(&Capability::Vision),
            },
        };
        let fallback = match self.fallback {
            None => None,
            Some(f) if f.get_ref() == name => {
                return invalid(
                    path("fallback"),
                    f.span(),
                    "a tier cannot fall back to itself",
                );
            }
            Some(f) if !names.contains(f.get_ref()) => {
                return invalid(
                    path("fallback"),
                    f.span(),
                    format!(
                        "no tier is named `{}` (tiers: {})",
                        f.get_ref(),
                        names.join(", ")
                    ),
                );
            }
            Some(f) => Some(f.into_inner()),
        };
        let faults = faults(name, self.retry, self.timeouts, self.breaker)?;
        Ok(Tier {
            name: name.to_string(),
            on_machine: self.local.unwrap_or(self.backend == BackendKind::Embedded),
            backend,
            prices,
            context_window,
            capabilities,
            fallback,
            faults,
        })
    }
}

/// The model an embedded tier serves when it names none.
pub const DEFAULT_EMBEDDED_MODEL: &str = "smollm2-135m-instruct";

fn example_url(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Anthropic => "https://api.anthropic.com/v1",
        BackendKind::Gemini => "https://generativelanguage.googleapis.com/v1beta",
        _ => "https://api.openai.com/v1 or http://127.0.0.1:11434/v1 for Ollama",
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

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
