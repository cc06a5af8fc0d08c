//! `smallfirst fit [MODEL…]`: whether each model fits this machine, and how fast it would run,
//! from its GGUF header and a brief measurement of memory bandwidth (cached). Nothing is loaded.
//! Exit 0 when every model fits (or fits tightly), 1 when one does not, 2 when one could not be
//! read (the others are still reported).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;
use smallfirst_engine::{EngineConfig, fit as engine_fit, gib};
use smallfirst_inspect::fit::{self, Shape, Verdict};
use smallfirst_inspect::gguf::type_name;
use smallfirst_inspect::machine::{self, Bandwidth, Machine};
use smallfirst_inspect::scan;

use smallfirst_router::config::MAX_PARALLEL;

use crate::env;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Catalog names, pulled model names, or GGUF paths (default: every pulled model).
    pub models: Vec<String>,
    /// Context size in tokens for each sequence (default: the model's training context, at most
    /// 4096, as `serve` takes it).
    #[arg(long)]
    pub ctx: Option<u32>,
    /// Sequences decoded together, each with its own KV cache (default: 4, as `serve`).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Threads the estimate assumes (default: the cores this process may use).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Measure memory bandwidth again rather than using the cached figure.
    #[arg(long)]
    pub probe: bool,
    /// Print JSON (`{"version": 1, "machine": …, "models": […]}`).
    #[arg(long)]
    pub json: bool,
}

/// The bandwidth measured on this machine, kept beside the model cache.
#[derive(Serialize, Deserialize)]
struct Cached {
    cpu: String,
    cores: usize,
    total: u64,
    bandwidth: Bandwidth,
}

fn cache_file() -> PathBuf {
    env::cache_dir().join("machine.json")
}

/// The cached bandwidth when it was measured on this machine with these threads, else a new
/// measurement (saved; a cache that cannot be written is only a warning), and whether it is new.
fn bandwidth(m: &Machine, threads: usize, probe: bool) -> (Bandwidth, bool) {
    let path = cache_file();
    if !probe
        && let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(c) = serde_json::from_str::<Cached>(&text)
        && c.cpu == m.cpu
        && c.cores == m.cores
        && c.total == m.memory.total
        && c.bandwidth.threads == threads
    {
        return (c.bandwidth, false);
    }
    let bandwidth = machine::measure_bandwidth(threads);
    let cached = Cached {
        cpu: m.cpu.clone(),
        cores: m.cores,
        total: m.memory.total,
        bandwidth,
    };
    let saved = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec(&cached).unwrap_or_default()));
    if let Err(e) = saved {
        tracing::warn!("cannot cache the bandwidth in `{}`: {e}", path.display());
    }
    (bandwidth, true)
}

