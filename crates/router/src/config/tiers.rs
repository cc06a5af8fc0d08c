//! `[tiers.<name>]`: a named place a request can be answered, how it is reached, its prices,
//! context window and capabilities, whether it is on this machine, and its fallback; parsed
//! raw and validated into a [`Tier`].

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use super::MAX_PARALLEL;
use super::faults::{Faults, RawBreaker, RawRetry, RawTimeouts, faults};
use super::validate::{Invalid, invalid};

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

impl Prices {
    /// US dollars for `prompt` input tokens (`cached` of them read from a cache) and
    /// `completion` output tokens (reasoning tokens are among them, billed as output).
    pub fn cost(&self, prompt: u64, cached: u64, completion: u64) -> f64 {
        let cached = cached.min(prompt) as f64;
        let fresh = prompt as f64 - cached;
        (fresh * self.input + cached * self.cached_input + completion as f64 * self.output) / 1e6
    }

    /// Whether any token has a price.
    pub fn priced(&self) -> bool {
        self.input > 0.0 || self.cached_input > 0.0 || self.output > 0.0
    }
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

    /// The embedded engine's settings as the file gives them; `None` for a remote tier.
    pub fn embedded(&self) -> Option<EngineSettings<'_>> {
        match self {
            BackendConfig::Embedded {
                model,
                threads,
                ctx,
                parallel,
            } => Some(EngineSettings {
                model,
                threads: *threads,
                ctx: *ctx,
                parallel: *parallel,
            }),
            BackendConfig::OpenAi(_) | BackendConfig::Anthropic(_) | BackendConfig::Gemini(_) => {
                None
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

/// An embedded tier's engine settings; what the file leaves out, the engine resolves when it
/// loads the model (threads from the free cores, the context from the model, capped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings<'a> {
    pub model: &'a str,
    pub threads: Option<usize>,
    pub ctx: Option<u32>,
    pub parallel: Option<usize>,
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
pub(super) struct RawTier {
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

impl RawTier {
    pub(super) fn validate(self, name: &str, names: &[String]) -> Result<Tier, Invalid> {
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
pub const DEFAULT_EMBEDDED_MODEL: &str = "qwen2.5-coder-1.5b-instruct";

fn example_url(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Anthropic => "https://api.anthropic.com/v1",
        BackendKind::Gemini => "https://generativelanguage.googleapis.com/v1beta",
        _ => "https://api.openai.com/v1 or http://127.0.0.1:11434/v1 for Ollama",
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
