//! `smallfirst eval SET.jsonl [--tiers local,frontier,auto]`: every row of a team's own set
//! answered on each named tier through the gateway core — the production route for the
//! request and its task, kept to that tier ([`Request::only`]), no HTTP hop — graded by the
//! row's expectation, and reported per tier: quality, schema validity, executable calls,
//! latency, tokens, cost and cost per successful task, and the local confidence's AUROC and
//! calibration error. `auto` is the cascade as configured. Results are stored beside the set
//! (`SET.results.jsonl`), so a second run answers only what is missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use smallfirst_eval::{Answer, EvalRow, Expectation, Scored, Store, TierReport};
use smallfirst_protocol::ChatCompletion;
use smallfirst_router::confidence::Estimator;
use smallfirst_router::{Config, Policy, Prices, Privacy, Tier};
use smallfirst_server::gateway::{Outcome, Reply, Request};
use smallfirst_server::{AppState, EmbeddedTier, Gateway, Limits, Options};

use super::ModelArgs;
use super::eval_report::{Figure, below, floor, judge_report, write_html, write_table};
use super::judge::{HumanGrades, Judge, JudgeArgs};
use super::train::progress;
use crate::env;

/// What `eval` and `calibrate` share: the set, the configuration, how rows are answered.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Common {
    /// A smallfirst.toml: its tiers, prices, tasks and policy [default: the embedded default
    /// model alone, as tier `local`].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Rows answered at once on each tier [default: the embedded tier's parallel slots, else
    /// 4].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Only the first N rows of the set.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Tokens an answer may take.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Where results are kept [default: SET.results.jsonl beside the set, else in the data
    /// directory when the set's folder is read-only].
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Answer every row again rather than reusing stored results.
    #[arg(long)]
    pub fresh: bool,
    #[command(flatten)]
    pub judging: JudgeArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The eval set: JSON lines, each a request and its expectation (README, "Evals").
    pub set: PathBuf,
    /// Tiers to answer on, comma-separated; `auto` is the cascade as configured
    /// [default: every tier].
    #[arg(long, value_delimiter = ',')]
    pub tiers: Vec<String>,
    /// The task every row is a request of (`[tasks.NAME]`: its labels, head, confidence).
    #[arg(long)]
    pub task: Option<String>,
    #[command(flatten)]
    pub common: Common,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML page: the table, the cascade's
    /// cost–quality curve over thresholds (the local tier and the next one named) and the
    /// local confidence's reliability diagram.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Exit 1 when a tier's figure is below a floor: `quality=0.8`, `schema_validity=0.95`,
    /// `executable_call_rate=0.9` (repeatable), so a model or prompt change can be gated in CI.
    #[arg(long, value_name = "FIGURE=MIN", value_parser = floor)]
    pub fail_below: Vec<(Figure, f64)>,
}

/// A set ready to be answered, on a gateway built from the configuration.
pub(crate) struct Evaluation {
    pub config: Config,
    pub state: AppState,
    pub rows: Vec<EvalRow>,
    pub store: Store,
    pub task: Option<String>,
    /// The embedded model file's sha256, when there is an embedded tier.
    pub model_sha256: Option<String>,
    concurrency: usize,
    max_tokens: u32,
    fresh: bool,
    /// Fingerprints of the task's head and verifier files.
    files: String,
    /// The tier grading free-text answers, and the human grades it is checked against.
    pub judge: Option<Arc<Judge>>,
    pub human: Option<HumanGrades>,
}

