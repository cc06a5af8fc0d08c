//! Texts to embeddings the way a head reads them: wrapped, tokenized as plain text (a
//! client's text cannot forge control tokens), cut to the head's token limit, pooled. Training
//! and serving go through the same [`embed_texts`], so a head sees at serving what it was
//! trained on.

use smallfirst_engine::{Engine, Pooling};

use crate::HeadError;
use crate::cache::EmbeddingCache;
use crate::head::{Head, InputSpec, Prediction, wrap};

/// Texts embedded per engine call while training: enough to fill its batches, few enough to
/// move a progress bar.
const CHUNK: usize = 128;

/// The most tokens an input keeps: the spec's limit within the engine's embedding context.
fn keep(engine: &Engine, spec: &InputSpec) -> usize {
    spec.max_tokens.min(engine.embedding_ctx() as usize)
}

async fn embed_uncached(
    engine: &Engine,
    spec: &InputSpec,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, HeadError> {
    let pooling = Pooling::parse(&spec.pooling).unwrap_or(Pooling::Mean);
    let n = keep(engine, spec);
    let mut prompts = Vec::with_capacity(texts.len());
    for t in texts {
        let mut p = engine.tokenize_text(wrap(&spec.wrapper, t)).await?;
        p.truncate(n);
        prompts.push(p);
    }
    Ok(engine.embed_pooled(prompts, pooling).await?)
}

/// Each text's embedding, from the cache where it has one; `progress` is told how many are
/// done after each chunk.
pub async fn embed_texts(
    engine: &Engine,
    spec: &InputSpec,
    model_sha256: &str,
    texts: &[String],
    mut cache: Option<&mut EmbeddingCache>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<Vec<f32>>, HeadError> {
    let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
    // The key names the text as embedded: the wrapper, and the token cut, are part of it.
    let tag = format!("{}/{}", spec.pooling, keep(engine, spec));
    let keys: Vec<[u8; 32]> = texts
        .iter()
        .map(|t| EmbeddingCache::key(model_sha256, &tag, &wrap(&spec.wrapper, t)))
        .collect();
    if let Some(c) = cache.as_deref() {
        for (slot, key) in out.iter_mut().zip(&keys) {
            *slot = c.get(key)?;
        }
    }
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
    let mut done = texts.len() - missing.len();
    progress(done);
    for chunk in missing.chunks(CHUNK) {
        let batch: Vec<String> = chunk.iter().map(|&i| texts[i].clone()).collect();
        let vectors = embed_uncached(engine, spec, &batch).await?;
        if let Some(c) = cache.as_deref_mut() {
            c.put_all(
                chunk
                    .iter()
                    .zip(&vectors)
                    .map(|(&i, v)| (&keys[i], v.as_slice())),
            )?;
        }
        for (&i, v) in chunk.iter().zip(vectors) {
            out[i] = Some(v);
        }
        done += chunk.len();
        progress(done);
    }
    out.into_iter()
        .map(|v| v.ok_or_else(|| HeadError::Data("an input was not embedded".into())))
        .collect()
}

impl Head {
    /// One input classified: one prefill of its wrapped text, no decoding.
    pub async fn classify(&self, engine: &Engine, text: &str) -> Result<Answer, HeadError> {
        let spec = &self.input;
        let pooling = self.pooling();
        let mut prompt = engine.tokenize_text(self.wrap(text)).await?;
        prompt.truncate(keep(engine, spec));
        let tokens = prompt.len();
        let mut v = engine.embed_pooled(vec![prompt], pooling).await?;
        let v = v
            .pop()
            .ok_or_else(|| HeadError::Data("no embedding came back".into()))?;
        Ok(Answer {
            prediction: self.predict(&v)?,
            prompt_tokens: tokens,
        })
    }
}

/// A classified input.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub prediction: Prediction,
    /// Tokens embedded (after the cut).
    pub prompt_tokens: usize,
}
