//! `smallfirst train TASK --data rows.jsonl`: a head for a classification task, fitted on the
//! embedded model's embeddings of the task's labeled rows, calibrated on held-out rows, written
//! beside the configuration and named in its `[tasks.TASK] head`.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use smallfirst_engine::{Engine, Pooling};
use smallfirst_heads::{
    Binding, EmbeddingCache, Examples, FitOptions, Head, InputSpec, ModelBinding, Row, embed_texts,
};
use smallfirst_router::Config;

use super::ModelArgs;
use crate::env;

/// The text a row is embedded in, chosen by measurement (BENCHMARKS.md, "Task heads").
/// The last token's state after a prompt that asks for the input's intent in one word: on
/// banking77 (Qwen2.5-Coder-0.5B, 2,000 rows) 84.6% against 74.7% for the mean of the bare
/// text's states.
pub(crate) const DEFAULT_WRAPPER: &str =
    "Customer message: \"{text}\"\nThe intent of this message in one word is: \"";
pub(crate) const DEFAULT_POOLING: &str = "last";
pub(crate) const DEFAULT_ALPHA: f64 = 1e-3;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The task's name, as in `[tasks.NAME]` and `metadata.task`.
    pub task: String,
    /// Labeled rows: JSON lines with `input` (or `text`) and `expected` (or `label`).
    #[arg(long, value_name = "ROWS.jsonl")]
    pub data: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// A smallfirst.toml: the model is its embedded tier's, the labels its task's; the head is
    /// written beside it and named in its `[tasks.TASK] head`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to write the head [default: TASK.head.json beside the config, else here].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Share of rows held out to fit the temperature and measure the head.
    #[arg(long, default_value_t = 0.1)]
    pub holdout: f64,
    /// L2 regularization strength (per row).
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    pub alpha: f64,
    /// How an input's hidden states become its embedding: mean, last or model.
    #[arg(long, default_value = DEFAULT_POOLING)]
    pub pooling: String,
    /// The text around each input; `{text}` is replaced by it [default: a prompt asking for
    /// the input's intent in one word; for a verifier, the answer and the request, asking
    /// whether the answer is right].
    #[arg(long)]
    pub wrapper: Option<String>,
    /// Tokens kept from the start of a longer input.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Train on at most this many rows (chosen by their text's hash, so all labels are drawn).
    #[arg(long, value_name = "N")]
    pub max_rows: Option<usize>,
    /// L-BFGS iterations at most.
    #[arg(long, default_value_t = 200)]
    pub max_iterations: u64,
    /// Rows to test the trained head on (accuracy and calibration reported).
    #[arg(long, value_name = "ROWS.jsonl")]
    pub test: Option<PathBuf>,
    /// With --test: each test row's label, prediction and probability, as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
    /// Embed everything again rather than reading embeddings kept from earlier runs.
    #[arg(long)]
    pub no_cache: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Train the task's verifier instead of a head: every row is answered by the embedded
    /// tier as the server would answer it, and the verifier learns which answers were right.
    /// Needs --config; writes `[tasks.TASK] verifier`.
    #[arg(long)]
    pub verifier: bool,
}

/// The model file's sha256, kept in the embedding cache by path, size and time.
/// Without a usable cache (a read-only home), the file is read in full.
pub(crate) fn model_sha256(path: &Path) -> anyhow::Result<String> {
    match EmbeddingCache::open(&cache_file()) {
        Ok(cache) => Ok(cache.model_sha256(path)?),
        Err(e) => {
            tracing::debug!(error = %e, "no embedding cache; hashing the model file");
            smallfirst_heads::file_sha256(path)
                .with_context(|| format!("cannot read {}", path.display()))
        }
    }
}

pub(crate) fn cache_file() -> PathBuf {
    env::cache_dir().join("embeddings.sqlite")
}

