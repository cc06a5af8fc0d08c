//! One running completion: its prompt, its place in the KV cache, and what it does with the
//! logits of each step. The runner batches many of these; a sequence only ever sees its own
//! rows of the batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc as tmpsc;

use crate::constraint::Guide;
use crate::text::{Released, TextStream};
use crate::{
    Delta, Done, EngineError, Event, FinishReason, GenerateParams, Sampler, StepProb, TokenLogprob,
    logprobs,
};

/// Most tokens a grammar may force in one step; more are forced on the next.
pub(crate) const FORCED_PER_STEP: usize = 64;

/// The furthest a constrained answer's end is looked for: past this many tokens of budget
/// left, the budget is not checked (a schema whose shortest answer is longer than this is
/// cut by the budget rather than steered).
const HORIZON: u32 = 256;

/// Once the budget left is within this many tokens of the known shortest end, every sampled
/// token is checked; further away, one in [`CHECK_EVERY`] (and any that opens a structure).
const MARGIN: u32 = 32;
const CHECK_EVERY: u32 = 16;

/// The most grammar states one answer's budget checks may walk in all (each walk costs a mask
/// per token it takes): the engine thread runs them, so a schema with a long shortest answer
/// cannot make every step of every stream wait. Past it, the answer is no longer steered and,
/// if the budget cuts it, ends with `length`.
const MAX_WALKED: u32 = 4096;

/// What a sequence needs from the engine to handle its logits.
pub(crate) struct Cx<'a, 'm> {
    pub model: &'m LlamaModel,
    pub ctx: &'a LlamaContext<'m>,
    /// Positions one sequence may use.
    pub n_ctx: u32,
    /// Most tokens a grammar may force in one step, so every sequence's fit in one batch.
    pub forced_cap: usize,
    /// The engine's count of generated tokens, advanced before a token's text is sent, so a
    /// client that has read an answer sees it counted.
    pub generated: &'a AtomicU64,
}

impl Cx<'_, '_> {
    fn piece(&self, token: LlamaToken) -> Vec<u8> {
        self.model.vocab().token_to_piece(token, false, None)
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
}

/// Where a sequence stands after a step.
pub(crate) enum Outcome {
    Running,
    /// Done was sent; the slot may go.
    Finished,
    /// The client went away; nothing more is sent.
    Gone,
    Failed(EngineError),
}

pub(crate) struct Seq {
    pub slot: usize,
    /// The prompt.
    pub tokens: Vec<LlamaToken>,
    /// Prompt tokens whose KV is in the slot's stream.
    pub prefilled: usize,
    /// The position the next decoded token takes.
    pub pos: u32,
    /// Decoded in the next batch: the last sampled token, then what the grammar forced after it.
    pub pending: Vec<LlamaToken>,
    /// Choices of one request (`n` > 1) share a group: the later ones start once the first's
    /// prompt is in its KV cache, and copy it rather than prefill it again.
    pub group: Option<u64>,
    reused: u32,
    max_tokens: u32,
    /// The budget changed the answer: it ended where the model would not have ended it.
    steered: bool,
    /// Tokens the shortest end took when last measured, and the count of generated tokens
    /// then.
    end_estimate: Option<u32>,
    checked_at: Option<u32>,
    /// Grammar states the budget checks may still walk.
    walk_left: u32,
    params: GenerateParams,
    sampler: Sampler,
    stream: TextStream,
    /// Log-probabilities of tokens whose text the stream has not released yet.
    held: VecDeque<(usize, TokenLogprob)>,
    generated: u32,
    guide: Option<Guide>,
    trace: Vec<StepProb>,
    events: tmpsc::UnboundedSender<Event>,
    mask_time: Duration,
    sampled: u32,
    forced_total: usize,
}

impl Seq {
    pub(crate) fn new(
        slot: usize,
        tokens: Vec<LlamaToken>,
        reused: usize,
        max_tokens: u32,
        params: GenerateParams,
        guide: Option<Guide>,
        events: tmpsc::UnboundedSender<Event>,
    ) -> Self {
        Seq {
            slot,
            prefilled: reused,
            pos: reused as u32,
            pending: Vec::new(),
            group: None,
            reused: reused as u32,
            max_tokens,
            steered: false,
            end_estimate: None,
            checked_at: None,
            walk_left: MAX_WALKED,
            sampler: Sampler::new(params.sampling.clone()),
            stream: TextStream::new(&params.stop),
            held: VecDeque::new(),
            generated: 0,
            guide,
            trace: Vec::new(),
            events,
            mask_time: Duration::ZERO,
            sampled: 0,
            forced_total: 0,
            tokens,
            params,
        }
    }