/// The models to fit: those named (without pulling anything), else every pulled one.
fn models(args: &Args) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let puller = super::puller();
    if args.models.is_empty() {
        let entries = puller.cache().entries()?;
        if entries.is_empty() {
            anyhow::bail!(
                "no models pulled yet; name a GGUF file, or `smallfirst pull NAME` first"
            );
        }
        return entries
            .into_keys()
            .map(|name| {
                let found = puller.find_local(&name)?;
                found.with_context(|| format!("`{name}` is in the lock file but not on disk"))
            })
            .collect();
    }
    args.models
        .iter()
        .map(|m| {
            puller.find_local(m)?.with_context(|| {
                format!("`{m}` is not a file or a pulled model (`smallfirst pull {m}` fetches catalog models)")
            })
        })
        .collect()
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.ctx == Some(0) {
        anyhow::bail!("--ctx must be at least 1");
    }
    if let Some(p) = args.parallel
        && !(1..=MAX_PARALLEL).contains(&p)
    {
        anyhow::bail!("--parallel must be 1 to {MAX_PARALLEL}");
    }
    let models = models(&args)?;
    let m = Machine::detect();
    if let Some(t) = args.threads
        && !(1..=m.cores).contains(&t)
    {
        anyhow::bail!("--threads must be 1 to {} (the cores online)", m.cores);
    }
    let threads = args.threads.unwrap_or(m.usable_cores);
    let (bw, fresh) = bandwidth(&m, threads, args.probe);
    // Models running on this machine hold their files' pages, which the kernel still counts
    // as available.
    let mapped = machine::mapped_models();
    let mut entries = Vec::new();
    for (name, path) in &models {
        let in_use = engine_fit::in_use_except(&mapped, path);
        let available = machine::Memory::detect_less(in_use).available;
        entries.push(
            match fit_one(name, path, &args, &m, threads, bw, available) {
                Ok(r) => Entry::Report(Box::new(r)),
                Err(e) => Entry::Error {
                    model: name.clone(),
                    path: path.clone(),
                    error: format!("{e:#}"),
                },
            },
        );
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = json!({"version": 1, "machine": m, "bandwidth": bw, "running": mapped,
                       "models": entries});
        writeln!(out, "{v}").context("cannot write to stdout")?;
    } else {
        print_machine(&mut out, &m, bw, fresh, &mapped)?;
        for e in &entries {
            match e {
                Entry::Report(r) => print_report(&mut out, r)?,
                Entry::Error { .. } => {}
            }
        }
    }
    // Errors go to stderr as one line each, after the reports that could be made.
    let mut unread = false;
    for e in &entries {
        if let Entry::Error { error, .. } = e {
            eprintln!("error: {error} (hint: `smallfirst scan FILE` says what is wrong with it)");
            unread = true;
        }
    }
    let all_fit = entries.iter().all(|e| match e {
        Entry::Report(r) => r.verdict != Verdict::DoesNotFit,
        Entry::Error { .. } => true,
    });
    Ok(if unread {
        ExitCode::from(2)
    } else if all_fit {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One model's report, or why there is none.
#[derive(Serialize)]
#[serde(untagged)]
enum Entry {
    Report(Box<Report>),
    Error {
        model: String,
        path: PathBuf,
        error: String,
    },
}

#[derive(Serialize)]
struct Report {
    model: String,
    path: PathBuf,
    architecture: String,
    params: u64,
    /// The most common weight type, by bytes.
    weight_type: &'static str,
    settings: fit::Settings,
    threads: usize,
    memory: fit::Memory,
    rule_of_thumb: (u64, u64),
    /// `None` when the machine does not say.
    available: Option<u64>,
    verdict: Verdict,
    /// The largest context per sequence that fits, when the one asked for does not.
    largest_ctx: Option<u64>,
    speed: fit::Speed,
    decode_tokens_per_s: (f64, f64),
}

fn fit_one(
    name: &str,
    path: &Path,
    args: &Args,
    m: &Machine,
    threads: usize,
    bw: Bandwidth,
    available: Option<u64>,
) -> anyhow::Result<Report> {
    let header =
        scan::check_gguf(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    if !header.complete {
        anyhow::bail!("`{}` is not a readable GGUF file", path.display());
    }
    let g = header.gguf;
    let shape = Shape::read(&g).with_context(|| format!("cannot size `{}`", path.display()))?;
    let config = EngineConfig {
        model_path: path.to_path_buf(),
        n_ctx: args.ctx,
        slots: args.parallel,
        ..EngineConfig::default()
    };
    let s = engine_fit::settings(&config, &shape, &m.features);
    let memory = fit::memory(&g, &shape, &s);
    let verdict = available.map_or(Verdict::Unknown, |a| Verdict::of(memory.total, a));
    let largest_ctx = match (verdict, available) {
        (Verdict::DoesNotFit, Some(a)) => fit::largest_ctx(&g, &shape, &s, a),
        _ => None,
    };
    let speed = fit::speed(&g, &shape, &s, threads, bw.bytes_per_s);
    let mut by_type = std::collections::BTreeMap::<u32, u64>::new();
    for t in &g.tensors {
        let b = by_type.entry(t.ggml_type).or_default();
        *b = b.saturating_add(t.n_bytes);
    }
    let weight_type = by_type
        .iter()
        .max_by_key(|(_, b)| **b)
        .map_or("unknown", |(t, _)| type_name(*t));
    Ok(Report {
        model: name.to_string(),
        path: path.to_path_buf(),
        architecture: shape.architecture.clone(),
        params: shape.params,
        weight_type,
        settings: s,
        threads,
        rule_of_thumb: fit::rule_of_thumb(shape.params),
        available,
        verdict,
        largest_ctx,
        decode_tokens_per_s: (speed.decode_at(0), speed.decode_at(s.ctx)),
        speed,
        memory,
    })
}

fn print_machine(
    out: &mut impl Write,
    m: &Machine,
    bw: Bandwidth,
    fresh: bool,
    mapped: &[machine::MappedModel],
) -> anyhow::Result<()> {
    let gpus = if m.gpus.is_empty() {
        "no GPU".to_string()
    } else {
        m.gpus
            .iter()
            .map(|g| format!("{} ({} free)", g.name, gib(g.memory_free)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        out,
        "machine: {}, {} of {} cores usable, {} memory ({} available{}), {}; {}",
        m.cpu,
        m.usable_cores,
        m.cores,
        gib(m.memory.total),
        m.memory.available.map_or("unknown".into(), gib),
        m.memory
            .limit
            .map(|l| format!(", cgroup limit {}", gib(l)))
            .unwrap_or_default(),
        if m.features.is_empty() {
            "no SIMD features known".to_string()
        } else {
            m.features.join(" ")
        },
        gpus
    )
    .context("cannot write to stdout")?;
    writeln!(
        out,
        "memory reads: {:.1} GB/s with {} threads ({})",
        bw.bytes_per_s / 1e9,
        bw.threads,
        if fresh {
            "measured now, and kept"
        } else {
            "measured earlier; `--probe` measures again"
        }
    )
    .context("cannot write to stdout")?;
    for r in mapped {
        writeln!(
            out,
            "running: {} ({} mapped by pid {}), counted as in use",
            r.path.display(),
            gib(r.bytes),
            r.pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
        .context("cannot write to stdout")?;
    }
    Ok(())
}

fn print_report(out: &mut impl Write, r: &Report) -> anyhow::Result<()> {
    let mem = &r.memory;
    let s = &r.settings;
    let lines = [
        String::new(),
        format!(
            "{}  ({}, {:.0}M parameters, mostly {}, {})",
            r.model,
            r.architecture,
            r.params as f64 / 1e6,
            r.weight_type,
            r.path.display()
        ),
        format!(
            "  context {} tokens × {} sequences, KV cache {}",
            s.ctx,
            s.parallel,
            type_name(s.kv_type)
        ),
        format!("  weights (the mapped file)  {:>10}", gib(mem.file)),
        format!("  weights repacked for SIMD  {:>10}", gib(mem.repacked)),
        format!("  KV cache                   {:>10}", gib(mem.kv)),
        format!(
            "  compute                    {:>10}   (llama.cpp reserves {}, touches this much)",
            gib(mem.compute),
            gib(mem.compute_reserved)
        ),
        format!("  output logits              {:>10}", gib(mem.output)),
        format!("  tokenizer tables           {:>10}", gib(mem.tokenizer)),
        format!("  process                    {:>10}", gib(mem.process)),
        format!(
            "  total                      {:>10}   (rule of thumb for {:.2}B parameters: {:.1}–{:.1} GB)",
            gib(mem.total),
            r.params as f64 / 1e9,
            r.rule_of_thumb.0 as f64 / 1e9,
            r.rule_of_thumb.1 as f64 / 1e9
        ),
        format!(
            "  available                  {:>10}   → {}{}",
            r.available.map_or("unknown".into(), gib),
            r.verdict.as_str(),
            match (r.verdict, r.largest_ctx) {
                (Verdict::DoesNotFit, Some(c)) => format!("; a context of {c} tokens fits"),
                (Verdict::DoesNotFit, None) => "; not even a 256-token context fits".into(),
                _ => String::new(),
            }
        ),
        format!(
            "  decode  {:.0} tok/s at the start of the context, {:.0} tok/s at its end ({} threads)",
            r.decode_tokens_per_s.0, r.decode_tokens_per_s.1, r.threads
        ),
        format!(
            "  prompt  {:.0} tok/s ({}-token prompt)",
            r.speed.prompt_tokens_per_s,
            fit::PROMPT_TOKENS
        ),
    ];
    for l in lines {
        writeln!(out, "{l}").context("cannot write to stdout")?;
    }
    Ok(())
}
