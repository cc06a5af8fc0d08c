//! `smallfirst train TASK --verifier --data rows.jsonl --config FILE`: a verifier for a task
//! whose answers are generated. Every labeled row is answered by the embedded tier through the
//! gateway core, exactly as the server would answer it (the same route, estimator, prompt and
//! constraints; nothing escalates), and a two-label head learns from the request and answer
//! read together, and from the answer's own confidence, which answers were right.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use smallfirst_engine::Pooling;
use smallfirst_heads::verifier::{self, Candidate};
use smallfirst_heads::{Binding, EmbeddingCache, Head, InputSpec, Row};
use smallfirst_protocol::FinishReason;
use smallfirst_router::confidence::Estimator;
use smallfirst_router::{Config, Policy, Privacy};
use smallfirst_server::gateway::{Reply, Request, answer_text};
use smallfirst_server::{AppState, EmbeddedTier, Gateway, Limits, Options};

use super::train::{
    Args, beside, embed, fit_split, hashed_order, model_binding, name_file, open_cache,
    predictions_file, progress,
};

/// A row as the embedded tier answered it.
#[derive(Debug, Clone, serde::Serialize)]
struct Answered {
    /// The label, or the answer's text: what is compared with the row's `expected`.
    answer: String,
    /// The answer as the verifier reads it ([`answer_text`]).
    #[serde(skip)]
    text: String,
    confidence: f64,
    margin: Option<f64>,
    method: &'static str,
    cut: bool,
    right: bool,
}