    /// The client stopped listening.
    pub(crate) fn is_gone(&self) -> bool {
        self.events.is_closed()
    }

    pub(crate) fn is_prefilling(&self) -> bool {
        self.prefilled < self.tokens.len()
    }

    /// Every decoded token needs its logits (log-probabilities of forced tokens).
    pub(crate) fn wants_all_logits(&self) -> bool {
        self.params.logprobs.is_some()
    }

    /// The prompt's last chunk was decoded; its last token's logits are at batch row `last`.
    pub(crate) fn prompt_done(&mut self, cx: &Cx, last: i32) -> Outcome {
        self.pos = self.tokens.len() as u32;
        self.next(cx, last)
    }

    /// The pending tokens were decoded from batch row `first` on.
    pub(crate) fn pending_done(&mut self, cx: &Cx, first: i32) -> Outcome {
        let pending = std::mem::take(&mut self.pending);
        self.pos += pending.len() as u32;
        // What the grammar forced after the sampled token is part of the answer now.
        for (i, &f) in pending.iter().enumerate().skip(1) {
            let entry = self
                .params
                .logprobs
                .map(|n| cx.logprob(cx.ctx.get_logits_ith(first + i as i32 - 1), f.0 as u32, n));
            self.sampler.accept(f.0 as u32);
            self.count(cx);
            match self.emit(cx, f, entry) {
                Step::Continue => {}
                Step::Stopped => return self.finish(FinishReason::Stop),
                Step::Gone => return Outcome::Gone,
            }
        }
        if pending.len() > 1 && self.guide.as_ref().is_some_and(Guide::is_done) {
            return self.finish(FinishReason::Stop);
        }
        self.next(cx, first + pending.len() as i32 - 1)
    }

    /// Samples the next token from batch row `at` and queues it (with what the grammar forces
    /// after it) for the next step, or ends the answer.
    fn next(&mut self, cx: &Cx, at: i32) -> Outcome {
        match self.sample(cx, at) {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e),
        }
    }

