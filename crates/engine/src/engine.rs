//! `Engine`: the handle the rest of the program holds, and the types that cross its channels.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use llama_cpp_2::token::LlamaToken;
use smallfirst_inspect::{Severity, scan};
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::compiler::Compiler;
use crate::constraint::Guide;
use crate::runner::{BenchReport, Runner};
use crate::tokenizer::Tokenizer;
use crate::{
    ChatMessage, ChatTemplate, Constraint, EngineError, Recommended, SamplingDefaults,
    SamplingParams,
};

/// How to load the engine.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    pub model_path: PathBuf,
    /// Positions one sequence may use; `None` takes the model's training context, capped at
    /// 4096. The KV cache holds this many for each slot.
    pub n_ctx: Option<u32>,
    /// Compute threads; `None` takes [`default_threads`].
    pub threads: Option<usize>,
    /// Sequences decoded together, each with a KV stream of `n_ctx` positions; `None` takes
    /// [`DEFAULT_SLOTS`](crate::DEFAULT_SLOTS).
    pub slots: Option<usize>,
    /// Prompt tokens prefilled per step while other sequences decode; `None` takes
    /// [`DEFAULT_PREFILL_CHUNK`](crate::DEFAULT_PREFILL_CHUNK).
    pub prefill_chunk: Option<usize>,
    /// A file with a finding at or above this severity is not loaded; `None` takes `error`.
    pub refuse_at: Option<Severity>,
    /// Load even when the model's estimated memory is more than is available.
    pub ignore_fit: bool,
    /// Sampling defaults for this model when its file sets none (the catalog entry's, or the
    /// configuration's); see [`SamplingDefaults`].
    pub sampling: Recommended,
}

/// Cores this process may actually run on (cgroup quota and affinity included). ggml's worker
/// threads busy-wait at barriers, so more threads than cores collapses throughput.
pub fn default_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Default context when none is asked for: the training context, but no more than this.
const DEFAULT_CTX_CAP: u32 = 4096;

/// What was loaded.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// `general.architecture`, e.g. `llama`, `qwen2`.
    pub architecture: String,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    pub n_ctx: u32,
    pub n_ctx_train: u32,
    pub n_vocab: usize,
    pub n_params: u64,
    pub size_bytes: u64,
    pub threads: usize,
    /// Sequences decoded together.
    pub slots: usize,
    /// What a request that leaves a sampling parameter out gets.
    pub sampling: SamplingDefaults,
}

/// One completion to run.
#[derive(Debug, Clone, Default)]
pub struct GenerateParams {
    /// Most tokens to generate; `None` fills the context.
    pub max_tokens: Option<u32>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// `Some(n)`: report each token's log-probability and the `n` most likely alternatives.
    pub logprobs: Option<usize>,
    /// A grammar the answer must follow (JSON schema, tool calls, a choice of labels).
    pub constraint: Option<Constraint>,
    /// Record, for each sampled token, its probability and the runner-up's ([`Done::trace`]).
    pub confidence: bool,
    /// Keep the KV cache of the tokens an earlier request left that this prompt starts with,
    /// and prefill only the rest ([`Done::reused_tokens`]).
    pub prefix_reuse: bool,
    /// Never sample an end-of-generation token: generate `max_tokens` (benchmarks). Without
    /// effect on a constrained answer, which ends with its grammar.
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of turn, or a stop string.
    Stop,
    /// `max_tokens` or the context ran out.
    Length,
}

/// One generated token's log-probability and its most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(Vec<u8>, f32)>,
}

/// Text released by the stream, with the log-probabilities of the tokens it came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delta {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub finish: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// With [`GenerateParams::confidence`]: one entry per sampled token, in order.
    pub trace: Vec<StepProb>,
    /// Prompt tokens whose KV cache was kept from an earlier request, not prefilled again.
    pub reused_tokens: u32,
}

/// One sampled token under the model's own distribution (raw logits, before penalties and
/// temperature), renormalized over the tokens the constraint allowed at that step. Tokens the
/// constraint forced are not sampled and have no entry: given the constraint they were certain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProb {
    /// Where the token's text starts in the generated text, in bytes.
    pub offset: u32,
    /// The chosen token's probability.
    pub p: f32,
    /// The most likely other allowed token's probability (0 when none was allowed).
    pub runner_up: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Delta(Delta),
    Done(Done),
    /// Generation failed after it had started.
    Failed(String),
    /// The answer's grammar could not go on (the request's format is too complex at the point
    /// the answer reached); the request's fault, not the engine's.
    FormatFailed(String),
}

