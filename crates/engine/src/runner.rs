//! The engine thread: owns the llama.cpp model and context and runs every sequence in one
//! batch per step (continuous batching).
//!
//! Each step decodes, in one `llama_decode`, the pending token (and grammar-forced tokens) of
//! every running sequence, then up to one chunk of prompt tokens of the sequences still
//! prefilling, oldest first. New requests take a free slot between steps, so a long prompt never
//! holds running streams for more than one chunk, and the queue is first come, first served.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, mpsc};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::constraint::Guide;
use crate::engine::{Counters, Job, context_size};
use crate::sequence::{Cx, FORCED_PER_STEP, Outcome, Seq};
use crate::slots::{self, Slot};
use crate::{
    ChatTemplate, EngineConfig, EngineError, Event, GenerateParams, ModelInfo, SamplingDefaults,
    default_threads,
};

/// llama.cpp's backend is process-global and may be initialised once.
static BACKEND: OnceLock<Option<LlamaBackend>> = OnceLock::new();

pub(crate) fn backend() -> Option<&'static LlamaBackend> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().ok()
        })
        .as_ref()
}

type Ready = mpsc::SyncSender<Result<(ModelInfo, ChatTemplate, Arc<LlamaModel>), EngineError>>;

/// Sequences decoded together when none are asked for.
pub const DEFAULT_SLOTS: usize = 4;

/// Prompt tokens prefilled per step when no chunk size is asked for: on two cores about half a
/// second of a 0.5B model, the most a long prompt holds up running streams.
pub const DEFAULT_PREFILL_CHUNK: usize = 256;

/// The most tokens one `llama_decode` takes.
const MAX_BATCH: u32 = 2048;

mod bench;
pub use bench::{BenchReport, BenchRun};
mod embed;
mod score;
pub(crate) use embed::{EMBED_CTX, EMBED_SEQS};

pub(crate) struct Runner;

impl Runner {
    /// The engine thread's body: load, report ready, then serve jobs until every handle is gone.
    pub(crate) fn run(
        config: EngineConfig,
        ready: Ready,
        jobs: mpsc::Receiver<Job>,
        counters: Arc<Counters>,
    ) {
        let load_err = |reason: String| EngineError::Load {
            path: config.model_path.clone(),
            reason,
        };
        let Some(backend) = backend() else {
            let _ = ready.send(Err(load_err(
                "llama.cpp backend failed to initialise".into(),
            )));
            return;
        };
        // Shared with the engine's handles, which tokenize with it from other threads: the
        // model is immutable once loaded (llama-cpp-2 marks it `Send + Sync`); only the
        // context is this thread's.
        let model = match LlamaModel::load_from_file(
            backend,
            &config.model_path,
            &LlamaModelParams::default(),
        ) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                let _ = ready.send(Err(load_err(e.to_string())));
                return;
            }
        };
        let threads = config.threads.unwrap_or_else(default_threads).max(1);
        let slots = config.slots.unwrap_or(DEFAULT_SLOTS).max(1);
        let n_ctx = context_size(config.n_ctx, model.n_ctx_train());
        let chunk = config.prefill_chunk.unwrap_or(DEFAULT_PREFILL_CHUNK).max(1);
        // Each slot has a KV stream of its own (not one unified buffer): attention then runs
        // over a sequence's own tokens only, as llama-server and llama-batched-bench do.
        let Some(total) = u32::try_from(slots).ok().and_then(|s| n_ctx.checked_mul(s)) else {
            let _ = ready.send(Err(EngineError::Context {
                n_ctx,
                reason: format!("{slots} slots of {n_ctx} positions overflow a context"),
            }));
            return;
        };
        let n_batch = total.min(MAX_BATCH);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(total))
            .with_n_seq_max(slots as u32)
            .with_kv_unified(false)
            .with_n_batch(n_batch)
            .with_n_threads(threads as i32)
            .with_n_threads_batch(threads as i32);
        let ctx = match model.new_context(backend, params) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(EngineError::Context {
                    n_ctx: total,
                    reason: e.to_string(),
                }));
                return;
            }
        };
        let mut worker = Worker::new(&model, ctx, n_ctx, slots, chunk, counters, threads);
        let template = match worker.template() {
            Ok(t) => t,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let info = ModelInfo {
            path: config.model_path.clone(),
            architecture: model
                .meta_val_str("general.architecture")
                .unwrap_or_else(|_| "unknown".into()),
            name: model.meta_val_str("general.name").ok(),
            n_ctx,
            n_ctx_train: model.n_ctx_train(),
            n_vocab: worker.n_vocab,
            n_params: model.n_params(),
            size_bytes: model.size(),
            threads,
            slots,
            sampling: SamplingDefaults::default(),
        };
        if ready
            .send(Ok((info, template, Arc::clone(&model))))
            .is_err()
        {
            return;
        }
        worker.serve(&jobs, threads);
    }
}