    fn sample(&mut self, cx: &Cx, at: i32) -> Result<Outcome, EngineError> {
        if self.generated >= self.max_tokens {
            return Ok(self.out_of_budget());
        }
        let logits = cx.ctx.get_logits_ith(at);
        let offset = self.stream.pushed_bytes() as u32;
        let confidence = self.params.confidence;
        let left = self.max_tokens - self.generated;
        let token = match self.guide.as_mut() {
            None => {
                let token = self.sampler.sample(logits);
                if confidence {
                    let (p, runner_up) = logprobs::choice_probs(logits, token as usize, None);
                    self.trace.push(StepProb {
                        offset,
                        p,
                        runner_up,
                    });
                }
                token
            }
            Some(g) => {
                let t = Instant::now();
                let mask = g.mask()?;
                self.mask_time += t.elapsed();
                self.sampled += 1;
                let allowed = |t: u32| mask.is_allowed(t);
                let candidate = self.sampler.sample_masked(logits, Some(allowed));
                // The confidence trace is of what the model chose, before any steering.
                let probs = confidence
                    .then(|| logprobs::choice_probs(logits, candidate as usize, Some(&allowed)));
                let token = budgeted(
                    g,
                    cx,
                    candidate,
                    left,
                    &mut Budgeting {
                        estimate: &mut self.end_estimate,
                        checked_at: &mut self.checked_at,
                        generated: self.generated,
                        steered: &mut self.steered,
                        walk_left: &mut self.walk_left,
                    },
                )?;
                if let Some((p, runner_up)) = probs {
                    // A steered token was not the model's choice: certain to be a guess.
                    let (p, runner_up) = if token == candidate {
                        (p, runner_up)
                    } else {
                        (0.0, p)
                    };
                    self.trace.push(StepProb {
                        offset,
                        p,
                        runner_up,
                    });
                }
                token
            }
        };
        let entry = self.params.logprobs.map(|n| cx.logprob(logits, token, n));
        let token = LlamaToken(token as i32);
        if cx.model.vocab().is_eog(token) {
            return Ok(self.finish(FinishReason::Stop));
        }
        if let Some(g) = self.guide.as_mut() {
            g.accept(token.0 as u32)?;
        }
        self.sampler.accept(token.0 as u32);
        self.count(cx);
        match self.emit(cx, token, entry) {
            Step::Continue => {}
            Step::Stopped => return Ok(self.finish(FinishReason::Stop)),
            Step::Gone => return Ok(Outcome::Gone),
        }
        if self.guide.as_ref().is_some_and(Guide::is_done) {
            return Ok(self.finish(FinishReason::Stop));
        }
        if self.generated >= self.max_tokens {
            return Ok(self.out_of_budget());
        }
        if self.pos >= cx.n_ctx {
            return Ok(self.finish(FinishReason::Length));
        }
        // What the grammar forces next (a key, `": "`, a closing brace) is not sampled: it is
        // tokenized as the model's tokenizer would, and decoded in the same batch.
        let room = (self.max_tokens - self.generated)
            .min(cx.n_ctx.saturating_sub(self.pos + 1))
            .min(cx.forced_cap as u32) as usize;
        let forced = match self.guide.as_mut() {
            Some(g) if room > 0 => g.forced(|b| cx.tokenize_bytes(b), room)?,
            _ => Vec::new(),
        };
        self.forced_total += forced.len();
        self.pending.clear();
        self.pending.push(token);
        self.pending
            .extend(forced.into_iter().map(|t| LlamaToken(t as i32)));
        Ok(Outcome::Running)
    }

    /// The budget is spent: a structured answer the grammar could end right here is whole
    /// (`stop`); anything else was cut (`length`).
    fn out_of_budget(&mut self) -> Outcome {
        let whole = self
            .guide
            .as_mut()
            .is_some_and(|g| g.steers_closed() && g.is_accepting());
        self.finish(if whole {
            FinishReason::Stop
        } else {
            FinishReason::Length
        })
    }

    fn count(&mut self, cx: &Cx) {
        self.generated += 1;
        cx.generated.fetch_add(1, Ordering::Relaxed);
    }

    /// Streams one generated token's text (and log-probability) to the client.
    fn emit(&mut self, cx: &Cx, token: LlamaToken, entry: Option<TokenLogprob>) -> Step {
        let bytes = cx.piece(token);
        if let Some(entry) = entry {
            self.held.push_back((self.stream.pushed_bytes(), entry));
        }
        let released = self.stream.push(&bytes);
        self.send_released(released)
    }

    /// Sends the rest of the text and `Done`.
    fn finish(&mut self, finish: FinishReason) -> Outcome {
        if self.sampled > 0 {
            tracing::debug!(
                sampled = self.sampled,
                forced = self.forced_total,
                mask_us_per_step = self.mask_time.as_micros() as u64 / u64::from(self.sampled),
                "constrained generation"
            );
        }
        if finish == FinishReason::Length
            || self.stream.pushed_bytes() > self.stream.released_bytes()
        {
            let rest = Released::Text(self.stream.finish());
            if let Step::Gone = self.send_released(rest) {
                return Outcome::Gone;
            }
        }
        // An answer the budget steered to its end is whole but not what the model would have
        // written: it ends as one cut by the budget does.
        let finish = if self.steered {
            FinishReason::Length
        } else {
            finish
        };
        let done = Done {
            finish,
            prompt_tokens: self.tokens.len() as u32,
            completion_tokens: self.generated,
            trace: std::mem::take(&mut self.trace),
            reused_tokens: self.reused,
        };
        match self.events.send(Event::Done(done)) {
            Ok(()) => Outcome::Finished,
            Err(_) => Outcome::Gone,
        }
    }