pub(crate) fn run(args: &Args, pooling: Pooling) -> anyhow::Result<()> {
    let Some(config_path) = args.config.as_deref() else {
        anyhow::bail!(
            "--verifier needs --config: a verifier judges the task's answers as the server gives them (hint: pass the smallfirst.toml that configures `[tasks.{}]`)",
            args.task
        );
    };
    let config = Config::load(config_path)?;
    if !config.policy.tasks.contains_key(&args.task) {
        anyhow::bail!(
            "task `{}` is not configured in {} (hint: add `[tasks.{}]` with its labels or schema first)",
            args.task,
            config_path.display(),
            args.task
        );
    }
    let Some((tier, e)) = config.embedded_tier() else {
        anyhow::bail!(
            "{} has no embedded tier, and a verifier judges the embedded tier's answers (hint: add a tier with backend = \"embedded\")",
            config_path.display()
        );
    };
    let mut model = args.model.clone();
    model.model = model.model.or_else(|| Some(e.model.to_string()));
    model.threads = model.threads.or(e.threads);
    model.ctx = model.ctx.or(e.ctx);
    model.parallel = model.parallel.or(e.parallel);
    let mut rows = hashed_order(smallfirst_heads::read_rows(&args.data)?);
    if let Some(n) = args.max_rows {
        rows.truncate(n);
    }
    let test_rows = args
        .test
        .as_deref()
        .map(smallfirst_heads::read_rows)
        .transpose()?;
    let (name, engine) = super::load_engine(&model)?;
    let model_path = engine.info().path.clone();
    let mut cache = open_cache(args)?;
    let sha = cache.model_sha256(&model_path)?;
    let heads = super::serve::heads(&config, Some(config_path), &engine)?;
    // The task's own verifier, if it has one, is the one being replaced: its answers are
    // judged as they would be without it.
    let verifiers = super::serve::verifiers(&config, Some(config_path), &engine, Some(&args.task))?;
    let info = engine.info();
    let (window, slots) = (info.n_ctx, info.slots);
    let local = EmbeddedTier {
        engine,
        model_id: name,
        name: tier.name.clone(),
        heads,
        verifiers,
        priors: Default::default(),
    };
    let samples = match config
        .policy
        .tasks
        .get(&args.task)
        .and_then(|t| t.confidence)
    {
        Some(Estimator::SelfConsistency { samples }) => usize::from(samples),
        _ => 1,
    };
    // Every row in flight may hold a place per sample.
    let limits = Limits {
        max_queue: slots * (samples + 1),
        slots,
        request_timeout: config.server.request_timeout,
        prefix_reuse: true,
    };
    let state = AppState::with_tiers(
        Some(local),
        Vec::new(),
        Policy::new(&config, Some(window)),
        limits,
        Options::default(),
    );
    let spec = InputSpec {
        wrapper: args
            .wrapper
            .clone()
            .unwrap_or_else(|| verifier::WRAPPER.to_string()),
        pooling: pooling.as_str().into(),
        max_tokens: args.max_tokens,
        keep_end: true,
    };
    let runtime = super::runtime()?;
    let started = Instant::now();
    let engine = &state
        .gateway()
        .embedded()
        .context("no embedded tier")?
        .engine;
    let answering = Answering {
        gateway: state.gateway(),
        task: &args.task,
        slots,
        // Self-consistency samples at the server's temperature, as a client's request that
        // sets none does; anything else is answered greedy.
        greedy: samples == 1,
    };
    let (rows, answered) = runtime.block_on(answering.all(rows, "answering"))?;
    let answer_s = started.elapsed().as_secs_f64();
    let right = answered.iter().filter(|a| a.right).count();
    if right == 0 || right == answered.len() {
        anyhow::bail!(
            "the local tier answered {right} of {} rows right; a verifier learns from both right and wrong answers (hint: more rows, or rows of another kind)",
            answered.len()
        );
    }
    let vectors = runtime.block_on(vectors(
        engine,
        &spec,
        &sha,
        &rows,
        &answered,
        &mut cache,
        "embedding",
    ))?;
    let ys: Vec<usize> = answered.iter().map(|a| usize::from(a.right)).collect();
    // Held out by the text's hash, with both classes on the training side.
    let classes: Vec<Row> = rows
        .iter()
        .zip(&answered)
        .map(|(r, a)| Row {
            text: r.text.clone(),
            label: verifier::LABELS[usize::from(a.right)].to_string(),
        })
        .collect();
    let split = smallfirst_heads::split(&classes, args.holdout);
    let binding = Binding {
        task: args.task.clone(),
        model: model_binding(&sha, &model_path),
        input: spec.clone(),
        labels: verifier::LABELS.iter().map(|l| l.to_string()).collect(),
        features: verifier::FEATURES.iter().map(|f| f.to_string()).collect(),
        judges: Some(most_common(answered.iter().map(|a| a.method)).to_string()),
    };
    let head = fit_split(args, binding, &vectors, &ys, &split)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| beside(Some(config_path), &format!("{}.verifier.json", args.task)));
    head.save(&out)?;
    name_file(config_path, &args.task, "verifier", &out)?;
    let raw: Vec<(f64, bool)> = split
        .1
        .iter()
        .map(|&i| (answered[i].confidence, answered[i].right))
        .collect();
    let test = match test_rows {
        Some(t) => Some(runtime.block_on(test(
            &answering,
            &head,
            &sha,
            t,
            &mut cache,
            args.predictions.as_deref(),
        ))?),
        None => None,
    };
    let report = serde_json::json!({
        "task": args.task, "verifier": out, "rows": rows.len(), "local_accuracy": right as f64 / rows.len() as f64,
        "method": answered.first().map(|a| a.method), "answer_seconds": answer_s,
        "holdout_rows": head.trained.holdout_rows, "holdout_accuracy": head.trained.holdout_accuracy,
        "holdout_ece": head.trained.holdout_ece, "holdout_ece_own": smallfirst_heads::ece(&raw, 15),
        "temperature": head.temperature, "test": test,
    });
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{report}").context("cannot write to stdout")?;
        return Ok(());
    }
    writeln!(
        stdout,
        "answered {} rows in {answer_s:.1} s: {:.1}% right ({})\nverifier held out ({} rows): accuracy {:.1}%, calibration error {:.3} (the answers' own confidence: {:.3})",
        rows.len(),
        100.0 * right as f64 / rows.len() as f64,
        answered.first().map_or("", |a| a.method),
        head.trained.holdout_rows,
        100.0 * head.trained.holdout_accuracy,
        head.trained.holdout_ece,
        smallfirst_heads::ece(&raw, 15),
    )
    .context("cannot write to stdout")?;
    if let Some(t) = test {
        writeln!(
            stdout,
            "test: {} rows, {:.1}% right; verifier calibration error {:.3} (own {:.3})",
            t.rows,
            100.0 * t.local_accuracy,
            t.ece,
            t.ece_own
        )
        .context("cannot write to stdout")?;
    }
    writeln!(
        stdout,
        "wrote {} and named it in tasks.{}.verifier",
        out.display(),
        args.task
    )
    .context("cannot write to stdout")?;
    Ok(())
}

/// Rows answered by the gateway core as requests of `task`, `slots` at a time.
struct Answering<'a> {
    gateway: &'a Gateway,
    task: &'a str,
    slots: usize,
    /// Requests ask for temperature 0.
    greedy: bool,
}

impl Answering<'_> {
    /// Every row's answer, in the rows' order.
    /// Every row that could be answered, with its answer, in the rows' order. Rows that
    /// could not (the queue, a local-only refusal) are left out and counted on stderr.
    async fn all(&self, rows: Vec<Row>, what: &str) -> anyhow::Result<(Vec<Row>, Vec<Answered>)> {
        let bar = progress(rows.len(), what);
        let results: Vec<anyhow::Result<Answered>> = futures::stream::iter(&rows)
            .map(|r| {
                let bar = &bar;
                async move {
                    let a = self.answer(r).await;
                    bar.inc(1);
                    a
                }
            })
            .buffered(self.slots.max(1))
            .collect()
            .await;
        bar.finish_and_clear();
        let n = rows.len();
        let (mut kept, mut answered, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for (row, result) in rows.into_iter().zip(results) {
            match result {
                Ok(a) => {
                    kept.push(row);
                    answered.push(a);
                }
                Err(e) => failed.push(e),
            }
        }
        if let Some(first) = failed.first() {
            if kept.is_empty() {
                anyhow::bail!("no row could be answered: {first}");
            }
            eprintln!(
                "{} of {n} rows could not be answered and are left out; the first: {first}",
                failed.len()
            );
        }
        Ok((kept, answered))
    }
}

