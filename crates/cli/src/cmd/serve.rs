//! `smallfirst serve`: the OpenAI-compatible API on the embedded model.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use smallfirst_server::{AppState, serve};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to bind. Loopback by default: nothing outside this machine can reach it.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, short = 'p', default_value_t = 8080)]
    pub port: u16,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (name, engine) = super::load_engine(&args.model)?;
    let info = engine.info().clone();
    if engine.template().is_fallback() {
        tracing::warn!(model = %name, "the model has no chat template; prompts use ChatML");
    }
    if !args.host.is_loopback() {
        tracing::warn!(host = %args.host, "binding a non-loopback address: the API has no authentication yet");
    }
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.host, args.port);
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
