//! `smallfirst route`: where `model: "auto"` requests would go, and why, without sending them.
//!
//! Reads chat completion bodies (one JSON object per line on stdin, or files) and prints each
//! one's features and route. No model is loaded: input tokens are estimated (four bytes of
//! message text per token, a fixed cost per image), and the embedded tier's window is its configured `ctx` (else 8192).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};
use smallfirst_router::Privacy;
use smallfirst_router::features::{self, Hints};
use smallfirst_router::{Config, Policy};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// A `smallfirst.toml` [default: one local embedded tier].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `x-smallfirst-task` for every request.
    #[arg(long)]
    pub task: Option<String>,
    /// `x-smallfirst-privacy` for every request (e.g. `local-only`).
    #[arg(long)]
    pub privacy: Option<String>,
    /// One JSON object per output line, instead of text.
    #[arg(long)]
    pub json: bool,
    /// Files each holding one request body; stdin (one body per line) when none.
    pub files: Vec<PathBuf>,
}

const DEFAULT_WINDOW: u32 = 4096;

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(smallfirst_models::DEFAULT_MODEL),
    };
    let window = config
        .embedded_tier()
        .map(|(_, e)| e.ctx.unwrap_or(DEFAULT_WINDOW));
    let policy = Policy::new(&config, window);
    let mut bodies: Vec<(String, String)> = Vec::new();
    if args.files.is_empty() {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("cannot read stdin")?;
            if !line.trim().is_empty() {
                bodies.push((format!("stdin:{}", i + 1), line));
            }
        }
    } else {
        for f in &args.files {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read `{}`", f.display()))?;
            bodies.push((f.display().to_string(), text));
        }
    }
    let privacy = match args.privacy.as_deref() {
        None => Privacy::Unset,
        Some(p) => Privacy::parse(p)
            .ok_or_else(|| anyhow::anyhow!("--privacy must be `local-only` or `any`, got `{p}`"))?,
    };
    let hints = Hints {
        task: args.task.as_deref(),
        privacy,
    };
    let mut out = std::io::stdout().lock();
    for (source, text) in bodies {
        let request: Value = serde_json::from_str(&text)
            .with_context(|| format!("{source}: not a JSON request body"))?;
        let start = Instant::now();
        let tokens = features::estimate_tokens(&request);
        let f = features::extract(&request, hints, tokens);
        let route = policy.decide(&f);
        let micros = start.elapsed().as_secs_f64() * 1e6;
        let line = match (&route, args.json) {
            (Ok(r), true) => json!({
                "source": source, "task": f.task, "task_source": f.task_source.as_str(),
                "input_tokens": tokens, "tiers": r.tiers, "threshold": r.threshold,
                "local_only": r.local_only, "reason": r.reason.code, "words": r.reason.words,
                "confidence": r.estimator.map(|e| e.name()), "decide_us": micros,
            })
            .to_string(),
            (Err(e), true) => json!({
                "source": source, "task": f.task, "task_source": f.task_source.as_str(),
                "input_tokens": tokens, "error": e.0, "decide_us": micros,
            })
            .to_string(),
            (Ok(r), false) => format!(
                "{source}: task {} ({}), ~{tokens} tokens → {}{} [{}; {}]",
                f.task,
                f.task_source.as_str(),
                r.tiers.join(" → "),
                r.threshold.map_or(String::new(), |t| format!(" below {t}")),
                r.reason.code,
                r.reason.words
            ),
            (Err(e), false) => format!("{source}: task {} → no route: {}", f.task, e.0),
        };
        writeln!(out, "{line}").context("cannot write to stdout")?;
    }
    Ok(())
}
