//! The engine thread: owns the llama.cpp model and context, runs one job at a time.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::constraint::{CLOSING_RESERVE, Grammars, Guide};
use crate::engine::{Job, context_size};
use crate::text::{Released, TextStream};
use crate::{
    BenchReport, BenchRun, ChatTemplate, Delta, Done, EngineConfig, EngineError, Event,
    FinishReason, GenerateParams, ModelInfo, Sampler, SamplingParams, StepProb, TokenLogprob,
    default_threads, logprobs,
};

/// llama.cpp's backend is process-global and may be initialised once.
static BACKEND: OnceLock<Option<LlamaBackend>> = OnceLock::new();

fn backend() -> Option<&'static LlamaBackend> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().ok()
        })
        .as_ref()
}

type Ready = mpsc::SyncSender<Result<(ModelInfo, ChatTemplate, Arc<LlamaModel>), EngineError>>;

pub(crate) struct Runner;

impl Runner {
    /// The engine thread's body: load, report ready, then serve jobs until every handle is gone.
    pub(crate) fn run(config: EngineConfig, ready: Ready, jobs: mpsc::Receiver<Job>) {
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
        let n_ctx = context_size(config.n_ctx, model.n_ctx_train());
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_ctx.min(2048))
            .with_n_threads(threads as i32)
            .with_n_threads_batch(threads as i32);
        let ctx = match model.new_context(backend, params) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(EngineError::Context {
                    n_ctx,
                    reason: e.to_string(),
                }));
                return;
            }
        };
        let mut worker = Worker::new(&model, ctx, n_ctx);
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
        };
        if ready
            .send(Ok((info, template, Arc::clone(&model))))
            .is_err()
        {
            return;
        }
        for job in jobs {
            match job {
                Job::Generate {
                    prompt,
                    params,
                    started,
                    events,
                } => worker.generate(&prompt, *params, started, &events),
                Job::Bench {
                    n_prompt,
                    n_gen,
                    reps,
                    reply,
                } => {
                    let _ = reply.send(worker.bench(n_prompt, n_gen, reps, threads));
                }
            }
        }
    }
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_ctx: u32,
    n_batch: usize,
    n_vocab: usize,
    bos_text: String,
    /// Built on the first constrained request, then kept for the model's lifetime.
    grammars: Option<Grammars>,
    /// The tokens whose KV is in the cache for sequence 0, in position order.
    cached: Vec<LlamaToken>,
}

/// What happened to one generated token's text.
enum Step {
    Continue,
    Stopped,
    ClientGone,
}