/// `path` as written in a configuration: relative to its folder.
pub(crate) fn beside(config: Option<&Path>, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    match config.and_then(Path::parent) {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

/// The `--predictions` file, a JSON line a test row.
pub(crate) fn predictions_file(path: &Path) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(std::io::BufWriter::new(file))
}

/// The embedding cache, or a fresh one in memory with `--no-cache`.
pub(crate) fn open_cache(args: &Args) -> anyhow::Result<EmbeddingCache> {
    Ok(if args.no_cache {
        EmbeddingCache::in_memory()?
    } else {
        EmbeddingCache::open(&cache_file())?
    })
}

/// What a head is bound to: the model file's sha256, and its name for messages.
pub(crate) fn model_binding(sha: &str, path: &Path) -> ModelBinding {
    ModelBinding {
        sha256: sha.to_string(),
        file: path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        ),
    }
}

/// A head fitted on the rows `split.0` of `vectors` (labeled `ys`), its temperature on
/// `split.1`, with the options in `args`.
pub(crate) fn fit_split(
    args: &Args,
    binding: Binding,
    vectors: &[Vec<f32>],
    ys: &[usize],
    split: &(Vec<usize>, Vec<usize>),
) -> anyhow::Result<Head> {
    let pick = |ix: &[usize]| -> (Vec<Vec<f32>>, Vec<usize>) {
        (
            ix.iter().map(|&i| vectors[i].clone()).collect(),
            ix.iter().map(|&i| ys[i]).collect(),
        )
    };
    let (train_x, train_y) = pick(&split.0);
    let (held_x, held_y) = pick(&split.1);
    Ok(smallfirst_heads::fit(
        binding,
        Examples {
            vectors: &train_x,
            labels: &train_y,
        },
        Examples {
            vectors: &held_x,
            labels: &held_y,
        },
        &FitOptions {
            alpha: args.alpha,
            max_iterations: args.max_iterations,
        },
    )?)
}

fn check_args(args: &Args) -> anyhow::Result<Pooling> {
    if args.task.is_empty()
        || !args
            .task
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        anyhow::bail!(
            "`{}` is not a task name (hint: letters, digits, `_`, `-` and `.`, as in `[tasks.NAME]`)",
            args.task
        );
    }
    if !(args.holdout > 0.0 && args.holdout < 0.9) {
        anyhow::bail!("--holdout must be above 0 and below 0.9 (the temperature is fitted on it)");
    }
    if !(args.alpha.is_finite() && args.alpha >= 0.0) {
        anyhow::bail!("--alpha must be a number ≥ 0");
    }
    if args.wrapper.as_ref().is_some_and(|w| !w.contains("{text}")) {
        anyhow::bail!("--wrapper must contain `{{text}}`, where each input goes");
    }
    if args.max_tokens == 0 {
        anyhow::bail!("--max-tokens must be at least 1");
    }
    if args.predictions.is_some() && args.test.is_none() {
        anyhow::bail!("--predictions needs --test");
    }
    Pooling::parse(&args.pooling)
        .ok_or_else(|| anyhow::anyhow!("--pooling must be mean, last or model"))
}

/// Rows in the order of their text's hash: a prefix of it draws from every label.
pub(crate) fn hashed_order(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by_cached_key(|r| Sha256::digest(r.text.as_bytes()));
    rows
}

