//! `smallfirst report`: what the ledger says of a time range — requests, where they were
//! answered, escalations, cost against the baseline's, savings, latency — as a table, JSON
//! (the same as `GET /v1/smallfirst/report`) or CSV. Also where the ledger is, for `serve`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use smallfirst_ledger::report::parse_time;
use smallfirst_ledger::{By, Group, Ledger, Query, Report, Target};
use smallfirst_router::Config;
use smallfirst_router::config::Postgres;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The smallfirst.toml whose `[ledger]` to read [default: the ledger in the data
    /// directory].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A ledger to read instead of the configured one: a SQLite file, or a PostgreSQL URL
    /// (`postgres://…`).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub ledger: Option<PathBuf>,
    /// From: a date (2026-12-07), an RFC 3339 time, or a span back from now (30m, 24h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Up to (not including), in the same forms.
    #[arg(long)]
    pub until: Option<String>,
    /// Groups: total, tier, task, key or day.
    #[arg(long, default_value = "total", value_parser = ["total", "tier", "task", "key", "day"])]
    pub by: String,
    /// The report as JSON.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// The groups as CSV, a row each.
    #[arg(long)]
    pub csv: bool,
}

/// Where the configuration keeps its ledger (a PostgreSQL URL's variable read now).
fn target(config: &Config, file: Option<&Path>) -> anyhow::Result<Target> {
    if let Some(pg) = &config.ledger.postgres {
        return Ok(Target::Postgres(match pg {
            Postgres::Url(url) => url.clone(),
            Postgres::Env(var) => std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .with_context(|| {
                    format!("`ledger.url_env` names `{var}`, which is not set (hint: export {var}=postgres://…)")
                })?,
        }));
    }
    let path = match &config.ledger.path {
        Some(p) => super::train::beside(file, &p.to_string_lossy()),
        None => smallfirst_ledger::default_file(&crate::env::data_dir()),
    };
    Ok(Target::Sqlite(path))
}

/// The ledger `serve` records in, opened; `None` when `[ledger] enabled = false`.
pub(crate) fn open_ledger(config: &Config, file: Option<&Path>) -> anyhow::Result<Option<Ledger>> {
    if !config.ledger.enabled {
        tracing::info!("the ledger is off ([ledger] enabled = false)");
        return Ok(None);
    }
    let target = target(config, file)?;
    let ledger = Ledger::open(target, config.ledger.commit_window).context(
        "the ledger could not be opened (hint: set `[ledger] path`, or `enabled = false` to run without one)",
    )?;
    tracing::info!(
        ledger = %ledger.target(),
        baseline = ?config.ledger.baseline,
        commit_ms = config.ledger.commit_window.as_millis() as u64,
        "recording requests"
    );
    Ok(Some(ledger))
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let target = match (&args.ledger, &args.config) {
        (Some(path), _) => match path.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Target::Postgres(url.to_string())
            }
            _ => Target::Sqlite(path.clone()),
        },
        (None, Some(file)) => target(&Config::load(file)?, Some(file))?,
        (None, None) => target(&Config::embedded(smallfirst_models::DEFAULT_MODEL), None)?,
    };
    let now = smallfirst_ledger::now_ms();
    let time = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| parse_time(t, now))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--{name} {e}"))
    };
    let query = Query {
        since_ms: time("since", &args.since)?,
        until_ms: time("until", &args.until)?,
        by: By::parse(&args.by).unwrap_or_default(),
    };
    let report = smallfirst_ledger::read(&target, &query)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else if args.csv {
        csv(&report, &mut out)?;
    } else {
        table(&report, &target, &mut out)?;
    }
    Ok(())
}

/// The groups (or the total alone) in report order.
fn rows(report: &Report) -> Vec<&Group> {
    if report.groups.is_empty() {
        vec![&report.total]
    } else {
        report.groups.iter().chain([&report.total]).collect()
    }
}

fn table(report: &Report, target: &Target, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(out, "ledger {target}")?;
    writeln!(
        out,
        "{:<24} {:>8} {:>8} {:>7} {:>9} {:>10} {:>11} {:>10} {:>7} {:>8} {:>8}",
        "group",
        "requests",
        "answered",
        "local",
        "escalated",
        "cost $",
        "baseline $",
        "saved $",
        "saved",
        "p50 ms",
        "p95 ms"
    )?;
    for g in rows(report) {
        let key: String = g.key.chars().take(24).collect();
        writeln!(
            out,
            "{:<24} {:>8} {:>8} {:>7} {:>9} {:>10.6} {:>11.6} {:>10.6} {:>7} {:>8} {:>8}",
            key,
            g.requests,
            g.answered,
            pct(Some(g.local_share)),
            pct(Some(g.escalation_rate)),
            g.cost,
            g.baseline_cost,
            g.savings,
            pct(g.savings_pct),
            num(g.p50_ms),
            num(g.p95_ms),
        )?;
    }
    let t = &report.total;
    if t.refused + t.failed + t.cancelled > 0 {
        writeln!(
            out,
            "not answered: {} refused, {} failed, {} cancelled",
            t.refused, t.failed, t.cancelled
        )?;
    }
    Ok(())
}

fn csv(report: &Report, out: &mut impl Write) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "group",
        "requests",
        "answered",
        "refused",
        "failed",
        "cancelled",
        "local_share",
        "escalation_rate",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "baseline_cost",
        "savings",
        "savings_pct",
        "p50_ms",
        "p95_ms",
    ])?;
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for g in rows(report) {
        w.write_record([
            g.key.clone(),
            g.requests.to_string(),
            g.answered.to_string(),
            g.refused.to_string(),
            g.failed.to_string(),
            g.cancelled.to_string(),
            g.local_share.to_string(),
            g.escalation_rate.to_string(),
            g.tokens.prompt.to_string(),
            g.tokens.completion.to_string(),
            g.cost.to_string(),
            g.baseline_cost.to_string(),
            g.savings.to_string(),
            opt(g.savings_pct),
            opt(g.p50_ms),
            opt(g.p95_ms),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}