impl<'m> Worker<'m> {
    fn new(model: &'m LlamaModel, ctx: LlamaContext<'m>, n_ctx: u32) -> Self {
        let n_batch = ctx.n_batch() as usize;
        let vocab = model.vocab();
        let bos_text = if vocab.should_add_bos() {
            String::from_utf8_lossy(&vocab.token_to_piece(vocab.bos(), true, None)).into_owned()
        } else {
            String::new()
        };
        Worker {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch, 1),
            n_ctx,
            n_batch,
            n_vocab: model.n_vocab().max(0) as usize,
            bos_text,
            grammars: None,
            cached: Vec::new(),
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

    fn tokenize(&self, prompt: &str) -> Vec<LlamaToken> {
        // The template may already print BOS; adding a second one degrades some models.
        let add_bos = self.bos_text.is_empty() || !prompt.starts_with(&self.bos_text);
        self.model
            .vocab()
            .tokenize(prompt.as_bytes(), add_bos, true)
    }

    fn piece(&self, token: LlamaToken) -> Vec<u8> {
        self.model.vocab().token_to_piece(token, false, None)
    }

    fn generate(
        &mut self,
        prompt: &str,
        params: GenerateParams,
        started: oneshot::Sender<Result<u32, EngineError>>,
        events: &tmpsc::Sender<Event>,
    ) {
        let tokens = self.tokenize(prompt);
        let n_prompt = tokens.len() as u32;
        tracing::debug!(prompt, ?tokens, "tokenized");
        let room = self.n_ctx.saturating_sub(n_prompt);
        let refusal = if tokens.is_empty() {
            Some(EngineError::EmptyPrompt)
        } else if room == 0 || params.max_tokens.is_some_and(|m| m > room) {
            Some(EngineError::ContextLength {
                n_ctx: self.n_ctx,
                prompt_tokens: n_prompt,
                requested: params.max_tokens,
            })
        } else {
            None
        };
        let guide = match (refusal, &params.constraint) {
            (Some(e), _) => Err(e),
            (None, None) => Ok(None),
            (None, Some(c)) => self.guide(c).map(Some),
        };
        let guide = match guide {
            Ok(g) => g,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        // The caller gave up while the job waited in the queue.
        if started.send(Ok(n_prompt)).is_err() {
            return;
        }
        let max_tokens = params.max_tokens.unwrap_or(room);
        let event = match self.complete(&tokens, max_tokens, params, guide, events) {
            Ok(Some(done)) => Event::Done(done),
            Ok(None) => return,
            Err(e) => Event::Failed(e.to_string()),
        };
        let _ = events.blocking_send(event);
    }

    /// The grammar state for one constrained sequence; the token table is built on first use.
    fn guide(&mut self, constraint: &crate::Constraint) -> Result<Guide, EngineError> {
        if self.grammars.is_none() {
            let t = Instant::now();
            let grammars = Grammars::new(self.model)?;
            tracing::info!(
                elapsed_ms = t.elapsed().as_millis() as u64,
                "built the token table for constrained decoding"
            );
            self.grammars = Some(grammars);
        }
        let grammars = self
            .grammars
            .as_mut()
            .ok_or_else(|| EngineError::Grammar("no token table".into()))?;
        Ok(Guide::new(grammars.matcher(constraint)?, constraint))
    }

    /// Runs one completion; `Ok(None)` when the client went away mid-way.
    fn complete(
        &mut self,
        tokens: &[LlamaToken],
        max_tokens: u32,
        params: GenerateParams,
        mut guide: Option<Guide>,
        events: &tmpsc::Sender<Event>,
    ) -> Result<Option<Done>, EngineError> {
        // Past this many tokens left, a constrained answer closes what it has open: a quarter
        // of the budget up to CLOSING_RESERVE, but no less than half of it up to 16, so that
        // small budgets keep room to close too.
        let reserve = (max_tokens / 4)
            .min(CLOSING_RESERVE)
            .max((max_tokens / 2).min(16));
        let (mut last, reused) = self.prefill(tokens, params.prefix_reuse)?;
        let mut pos = tokens.len() as i32;
        let mut sampler = Sampler::new(params.sampling);
        let mut stream = TextStream::new(&params.stop);
        let mut held: VecDeque<(usize, TokenLogprob)> = VecDeque::new();
        let mut generated = 0u32;
        // What constrained decoding costs: time in the grammar's mask, over sampled steps.
        let mut mask_time = std::time::Duration::ZERO;
        let mut sampled = 0u32;
        let mut forced_total = 0usize;
        let mut trace = Vec::new();
        let finish = 'generate: loop {
            if generated >= max_tokens {
                break FinishReason::Length;
            }
            let logits = self.ctx.get_logits_ith(last);
            let offset = stream.pushed_bytes() as u32;
            let token = match guide.as_mut() {
                None => {
                    let token = sampler.sample(logits);
                    if params.confidence {
                        let (p, runner_up) = logprobs::choice_probs(logits, token as usize, None);
                        trace.push(StepProb {
                            offset,
                            p,
                            runner_up,
                        });
                    }
                    token
                }
                Some(g) => {
                    let closing = max_tokens - generated <= reserve && g.steers_closed();
                    let t = Instant::now();
                    let mask = g.mask()?;
                    mask_time += t.elapsed();
                    sampled += 1;
                    let allowed = |t: u32| mask.is_allowed(t);
                    let closer = self
                        .grammars
                        .as_ref()
                        .filter(|_| closing)
                        .and_then(|g| g.closers().pick(logits, &allowed));
                    let token =
                        closer.unwrap_or_else(|| sampler.sample_masked(logits, Some(allowed)));
                    if params.confidence {
                        let (p, runner_up) =
                            logprobs::choice_probs(logits, token as usize, Some(&allowed));
                        trace.push(StepProb {
                            offset,
                            p,
                            runner_up,
                        });
                    }
                    token
                }
            };
            let entry = params.logprobs.map(|n| self.logprob(logits, token, n));
            let token = LlamaToken(token as i32);
            if self.model.vocab().is_eog(token) {
                break FinishReason::Stop;
            }
            if let Some(g) = guide.as_mut() {
                g.accept(token.0 as u32)?;
            }
            sampler.accept(token.0 as u32);
            generated += 1;
            match self.emit(token, entry, &mut stream, &mut held, events) {
                Step::Continue => {}
                Step::Stopped => break FinishReason::Stop,
                Step::ClientGone => return Ok(None),
            }
            if guide.as_ref().is_some_and(Guide::is_done) {
                break FinishReason::Stop;
            }
            if pos as u32 >= self.n_ctx {
                break FinishReason::Length;
            }
            // What the grammar forces next (a key, `": "`, a closing brace) is not sampled: it
            // is tokenized as the model's tokenizer would, and decoded in the same batch.
            let room = (max_tokens - generated)
                .min(self.n_ctx.saturating_sub(pos as u32 + 1))
                .min(self.n_batch as u32 - 1) as usize;
            let forced = match guide.as_mut() {
                Some(g) if room > 0 => g.forced(|b| self.tokenize_bytes(b), room)?,
                _ => Vec::new(),
            };
            last = self.decode_step(token, &forced, pos, params.logprobs.is_some())?;
            pos += 1 + forced.len() as i32;
            forced_total += forced.len();
            for (i, &f) in forced.iter().enumerate() {
                let entry = params
                    .logprobs
                    .map(|n| self.logprob(self.ctx.get_logits_ith(i as i32), f, n));
                sampler.accept(f);
                generated += 1;
                match self.emit(LlamaToken(f as i32), entry, &mut stream, &mut held, events) {
                    Step::Continue => {}
                    Step::Stopped => break 'generate FinishReason::Stop,
                    Step::ClientGone => return Ok(None),
                }
            }
            if !forced.is_empty() && guide.as_ref().is_some_and(Guide::is_done) {
                break FinishReason::Stop;
            }
        };
        if sampled > 0 {
            tracing::debug!(
                sampled,
                forced = forced_total,
                mask_us_per_step = mask_time.as_micros() as u64 / u64::from(sampled),
                "constrained generation"
            );
        }
        if finish == FinishReason::Length || stream.pushed_bytes() > stream.released_bytes() {
            let rest = Released::Text(stream.finish());
            if let Step::ClientGone = send_released(rest, &stream, &mut held, events) {
                return Ok(None);
            }
        }
        Ok(Some(Done {
            finish,
            prompt_tokens: tokens.len() as u32,
            completion_tokens: generated,
            trace,
            reused_tokens: reused,
        }))
    }

    /// Streams one generated token's text (and log-probability) to the client.
    fn emit(
        &self,
        token: LlamaToken,
        entry: Option<TokenLogprob>,
        stream: &mut TextStream,
        held: &mut VecDeque<(usize, TokenLogprob)>,
        events: &tmpsc::Sender<Event>,
    ) -> Step {
        let bytes = self.piece(token);
        if let Some(entry) = entry {
            held.push_back((stream.pushed_bytes(), entry));
        }
        send_released(stream.push(&bytes), stream, held, events)
    }

    /// Tokens for a piece of generated text (no BOS; special tokens by name, so a forced
    /// `<tool_call>` is the vocabulary's own token where it has one).
    fn tokenize_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        self.model
            .vocab()
            .tokenize(bytes, false, true)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect()
    }

