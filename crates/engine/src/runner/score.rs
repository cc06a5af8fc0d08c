//! `Engine::score`'s body on the engine thread: the log-probability of each of a few short
//! continuations of one prompt, from a third llama.cpp context on the same model (made on
//! first use, run between generation steps, like the embedding context).
//!
//! The prompt is decoded once as sequence 0 (only what differs from the last prompt scored:
//! a label set scored for a request and for its content-free twin shares the system prompt).
//! Its cells are then shared with one sequence per option (a unified KV cache copies no
//! data), and every option's tokens go in one batch, each reading the prompt and its own
//! earlier tokens.

use std::num::NonZeroU32;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::{Worker, backend};
use crate::EngineError;
use crate::logprobs::log_sum_exp;

/// Option tokens decoded in one batch. llama.cpp keeps a row of logits (n_vocab floats) for
/// each, so this bounds that buffer: 0.6 MB a row for Qwen's 152k vocabulary, ≈ 150 MB.
pub(crate) const SCORE_BATCH: u32 = 256;
/// Options scored in one batch (sequence 0 is the prompt).
pub(crate) const SCORE_SEQS: u32 = 64;
/// Positions past the prompt the options may use together in one batch.
const SCORE_ROOM: u32 = SCORE_BATCH;

pub(super) struct Scorer<'m> {
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    /// The prompt whose cells sequence 0 holds.
    cached: Vec<LlamaToken>,
    n_ctx: u32,
}

impl<'m> Worker<'m> {
    /// Each option's log-probability as the whole answer after `prompt`: the sum of its
    /// tokens' log-probabilities under the model's raw distribution, and of the answer
    /// ending there (any end-of-generation token) — so a label that is a prefix of another
    /// is not credited with the longer one's mass. `cancelled` is asked between batches.
    pub(super) fn score(
        &mut self,
        prompt: &[LlamaToken],
        options: &[Vec<LlamaToken>],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<f64>, EngineError> {
        if prompt.is_empty() || options.iter().any(Vec::is_empty) {
            return Err(EngineError::EmptyPrompt);
        }
        if self.scorer.is_none() {
            self.scorer = Some(self.scorer_context()?);
        }
        let n_vocab = self.n_vocab;
        let eog = &self.eog;
        let Some(s) = self.scorer.as_mut() else {
            return Err(EngineError::Stopped);
        };
        let longest = options.iter().map(Vec::len).max().unwrap_or(0);
        if prompt.len() + longest > s.n_ctx as usize || longest > SCORE_BATCH as usize {
            return Err(EngineError::ContextLength {
                n_ctx: s.n_ctx.saturating_sub(SCORE_ROOM),
                prompt_tokens: prompt.len().min(u32::MAX as usize) as u32,
                at_least: false,
                requested: Some(longest.min(u32::MAX as usize) as u32),
            });
        }
        let next = s.prefill(prompt)?;
        let room = (s.n_ctx as usize - prompt.len()).min(SCORE_ROOM as usize);
        let mut out = Vec::with_capacity(options.len());
        let mut start = 0;
        while start < options.len() {
            // A long label set takes several batches, each between generation steps' turns
            // on this thread: a caller that went away stops it.
            if start > 0 && cancelled() {
                return Err(EngineError::Stopped);
            }
            let mut end = start;
            let mut tokens = 0;
            while end < options.len()
                && end - start < SCORE_SEQS as usize - 1
                && tokens + options[end].len() <= room
            {
                tokens += options[end].len();
                end += 1;
            }
            out.extend(s.options(prompt.len(), &next, &options[start..end], n_vocab, eog)?);
            start = end;
        }
        Ok(out)
    }

    fn scorer_context(&self) -> Result<Scorer<'m>, EngineError> {
        let backend = backend().ok_or(EngineError::Stopped)?;
        let model: &'m llama_cpp_2::model::LlamaModel = self.model;
        let n_ctx = self.n_ctx + SCORE_ROOM;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(SCORE_BATCH)
            .with_n_ubatch(SCORE_BATCH)
            .with_n_seq_max(SCORE_SEQS)
            .with_kv_unified(true)
            .with_n_threads(self.threads as i32)
            .with_n_threads_batch(self.threads as i32);
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| EngineError::Context {
                n_ctx,
                reason: e.to_string(),
            })?;
        Ok(Scorer {
            ctx,
            batch: LlamaBatch::new(SCORE_BATCH as usize, SCORE_SEQS as i32),
            cached: Vec::new(),
            n_ctx,
        })
    }
}