impl Answering<'_> {
    /// One row's answer, as a client asking `model: "auto"` for the task would get it.
    async fn answer(&self, row: &Row) -> anyhow::Result<Answered> {
        let (gateway, task) = (self.gateway, self.task);
        let mut body = serde_json::json!({
            "model": "auto",
            "messages": [{"role": "user", "content": row.text}],
        });
        if self.greedy {
            body["temperature"] = 0.into();
        }
        let req = Request {
            chat: serde_json::from_value(body.clone()).context("a row's request")?,
            raw: Bytes::from(body.to_string()),
            native: None,
            privacy: Privacy::Unset,
            task: Some(task.to_string()),
            key: None,
            only: None,
        };
        let outcome = gateway.complete(req).await;
        let c = outcome.confidence;
        let completion = match outcome.answer {
            Ok(Reply::Completion(c)) => c,
            Ok(_) => anyhow::bail!(
                "the task's route answered from a remote tier; a verifier judges the embedded tier's answers"
            ),
            Err(e) => anyhow::bail!("a row could not be answered: {e}"),
        };
        let Some(c) = c else {
            anyhow::bail!("the task's local answers carry no confidence");
        };
        let choice = completion
            .choices
            .first()
            .context("an answer without a choice")?;
        let answer = outcome
            .label
            .map(|l| l.label)
            .or_else(|| choice.message.content.clone())
            .unwrap_or_default();
        Ok(Answered {
            right: same(&answer, &row.label),
            answer,
            text: answer_text(&completion),
            confidence: c.value,
            margin: c.margin,
            method: c.method.as_str(),
            cut: choice.finish_reason == FinishReason::Length,
        })
    }
}

/// The value seen most often (the first of those tied); `""` for none.
fn most_common<'a>(values: impl Iterator<Item = &'a str>) -> &'a str {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(k, _)| *k == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
    counts
        .iter()
        .find(|(_, n)| *n == best)
        .map_or("", |(k, _)| k)
}

/// An answer matches its expectation as text, trimmed, case and a final full stop aside.
fn same(answer: &str, expected: &str) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('.').trim().to_lowercase();
    norm(answer) == norm(expected)
}

fn candidate<'a>(row: &'a Row, a: &'a Answered) -> Candidate<'a> {
    Candidate {
        input: &row.text,
        answer: &a.text,
        confidence: a.confidence,
        margin: a.margin,
        cut: a.cut,
    }
}

/// Each answered row as the verifier reads it: its embedding, then its answer's features.
async fn vectors(
    engine: &smallfirst_engine::Engine,
    spec: &InputSpec,
    sha: &str,
    rows: &[Row],
    answered: &[Answered],
    cache: &mut EmbeddingCache,
    what: &str,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let texts: Vec<String> = rows
        .iter()
        .zip(answered)
        .map(|(r, a)| verifier::text(&candidate(r, a)))
        .collect();
    let mut vectors = embed(engine, spec, sha, &texts, cache, what).await?;
    for ((v, r), a) in vectors.iter_mut().zip(rows).zip(answered) {
        v.extend(verifier::features(&candidate(r, a)));
    }
    Ok(vectors)
}

#[derive(Debug, serde::Serialize)]
struct Tested {
    rows: usize,
    local_accuracy: f64,
    ece: f64,
    ece_own: f64,
}

async fn test(
    answering: &Answering<'_>,
    head: &Head,
    sha: &str,
    rows: Vec<Row>,
    cache: &mut EmbeddingCache,
    predictions: Option<&Path>,
) -> anyhow::Result<Tested> {
    let (rows, answered) = answering.all(rows, "testing").await?;
    let engine = &answering
        .gateway
        .embedded()
        .context("no embedded tier")?
        .engine;
    let vectors = vectors(
        engine,
        &head.input,
        sha,
        &rows,
        &answered,
        cache,
        "embedding",
    )
    .await?;
    let mut out = predictions.map(predictions_file).transpose()?;
    let (mut judged, mut own) = (Vec::new(), Vec::new());
    for ((r, a), v) in rows.iter().zip(&answered).zip(&vectors) {
        let p = head.probabilities(v)?[1];
        judged.push((p, a.right));
        own.push((a.confidence, a.right));
        if let Some(w) = out.as_mut() {
            let line = serde_json::json!({
                "input": r.text, "expected": r.label, "answer": a.answer, "right": a.right,
                "confidence": a.confidence, "method": a.method, "verifier": p,
            });
            writeln!(w, "{line}").context("cannot write the predictions")?;
        }
    }
    if let Some(mut w) = out {
        w.flush().context("cannot write the predictions")?;
    }
    let right = answered.iter().filter(|a| a.right).count();
    Ok(Tested {
        rows: rows.len(),
        local_accuracy: right as f64 / rows.len().max(1) as f64,
        ece: smallfirst_heads::ece(&judged, 15),
        ece_own: smallfirst_heads::ece(&own, 15),
    })
}
