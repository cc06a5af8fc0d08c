//! What `eval` prints and writes: the table, the floors `--fail-below` gates on, the judge's
//! agreement with people, and the HTML report.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use smallfirst_eval::{Scored, TierReport};

use smallfirst_eval::EvalRow;
use smallfirst_router::Config;

use super::judge::{HumanGrades, Judge};

/// A figure `--fail-below` can gate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Figure {
    Quality,
    SchemaValidity,
    ExecutableCallRate,
}

impl Figure {
    fn name(self) -> &'static str {
        match self {
            Figure::Quality => "quality",
            Figure::SchemaValidity => "schema_validity",
            Figure::ExecutableCallRate => "executable_call_rate",
        }
    }

    fn of(self, r: &TierReport) -> Option<f64> {
        match self {
            Figure::Quality => r.quality,
            Figure::SchemaValidity => r.schema_validity,
            Figure::ExecutableCallRate => r.executable_call_rate,
        }
    }
}

pub(crate) fn floor(s: &str) -> Result<(Figure, f64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or("expected FIGURE=MIN, e.g. quality=0.8")?;
    let figure = [
        Figure::Quality,
        Figure::SchemaValidity,
        Figure::ExecutableCallRate,
    ]
    .into_iter()
    .find(|f| f.name() == name)
    .ok_or_else(|| {
        format!("unknown figure `{name}` (figures: quality, schema_validity, executable_call_rate)")
    })?;
    let v: f64 = value
        .parse()
        .ok()
        .filter(|v: &f64| (0.0..=1.0).contains(v))
        .ok_or_else(|| format!("`{value}` is not a share from 0 to 1"))?;
    Ok((figure, v))
}

/// The floors a report falls below, one line each.
pub(crate) fn below(reports: &[TierReport], floors: &[(Figure, f64)]) -> Vec<String> {
    let mut out = Vec::new();
    for r in reports {
        for &(f, min) in floors {
            if let Some(v) = f.of(r).filter(|&v| v < min) {
                out.push(format!(
                    "tier `{}`: {} {v:.3} is below {min}",
                    r.tier,
                    f.name()
                ));
            }
        }
    }
    out
}

/// The judge's agreement with the human grades on each tier's answers: as JSON, and as lines.
pub(crate) fn judge_report(
    judge: Option<&Judge>,
    human: Option<&HumanGrades>,
    rows: &[EvalRow],
    tiers: &[String],
    answered: &[Vec<Scored>],
    min_kappa: f64,
) -> Option<(Value, Vec<String>)> {
    let judge = judge?;
    let mut per_tier = serde_json::Map::new();
    let mut lines = Vec::new();
    if let Some(human) = human {
        for (tier, results) in tiers.iter().zip(answered) {
            if let Some(a) = human.agreement(rows, tier, results) {
                lines.push(super::judge::describe(&judge.tier, tier, &a, min_kappa));
                per_tier.insert(
                    tier.clone(),
                    json!({ "agreement": a, "trusted": a.trusted(min_kappa) }),
                );
            }
        }
    }
    Some((
        json!({ "tier": judge.tier, "min_kappa": min_kappa, "human": per_tier }),
        lines,
    ))
}

/// The HTML report: the curve cascades from the embedded tier (else the first named) to the
/// next tier named other than `auto`.
pub(crate) fn write_html(
    path: &Path,
    set: &str,
    task: Option<&str>,
    config: &Config,
    tiers: &[String],
    reports: &[TierReport],
    answered: &[Vec<Scored>],
) -> anyhow::Result<()> {
    let embedded = config.embedded_tier().map(|(t, _)| t.name.clone());
    let local = tiers
        .iter()
        .position(|t| Some(t) == embedded.as_ref())
        .or_else(|| tiers.iter().position(|t| t != "auto"));
    let other = local.and_then(|l| {
        tiers
            .iter()
            .enumerate()
            .position(|(i, t)| i != l && t != "auto")
    });
    let threshold = task.map(|t| {
        config
            .policy
            .tasks
            .get(t)
            .and_then(|p| p.threshold)
            .unwrap_or(config.policy.threshold)
    });
    let page = smallfirst_eval::report::html(&smallfirst_eval::report::Page {
        set,
        task,
        tiers: reports,
        local: local.map(|i| (tiers[i].as_str(), answered[i].as_slice())),
        other: other.map(|i| (tiers[i].as_str(), answered[i].as_slice())),
        threshold,
    });
    std::fs::write(path, page)
        .with_context(|| format!("cannot write the report to {}", path.display()))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{:.1}%", 100.0 * v))
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

pub(crate) fn write_table(out: &mut impl Write, reports: &[TierReport]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>12} {:>9} {:>6} {:>6}",
        "tier",
        "rows",
        "quality",
        "schema",
        "calls",
        "p50 ms",
        "p95 ms",
        "cost $",
        "$/success",
        "escalated",
        "AUROC",
        "ECE"
    )?;
    for r in reports {
        writeln!(
            out,
            "{:<12} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10.6} {:>12} {:>9} {:>6} {:>6}",
            r.tier,
            r.rows,
            pct(r.quality),
            pct(r.schema_validity),
            pct(r.executable_call_rate),
            num(r.p50_ms, 0),
            num(r.p95_ms, 0),
            r.cost,
            num(r.cost_per_success, 6),
            pct(Some(r.escalation_rate)),
            num(r.auroc, 3),
            num(r.ece, 3),
        )?;
        if r.errors > 0 {
            writeln!(out, "{:<12} {} rows had no answer", "", r.errors)?;
        }
    }
    Ok(())
}
