//! `smallfirst bench`: prompt and decode speed in llama-bench's shape (pp N, tg M, r reps),
//! through the engine's own decode and sampling path.

use std::io::Write;

use anyhow::Context;

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens (pp).
    #[arg(short = 'p', long, default_value_t = 256)]
    pub n_prompt: u32,
    /// Generated tokens (tg), greedy.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub n_gen: u32,
    /// Repetitions after one warm-up.
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.reps == 0 {
        anyhow::bail!("-r must be at least 1");
    }
    let (name, engine) = super::load_engine(&args.model)?;
    let report = super::runtime()?.block_on(engine.bench(args.n_prompt, args.n_gen, args.reps))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({"model": name, "report": report});
        writeln!(out, "{v}").context("cannot write to stdout")?;
        return Ok(());
    }
    let (pp_mean, pp_sd) = mean_sd(report.runs.iter().map(|r| r.prompt_tokens_per_s));
    let (tg_mean, tg_sd) = mean_sd(report.runs.iter().map(|r| r.decode_tokens_per_s));
    writeln!(out, "| model | threads | test | t/s |").context("cannot write to stdout")?;
    writeln!(
        out,
        "| {name} | {} | pp{} | {pp_mean:.2} ± {pp_sd:.2} |",
        report.threads, report.n_prompt
    )
    .context("cannot write to stdout")?;
    writeln!(
        out,
        "| {name} | {} | tg{} | {tg_mean:.2} ± {tg_sd:.2} |",
        report.threads, report.n_gen
    )
    .context("cannot write to stdout")?;
    Ok(())
}

fn mean_sd(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = values.collect();
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}