impl Evaluation {
    pub(crate) fn open(set: &Path, task: Option<&str>, args: &Common) -> anyhow::Result<Self> {
        let mut rows = smallfirst_eval::read_set(set)?;
        if let Some(n) = args.limit {
            rows.truncate(n);
        }
        let config = match &args.config {
            Some(p) => Config::load(p)?,
            None => Config::embedded(smallfirst_models::DEFAULT_MODEL),
        };
        if let Some(t) = task
            && !config.policy.tasks.contains_key(t)
        {
            let file = args
                .config
                .as_deref()
                .map_or("the configuration".to_string(), |p| p.display().to_string());
            anyhow::bail!(
                "task `{t}` is not configured in {file} (hint: add `[tasks.{t}]`, or leave out --task)"
            );
        }
        let mut model = args.model.clone();
        let embedded = config.embedded_tier();
        if let Some((_, e)) = embedded {
            model.model = model.model.or_else(|| Some(e.model.to_string()));
            model.threads = model.threads.or(e.threads);
            model.ctx = model.ctx.or(e.ctx);
            model.parallel = model.parallel.or(e.parallel);
        }
        let local = match embedded {
            Some((tier, _)) => {
                let (name, engine) = super::load_engine(&model)?;
                let file = args.config.as_deref();
                let heads = super::serve::heads(&config, file, &engine)?;
                let verifiers = super::serve::verifiers(&config, file, &engine, None)?;
                Some(EmbeddedTier {
                    engine,
                    model_id: name,
                    name: tier.name.clone(),
                    heads,
                    verifiers,
                    priors: Default::default(),
                })
            }
            None => None,
        };
        let model_sha256 = local
            .as_ref()
            .map(|l| super::train::model_sha256(&l.engine.info().path))
            .transpose()?;
        let files = task_files(&config, args.config.as_deref(), task);
        let slots = local.as_ref().map_or(4, |l| l.engine.info().slots);
        let samples = task
            .and_then(|t| config.policy.tasks.get(t))
            .and_then(|t| t.confidence)
            .map_or(1, |e| match e {
                Estimator::SelfConsistency { samples } => usize::from(samples),
                _ => 1,
            });
        let concurrency = args.concurrency.unwrap_or(slots).max(1);
        let window = local.as_ref().map(|l| l.engine.info().n_ctx);
        let limits = Limits {
            // Every row in flight may hold a place per sample.
            max_queue: concurrency * (samples + 1),
            slots,
            request_timeout: config.server.request_timeout,
            prefix_reuse: true,
        };
        let remotes = super::serve::remotes(&config)?;
        let state = AppState::with_tiers(
            local,
            remotes,
            Policy::new(&config, window),
            limits,
            Options::default(),
        );
        let tier_names: Vec<String> = config.tiers.iter().map(|t| t.name.clone()).collect();
        let judge = Judge::open(&args.judging, &tier_names)?.map(Arc::new);
        let human = args
            .judging
            .human
            .as_deref()
            .map(HumanGrades::read)
            .transpose()?;
        let store = Store::open(&results_path(set, args.results.as_deref())?)
            .context("cannot read the stored results")?;
        Ok(Evaluation {
            config,
            state,
            rows,
            store,
            task: task.map(str::to_string),
            model_sha256,
            concurrency,
            max_tokens: args.max_tokens,
            fresh: args.fresh,
            files,
            judge,
            human,
        })
    }

    pub(crate) fn gateway(&self) -> &Gateway {
        self.state.gateway()
    }

