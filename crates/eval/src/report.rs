//! The eval's report as one self-contained HTML page, readable offline: the per-tier table, the
//! cascade's cost–quality curve over thresholds with the configured threshold marked, and the
//! reliability diagram of the local confidence. The charts are inline SVG drawn with
//! `plotters`; the page loads nothing.

use std::collections::HashMap;
use std::fmt::Write as _;

use plotters::prelude::*;

use crate::metrics::reliability;
use crate::results::{Scored, TierReport};

/// One point of the cascade's curve: keep the local answer when its confidence is at least
/// `threshold`, send the row to the other tier otherwise.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CurvePoint {
    pub threshold: f64,
    /// Right answers over graded rows.
    pub quality: f64,
    /// US dollars: every row's local cost plus the escalated rows' cost on the other tier.
    pub cost: f64,
    pub escalation: f64,
}

/// The cascade over thresholds 0.00, 0.01, …, 1.00, on the rows both tiers answered and graded
/// (a local answer without a confidence always escalates).
pub fn cascade_curve(local: &[Scored], other: &[Scored]) -> Vec<CurvePoint> {
    let by_key: HashMap<&str, &Scored> = other.iter().map(|s| (s.key.as_str(), s)).collect();
    let rows: Vec<(&Scored, &Scored)> = local
        .iter()
        .filter(|l| l.grade.right.is_some())
        .filter_map(|l| {
            by_key
                .get(l.key.as_str())
                .filter(|o| o.grade.right.is_some())
                .map(|o| (l, *o))
        })
        .collect();
    if rows.is_empty() {
        return Vec::new();
    }
    let n = rows.len() as f64;
    (0..=100)
        .map(|step| {
            let t = f64::from(step) / 100.0;
            let (mut right, mut cost, mut escalated) = (0usize, 0.0, 0usize);
            for (l, o) in &rows {
                cost += l.cost;
                if l.confidence.is_some_and(|c| c >= t) {
                    right += usize::from(l.grade.right == Some(true));
                } else {
                    escalated += 1;
                    cost += o.cost;
                    right += usize::from(o.grade.right == Some(true));
                }
            }
            CurvePoint {
                threshold: t,
                quality: right as f64 / n,
                cost,
                escalation: escalated as f64 / n,
            }
        })
        .collect()
}

/// What the page shows.
pub struct Page<'a> {
    /// The set's path, as the user named it.
    pub set: &'a str,
    pub task: Option<&'a str>,
    pub tiers: &'a [TierReport],
    /// The tier whose confidence is judged, with its results.
    pub local: Option<(&'a str, &'a [Scored])>,
    /// The tier escalated to in the curve, with its results.
    pub other: Option<(&'a str, &'a [Scored])>,
    /// The task's configured threshold, marked on the curve.
    pub threshold: Option<f64>,
}

/// The page's HTML; a chart that cannot be drawn is replaced by a line saying why.
pub fn html(page: &Page<'_>) -> String {
    let mut out = String::new();
    let title = match page.task {
        Some(t) => format!("smallfirst eval: {} (task {})", page.set, t),
        None => format!("smallfirst eval: {}", page.set),
    };
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th:first-child,td:first-child{{text-align:left}}\
         figure{{margin:1.5em 0}}figcaption{{color:#555;max-width:640px}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    table(&mut out, page.tiers);
    out.push_str("<h2>Cascade: cost and quality over thresholds</h2>\n");
    match (page.local, page.other) {
        (Some((local, l)), Some((other, o))) => {
            let points = cascade_curve(l, o);
            if points.is_empty() {
                out.push_str("<p id=\"curve-missing\">No row was graded on both tiers.</p>\n");
            } else {
                let caption = format!(
                    "Each point: keep {local}'s answer when its confidence is at least the threshold, \
                     escalate the rest to {other}. {}",
                    page.threshold.map_or("No threshold is configured.".into(), |t| format!(
                        "The configured threshold, {t:.2}, is marked."
                    ))
                );
                figure(&mut out, "curve", &caption, curve_svg(&points, page.threshold));
            }
        }
        _ => out.push_str(
            "<p id=\"curve-missing\">The curve needs the local tier and a tier to escalate to in the same run \
             (for example <code>--tiers local,frontier</code>).</p>\n",
        ),
    }
    out.push_str("<h2>Reliability of the local confidence</h2>\n");
    let judged: Vec<(f64, bool)> = page
        .local
        .map(|(_, l)| {
            l.iter()
                .filter_map(|s| Some((s.confidence?, s.grade.right?)))
                .collect()
        })
        .unwrap_or_default();
    if judged.is_empty() {
        out.push_str(
            "<p id=\"reliability-missing\">No local answer carried a confidence and a grade.</p>\n",
        );
    } else {
        let caption = format!(
            "{} answers in 10 bins of confidence: each point is a bin's mean confidence against the share right, \
             its size the bin's rows. On the diagonal, the confidence is calibrated.",
            judged.len()
        );
        figure(
            &mut out,
            "reliability",
            &caption,
            reliability_svg(&reliability(&judged, 10)),
        );
    }
    out.push_str("</body></html>\n");
    out
}

fn table(out: &mut String, tiers: &[TierReport]) {
    let pct = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.1}%", 100.0 * v));
    let num = |v: Option<f64>, d: usize| v.map_or("—".into(), |v| format!("{v:.d$}"));
    out.push_str(
        "<table id=\"tiers\"><tr><th>tier</th><th>rows</th><th>quality</th><th>schema</th><th>calls</th>\
         <th>p50 ms</th><th>p95 ms</th><th>cost $</th><th>$/success</th><th>escalated</th><th>AUROC</th><th>ECE</th></tr>\n",
    );
    for r in tiers {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.6}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.tier),
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
        );
    }
    out.push_str("</table>\n");
}