/// A started generation: the prompt was accepted; events follow.
pub struct Generation {
    pub prompt_tokens: u32,
    pub events: tmpsc::UnboundedReceiver<Event>,
}

/// A rendered prompt's tokens, or, for a prompt plainly longer than the context, a count it
/// is longer than.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub(crate) tokens: Result<Vec<LlamaToken>, usize>,
}

/// How an embedding is read from the last hidden states of its input's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// The model's declared pooling (`{arch}.pooling_type`), else the mean.
    Model,
    Mean,
    /// The last token's state: for a causal model, the only one that has read the whole input.
    Last,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Model => "model",
            Pooling::Mean => "mean",
            Pooling::Last => "last",
        }
    }

    pub fn parse(s: &str) -> Option<Pooling> {
        match s {
            "model" => Some(Pooling::Model),
            "mean" => Some(Pooling::Mean),
            "last" => Some(Pooling::Last),
            _ => None,
        }
    }
}

impl Prompt {
    /// Its first `n` tokens, when it fits (one that does not stays as it is).
    pub fn truncate(&mut self, n: usize) {
        if let Ok(t) = &mut self.tokens {
            t.truncate(n);
        }
    }

    /// The prompt's tokens; at least this many when it does not [`fit`](Self::fits).
    pub fn len(&self) -> usize {
        match &self.tokens {
            Ok(t) => t.len(),
            Err(at_least) => *at_least,
        }
    }

    /// Whether it has no tokens at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it fits in the context (and was tokenized whole).
    pub fn fits(&self) -> bool {
        self.tokens.is_ok()
    }
}

/// What the engine thread is doing, read from any thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Load {
    /// Sequences holding a slot (prefilling or decoding).
    pub running: usize,
    /// Requests waiting for a slot.
    pub waiting: usize,
    /// Tokens generated since the engine started.
    pub generated_tokens: u64,
}

/// The engine thread's side of [`Load`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    pub generated_tokens: AtomicU64,
}

pub(crate) enum Job {
    Generate {
        /// The prompt, tokenized by the caller.
        tokens: Vec<LlamaToken>,
        params: Box<GenerateParams>,
        /// The grammar state, compiled before the job was queued.
        guide: Option<Box<Guide>>,
        started: oneshot::Sender<Result<u32, EngineError>>,
        events: tmpsc::UnboundedSender<Event>,
        /// The choices of one request share a group ([`Engine::generate_n`]).
        group: Option<u64>,
    },
    Embed {
        inputs: Vec<Vec<LlamaToken>>,
        pooling: Pooling,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
    },
    Score {
        prompt: Vec<LlamaToken>,
        options: Vec<Vec<LlamaToken>>,
        reply: oneshot::Sender<Result<Vec<f64>, EngineError>>,
    },
    Bench {
        n_prompt: u32,
        n_gen: u32,
        reps: u32,
        reply: oneshot::Sender<Result<BenchReport, EngineError>>,
    },
}

/// A handle to the engine thread; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// `None` only while dropping.
    pub(crate) jobs: Option<mpsc::Sender<Job>>,
    /// The engine thread, joined when the last handle goes: a process that exits while it is
    /// still decoding would tear llama.cpp down under it.
    thread: Option<thread::JoinHandle<()>>,
    pub(crate) info: ModelInfo,
    template: ChatTemplate,
    /// Prompts are tokenized on the caller's thread, never queued behind generation.
    pub(crate) tokenizer: Arc<Tokenizer>,
    counters: Arc<Counters>,
    /// Compiles grammars on a thread of its own.
    compiler: Compiler,
}