    /// The tiers a run may name: every configured one, then `auto`.
    pub(crate) fn tier_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.config.tiers.iter().map(|t| t.name.clone()).collect();
        names.push("auto".into());
        names
    }

    fn tier(&self, name: &str) -> Option<&Tier> {
        self.config.tiers.iter().find(|t| t.name == name)
    }

    /// What answers on `tier`: the tier (for `auto`, every tier and the policy), its model,
    /// the task's configuration and files, and the answers' length. A result of another
    /// setup is not reused.
    fn setup(&self, tier: &str) -> String {
        let mut h = Sha256::new();
        let tiers: Vec<&Tier> = if tier == "auto" {
            self.config.tiers.iter().collect()
        } else {
            self.tier(tier).into_iter().collect()
        };
        for t in tiers {
            h.update(format!("{:?}|{:?}\n", t.name, t.backend).as_bytes());
        }
        if tier == "auto" {
            h.update(format!("{:?}", self.config.policy).as_bytes());
        }
        if let Some(sha) = &self.model_sha256 {
            h.update(sha.as_bytes());
        }
        // Kept to one tier, only what shapes the answer counts: the threshold (which
        // `calibrate --write` changes) and the escalation chain do not.
        let task = self
            .task
            .as_deref()
            .and_then(|t| self.config.policy.tasks.get(t))
            .map(|t| {
                format!(
                    "{:?}|{:?}|{:?}|{:?}",
                    t.labels, t.head, t.verifier, t.confidence
                )
            });
        h.update(
            format!(
                "{:?}|{:?}|{}|{}",
                self.task, task, self.files, self.max_tokens
            )
            .as_bytes(),
        );
        // Free-text grades are the judge's: another judge or rubric is another setup.
        if let Some(j) = &self.judge {
            h.update(format!("judge|{}", j.fingerprint()).as_bytes());
        }
        format!("{tier}:{}", &hex::encode(h.finalize())[..16])
    }

    /// Every row's result on `tier`: stored ones reused (unless `--fresh`), the rest answered
    /// now and stored as they come.
    pub(crate) async fn run_tier(&mut self, tier: &str) -> anyhow::Result<Vec<Scored>> {
        let setup = self.setup(tier);
        let missing: Vec<usize> = (0..self.rows.len())
            .filter(|&i| self.fresh || self.store.get(&setup, &self.rows[i].key).is_none())
            .collect();
        if !missing.is_empty() {
            let bar = progress(missing.len(), &format!("eval {tier}"));
            // Each row is its own task, as each request is in the server: rendering,
            // tokenizing and grading run on the runtime's workers, not on this one thread.
            let answering = Arc::new(Answering {
                state: self.state.clone(),
                prices: self
                    .config
                    .tiers
                    .iter()
                    .map(|t| (t.name.clone(), t.prices))
                    .collect(),
                task: self.task.clone(),
                tier: tier.to_string(),
                setup: setup.clone(),
                max_tokens: self.max_tokens,
                judge: self.judge.clone(),
            });
            let (rows, store) = (&self.rows, &mut self.store);
            let mut stream = futures::stream::iter(missing.iter().map(|&i| {
                let (answering, row) = (Arc::clone(&answering), rows[i].clone());
                tokio::spawn(async move { answering.answer(&row).await })
            }))
            .buffer_unordered(self.concurrency);
            let mut batch = Vec::new();
            let mut stored = Vec::new();
            while let Some(s) = stream.next().await {
                let s = s.context("an eval row's task failed")?;
                bar.inc(1);
                batch.push(s);
                if batch.len() >= 32 {
                    stored.append(&mut batch);
                    store_some(store, &mut stored)?;
                }
            }
            drop(stream);
            bar.finish_and_clear();
            stored.append(&mut batch);
            store_some(store, &mut stored)?;
        }
        Ok(self
            .rows
            .iter()
            .filter_map(|r| self.store.get(&setup, &r.key).cloned())
            .collect())
    }
}

/// `results` written to the store, then emptied.
fn store_some(store: &mut Store, results: &mut Vec<Scored>) -> anyhow::Result<()> {
    let path = store.path().display().to_string();
    store
        .append(results)
        .with_context(|| format!("cannot write the results to {path}"))?;
    results.clear();
    Ok(())
}

/// `SET.results.jsonl` beside the set, or in the data directory when that folder cannot be
/// written (the set is someone else's).
fn results_path(set: &Path, given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let stem = set
        .file_stem()
        .map_or_else(|| "set".into(), |s| s.to_string_lossy().into_owned());
    let name = format!("{stem}.results.jsonl");
    let dir = set
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let beside = dir.join(&name);
    let writable = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&beside)
        .is_ok();
    if writable {
        return Ok(beside);
    }
    let canonical = std::fs::canonicalize(set).unwrap_or_else(|_| set.to_path_buf());
    let tag = &hex::encode(Sha256::digest(canonical.to_string_lossy().as_bytes()))[..12];
    let dir = env::cache_dir().join("evals");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{stem}-{tag}.results.jsonl"));
    eprintln!(
        "{} cannot be written; results are kept in {}",
        beside.display(),
        path.display()
    );
    Ok(path)
}