pub(crate) fn progress(n: usize, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} rows ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let pooling = check_args(&args)?;
    if args.verifier {
        return super::verifier::run(&args, pooling);
    }
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let mut model = args.model.clone();
    if let Some((_, e)) = config.as_ref().and_then(Config::embedded_tier) {
        model.model = model.model.or_else(|| Some(e.model.to_string()));
        model.threads = model.threads.or(e.threads);
        model.ctx = model.ctx.or(e.ctx);
    }
    // One sequence at a time: embeddings run on their own context.
    model.parallel = Some(1);
    let task_labels = config
        .as_ref()
        .and_then(|c| c.policy.tasks.get(&args.task))
        .and_then(|t| t.labels.clone());
    let mut rows = hashed_order(smallfirst_heads::read_rows(&args.data)?);
    if let Some(n) = args.max_rows {
        rows.truncate(n);
    }
    let labels = match task_labels {
        Some(l) => l,
        None => rows
            .iter()
            .map(|r| r.label.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let index = |label: &str| labels.iter().position(|l| l == label);
    if let Some(r) = rows.iter().find(|r| index(&r.label).is_none()) {
        anyhow::bail!(
            "a row of {} is labeled `{}`, which is not one of task `{}`'s labels (hint: add it to `[tasks.{}] labels`, or drop those rows)",
            args.data.display(),
            r.label,
            args.task,
            args.task
        );
    }
    // Checked before any embedding: a label without rows would fail the fit minutes later.
    if let Some(l) = labels.iter().find(|l| !rows.iter().any(|r| &r.label == *l)) {
        anyhow::bail!(
            "label `{l}` of task `{}` has no row among the {} rows read from {} (hint: every label needs rows; raise --max-rows or add rows labeled `{l}`)",
            args.task,
            rows.len(),
            args.data.display()
        );
    }
    if labels.len() < 2 {
        anyhow::bail!("a head needs rows of at least two labels");
    }
    let test_rows = args
        .test
        .as_deref()
        .map(smallfirst_heads::read_rows)
        .transpose()?;
    let (_, engine) = super::load_engine(&model)?;
    let model_path = engine.info().path.clone();
    let mut cache = open_cache(&args)?;
    let sha = cache.model_sha256(&model_path)?;
    let spec = InputSpec {
        wrapper: args
            .wrapper
            .clone()
            .unwrap_or_else(|| DEFAULT_WRAPPER.to_string()),
        pooling: pooling.as_str().into(),
        max_tokens: args.max_tokens,
        keep_end: false,
    };
    let runtime = super::runtime()?;
    let started = Instant::now();
    let texts: Vec<String> = rows.iter().map(|r| r.text.clone()).collect();
    let vectors = runtime.block_on(embed(&engine, &spec, &sha, &texts, &mut cache, "embedding"))?;
    let embed_s = started.elapsed().as_secs_f64();
    let ys: Vec<usize> = rows.iter().filter_map(|r| index(&r.label)).collect();
    let split = smallfirst_heads::split(&rows, args.holdout);
    let spinner = progress(0, "fitting");
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let binding = Binding {
        task: args.task.clone(),
        model: model_binding(&sha, &model_path),
        input: spec.clone(),
        labels: labels.clone(),
        features: Vec::new(),
        judges: None,
    };
    let head = fit_split(&args, binding, &vectors, &ys, &split)?;
    spinner.finish_and_clear();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| beside(args.config.as_deref(), &format!("{}.head.json", args.task)));
    head.save(&out)?;
    if let Some(cfg) = &args.config {
        name_file(cfg, &args.task, "head", &out)?;
    }
    let test = match &test_rows {
        Some(t) => Some(runtime.block_on(test_head(
            &engine,
            &head,
            &sha,
            t,
            &mut cache,
            args.predictions.as_deref(),
        ))?),
        None => None,
    };
    report(&args, &head, &out, embed_s, test)
}

pub(crate) async fn embed(
    engine: &Engine,
    spec: &InputSpec,
    sha: &str,
    texts: &[String],
    cache: &mut EmbeddingCache,
    what: &str,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let bar = progress(texts.len(), what);
    let v = embed_texts(engine, spec, sha, texts, Some(cache), &|n| {
        bar.set_position(n as u64);
    })
    .await?;
    bar.finish_and_clear();
    Ok(v)
}

/// A test set's figures: accuracy, ECE, and (rows whose label the head does not know) how many.
#[derive(Debug, serde::Serialize)]
struct Tested {
    rows: usize,
    accuracy: f64,
    ece: f64,
    /// Rows labeled outside the head's labels (scored as wrong).
    unknown_labels: usize,
}

async fn test_head(
    engine: &Engine,
    head: &Head,
    sha: &str,
    rows: &[Row],
    cache: &mut EmbeddingCache,
    predictions: Option<&Path>,
) -> anyhow::Result<Tested> {
    let texts: Vec<String> = rows.iter().map(|r| r.text.clone()).collect();
    let vectors = embed(engine, &head.input, sha, &texts, cache, "testing").await?;
    let mut out = predictions.map(predictions_file).transpose()?;
    let mut judged = Vec::with_capacity(rows.len());
    let mut unknown = 0;
    for (r, v) in rows.iter().zip(&vectors) {
        let p = head.predict(v)?;
        let label = &head.labels[p.index];
        unknown += usize::from(!head.labels.contains(&r.label));
        judged.push((p.probability, *label == r.label));
        if let Some(w) = out.as_mut() {
            let line = serde_json::json!({
                "input": r.text, "expected": r.label, "predicted": label,
                "probability": p.probability, "margin": p.margin,
            });
            writeln!(w, "{line}").context("cannot write the predictions")?;
        }
    }
    if let Some(mut w) = out {
        w.flush().context("cannot write the predictions")?;
    }
    let right = judged.iter().filter(|(_, ok)| *ok).count();
    Ok(Tested {
        rows: rows.len(),
        accuracy: right as f64 / rows.len().max(1) as f64,
        ece: smallfirst_heads::ece(&judged, 15),
        unknown_labels: unknown,
    })
}

