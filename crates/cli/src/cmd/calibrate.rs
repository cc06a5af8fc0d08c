//! `smallfirst calibrate TASK --set SET.jsonl --max-error α [--confidence 1-δ] [--write]`:
//! the lowest escalation threshold whose error among answers the local tier keeps is at most
//! α with probability at least 1 − δ (Learn-then-Test with exact binomial tests, see
//! `smallfirst_eval::guarantee`), chosen on one half of the set's rows and checked on the
//! other; with the escalation rate and cost against sending everything to the frontier, and
//! with `--write` the threshold and its guarantee written into `[tasks.TASK]`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;
use smallfirst_eval::{Checked, Judged, Scored};

use super::eval::{Common, Evaluation};

/// The method as a configuration names it.
const METHOD: &str = "learn-then-test";

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The task whose threshold is calibrated (`[tasks.NAME]` in --config).
    pub task: String,
    /// Rows of the task with their expectations (as for `smallfirst eval`).
    #[arg(long, value_name = "SET.jsonl")]
    pub set: PathBuf,
    /// The error allowed among answers kept locally, e.g. 0.05.
    #[arg(long, value_name = "α")]
    pub max_error: f64,
    /// How sure the guarantee is: it holds with this probability (1 − δ).
    #[arg(long, value_name = "1-δ", default_value_t = 0.9)]
    pub confidence: f64,
    /// The tier whose answers are kept or escalated [default: the embedded tier].
    #[arg(long)]
    pub tier: Option<String>,
    /// The tier escalations go to, for the cost and quality of the cascade [default: the
    /// policy's frontier, else the first remote tier; `none` for no comparison].
    #[arg(long)]
    pub frontier: Option<String>,
    /// Write the threshold and its guarantee into the configuration's `[tasks.TASK]`.
    #[arg(long)]
    pub write: bool,
    #[command(flatten)]
    pub common: Common,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One half's figures at the threshold.
