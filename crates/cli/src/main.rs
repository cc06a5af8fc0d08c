//! `smallfirst`: a local small model behind an OpenAI-compatible API.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod env;

#[derive(Parser)]
#[command(
    name = "smallfirst",
    version,
    about = "Small models first: a local model behind an OpenAI-compatible API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API on the embedded model.
    Serve(cmd::serve::Args),
    /// Ask the embedded model once and stream the answer to stdout.
    Chat(cmd::chat::Args),
    /// Fetch a model into the cache, verified by sha256.
    Pull(cmd::pull::Args),
    /// List known and pulled models.
    Models(cmd::models::Args),
    /// Measure prompt and decode speed (llama-bench's shape).
    Bench(cmd::bench::Args),
    /// Check a smallfirst.toml.
    Config(cmd::config::Args),
    /// Show where `model: "auto"` requests would be routed, and why, without sending them.
    Route(cmd::route::Args),
    /// Check model files without loading them (exit 0 clean, 1 findings, 2 not scanned).
    Scan(cmd::scan::Args),
    /// Whether models fit this machine and how fast they would run, from their headers (exit 0
    /// fits, 1 does not fit, 2 not read).
    Fit(cmd::fit::Args),
    /// Train a task's head on labeled rows: a calibrated classifier on the embedded model's
    /// embeddings, answering the task without decoding.
    Train(cmd::train::Args),
    /// Answer an eval set on each tier through the gateway core and report quality, validity,
    /// latency and cost per tier.
    Eval(cmd::eval::Args),
    /// Choose a task's escalation threshold with a stated error guarantee, on an eval set.
    Calibrate(cmd::calibrate::Args),
    /// What the ledger says: requests, where they were answered, cost, savings against the
    /// baseline tier, latency.
    Report(cmd::report::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Serve(_) => "info,llama_cpp_2=warn",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(env::log_filter(
            default_log,
        )))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Chat(args) => cmd::chat::run(args),
        Command::Route(args) => cmd::route::run(args),
        Command::Pull(args) => cmd::pull::run(args),
        Command::Models(args) => cmd::models::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Config(args) => cmd::config::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Calibrate(args) => cmd::calibrate::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Scan(args) => return finish(cmd::scan::run(args), ExitCode::from(2)),
        Command::Fit(args) => return finish(cmd::fit::run(args), ExitCode::from(2)),
    };
    finish(result.map(|()| ExitCode::SUCCESS), ExitCode::FAILURE)
}

/// The exit code, printing an error (with a hint where one helps) as `failed`.
fn finish(result: anyhow::Result<ExitCode>, failed: ExitCode) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            match cmd::hint(&e) {
                Some(hint) => eprintln!("error: {e:#} (hint: {hint})"),
                None => eprintln!("error: {e:#}"),
            }
            failed
        }
    }
}