/// The task's head and verifier files, fingerprinted by size and time: a retrained head
/// answers differently.
fn task_files(config: &Config, file: Option<&Path>, task: Option<&str>) -> String {
    let Some(t) = task.and_then(|t| config.policy.tasks.get(t)) else {
        return String::new();
    };
    [&t.head, &t.verifier]
        .into_iter()
        .flatten()
        .map(|p| {
            let path = super::train::beside(file, p);
            let meta = std::fs::metadata(&path).ok();
            format!(
                "{}:{:?}:{:?}",
                path.display(),
                meta.as_ref().map(std::fs::Metadata::len),
                meta.and_then(|m| m.modified().ok())
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Rows answered on one tier.
struct Answering {
    state: AppState,
    /// Every tier's prices, by name.
    prices: Vec<(String, Prices)>,
    task: Option<String>,
    tier: String,
    setup: String,
    max_tokens: u32,
    judge: Option<Arc<Judge>>,
}

impl Answering {
    async fn answer(&self, row: &EvalRow) -> Scored {
        let mut body = json!({
            "model": "auto",
            "messages": row.messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
        });
        if let Some(tools) = &row.tools {
            body["tools"] = Value::Array(tools.clone());
            body["tool_choice"] = "auto".into();
        }
        if let Expectation::Label {
            labels: Some(l), ..
        } = &row.expect
        {
            body["metadata"] = json!({ "labels": l });
        }
        let mut scored = Scored {
            key: row.key.clone(),
            id: row.id.clone(),
            tier: self.tier.clone(),
            setup: self.setup.clone(),
            answered_by: None,
            escalated: false,
            grade: smallfirst_eval::Grade::default(),
            error: None,
            latency_ms: 0.0,
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            cost: 0.0,
            confidence: None,
            method: None,
            answer: String::new(),
        };
        let chat = match serde_json::from_value(body.clone()) {
            Ok(c) => c,
            Err(e) => {
                scored.error = Some(format!("the row is not a valid chat request: {e}"));
                return scored;
            }
        };
        let req = Request {
            chat,
            raw: Bytes::from(body.to_string()),
            native: None,
            privacy: Privacy::Unset,
            task: self.task.clone(),
            key: None,
            only: (self.tier != "auto").then(|| self.tier.clone()),
        };
        let started = Instant::now();
        let outcome = self.state.gateway().complete(req).await;
        let (answer, error) = read_answer(&outcome);
        scored.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        scored.answered_by.clone_from(&outcome.tier);
        scored.escalated = outcome.escalated;
        scored.confidence = outcome.confidence.map(|c| c.value);
        scored.method = outcome.confidence.map(|c| c.method.as_str().to_string());
        if let Some(u) = &outcome.usage {
            scored.prompt_tokens = u.prompt_tokens;
            scored.completion_tokens = u.completion_tokens;
            scored.cached_tokens = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
        }
        scored.cost = self.cost(outcome.tier.as_deref(), &scored);
        match (answer, error) {
            (Some(a), _) => {
                scored.grade = smallfirst_eval::grade(&row.expect, &a);
                if let Some(judge) = &self.judge {
                    match judge.grade(self.state.gateway(), row, &a.text).await {
                        Some(Ok(right)) => scored.grade.right = Some(right),
                        Some(Err(e)) => scored.error = Some(format!("judge: {e}")),
                        None => {}
                    }
                }
                scored.answer = if a.calls.is_empty() {
                    a.label.unwrap_or(a.text)
                } else {
                    serde_json::to_string(&a.calls).unwrap_or_default()
                };
            }
            (None, e) => {
                scored.error = e;
                // A row without an answer is not right (free text stays ungraded).
                if !matches!(row.expect, Expectation::FreeText { .. }) {
                    scored.grade.right = Some(false);
                }
            }
        }
        scored
    }

    /// US dollars, at the answering tier's prices per million tokens.
    fn cost(&self, tier: Option<&str>, s: &Scored) -> f64 {
        let Some(&(_, p)) = tier.and_then(|n| self.prices.iter().find(|(t, _)| t == n)) else {
            return 0.0;
        };
        p.cost(
            u64::from(s.prompt_tokens),
            u64::from(s.cached_tokens),
            u64::from(s.completion_tokens),
        )
    }
}

/// The outcome's answer, or why there is none.
pub(crate) fn read_answer(outcome: &Outcome) -> (Option<Answer>, Option<String>) {
    let completion = match &outcome.answer {
        Ok(Reply::Completion(c)) => c.as_ref().clone(),
        Ok(Reply::Json(bytes)) => match serde_json::from_slice::<ChatCompletion>(bytes) {
            Ok(c) => c,
            Err(e) => return (None, Some(format!("the tier's answer does not parse: {e}"))),
        },
        Ok(_) => {
            return (
                None,
                Some("the tier answered in a form eval does not read".into()),
            );
        }
        Err(e) => return (None, Some(e.to_string())),
    };
    let Some(choice) = completion.choices.first() else {
        return (None, Some("an answer without a choice".into()));
    };
    let calls = choice
        .message
        .tool_calls
        .iter()
        .flatten()
        .map(|c| (c.function.name.clone(), c.function.arguments.clone()))
        .collect();
    let answer = Answer {
        text: choice.message.content.clone().unwrap_or_default(),
        calls,
        label: outcome.label.as_ref().map(|l| l.label.clone()),
    };
    (Some(answer), None)
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let mut eval = Evaluation::open(&args.set, args.task.as_deref(), &args.common)?;
    let names = eval.tier_names();
    let tiers = if args.tiers.is_empty() {
        names.clone()
    } else {
        args.tiers.clone()
    };
    if let Some(bad) = tiers.iter().find(|t| !names.contains(t)) {
        anyhow::bail!("no tier is named `{bad}` (tiers: {})", names.join(", "));
    }
    let runtime = super::runtime()?;
    let started = Instant::now();
    let mut reports: Vec<TierReport> = Vec::new();
    let mut answered: Vec<Vec<Scored>> = Vec::new();
    for tier in &tiers {
        let results = runtime.block_on(eval.run_tier(tier))?;
        let refs: Vec<&Scored> = results.iter().collect();
        reports.push(smallfirst_eval::summarize(tier, &refs));
        answered.push(results);
    }
    let seconds = started.elapsed().as_secs_f64();
    let judging = judge_report(
        eval.judge.as_deref(),
        eval.human.as_ref(),
        &eval.rows,
        &tiers,
        &answered,
        args.common.judging.min_kappa,
    );
    if let Some(path) = &args.html {
        let set = args.set.display().to_string();
        write_html(
            path,
            &set,
            args.task.as_deref(),
            &eval.config,
            &tiers,
            &reports,
            &answered,
        )?;
    }
    let report = json!({
        "set": args.set, "rows": eval.rows.len(), "task": args.task,
        "set_sha256": smallfirst_eval::set_sha256(&eval.rows),
        "results": eval.store.path(), "seconds": seconds, "tiers": reports,
        "judge": judging.as_ref().map(|(v, _)| v),
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}").context("cannot write to stdout")?;
    } else {
        write_table(&mut out, &reports).context("cannot write to stdout")?;
        for line in judging.iter().flat_map(|(_, lines)| lines) {
            writeln!(out, "{line}").context("cannot write to stdout")?;
        }
        writeln!(
            out,
            "\n{} rows; results in {}",
            eval.rows.len(),
            eval.store.path().display()
        )
        .context("cannot write to stdout")?;
    }
    let failed = below(&reports, &args.fail_below);
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    Ok(())
}