#[derive(Debug, serde::Serialize)]
struct Half {
    #[serde(flatten)]
    checked: Checked,
    error_rate: Option<f64>,
    escalation: f64,
    /// With the frontier's answers: the cascade's quality and cost, and all-frontier's.
    cascade_quality: Option<f64>,
    cascade_cost: Option<f64>,
    frontier_quality: Option<f64>,
    frontier_cost: Option<f64>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let alpha = args.max_error;
    let delta = 1.0 - args.confidence;
    if !(alpha > 0.0 && alpha < 1.0) {
        anyhow::bail!("--max-error must be above 0 and below 1, e.g. 0.05");
    }
    if !(delta > 0.0 && delta < 1.0) {
        anyhow::bail!("--confidence must be above 0 and below 1, e.g. 0.9");
    }
    let Some(config_path) = args.common.config.clone() else {
        anyhow::bail!(
            "calibrate needs --config: the threshold is the task's (hint: pass the smallfirst.toml that configures `[tasks.{}]`)",
            args.task
        );
    };
    let mut eval = Evaluation::open(&args.set, Some(&args.task), &args.common)?;
    let local = match &args.tier {
        Some(t) => t.clone(),
        None => eval
            .config
            .embedded_tier()
            .map(|(t, _)| t.name.clone())
            .context(
                "the configuration has no embedded tier (hint: name the local tier with --tier)",
            )?,
    };
    let frontier = match args.frontier.as_deref() {
        Some("none") => None,
        Some(t) => Some(t.to_string()),
        None => eval.config.policy.frontier.clone().or_else(|| {
            eval.gateway()
                .remotes()
                .first()
                .map(|t| t.name().to_string())
        }),
    };
    let names = eval.tier_names();
    for t in std::iter::once(&local).chain(frontier.iter()) {
        if t == "auto" || !names.contains(t) {
            anyhow::bail!(
                "no tier is named `{t}` (tiers: {})",
                names[..names.len() - 1].join(", ")
            );
        }
    }
    let runtime = super::runtime()?;
    let local_results = runtime.block_on(eval.run_tier(&local))?;
    let frontier_results = match &frontier {
        Some(f) => Some(runtime.block_on(eval.run_tier(f))?),
        None => None,
    };
    // Free-text grades are a judge's: used only once it agrees with people.
    if let Some(judge) = &eval.judge {
        let free = eval
            .rows
            .iter()
            .any(|r| matches!(r.expect, smallfirst_eval::Expectation::FreeText { .. }));
        if free {
            let min = args.common.judging.min_kappa;
            let Some(human) = &eval.human else {
                anyhow::bail!(
                    "the judge `{}` grades this set's free-text rows, but its grades are used to calibrate only once it agrees with human grades (hint: --human GRADES.jsonl, κ at least {min})",
                    judge.tier
                );
            };
            let agreement = human.agreement(&eval.rows, &local, &local_results);
            match agreement {
                Some(a) if a.trusted(min) => {
                    eprintln!("{}", super::judge::describe(&judge.tier, &local, &a, min));
                }
                Some(a) => anyhow::bail!(
                    "{} (hint: a better judge or rubric, or --min-kappa)",
                    super::judge::describe(&judge.tier, &local, &a, min)
                ),
                None => anyhow::bail!(
                    "none of the human grades matches tier `{local}`'s judged answers (hint: grades name the row's `id`, and `tier` if given must be `{local}`)"
                ),
            }
        }
    }
    let judged: Vec<(&Scored, Judged)> = local_results
        .iter()
        .filter_map(|s| {
            let right = s.grade.right?;
            let confidence = s.confidence?;
            Some((s, Judged { confidence, right }))
        })
        .collect();
    if judged.is_empty() {
        anyhow::bail!(
            "none of tier `{local}`'s answers carries a confidence and a grade (hint: a threshold judges answers of a task with closed answers: labels, JSON or calls)"
        );
    }
    let (cal, held): (Vec<(&Scored, Judged)>, Vec<_>) = judged
        .into_iter()
        .partition(|(s, _)| smallfirst_eval::in_calibration_half(&s.key));
    let cal_rows: Vec<Judged> = cal.iter().map(|(_, j)| *j).collect();
    let calibrated = smallfirst_eval::calibrate(&cal_rows, alpha, delta)?;
    let half =
        |rows: &[(&Scored, Judged)]| half(rows, calibrated.threshold, frontier_results.as_deref());
    let on_cal = half(&cal);
    let on_held = half(&held);
    let model_sha256 = eval.model_sha256.clone();
    let set_sha256 = smallfirst_eval::set_sha256(&eval.rows);
    if args.write {
        write(
            &config_path,
            &args.task,
            &calibrated,
            &set_sha256,
            model_sha256.as_deref(),
        )?;
    }
    let report = json!({
        "task": args.task, "tier": local, "frontier": frontier, "method": METHOD,
        "alpha": alpha, "delta": delta, "threshold": calibrated.threshold,
        "certified": calibrated.threshold.is_some(), "bound": calibrated.bound,
        "calibration": on_cal, "held_out": on_held, "set_sha256": set_sha256,
        "model_sha256": model_sha256, "written": args.write,
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}").context("cannot write to stdout")?;
        return Ok(());
    }
    match calibrated.threshold {
        Some(t) => writeln!(
            out,
            "threshold {t:.2}: among kept answers the error is at most {alpha} with probability {:.2} ({METHOD}, upper bound {:.3} on {} calibration rows)",
            1.0 - delta,
            calibrated.bound,
            calibrated.rows
        ),
        None => writeln!(
            out,
            "no threshold keeps the error at most {alpha} with probability {:.2} on these {} rows: everything escalates (hint: more rows, or a better confidence: a head or a verifier)",
            1.0 - delta,
            calibrated.rows
        ),
    }
    .context("cannot write to stdout")?;
    for (name, h) in [("calibration", &on_cal), ("held out", &on_held)] {
        writeln!(out, "{}", describe(name, h)).context("cannot write to stdout")?;
    }
    if args.write {
        writeln!(
            out,
            "wrote tasks.{}.threshold and tasks.{}.calibration in {}",
            args.task,
            args.task,
            config_path.display()
        )
        .context("cannot write to stdout")?;
    }
    Ok(())
}