fn figure(out: &mut String, id: &str, caption: &str, svg: Result<String, String>) {
    match svg {
        Ok(svg) => {
            let _ = writeln!(
                out,
                "<figure id=\"{id}\">{svg}<figcaption>{}</figcaption></figure>",
                escape(caption)
            );
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "<p id=\"{id}-missing\">The chart could not be drawn: {}</p>",
                escape(&e)
            );
        }
    }
}

const SIZE: (u32, u32) = (640, 400);

fn curve_svg(points: &[CurvePoint], threshold: Option<f64>) -> Result<String, String> {
    // Costs of zero everywhere (tiers without prices): the escalation rate stands in for cost.
    let by_cost = points.iter().any(|p| p.cost > 0.0);
    let x = |p: &CurvePoint| if by_cost { p.cost } else { p.escalation };
    let x_max = points.iter().map(x).fold(0.0f64, f64::max).max(1e-9) * 1.05;
    let x_desc = if by_cost {
        "cost of the rows, US $"
    } else {
        "share escalated"
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max, 0.0..1.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("quality")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (x(p), p.quality)),
                &BLUE,
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((x(p), p.quality), 2, BLUE.filled())),
            )
            .map_err(|e| e.to_string())?;
        if let Some(p) = threshold.and_then(|t| {
            points
                .iter()
                .min_by(|a, b| (a.threshold - t).abs().total_cmp(&(b.threshold - t).abs()))
        }) {
            chart
                .draw_series(std::iter::once(Circle::new(
                    (x(p), p.quality),
                    6,
                    RED.filled(),
                )))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn reliability_svg(bins: &[(f64, f64, usize)]) -> Result<String, String> {
    let most = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("confidence (bin mean)")
            .y_desc("share right")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], &BLACK.mix(0.4)))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(bins.iter().map(|b| (b.0, b.1)), &RED))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(bins.iter().map(|b| {
                let r = 3.0 + 9.0 * (b.2 as f64 / most).sqrt();
                Circle::new((b.0, b.1), r as i32, RED.filled())
            }))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Text made safe to place in HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::Grade;

    fn scored(key: &str, right: bool, confidence: Option<f64>, cost: f64) -> Scored {
        Scored {
            key: key.into(),
            id: key.into(),
            tier: "t".into(),
            setup: "s".into(),
            answered_by: None,
            escalated: false,
            grade: Grade {
                right: Some(right),
                schema_valid: None,
                executable: None,
            },
            error: None,
            latency_ms: 1.0,
            prompt_tokens: 1,
            cached_tokens: 0,
            completion_tokens: 1,
            cost,
            confidence,
            method: None,
            answer: String::new(),
        }
    }

    #[test]
    fn the_curve_runs_from_all_escalated_to_all_kept() {
        let local = [
            scored("a", true, Some(0.9), 0.0),
            scored("b", false, Some(0.4), 0.0),
            scored("c", true, None, 0.0),
        ];
        let other = [
            scored("a", false, None, 1.0),
            scored("b", true, None, 1.0),
            scored("c", true, None, 1.0),
        ];
        let curve = cascade_curve(&local, &other);
        assert_eq!(curve.len(), 101);
        // Threshold 0: every answer with a confidence is kept; c has none and escalates.
        assert_eq!(curve[0].escalation, 1.0 / 3.0);
        assert!((curve[0].quality - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(curve[0].cost, 1.0);
        // Between 0.4 and 0.9: a kept, b and c escalated, all three right.
        assert_eq!(curve[50].quality, 1.0);
        assert_eq!(curve[50].cost, 2.0);
        // Threshold 1: everything escalates.
        assert_eq!(curve[100].escalation, 1.0);
        assert!((curve[100].quality - 2.0 / 3.0).abs() < 1e-12);
        assert!(cascade_curve(&local, &[]).is_empty());
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_what_it_shows() {
        let local = [
            scored("a", true, Some(0.9), 0.0),
            scored("b", false, Some(0.4), 0.0),
        ];
        let other = [scored("a", true, None, 0.5), scored("b", true, None, 0.5)];
        let tiers = [crate::summarize(
            "<local>",
            &local.iter().collect::<Vec<_>>(),
        )];
        let page = html(&Page {
            set: "rows&more.jsonl",
            task: Some("t"),
            tiers: &tiers,
            local: Some(("local", &local)),
            other: Some(("frontier", &other)),
            threshold: Some(0.5),
        });
        assert!(page.contains("rows&amp;more.jsonl") && page.contains("&lt;local&gt;"));
        assert!(!page.contains("<local>"));
        assert!(
            page.contains("<figure id=\"curve\"><svg")
                && page.contains("<figure id=\"reliability\"><svg")
        );
        assert!(
            !page.contains("src=") && !page.contains("href="),
            "loads nothing"
        );
        // 101 curve points and the marked threshold, then the reliability bins.
        assert!(page.matches("<circle").count() >= 101 + 1 + 2);
        let alone = html(&Page {
            set: "s",
            task: None,
            tiers: &tiers,
            local: Some(("local", &local)),
            other: None,
            threshold: None,
        });
        assert!(alone.contains("curve-missing") && alone.contains("<figure id=\"reliability\">"));
    }
}