impl Engine {
    /// Loads the model on a new engine thread and waits until it is ready.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        if !config.model_path.is_file() {
            return Err(EngineError::ModelMissing {
                path: config.model_path,
            });
        }
        let gguf = check_file(&config)?;
        crate::fit::check(&config, &gguf)?;
        let sampling = SamplingDefaults::resolve(Recommended::from_gguf(&gguf), config.sampling);
        let (jobs, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let counters = Arc::new(Counters::default());
        let theirs = Arc::clone(&counters);
        let thread = thread::Builder::new()
            .name("smallfirst-engine".into())
            .spawn(move || Runner::run(config, ready_tx, rx, theirs))
            .map_err(|e| EngineError::Load {
                path: PathBuf::new(),
                reason: format!("cannot spawn the engine thread: {e}"),
            })?;
        let (mut info, template, model) = ready_rx.recv().map_err(|_| EngineError::Stopped)??;
        info.sampling = sampling;
        tracing::debug!(?sampling, "sampling defaults");
        let compiler = Compiler::start(Arc::clone(&model))?;
        let tokenizer = Arc::new(Tokenizer::new(model));
        Ok(Engine {
            inner: Arc::new(Inner {
                jobs: Some(jobs),
                thread: Some(thread),
                info,
                template,
                tokenizer,
                counters,
                compiler,
            }),
        })
    }

    /// Sequences running and waiting, and tokens generated so far.
    pub fn load(&self) -> Load {
        let c = &self.inner.counters;
        Load {
            running: c.running.load(Ordering::Relaxed),
            waiting: c.waiting.load(Ordering::Relaxed),
            generated_tokens: c.generated_tokens.load(Ordering::Relaxed),
        }
    }

    /// The tokens `prompt` (already rendered) takes, counted on the caller's thread.
    pub fn count_tokens(&self, prompt: &str) -> usize {
        self.inner.tokenizer.tokenize(prompt).len()
    }

    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.inner.template
    }

    /// Renders `messages` with the model's chat template.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        self.inner.template.render(messages, &[])
    }

    /// Renders `messages` with `tools` (OpenAI tool objects) described to the model.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
    ) -> Result<String, EngineError> {
        self.inner.template.render(messages, tools)
    }

    /// `prompt` (already rendered) tokenized off the async runtime's threads, once: counted
    /// for routing, then generated from ([`generate_prompt`](Self::generate_prompt)). A prompt
    /// plainly longer than the context is not tokenized whole ([`Prompt::fits`]).
    pub async fn tokenize(&self, prompt: String) -> Result<Prompt, EngineError> {
        let tokenizer = Arc::clone(&self.inner.tokenizer);
        let n_ctx = self.inner.info.n_ctx;
        tokio::task::spawn_blocking(move || {
            let tokens = tokenizer.tokenize_within(&prompt, n_ctx as usize);
            tracing::debug!(prompt, ?tokens, "tokenized");
            Prompt { tokens }
        })
        .await
        .map_err(|_| EngineError::Stopped)
    }

    /// Plain text as a prompt, no chat template: special-token texts in it stay text, so a
    /// client's text cannot forge the model's control tokens. BOS is added when the model
    /// adds one.
    pub async fn tokenize_text(&self, text: String) -> Result<Prompt, EngineError> {
        let tokenizer = Arc::clone(&self.inner.tokenizer);
        let n_ctx = self.inner.info.n_ctx as usize;
        tokio::task::spawn_blocking(move || within(tokenizer.tokenize_text(&text, true), n_ctx))
            .await
            .map_err(|_| EngineError::Stopped)
    }

    /// Whether the model has fill-in-the-middle tokens ([`fim_prompt`](Self::fim_prompt)).
    pub fn has_fim(&self) -> bool {
        self.inner.tokenizer.fim().is_some()
    }

    /// A fill-in-the-middle prompt: `prefix` and `suffix` around the model's FIM tokens, in
    /// prefix–suffix–middle order (as llama.cpp's `/infill` and Qwen2.5-Coder lay them out),
    /// for the model to generate the middle. Long code is cut to the part nearest the cursor:
    /// up to half the context (at most 2,048 tokens), a quarter of it after the cursor and the
    /// rest before, as llama.cpp's `/infill` does. `None` when the model has no FIM tokens.
    pub async fn fim_prompt(
        &self,
        prefix: String,
        suffix: String,
    ) -> Result<Option<Prompt>, EngineError> {
        let Some([pre, suf, mid]) = self.inner.tokenizer.fim() else {
            return Ok(None);
        };
        let tokenizer = Arc::clone(&self.inner.tokenizer);
        let n_ctx = self.inner.info.n_ctx as usize;
        tokio::task::spawn_blocking(move || {
            // As llama.cpp's `/infill` with its default batch: the code nearest the cursor,
            // at most three quarters of the budget before it and a quarter after, the budget
            // half the context (at most 2,048 tokens), so the middle always has room.
            let budget = (n_ctx / 2).min(FIM_BUDGET);
            let before = tokenizer.tokenize_text(&prefix, false);
            let after = tokenizer.tokenize_text(&suffix, false);
            let after = &after[..after.len().min(budget / 4)];
            let before = &before[before.len().saturating_sub(budget - after.len())..];
            let mut tokens = tokenizer.tokenize_text("", true);
            tokens.push(pre);
            tokens.extend_from_slice(before);
            tokens.push(suf);
            tokens.extend_from_slice(after);
            tokens.push(mid);
            Some(within(tokens, n_ctx))
        })
        .await
        .map_err(|_| EngineError::Stopped)
    }

    /// Token ids as a prompt, as given; `None` when one is not in the vocabulary.
    pub fn token_prompt(&self, ids: &[u32]) -> Option<Prompt> {
        let n_vocab = self.inner.info.n_vocab;
        let tokens = ids
            .iter()
            .map(|&id| ((id as usize) < n_vocab).then_some(LlamaToken(id as i32)))
            .collect::<Option<Vec<_>>>()?;
        Some(within(tokens, self.inner.info.n_ctx as usize))
    }

    /// Queues a completion of `prompt` (already rendered), tokenizing it first.
    pub async fn generate(
        &self,
        prompt: String,
        params: GenerateParams,
    ) -> Result<Generation, EngineError> {
        let prompt = self.tokenize(prompt).await?;
        self.generate_prompt(prompt, params).await
    }

    /// Queues a completion of a tokenized prompt. Returns once the engine has given it a slot,
    /// so a prompt that does not fit is an error here, not an event. Events are never held
    /// back for a slow reader (the engine does not wait on one client); at most `max_tokens`
    /// of them are buffered. Dropping the receiver ends the sequence at the next step and
    /// frees its slot.
    pub async fn generate_prompt(
        &self,
        prompt: Prompt,
        params: GenerateParams,
    ) -> Result<Generation, EngineError> {
        let mut all = self.generate_n(prompt, params, 1).await?;
        all.pop().ok_or(EngineError::Stopped)
    }

    /// `n` completions of one prompt (OpenAI's `n`), decoded together: the first prefills the
    /// prompt, the others start once it is in the KV cache and copy it, so the prompt is
    /// prefilled once. With a seed, choice `i` samples with seed + `i`: the choices differ,
    /// and the same request gives the same choices again.
    pub async fn generate_n(
        &self,
        prompt: Prompt,
        params: GenerateParams,
        n: usize,
    ) -> Result<Vec<Generation>, EngineError> {
        static GROUPS: AtomicU64 = AtomicU64::new(0);
        // Compiled here, not on the engine thread: running streams never wait on a compile.
        let n = n.max(1);
        let mut guides = Vec::with_capacity(n);
        for _ in 0..n {
            guides.push(match &params.constraint {
                Some(c) => Some(Box::new(self.inner.compiler.guide(c).await?)),
                None => None,
            });
        }
        let n_ctx = self.inner.info.n_ctx;
        let tokens = prompt
            .tokens
            .map_err(|at_least| EngineError::ContextLength {
                n_ctx,
                prompt_tokens: at_least.min(u32::MAX as usize) as u32,
                at_least: true,
                requested: params.max_tokens,
            })?;
        let group = (n > 1).then(|| GROUPS.fetch_add(1, Ordering::Relaxed));
        let jobs = self.inner.jobs.as_ref().ok_or(EngineError::Stopped)?;
        let mut pending = Vec::with_capacity(n);
        for (i, guide) in guides.into_iter().enumerate() {
            let mut params = params.clone();
            params.sampling.seed = params.sampling.seed.map(|s| s.wrapping_add(i as u64));
            let (events_tx, events) = tmpsc::unbounded_channel();
            let (started_tx, started) = oneshot::channel();
            jobs.send(Job::Generate {
                tokens: tokens.clone(),
                params: Box::new(params),
                guide,
                started: started_tx,
                events: events_tx,
                group,
            })
            .map_err(|_| EngineError::Stopped)?;
            pending.push((started, events));
        }
        let mut out = Vec::with_capacity(n);
        for (started, events) in pending {
            let prompt_tokens = started.await.map_err(|_| EngineError::Stopped)??;
            out.push(Generation {
                prompt_tokens,
                events,
            });
        }
        Ok(out)
    }

    /// Pooled embeddings of `inputs` (prompts from [`tokenize_text`](Self::tokenize_text) or
    /// [`token_prompt`](Self::token_prompt)), one unit-length vector each: the model's declared
    /// pooling, else the mean of its last hidden states. Run on the engine thread between
    /// generation steps, on a second context of the same loaded model; each input may be up to
    /// [`embedding_ctx`](Self::embedding_ctx) tokens.
    pub async fn embed(&self, inputs: Vec<Prompt>) -> Result<Vec<Vec<f32>>, EngineError> {
        self.embed_pooled(inputs, Pooling::Model).await
    }

    /// [`embed`](Self::embed) with the hidden states pooled as `pooling` says.
    pub async fn embed_pooled(
        &self,
        inputs: Vec<Prompt>,
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let n_ctx = self.embedding_ctx();
        let inputs = inputs
            .into_iter()
            .map(|p| {
                p.tokens.map_err(|at_least| EngineError::ContextLength {
                    n_ctx,
                    prompt_tokens: at_least.min(u32::MAX as usize) as u32,
                    at_least: true,
                    requested: None,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // One job per batch's worth (one decode), so that generation steps run between them.
        let mut out = Vec::with_capacity(inputs.len());
        let mut rest = &inputs[..];
        while !rest.is_empty() {
            let mut n = 0;
            let mut tokens = 0;
            while n < rest.len()
                && n < crate::runner::EMBED_SEQS as usize
                && (n == 0 || tokens + rest[n].len() <= crate::runner::EMBED_CTX as usize)
            {
                tokens += rest[n].len();
                n += 1;
            }
            let (group, later) = rest.split_at(n);
            rest = later;
            let (reply, rx) = oneshot::channel();
            self.inner
                .jobs
                .as_ref()
                .ok_or(EngineError::Stopped)?
                .send(Job::Embed {
                    inputs: group.to_vec(),
                    pooling,
                    reply,
                })
                .map_err(|_| EngineError::Stopped)?;
            out.extend(rx.await.map_err(|_| EngineError::Stopped)??);
        }
        Ok(out)
    }

    /// The most tokens one embedding input may have.
    pub fn embedding_ctx(&self) -> u32 {
        // A prompt fits the engine's context with room for one token more (`Prompt::fits`).
        crate::runner::EMBED_CTX.min(self.inner.info.n_ctx.saturating_sub(1).max(1))
    }

    /// Measures prompt and decode speed the way `llama-bench` does (pp then tg, `reps` times
    /// after one warm-up), through this engine's own decode and sampling path.
    pub async fn bench(
        &self,
        n_prompt: u32,
        n_gen: u32,
        reps: u32,
    ) -> Result<BenchReport, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .jobs
            .as_ref()
            .ok_or(EngineError::Stopped)?
            .send(Job::Bench {
                n_prompt,
                n_gen,
                reps,
                reply,
            })
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No more jobs: the thread ends once the sequences in hand are over (one whose client
        // is gone stops at its next step).
        self.jobs = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the engine thread panicked");
        }
    }
}

/// Runs the GGUF checks (safe Rust) before llama.cpp's own parser reads the file.
fn check_file(config: &EngineConfig) -> Result<smallfirst_inspect::gguf::Gguf, EngineError> {
    let report = scan::check_gguf(&config.model_path).map_err(|e| EngineError::Load {
        path: config.model_path.clone(),
        reason: e.to_string(),
    })?;
    let threshold = config.refuse_at.unwrap_or(Severity::Error);
    let refused: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity >= threshold)
        .map(|f| format!("{} {}: {}", f.severity, f.rule, f.message))
        .collect();
    if refused.is_empty() && report.complete {
        return Ok(report.gguf);
    }
    let mut findings = refused
        .iter()
        .take(3)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if refused.len() > 3 {
        findings.push_str(&format!(" (and {} more)", refused.len() - 3));
    }
    if findings.is_empty() {
        findings = "its header could not be read to the end".into();
    }
    Err(EngineError::Unsafe {
        path: config.model_path.clone(),
        findings,
    })
}

/// The most tokens of code a fill-in-the-middle prompt keeps around the cursor.
const FIM_BUDGET: usize = 2048;

/// `tokens` as a prompt, or its length when it leaves no room in a context of `n_ctx`.
fn within(tokens: Vec<LlamaToken>, n_ctx: usize) -> Prompt {
    let tokens = if tokens.len() >= n_ctx {
        Err(tokens.len())
    } else {
        Ok(tokens)
    };
    Prompt { tokens }
}

/// Context size to create: what was asked, else the training context up to a cap.
pub(crate) fn context_size(asked: Option<u32>, n_ctx_train: u32) -> u32 {
    match asked {
        Some(n) => n.max(16),
        None if n_ctx_train == 0 => DEFAULT_CTX_CAP,
        None => n_ctx_train.min(DEFAULT_CTX_CAP),
    }
}