/// Names a trained file in the configuration's `[tasks.TASK] KEY` (`head`, `verifier`),
/// keeping the rest of the file as it was written.
pub(crate) fn name_file(config: &Path, task: &str, key: &str, head: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("cannot parse {}", config.display()))?;
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (config_abs, head_abs) = (absolute(config), absolute(head));
    let dir = config_abs.parent().unwrap_or(Path::new(""));
    let shown = head_abs
        .strip_prefix(dir)
        .unwrap_or(&head_abs)
        .to_string_lossy()
        .into_owned();
    let tasks = doc
        .entry("tasks")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_like_mut()
        .context("`tasks` in the configuration is not a table")?;
    let entry = tasks
        .entry(task)
        .or_insert(toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_like_mut()
        .with_context(|| format!("`tasks.{task}` in the configuration is not a table"))?;
    entry.insert(key, toml_edit::value(shown));
    let tmp = config.with_extension("toml.partial");
    std::fs::write(&tmp, doc.to_string())
        .and_then(|()| std::fs::rename(&tmp, config))
        .with_context(|| format!("cannot write {}", config.display()))?;
    // The file must still be a configuration this server reads.
    Config::load(config)?;
    Ok(())
}

fn report(
    args: &Args,
    head: &Head,
    out: &Path,
    embed_s: f64,
    test: Option<Tested>,
) -> anyhow::Result<()> {
    let t = &head.trained;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({
            "task": head.task, "head": out, "labels": head.labels.len(), "dim": head.dim(),
            "rows": t.rows, "holdout_rows": t.holdout_rows,
            "holdout_accuracy": t.holdout_accuracy, "holdout_ece_raw": t.holdout_ece_raw,
            "holdout_ece": t.holdout_ece, "temperature": head.temperature,
            "embed_seconds": embed_s, "fit_seconds": t.seconds, "test": test,
            "pooling": head.input.pooling, "wrapper": head.input.wrapper, "alpha": t.alpha,
        });
        writeln!(stdout, "{v}").context("cannot write to stdout")?;
        return Ok(());
    }
    writeln!(
        stdout,
        "trained `{}`: {} labels on {} rows ({} held out), {} dims, embedded in {embed_s:.1} s, fitted in {:.1} s",
        head.task,
        head.labels.len(),
        t.rows,
        t.holdout_rows,
        head.dim(),
        t.seconds
    )
    .context("cannot write to stdout")?;
    writeln!(
        stdout,
        "held out: accuracy {:.1}%, calibration error {:.3} (raw {:.3}, temperature {:.2})",
        t.holdout_accuracy * 100.0,
        t.holdout_ece,
        t.holdout_ece_raw,
        head.temperature
    )
    .context("cannot write to stdout")?;
    if let Some(test) = test {
        writeln!(
            stdout,
            "test: {} rows, accuracy {:.1}%, calibration error {:.3}{}",
            test.rows,
            test.accuracy * 100.0,
            test.ece,
            if test.unknown_labels > 0 {
                format!(
                    ", {} labeled outside the head's labels",
                    test.unknown_labels
                )
            } else {
                String::new()
            }
        )
        .context("cannot write to stdout")?;
    }
    writeln!(stdout, "wrote {}", out.display()).context("cannot write to stdout")?;
    if args.config.is_none() {
        writeln!(
            stdout,
            "to use it, add to smallfirst.toml:\n[tasks.{}]\nhead = \"{}\"",
            head.task,
            out.display()
        )
        .context("cannot write to stdout")?;
    }
    Ok(())
}