    fn logprob(&self, logits: &[f32], token: u32, n: usize) -> TokenLogprob {
        let lse = logprobs::log_sum_exp(logits);
        let top = logprobs::top_n(logits, n)
            .into_iter()
            .map(|(i, l)| (self.piece(LlamaToken(i as i32)), l - lse))
            .collect();
        TokenLogprob {
            bytes: self.piece(LlamaToken(token as i32)),
            logprob: logits
                .get(token as usize)
                .map_or(f32::NEG_INFINITY, |l| l - lse),
            top,
        }
    }

    /// Decodes the prompt from an empty cache; returns the batch index holding the logits.
    /// Prefills `tokens`; returns the batch index of the last one's logits and how many leading
    /// tokens were kept from the cache. With `reuse`, the longest prefix shared with what the
    /// cache holds is kept (at least the last token is decoded, for its logits), and the rest
    /// of the cache removed; without, the cache is cleared.
    fn prefill(&mut self, tokens: &[LlamaToken], reuse: bool) -> Result<(i32, u32), EngineError> {
        let mut keep = if reuse {
            self.cached
                .iter()
                .zip(tokens)
                .take_while(|(a, b)| a == b)
                .count()
                .min(tokens.len().saturating_sub(1))
        } else {
            0
        };
        // Whatever fails below, the cache is not trusted again.
        let cached = std::mem::take(&mut self.cached);
        if keep > 0 {
            let removed = self
                .ctx
                .clear_kv_cache_seq(Some(0), Some(keep as u32), None)
                .unwrap_or(false);
            if !removed {
                keep = 0;
            }
        }
        if keep == 0 {
            self.ctx.clear_kv_cache();
        }
        drop(cached);
        let n = tokens.len();
        let rest = &tokens[keep..];
        for (c, chunk) in rest.chunks(self.n_batch).enumerate() {
            self.batch.clear();
            let base = keep + c * self.n_batch;
            for (j, &t) in chunk.iter().enumerate() {
                let i = base + j;
                self.batch
                    .add(t, i as i32, &[0], i + 1 == n)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
            }
            self.ctx
                .decode(&mut self.batch)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
        }
        self.cached = tokens.to_vec();
        Ok((self.batch.n_tokens() - 1, keep as u32))
    }

