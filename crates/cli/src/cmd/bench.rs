//! `smallfirst bench`: prompt and decode speed in llama-bench's shape (pp N, tg M, r reps),
//! through the engine's own decode and sampling path; with `--npl`, aggregate decode speed of
//! N concurrent sequences through the engine's batch scheduler, in llama-batched-bench's shape.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use smallfirst_engine::{Engine, Event, GenerateParams, SamplingParams};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
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
    /// Concurrent sequences, e.g. `1,2,4,8,16`: each sends a distinct prompt of `-p` tokens
    /// and generates `-n` tokens (end of turn ignored), all at once, through the scheduler.
    #[arg(long, value_delimiter = ',')]
    pub npl: Vec<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if args.reps == 0 {
        anyhow::bail!("-r must be at least 1");
    }
    if !args.npl.is_empty() {
        return batched(args);
    }
    let (name, engine) = super::load_engine(&args.model)?;
    let report = super::runtime()?.block_on(engine.bench(args.n_prompt, args.n_gen, args.reps))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let peak_rss = smallfirst_inspect::machine::peak_rss();
        let v = serde_json::json!({"model": name, "report": report, "peak_rss_bytes": peak_rss});
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

/// One `--npl` measurement.
#[derive(Debug, serde::Serialize)]
struct Batched {
    npl: usize,
    /// Tokens generated while every sequence was decoding, over that time.
    decode_tokens_per_s: Vec<f64>,
    /// All generated tokens over the time until the last sequence finished, prompts included.
    end_to_end_tokens_per_s: Vec<f64>,
}

fn batched(args: Args) -> anyhow::Result<()> {
    let most = args.npl.iter().copied().max().unwrap_or(1);
    if args.npl.contains(&0) {
        anyhow::bail!("--npl values must be at least 1");
    }
    let mut model = args.model.clone();
    model.parallel = model.parallel.or(Some(most));
    model.ctx = model.ctx.or(Some(args.n_prompt + args.n_gen + 1));
    let (name, engine) = super::load_engine(&model)?;
    if engine.info().slots < most {
        anyhow::bail!(
            "--parallel {} is less than the largest --npl {most}",
            engine.info().slots
        );
    }
    let prompts: Vec<String> = (0..most)
        .map(|i| prompt_of(&engine, i, args.n_prompt as usize))
        .collect();
    let runtime = super::runtime()?;
    let mut results = Vec::new();
    for &n in &args.npl {
        let mut r = Batched {
            npl: n,
            decode_tokens_per_s: Vec::new(),
            end_to_end_tokens_per_s: Vec::new(),
        };
        // One warm-up round, then the measured ones.
        for rep in 0..=args.reps {
            let (decode, e2e) = runtime.block_on(concurrent(&engine, &prompts[..n], args.n_gen))?;
            if rep > 0 {
                r.decode_tokens_per_s.push(decode);
                r.end_to_end_tokens_per_s.push(e2e);
            }
        }
        results.push(r);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({"model": name, "n_prompt": args.n_prompt, "n_gen": args.n_gen,
            "threads": engine.info().threads, "results": results});
        writeln!(out, "{v}").context("cannot write to stdout")?;
        return Ok(());
    }
    writeln!(
        out,
        "| model | threads | pp | tg | npl | decode t/s | end-to-end t/s |"
    )
    .context("cannot write to stdout")?;
    for r in &results {
        let (d, d_sd) = mean_sd(r.decode_tokens_per_s.iter().copied());
        let (e, e_sd) = mean_sd(r.end_to_end_tokens_per_s.iter().copied());
        writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {d:.2} ± {d_sd:.2} | {e:.2} ± {e_sd:.2} |",
            engine.info().threads,
            args.n_prompt,
            args.n_gen,
            r.npl
        )
        .context("cannot write to stdout")?;
    }
    Ok(())
}

/// A distinct prompt of exactly `n` tokens (BOS included) for sequence `i`.
fn prompt_of(engine: &Engine, i: usize, n: usize) -> String {
    const WORDS: [&str; 8] = [
        "river", "stone", "cloud", "maple", "harbor", "lantern", "meadow", "copper",
    ];
    let mut text = format!("{i}:");
    let mut k = i;
    while engine.count_tokens(&text) < n {
        let before = text.len();
        text.push(' ');
        text.push_str(WORDS[k % WORDS.len()]);
        k += 1;
        if engine.count_tokens(&text) > n {
            text.truncate(before);
            // Pad one token at a time.
            while engine.count_tokens(&text) < n {
                text.push_str(" .");
            }
            break;
        }
    }
    text
}

/// Runs `prompts` at once; returns (decode tok/s while all decoded, end-to-end tok/s).
async fn concurrent(engine: &Engine, prompts: &[String], n_gen: u32) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let runs = prompts.iter().map(|p| {
        let params = GenerateParams {
            max_tokens: Some(n_gen),
            sampling: SamplingParams::greedy(),
            ignore_eos: true,
            ..GenerateParams::default()
        };
        async move {
            let mut g = engine.generate(p.clone(), params).await?;
            let mut stamps = Vec::new();
            while let Some(event) = g.events.recv().await {
                match event {
                    Event::Delta(_) => stamps.push(Instant::now()),
                    Event::Done(d) => return Ok((stamps, d.completion_tokens)),
                    Event::Failed(e) | Event::FormatFailed(e) => {
                        anyhow::bail!("generation failed: {e}")
                    }
                }
            }
            anyhow::bail!("the engine stopped")
        }
    });
    let runs = futures::future::try_join_all(runs).await?;
    let first = runs.iter().filter_map(|r| r.0.first()).max().copied();
    let last = runs.iter().filter_map(|r| r.0.last()).min().copied();
    let end = runs.iter().filter_map(|r| r.0.last()).max().copied();
    let (Some(first), Some(last), Some(end)) = (first, last, end) else {
        anyhow::bail!("no tokens were generated");
    };
    let window = last.saturating_duration_since(first).as_secs_f64();
    let in_window = runs
        .iter()
        .flat_map(|r| &r.0)
        .filter(|&&s| s > first && s <= last)
        .count();
    let generated: u32 = runs.iter().map(|r| r.1).sum();
    Ok((
        in_window as f64 / window.max(f64::EPSILON),
        f64::from(generated) / (end - start).as_secs_f64(),
    ))
}

fn mean_sd(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = values.collect();
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}