impl Scorer<'_> {
    /// Decodes what of `prompt` sequence 0 does not hold yet; the log-softmax of the
    /// distribution after its last token.
    fn prefill(&mut self, prompt: &[LlamaToken]) -> Result<Vec<f32>, EngineError> {
        let decode = |e: llama_cpp_2::DecodeError| EngineError::Decode(e.to_string());
        let shared = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            // The last token is decoded again: its logits are not kept between calls.
            .min(prompt.len() - 1);
        // llama.cpp may refuse to cut a sequence part way (Ok(false)): start over then.
        let cut = self
            .ctx
            .clear_kv_cache_seq(Some(0), Some(shared as u32), None);
        if !matches!(cut, Ok(true)) {
            self.ctx.clear_kv_cache();
            return self.prefill_from(prompt, 0).map_err(decode);
        }
        self.prefill_from(prompt, shared).map_err(decode)
    }

    fn prefill_from(
        &mut self,
        prompt: &[LlamaToken],
        from: usize,
    ) -> Result<Vec<f32>, llama_cpp_2::DecodeError> {
        self.cached.clear();
        let mut at = from;
        for chunk in prompt[from..].chunks(SCORE_BATCH as usize) {
            self.batch.clear();
            for (i, &t) in chunk.iter().enumerate() {
                let last = at + i + 1 == prompt.len();
                // Batch rows are bounded by SCORE_BATCH, which the batch was made with.
                let _ = self.batch.add(t, (at + i) as i32, &[0], last);
            }
            self.ctx.decode(&mut self.batch)?;
            at += chunk.len();
        }
        self.cached = prompt.to_vec();
        let row = self.ctx.get_logits_ith(self.batch.n_tokens() - 1);
        Ok(log_softmax(row))
    }

    /// One batch of options after a prompt of `len` tokens whose next-token log-softmax is
    /// `next`; `eog` the tokens that end an answer.
    fn options(
        &mut self,
        len: usize,
        next: &[f32],
        options: &[Vec<LlamaToken>],
        n_vocab: usize,
        eog: &[u32],
    ) -> Result<Vec<f64>, EngineError> {
        let decode = |e: String| EngineError::Decode(e);
        self.batch.clear();
        let mut rows = Vec::with_capacity(options.len());
        for (i, option) in options.iter().enumerate() {
            let seq = i as i32 + 1;
            self.ctx
                .copy_kv_cache_seq(0, seq, None, None)
                .map_err(|e| decode(e.to_string()))?;
            rows.push(self.batch.n_tokens());
            for (j, &t) in option.iter().enumerate() {
                // Logits after every token predict the next one, or the end.
                self.batch
                    .add(t, (len + j) as i32, &[seq], true)
                    .map_err(|e| decode(e.to_string()))?;
            }
        }
        let decoded = self.ctx.decode(&mut self.batch);
        let mut out = Vec::with_capacity(options.len());
        if decoded.is_ok() {
            for (option, &first) in options.iter().zip(&rows) {
                let token = |t: LlamaToken| usize::try_from(t.0).ok().filter(|&i| i < n_vocab);
                let mut lp = f64::from(token(option[0]).map_or(f32::NEG_INFINITY, |i| next[i]));
                for (j, &t) in option.iter().enumerate().skip(1) {
                    let row = self.ctx.get_logits_ith(first + j as i32 - 1);
                    let t = token(t).map_or(f32::NEG_INFINITY, |i| row[i]);
                    lp += f64::from(t - log_sum_exp(row));
                }
                if !eog.is_empty() {
                    let row = self.ctx.get_logits_ith(first + option.len() as i32 - 1);
                    let ends: Vec<f32> = eog
                        .iter()
                        .filter_map(|&e| row.get(e as usize).copied())
                        .collect();
                    lp += f64::from(log_sum_exp(&ends) - log_sum_exp(row));
                }
                out.push(lp);
            }
        }
        for i in 0..options.len() {
            let _ = self.ctx.clear_kv_cache_seq(Some(i as u32 + 1), None, None);
        }
        decoded.map_err(|e| decode(e.to_string()))?;
        Ok(out)
    }
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|l| l - lse).collect()
}