    /// Decodes `token` at `pos` and the `forced` tokens after it in one batch; returns the batch
    /// index of the last one's logits. With `all_logits`, every position keeps its logits
    /// (log-probabilities of forced tokens need them).
    fn decode_step(
        &mut self,
        token: LlamaToken,
        forced: &[u32],
        pos: i32,
        all_logits: bool,
    ) -> Result<i32, EngineError> {
        self.batch.clear();
        let n = 1 + forced.len();
        let tokens = std::iter::once(token).chain(forced.iter().map(|&t| LlamaToken(t as i32)));
        for (i, t) in tokens.enumerate() {
            self.batch
                .add(t, pos + i as i32, &[0], all_logits || i + 1 == n)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
        }
        let decoded = self.ctx.decode(&mut self.batch);
        if decoded.is_err() || self.cached.len() != pos as usize {
            self.cached.clear();
        } else {
            self.cached.push(token);
            self.cached
                .extend(forced.iter().map(|&t| LlamaToken(t as i32)));
        }
        decoded.map_err(|e| EngineError::Decode(e.to_string()))?;
        Ok(n as i32 - 1)
    }

    /// `llama-bench`'s pp/tg shape through this engine's decode and sampling path: a prompt of
    /// `n_prompt` pseudo-random tokens in one batch, then `n_gen` greedy single-token steps.
    fn bench(
        &mut self,
        n_prompt: u32,
        n_gen: u32,
        reps: u32,
        threads: usize,
    ) -> Result<BenchReport, EngineError> {
        if n_prompt == 0 || n_prompt + n_gen > self.n_ctx {
            return Err(EngineError::ContextLength {
                n_ctx: self.n_ctx,
                prompt_tokens: n_prompt,
                requested: Some(n_gen),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let vocab = self.n_vocab.max(1) as u32;
        let prompt: Vec<LlamaToken> = (0..n_prompt)
            .map(|_| LlamaToken((rng.next_u32() % vocab) as i32))
            .collect();
        let mut runs = Vec::new();
        // The first round warms caches and page-ins, as llama-bench's warm-up run does.
        for rep in 0..=reps {
            let t = Instant::now();
            self.prefill(&prompt, false)?;
            self.ctx.synchronize();
            let pp = t.elapsed().as_secs_f64();

            self.ctx.clear_kv_cache();
            self.cached.clear();
            let mut sampler = Sampler::new(SamplingParams::greedy());
            let mut token = self.model.vocab().bos();
            let t = Instant::now();
            for pos in 0..n_gen {
                let last = self.decode_step(token, &[], pos as i32, false)?;
                token = LlamaToken(sampler.sample(self.ctx.get_logits_ith(last)) as i32);
            }
            let tg = t.elapsed().as_secs_f64();
            if rep > 0 {
                runs.push(BenchRun {
                    prompt_tokens_per_s: f64::from(n_prompt) / pp,
                    decode_tokens_per_s: f64::from(n_gen) / tg,
                });
            }
        }
        Ok(BenchReport {
            n_prompt,
            n_gen,
            threads,
            runs,
        })
    }
}

/// Sends what the text stream released, with the log-probabilities of the tokens it covers.
fn send_released(
    released: Released,
    stream: &TextStream,
    held: &mut VecDeque<(usize, TokenLogprob)>,
    events: &tmpsc::Sender<Event>,
) -> Step {
    let (text, step) = match released {
        Released::Text(t) => (t, Step::Continue),
        Released::Stopped(t) => (t, Step::Stopped),
    };
    let upto = stream.released_bytes();
    let mut logprobs = Vec::new();
    while let Some((start, entry)) = held.front() {
        let covered = *start < upto || *start + entry.bytes.len() <= upto;
        if !covered {
            break;
        }
        if let Some((_, entry)) = held.pop_front() {
            logprobs.push(entry);
        }
    }
    if matches!(step, Step::Stopped) {
        // Tokens that only made up the stop string are not part of the answer.
        held.clear();
    }
    if (!text.is_empty() || !logprobs.is_empty())
        && events
            .blocking_send(Event::Delta(Delta { text, logprobs }))
            .is_err()
    {
        return Step::ClientGone;
    }
    step
}
