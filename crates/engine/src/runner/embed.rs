//! `Engine::embed`'s body on the engine thread: pooled, normalized embeddings from a second
//! llama.cpp context on the same model (the weights are loaded once), made on first use and
//! run between the generation steps.

use std::num::NonZeroU32;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::{Worker, backend};
use crate::{EngineError, Pooling};

/// Positions of the embedding context: the longest input, and the most tokens of one batch.
/// With embeddings on, llama.cpp keeps a row of logits for every token of a batch (n_vocab
/// floats: 0.6 MB a token for Qwen's 152k vocabulary), so this also bounds that buffer
/// (≈ 310 MB for Qwen).
pub(crate) const EMBED_CTX: u32 = 512;
/// Inputs embedded in one batch.
pub(crate) const EMBED_SEQS: u32 = 64;

pub(super) struct Embedder<'m> {
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
}

impl<'m> Worker<'m> {
    /// Each input's embedding, pooled as `pooling` says (its own context for each), L2-normalized. Inputs are packed into batches of up to
    /// [`EMBED_CTX`] tokens.
    pub(super) fn embed(
        &mut self,
        inputs: &[Vec<LlamaToken>],
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        if let Some(long) = inputs.iter().find(|t| t.len() > EMBED_CTX as usize) {
            return Err(EngineError::ContextLength {
                n_ctx: EMBED_CTX,
                prompt_tokens: long.len().min(u32::MAX as usize) as u32,
                at_least: false,
                requested: None,
            });
        }
        if inputs.iter().any(Vec::is_empty) {
            return Err(EngineError::EmptyPrompt);
        }
        if !self.embedders.iter().any(|(p, _)| *p == pooling) {
            let made = self.embedder(pooling)?;
            self.embedders.push((pooling, made));
        }
        let Some((_, e)) = self.embedders.iter_mut().find(|(p, _)| *p == pooling) else {
            return Err(EngineError::Stopped);
        };
        let mut out = Vec::with_capacity(inputs.len());
        let mut start = 0;
        while start < inputs.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < inputs.len()
                && end - start < EMBED_SEQS as usize
                && tokens + inputs[end].len() <= EMBED_CTX as usize
            {
                tokens += inputs[end].len();
                end += 1;
            }
            e.batch.clear();
            for (seq, input) in inputs[start..end].iter().enumerate() {
                for (pos, &t) in input.iter().enumerate() {
                    e.batch
                        .add(t, pos as i32, &[seq as i32], true)
                        .map_err(|err| EngineError::Decode(err.to_string()))?;
                }
            }
            e.ctx.clear_kv_cache();
            e.ctx
                .decode(&mut e.batch)
                .map_err(|err| EngineError::Decode(err.to_string()))?;
            for seq in 0..(end - start) {
                let v = e
                    .ctx
                    .embeddings_seq_ith(seq as i32)
                    .map_err(|err| EngineError::Decode(err.to_string()))?;
                out.push(normalized(v));
            }
            start = end;
        }
        e.ctx.clear_kv_cache();
        Ok(out)
    }

    fn embedder(&self, pooling: Pooling) -> Result<Embedder<'m>, EngineError> {
        let backend = backend().ok_or(EngineError::Stopped)?;
        let model: &'m llama_cpp_2::model::LlamaModel = self.model;
        let arch = self
            .model
            .meta_val_str("general.architecture")
            .unwrap_or_default();
        let declared = self
            .model
            .meta_val_str(&format!("{arch}.pooling_type"))
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .is_some_and(|p| (1..=3).contains(&p));
        let pooling = match pooling {
            Pooling::Model if declared => LlamaPoolingType::Unspecified,
            Pooling::Model | Pooling::Mean => LlamaPoolingType::Mean,
            Pooling::Last => LlamaPoolingType::Last,
        };
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(EMBED_CTX))
            .with_n_batch(EMBED_CTX)
            .with_n_ubatch(EMBED_CTX)
            .with_n_seq_max(EMBED_SEQS)
            .with_kv_unified(true)
            .with_embeddings(true)
            .with_pooling_type(pooling)
            .with_n_threads(self.threads as i32)
            .with_n_threads_batch(self.threads as i32);
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| EngineError::Context {
                n_ctx: EMBED_CTX,
                reason: e.to_string(),
            })?;
        Ok(Embedder {
            ctx,
            batch: LlamaBatch::new(EMBED_CTX as usize, EMBED_SEQS as i32),
        })
    }
}

/// `v` scaled to unit length (a zero vector stays zero).
fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}