fn describe(name: &str, h: &Half) -> String {
    let pct = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.1}%", 100.0 * v));
    let mut s = format!(
        "{name}: {} rows, {} kept, error among kept {}, escalated {}",
        h.checked.rows,
        h.checked.kept,
        pct(h.error_rate),
        pct(Some(h.escalation)),
    );
    if let (Some(cq), Some(cc), Some(fq), Some(fc)) = (
        h.cascade_quality,
        h.cascade_cost,
        h.frontier_quality,
        h.frontier_cost,
    ) {
        let saved = if fc > 0.0 { 1.0 - cc / fc } else { 0.0 };
        s.push_str(&format!(
            "; cascade quality {} at ${cc:.4} against all-frontier {} at ${fc:.4} ({:.1}% saved)",
            pct(Some(cq)),
            pct(Some(fq)),
            100.0 * saved
        ));
    }
    s
}

/// The threshold applied to `rows`, with the frontier's answers to the same rows when there
/// are some.
fn half(rows: &[(&Scored, Judged)], threshold: Option<f64>, frontier: Option<&[Scored]>) -> Half {
    let judged: Vec<Judged> = rows.iter().map(|(_, j)| *j).collect();
    let checked = smallfirst_eval::check(&judged, threshold);
    let mut h = Half {
        checked,
        error_rate: checked.error_rate(),
        escalation: checked.escalation(),
        cascade_quality: None,
        cascade_cost: None,
        frontier_quality: None,
        frontier_cost: None,
    };
    let Some(frontier) = frontier else {
        return h;
    };
    let by_key: std::collections::HashMap<&str, &Scored> =
        frontier.iter().map(|s| (s.key.as_str(), s)).collect();
    let (mut right, mut cost, mut f_right, mut f_cost, mut n) = (0usize, 0.0, 0usize, 0.0, 0usize);
    for (s, j) in rows {
        let Some(f) = by_key.get(s.key.as_str()) else {
            continue;
        };
        n += 1;
        let f_ok = f.grade.right == Some(true);
        f_right += usize::from(f_ok);
        f_cost += f.cost;
        let kept = threshold.is_some_and(|t| j.confidence >= t);
        cost += s.cost;
        if kept {
            right += usize::from(j.right);
        } else {
            right += usize::from(f_ok);
            cost += f.cost;
        }
    }
    if n > 0 {
        h.cascade_quality = Some(right as f64 / n as f64);
        h.cascade_cost = Some(cost);
        h.frontier_quality = Some(f_right as f64 / n as f64);
        h.frontier_cost = Some(f_cost);
    }
    h
}

/// The threshold (1 when none was certified: only a confidence of exactly 1 stays local) and
/// its guarantee written into `[tasks.TASK]`, keeping the rest of the file as written.
fn write(
    config: &Path,
    task: &str,
    c: &smallfirst_eval::Calibrated,
    set_sha256: &str,
    model_sha256: Option<&str>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("cannot parse {}", config.display()))?;
    let entry = doc
        .get_mut("tasks")
        .and_then(|t| t.get_mut(task))
        .and_then(toml_edit::Item::as_table_like_mut)
        .with_context(|| format!("`tasks.{task}` in {} is not a table", config.display()))?;
    // Two decimals: the grid's own steps.
    let threshold = (c.threshold.unwrap_or(1.0) * 100.0).round() / 100.0;
    entry.insert("threshold", toml_edit::value(threshold));
    let mut table = toml_edit::InlineTable::new();
    table.insert("method", METHOD.into());
    table.insert("alpha", c.alpha.into());
    table.insert("delta", ((c.delta * 1e6).round() / 1e6).into());
    table.insert("certified", c.threshold.is_some().into());
    table.insert("set_sha256", set_sha256.into());
    if let Some(sha) = model_sha256 {
        table.insert("model_sha256", sha.into());
    }
    table.insert("rows", i64::try_from(c.rows).unwrap_or(i64::MAX).into());
    entry.insert("calibration", toml_edit::value(table));
    let tmp = config.with_extension("toml.partial");
    std::fs::write(&tmp, doc.to_string())
        .and_then(|()| std::fs::rename(&tmp, config))
        .with_context(|| format!("cannot write {}", config.display()))?;
    // The file must still be a configuration this server reads.
    smallfirst_router::Config::load(config)?;
    Ok(())
}
