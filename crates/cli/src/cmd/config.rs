//! `smallfirst config check FILE`: validates a `smallfirst.toml` and says what it means.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use smallfirst_router::{Config, Tier};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Validate a configuration file; every mistake is named with its field and line.
    Check {
        file: PathBuf,
        /// Print the validated configuration as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let Command::Check { file, json } = args.command;
    let config = Config::load(&file)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", to_json(&config)).context("cannot write to stdout")?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: ok, {} tier{}, serving on {}:{}",
        file.display(),
        config.tiers.len(),
        if config.tiers.len() == 1 { "" } else { "s" },
        config.server.host,
        config.server.port
    )
    .context("cannot write to stdout")?;
    for tier in &config.tiers {
        writeln!(out, "  {}", describe(tier)).context("cannot write to stdout")?;
        if let Some(env) = api_key_env(tier)
            && std::env::var_os(env).is_none()
        {
            writeln!(out, "    note: `{env}` is not set in this environment")
                .context("cannot write to stdout")?;
        }
    }
    Ok(())
}

fn api_key_env(tier: &Tier) -> Option<&str> {
    tier.backend.remote()?.api_key_env.as_deref()
}

fn describe(tier: &Tier) -> String {
    let place = tier
        .backend
        .remote()
        .map_or("in-process".to_string(), |r| r.base_url.to_string());
    let mut s = format!(
        "{}: {} `{}` ({place}), {}",
        tier.name,
        tier.backend.kind(),
        tier.backend.model(),
        if tier.on_machine { "local" } else { "remote" }
    );
    if let Some(w) = tier.context_window {
        s.push_str(&format!(", {w} tokens"));
    }
    let p = tier.prices;
    if p.input > 0.0 || p.output > 0.0 {
        s.push_str(&format!(
            ", ${}/${}/${} per M input/cached/output",
            p.input, p.cached_input, p.output
        ));
    }
    if let Some(f) = &tier.fallback {
        s.push_str(&format!(", falls back to `{f}`"));
    }
    if tier.backend.remote().is_some() {
        let f = &tier.faults;
        s.push_str(&format!(
            "; {} tr{}, deadlines {}/{}/{} s (connect/first byte/total), circuit opens after {} failures for {} s",
            f.attempts,
            if f.attempts == 1 { "y" } else { "ies" },
            f.connect_timeout.as_secs_f64(),
            f.first_byte_timeout.as_secs_f64(),
            f.total_timeout.as_secs_f64(),
            f.breaker_failures,
            f.breaker_cooldown.as_secs_f64(),
        ));
    }
    s
}

fn to_json(config: &Config) -> serde_json::Value {
    let tiers: Vec<serde_json::Value> = config
        .tiers
        .iter()
        .map(|t| {
            let remote = t.backend.remote();
            let base_url = remote.map(|r| r.base_url.to_string());
            let api_key_env = remote.and_then(|r| r.api_key_env.clone());
            let f = &t.faults;
            let faults = remote.map(|_| {
                serde_json::json!({
                    "retry": {"attempts": f.attempts, "backoff": f.backoff.as_secs_f64(), "max_backoff": f.max_backoff.as_secs_f64()},
                    "timeouts": {"connect": f.connect_timeout.as_secs_f64(), "first_byte": f.first_byte_timeout.as_secs_f64(), "total": f.total_timeout.as_secs_f64()},
                    "breaker": {"failures": f.breaker_failures, "cooldown": f.breaker_cooldown.as_secs_f64()},
                })
            });
            serde_json::json!({
                "name": t.name,
                "backend": t.backend.kind(),
                "model": t.backend.model(),
                "base_url": base_url,
                "api_key_env": api_key_env,
                "local": t.on_machine,
                "context_window": t.context_window,
                "prices": {"input": t.prices.input, "cached_input": t.prices.cached_input, "output": t.prices.output},
                "capabilities": {"tools": t.capabilities.tools, "json_schema": t.capabilities.json_schema, "vision": t.capabilities.vision},
                "fallback": t.fallback,
                "faults": faults,
            })
        })
        .collect();
    serde_json::json!({
        "server": {"host": config.server.host, "port": config.server.port},
        "tiers": tiers,
    })
}
