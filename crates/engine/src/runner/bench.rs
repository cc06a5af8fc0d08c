//! `Engine::bench`'s body on the engine thread: llama-bench's pp/tg shape, alone on the context.

use std::time::Instant;

use llama_cpp_2::token::LlamaToken;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::Worker;
use crate::{EngineError, Sampler, SamplingParams};

/// One repetition of [`Engine::bench`](crate::Engine::bench).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BenchRun {
    pub prompt_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub n_prompt: u32,
    pub n_gen: u32,
    pub threads: usize,
    pub runs: Vec<BenchRun>,
}

impl Worker<'_> {
    /// Decodes `tokens` from position 0 of sequence 0 in batches; the bench's prompt phase.
    fn prefill_alone(&mut self, tokens: &[LlamaToken]) -> Result<(), EngineError> {
        let n = tokens.len();
        for (c, chunk) in tokens.chunks(self.n_batch).enumerate() {
            self.batch.clear();
            for (j, &t) in chunk.iter().enumerate() {
                let i = c * self.n_batch + j;
                self.batch
                    .add(t, i as i32, &[0], i + 1 == n)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
            }
            self.ctx
                .decode(&mut self.batch)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
        }
        Ok(())
    }

    /// `llama-bench`'s pp/tg shape through this engine's decode and sampling path: a prompt of
    /// `n_prompt` pseudo-random tokens in one batch, then `n_gen` greedy single-token steps.
    /// Runs with no sequence in flight, and leaves every slot's cache empty.
    pub(super) fn bench(
        &mut self,
        n_prompt: u32,
        n_gen: u32,
        reps: u32,
        threads: usize,
    ) -> Result<BenchReport, EngineError> {
        if n_prompt == 0 || n_prompt.checked_add(n_gen).is_none_or(|n| n > self.n_ctx) {
            return Err(EngineError::ContextLength {
                at_least: false,
                n_ctx: self.n_ctx,
                prompt_tokens: n_prompt,
                requested: Some(n_gen),
            });
        }
        for s in &mut self.slots {
            s.cached.clear();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let vocab = self.n_vocab.max(1) as u32;
        let prompt: Vec<LlamaToken> = (0..n_prompt)
            .map(|_| LlamaToken((rng.next_u32() % vocab) as i32))
            .collect();
        let mut runs = Vec::new();
        // The first round warms caches and page-ins, as llama-bench's warm-up run does.
        for rep in 0..=reps {
            self.ctx.clear_kv_cache();
            let t = Instant::now();
            self.prefill_alone(&prompt)?;
            self.ctx.synchronize();
            let pp = t.elapsed().as_secs_f64();

            self.ctx.clear_kv_cache();
            let mut sampler = Sampler::new(SamplingParams::greedy());
            let mut token = self.model.vocab().bos();
            let t = Instant::now();
            for pos in 0..n_gen {
                self.batch.clear();
                self.batch
                    .add(token, pos as i32, &[0], true)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
                self.ctx
                    .decode(&mut self.batch)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
                token = LlamaToken(sampler.sample(self.ctx.get_logits_ith(0)) as i32);
            }
            let tg = t.elapsed().as_secs_f64();
            if rep > 0 {
                runs.push(BenchRun {
                    prompt_tokens_per_s: f64::from(n_prompt) / pp,
                    decode_tokens_per_s: f64::from(n_gen) / tg,
                });
            }
        }
        self.ctx.clear_kv_cache();
        Ok(BenchReport {
            n_prompt,
            n_gen,
            threads,
            runs,
        })
    }
}
