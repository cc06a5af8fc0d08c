//! `smallfirst serve`: the OpenAI-compatible API on the embedded model.

use std::net::{IpAddr, SocketAddr};

use std::path::PathBuf;

use anyhow::Context;
use smallfirst_router::{BackendConfig, Config};
use smallfirst_server::{AppState, serve};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to bind [default: the config's, else 127.0.0.1]. Loopback by default: nothing
    /// outside this machine can reach it.
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// Port [default: the config's, else 8080].
    #[arg(long, short = 'p')]
    pub port: Option<u16>,
    /// A `smallfirst.toml`; command-line options override what it says.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The configuration to serve: the file's, else one local embedded tier.
fn config(args: &Args) -> anyhow::Result<Config> {
    let Some(path) = &args.config else {
        return Ok(Config::embedded(smallfirst_models::DEFAULT_MODEL));
    };
    let config = Config::load(path)?;
    if let Some(tier) = config
        .tiers
        .iter()
        .find(|t| !matches!(t.backend, BackendConfig::Embedded { .. }))
    {
        anyhow::bail!(
            "{}: tier `{}` uses backend `{}`; this build serves the embedded tier only, upstream \
             tiers are not served yet (check the file with `smallfirst config check`)",
            path.display(),
            tier.name,
            tier.backend.kind()
        );
    }
    Ok(config)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = config(&args)?;
    let mut model = args.model.clone();
    if let Some(BackendConfig::Embedded {
        model: m,
        threads,
        ctx,
    }) = config.tiers.first().map(|t| &t.backend)
    {
        model.model = model.model.or_else(|| Some(m.clone()));
        model.threads = model.threads.or(*threads);
        model.ctx = model.ctx.or(*ctx);
    }
    let host = match args.host {
        Some(h) => h,
        None => config.server.host.parse().with_context(|| {
            format!("server.host `{}` is not an IP address", config.server.host)
        })?,
    };
    let port = args.port.unwrap_or(config.server.port);
    let (name, engine) = super::load_engine(&model)?;
    let info = engine.info().clone();
    if engine.template().is_fallback() {
        tracing::warn!(model = %name, "the model has no chat template; prompts use ChatML");
    }
    if !host.is_loopback() {
        tracing::warn!(host = %host, "binding a non-loopback address: the API has no authentication yet");
    }
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(host, port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr().context("no local address")?;
        tracing::info!(
            model = %name,
            arch = %info.architecture,
            n_ctx = info.n_ctx,
            threads = info.threads,
            "listening on http://{local}/v1"
        );
        serve(listener, AppState::new(engine, name), shutdown_signal())
            .await
            .context("server failed")
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