/// A request that has its tokens and grammar and waits for a slot.
struct Waiting {
    tokens: Vec<LlamaToken>,
    group: Option<u64>,
    max_tokens: u32,
    params: GenerateParams,
    guide: Option<Guide>,
    started: oneshot::Sender<Result<u32, EngineError>>,
    events: tmpsc::UnboundedSender<Event>,
}

struct BenchJob {
    n_prompt: u32,
    n_gen: u32,
    reps: u32,
    reply: oneshot::Sender<Result<BenchReport, EngineError>>,
}

/// One row range of the batch and whose it is.
enum Rows {
    /// A running sequence's pending tokens, from this row on.
    Pending { seq: usize, first: i32 },
    /// `n` prompt tokens of a prefilling sequence; `last` is the row of the prompt's last token
    /// when this chunk ends the prompt.
    Prompt {
        seq: usize,
        n: usize,
        last: Option<i32>,
    },
}

impl Rows {
    fn seq(&self) -> usize {
        match *self {
            Rows::Pending { seq, .. } | Rows::Prompt { seq, .. } => seq,
        }
    }
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    /// Positions one sequence may use.
    n_ctx: u32,
    n_batch: usize,
    n_vocab: usize,
    /// Prompt tokens prefilled per step.
    chunk: usize,
    /// Most grammar-forced tokens per sequence and step: every sequence's fit in one batch.
    forced_cap: usize,
    /// The vocabulary's end-of-generation tokens.
    eog: Vec<u32>,
    slots: Vec<Slot>,
    /// In the order they took their slots.
    running: Vec<Seq>,
    waiting: VecDeque<Waiting>,
    benches: VecDeque<BenchJob>,
    /// Steps taken; orders slots by last use.
    clock: u64,
    counters: Arc<Counters>,
    /// Embedding contexts, one per pooling asked for, made on first use.
    embedders: Vec<(crate::Pooling, embed::Embedder<'m>)>,
    /// The context that scores continuations, made on first use.
    scorer: Option<score::Scorer<'m>>,
    threads: usize,
}

impl<'m> Worker<'m> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        n_ctx: u32,
        slots: usize,
        chunk: usize,
        counters: Arc<Counters>,
        threads: usize,
    ) -> Self {
        let n_batch = ctx.n_batch() as usize;
        let vocab = model.vocab();
        let n_vocab = model.n_vocab().max(0) as usize;
        let eog = (0..n_vocab as u32)
            .filter(|&t| vocab.is_eog(LlamaToken(t as i32)))
            .collect();
        Worker {
            model,
            ctx,
            eog,
            batch: LlamaBatch::new(n_batch, 1),
            n_ctx,
            n_batch,
            n_vocab,
            // `step` caps a chunk by what the pending tokens leave of the batch.
            chunk,
            forced_cap: (n_batch / slots).saturating_sub(1).min(FORCED_PER_STEP),
            slots: (0..slots).map(|_| Slot::default()).collect(),
            running: Vec::new(),
            waiting: VecDeque::new(),
            benches: VecDeque::new(),
            clock: 0,
            counters,
            embedders: Vec::new(),
            scorer: None,
            threads,
        }
    }

    fn template(&self) -> Result<ChatTemplate, EngineError> {
        let vocab = self.model.vocab();
        let special = |t: LlamaToken| {
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        };
        let source = self
            .model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok());
        if source.is_none() {
            tracing::warn!(
                "model has no chat template; using ChatML (<|im_start|>role ... <|im_end|>)"
            );
        }
        ChatTemplate::new(source, &special(vocab.bos()), &special(vocab.eos()))
    }

    /// Takes jobs and steps the batch until every handle is gone and the work in hand is done.
    fn serve(&mut self, jobs: &mpsc::Receiver<Job>, threads: usize) {
        let mut open = true;
        loop {
            let idle = self.running.is_empty() && self.waiting.is_empty();
            if idle && self.benches.is_empty() {
                // Nothing to step: wait for work.
                match jobs.recv() {
                    Ok(job) => self.take_guarded(job),
                    Err(_) => return,
                }
            }
            while open {
                match jobs.try_recv() {
                    Ok(job) => self.take_guarded(job),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => open = false,
                }
            }
            if !open && self.running.is_empty() && self.waiting.is_empty() {
                return;
            }
            // A benchmark runs alone: no new sequence starts while one waits.
            if !self.benches.is_empty() {
                if self.running.is_empty() {
                    while let Some(b) = self.benches.pop_front() {
                        let _ = b
                            .reply
                            .send(self.bench(b.n_prompt, b.n_gen, b.reps, threads));
                    }
                }
            } else {
                self.admit();
            }
            self.drop_gone();
            self.step_guarded();
            self.counters
                .running
                .store(self.running.len(), Ordering::Relaxed);
            self.counters
                .waiting
                .store(self.waiting.len(), Ordering::Relaxed);
        }
    }

    /// [`take`](Self::take), with a panic caught: the job's senders are dropped, so its caller
    /// gets an error, and the engine goes on with the others.
    fn take_guarded(&mut self, job: Job) {
        if catch_unwind(AssertUnwindSafe(|| self.take(job))).is_err() {
            tracing::error!("the engine panicked taking a request; it keeps serving the others");
        }
    }

    /// [`step`](Self::step), with a panic caught: the sequences of that step fail (their
    /// caches are dropped, as their state is unknown) and the engine goes on.
    fn step_guarded(&mut self) {
        if catch_unwind(AssertUnwindSafe(|| self.step())).is_ok() {
            return;
        }
        tracing::error!("the engine panicked in a step; its sequences fail, the engine goes on");
        let failed = std::mem::take(&mut self.running);
        for seq in failed {
            seq.fail(&EngineError::Decode(
                "the engine failed on this request".into(),
            ));
            self.release(seq.slot, false);
        }
        self.batch.clear();
    }

    /// Checks a request and queues it; a refusal is answered at once, whatever the queue.
    fn take(&mut self, job: Job) {
        let (tokens, params, guide, started, events, group) = match job {
            Job::Bench {
                n_prompt,
                n_gen,
                reps,
                reply,
            } => {
                self.benches.push_back(BenchJob {
                    n_prompt,
                    n_gen,
                    reps,
                    reply,
                });
                return;
            }
            Job::Embed {
                inputs,
                pooling,
                reply,
            } => {
                // A caller that gave up (its request timed out, its client left) is not served.
                if !reply.is_closed() {
                    let _ = reply.send(self.embed(&inputs, pooling));
                }
                return;
            }
            Job::Score {
                prompt,
                options,
                reply,
            } => {
                if !reply.is_closed() {
                    let scored = self.score(&prompt, &options, &|| reply.is_closed());
                    let _ = reply.send(scored);
                }
                return;
            }
            Job::Generate {
                tokens,
                params,
                guide,
                started,
                events,
                group,
            } => (tokens, *params, guide.map(|g| *g), started, events, group),
        };
        let mut params = params;
        if params.ignore_eos && params.constraint.is_none() {
            let ban = self.eog.iter().map(|&t| (t, f32::NEG_INFINITY));
            params.sampling.logit_bias.extend(ban);
        }
        let n_prompt = tokens.len() as u32;
        let room = self.n_ctx.saturating_sub(n_prompt);
        let refusal = if tokens.is_empty() {
            Some(EngineError::EmptyPrompt)
        } else if room == 0 || params.max_tokens.is_some_and(|m| m > room) {
            Some(EngineError::ContextLength {
                at_least: false,
                n_ctx: self.n_ctx,
                prompt_tokens: n_prompt,
                requested: params.max_tokens,
            })
        } else {
            None
        };
        match refusal.map_or(Ok(guide), Err) {
            Ok(guide) => self.waiting.push_back(Waiting {
                max_tokens: params.max_tokens.unwrap_or(room),
                tokens,
                group,
                params,
                guide,
                started,
                events,
            }),
            Err(e) => {
                let _ = started.send(Err(e));
            }
        }
    }

    /// Starts waiting requests in free slots, first come first served.
    fn admit(&mut self) {
        let mut i = 0;
        while let Some(w) = self.waiting.get(i) {
            if w.started.is_closed() {
                // The caller gave up while it waited.
                self.waiting.remove(i);
                continue;
            }
            // A later choice of a request waits while the first one prefills the prompt, then
            // copies it; requests behind it go ahead meanwhile.
            let group = w.group;
            let in_group = |s: &&Seq| group.is_some() && s.group == group;
            if self
                .running
                .iter()
                .filter(in_group)
                .any(|s| s.prefilled + 1 < s.tokens.len())
            {
                i += 1;
                continue;
            }
            let reuse = w.params.prefix_reuse || self.running.iter().any(|s| in_group(&s));
            let Some(p) = slots::place(&self.slots, &w.tokens, reuse) else {
                return;
            };
            let Some(w) = self.waiting.remove(i) else {
                return;
            };
            let keep = self.prepare(p);
            if w.started.send(Ok(w.tokens.len() as u32)).is_err() {
                continue;
            }
            let slot = &mut self.slots[p.slot];
            slot.busy = true;
            slot.last_used = self.clock;
            let mut seq = Seq::new(
                p.slot,
                w.tokens,
                keep,
                w.max_tokens,
                w.params,
                w.guide,
                w.events,
            );
            seq.group = w.group;
            self.running.push(seq);
        }
    }

    /// Readies a slot's stream for a placement: copies another stream in when asked, and
    /// removes what follows the kept prefix. Returns the prefix actually kept.
    fn prepare(&mut self, p: slots::Placement) -> usize {
        let seq = p.slot as u32;
        if let Some(from) = p.copy_from {
            let copied = self
                .ctx
                .copy_kv_cache_seq(from as i32, seq as i32, None, None);
            if copied.is_ok() {
                self.slots[p.slot].cached = self.slots[from].cached.clone();
            } else {
                self.slots[p.slot].cached.clear();
            }
        }
        let mut keep = p.keep.min(self.slots[p.slot].cached.len());
        if keep > 0 {
            let removed = self
                .ctx
                .clear_kv_cache_seq(Some(seq), Some(keep as u32), None)
                .unwrap_or(false);
            if !removed {
                keep = 0;
            }
        }
        if keep == 0 {
            let _ = self.ctx.clear_kv_cache_seq(Some(seq), None, None);
        }
        self.slots[p.slot].cached.truncate(keep);
        keep
    }

    /// Ends the sequences whose clients went away; their slots keep what they cached.
    fn drop_gone(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].is_gone() {
                let seq = self.running.remove(i);
                self.release(seq.slot, true);
            } else {
                i += 1;
            }
        }
    }

    /// Frees a slot; its cache is kept only when `trusted`.
    fn release(&mut self, slot: usize, trusted: bool) {
        let s = &mut self.slots[slot];
        s.busy = false;
        s.last_used = self.clock;
        if !trusted {
            s.cached.clear();
            let _ = self.ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
        }
    }

    /// One `llama_decode` over every running sequence, then each one's sampling.
    fn step(&mut self) {
        if self.running.is_empty() {
            return;
        }
        self.clock += 1;
        self.batch.clear();
        // Prompt tokens each prefilling sequence gets this step: oldest first, up to a chunk
        // beside every running sequence's pending tokens.
        let pending: usize = self
            .running
            .iter()
            .filter(|s| !s.is_prefilling())
            .map(|s| s.pending.len())
            .sum();
        let mut budget = self.chunk.min(self.n_batch.saturating_sub(pending));
        let mut prompt = vec![0usize; self.running.len()];
        for (i, s) in self.running.iter().enumerate() {
            if s.is_prefilling() {
                prompt[i] = (s.tokens.len() - s.prefilled).min(budget);
                budget -= prompt[i];
            }
        }
        // Rows go in slot order: with a KV stream per slot, llama.cpp decodes in one pass only
        // sequences whose ids follow each other in the batch.
        let mut order: Vec<usize> = (0..self.running.len()).collect();
        order.sort_unstable_by_key(|&i| self.running[i].slot);
        let mut rows = Vec::with_capacity(self.running.len());
        let mut added = 0usize;
        let add = |batch: &mut LlamaBatch, t: LlamaToken, pos: u32, seq: usize, logits: bool| {
            batch
                .add(t, pos as i32, &[seq as i32], logits)
                .map_err(|e| EngineError::Decode(e.to_string()))
        };
        let mut result = Ok(());
        for i in order {
            let s = &self.running[i];
            if !s.is_prefilling() {
                let all = s.wants_all_logits();
                let n = s.pending.len();
                for (j, &t) in s.pending.iter().enumerate() {
                    result = result.and_then(|()| {
                        add(
                            &mut self.batch,
                            t,
                            s.pos + j as u32,
                            s.slot,
                            all || j + 1 == n,
                        )
                    });
                }
                rows.push(Rows::Pending {
                    seq: i,
                    first: added as i32,
                });
                added += n;
            } else if prompt[i] > 0 {
                let n = prompt[i];
                let ends = s.prefilled + n == s.tokens.len();
                for j in 0..n {
                    let at = s.prefilled + j;
                    result = result.and_then(|()| {
                        add(
                            &mut self.batch,
                            s.tokens[at],
                            at as u32,
                            s.slot,
                            ends && j + 1 == n,
                        )
                    });
                }
                rows.push(Rows::Prompt {
                    seq: i,
                    n,
                    last: ends.then_some((added + n - 1) as i32),
                });
                added += n;
            }
        }
        if rows.is_empty() {
            return;
        }
        let result = result.and_then(|()| {
            self.ctx
                .decode(&mut self.batch)
                .map_err(|e| EngineError::Decode(e.to_string()))
        });
        let mut ended: Vec<(usize, bool)> = Vec::new();
        if let Err(e) = result {
            for r in &rows {
                let seq = &self.running[r.seq()];
                seq.fail(&e);
                ended.push((r.seq(), false));
            }
        } else {
            let cx = Cx {
                model: self.model,
                ctx: &self.ctx,
                n_ctx: self.n_ctx,
                forced_cap: self.forced_cap,
                generated: &self.counters.generated_tokens,
            };
            for r in &rows {
                let seq = &mut self.running[r.seq()];
                let slot = &mut self.slots[seq.slot];
                let outcome = match *r {
                    Rows::Pending { first, .. } => {
                        slot.cached.extend_from_slice(&seq.pending);
                        seq.pending_done(&cx, first)
                    }
                    Rows::Prompt { n, last, .. } => {
                        let from = seq.prefilled;
                        slot.cached.extend_from_slice(&seq.tokens[from..from + n]);
                        seq.prefilled += n;
                        match last {
                            Some(last) => seq.prompt_done(&cx, last),
                            None => Outcome::Running,
                        }
                    }
                };
                match outcome {
                    Outcome::Running => {}
                    Outcome::Finished | Outcome::Gone => ended.push((r.seq(), true)),
                    Outcome::Failed(e) => {
                        seq.fail(&e);
                        ended.push((r.seq(), false));
                    }
                }
            }
        }
        // Highest index first, so the others stay where they are while removing.
        ended.sort_unstable_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, trusted) in ended {
            let seq = self.running.remove(i);
            self.release(seq.slot, trusted);
        }
    }
}