    /// Tells the client generation failed (it may be gone already).
    pub(crate) fn fail(&self, e: &EngineError) {
        let event = match e {
            EngineError::Grammar(_) => Event::FormatFailed(e.to_string()),
            _ => Event::Failed(e.to_string()),
        };
        let _ = self.events.send(event);
    }

    /// Sends what the text stream released, with the log-probabilities of the tokens it covers.
    fn send_released(&mut self, released: Released) -> Step {
        let (text, step) = match released {
            Released::Text(t) => (t, Step::Continue),
            Released::Stopped(t) => (t, Step::Stopped),
        };
        let upto = self.stream.released_bytes();
        let mut logprobs = Vec::new();
        while let Some((start, entry)) = self.held.front() {
            let covered = *start < upto || *start + entry.bytes.len() <= upto;
            if !covered {
                break;
            }
            if let Some((_, entry)) = self.held.pop_front() {
                logprobs.push(entry);
            }
        }
        if matches!(step, Step::Stopped) {
            // Tokens that only made up the stop string are not part of the answer.
            self.held.clear();
        }
        if (!text.is_empty() || !logprobs.is_empty())
            && self
                .events
                .send(Event::Delta(Delta { text, logprobs }))
                .is_err()
        {
            return Step::Gone;
        }
        step
    }
}

/// A sequence's record of its budget checks.
struct Budgeting<'a> {
    estimate: &'a mut Option<u32>,
    checked_at: &'a mut Option<u32>,
    generated: u32,
    steered: &'a mut bool,
    walk_left: &'a mut u32,
}

/// The token a constrained answer takes next: the model's `candidate`, unless taking it
/// would leave the shortest way to an end longer than the `left` tokens of budget allow; then
/// the first token of the shortest way from here (and the answer counts as steered). An
/// answer that cannot end within its budget either way keeps the model's choices and is cut.
fn budgeted(
    g: &mut Guide,
    cx: &Cx,
    candidate: u32,
    left: u32,
    b: &mut Budgeting,
) -> Result<u32, EngineError> {
    if !g.steers_closed() || left > HORIZON || cx.model.vocab().is_eog(LlamaToken(candidate as i32))
    {
        return Ok(candidate);
    }
    let since = b
        .checked_at
        .map_or(u32::MAX, |at| b.generated.saturating_sub(at));
    let opens = cx
        .piece(LlamaToken(candidate as i32))
        .iter()
        .any(|c| matches!(c, b'{' | b'['));
    let due = match *b.estimate {
        None => since >= CHECK_EVERY,
        Some(est) => left <= est.saturating_add(MARGIN) || since >= CHECK_EVERY || opens,
    };
    // A check walks at most `left` states twice.
    let cost = left.saturating_mul(2);
    if !due || *b.walk_left < cost {
        return Ok(candidate);
    }
    *b.walk_left -= cost;
    *b.checked_at = Some(b.generated);
    let tokenize = |bytes: &[u8]| cx.tokenize_bytes(bytes);
    // The candidate takes one token; what follows must fit in the rest.
    if let Some(end) = g.shortest_end_after(candidate, &tokenize, left - 1)? {
        *b.estimate = Some(end.tokens);
        return Ok(candidate);
    }
    match g.shortest_end(&tokenize, left)? {
        Some(end) => match end.first {
            Some(first) => {
                *b.estimate = Some(end.tokens.saturating_sub(1));
                *b.steered |= first != candidate;
                Ok(first)
            }
            // The grammar may end here: the model chose to go on, which the budget does not
            // allow, so it ends.
            None => {
                *b.steered = true;
                Ok(cx.model.vocab().eos().0 as u32)
            }
        },
        None => {
            *b.estimate = None;
            Ok(candidate)
        }
    }
}

/// What happened to one generated token's text.
enum Step {
    Continue,
    Stopped,
    Gone,
}
