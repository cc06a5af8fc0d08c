//! Texts to embeddings the way a head reads them: wrapped, tokenized as plain text (a
//! client's text cannot forge control tokens), cut to the head's token limit, pooled. Training
//! ([`embed_texts`]) and serving ([`Head::classify`]) take the same steps, so a head sees at
//! serving what it was trained on.

use smallfirst_engine::{Engine, Pooling, Prompt};

use crate::HeadError;
use crate::cache::EmbeddingCache;
use crate::head::{Head, InputSpec, Prediction, wrap};

/// Texts embedded per engine call while training: enough to fill its batches, few enough to
/// move a progress bar.
const CHUNK: usize = 128;
/// Part of every cache key: a change to how texts are embedded changes it.
const VERSION: &str = "embed/2";

/// The most tokens an input keeps: the spec's limit within the engine's embedding context.
fn keep(engine: &Engine, spec: &InputSpec) -> usize {
    spec.max_tokens.min(engine.embedding_ctx() as usize)
}

/// The wrapped input as a prompt of at most [`keep`] tokens. A longer input is cut by its own
/// text (its end, or with `keep_end` its start), so that the wrapper's end (all that last
/// pooling reads) stays; only when the wrapper alone is too long are the prompt's last tokens
/// dropped.
pub(crate) async fn prompt_for(
    engine: &Engine,
    spec: &InputSpec,
    text: &str,
) -> Result<Prompt, HeadError> {
    let n = keep(engine, spec);
    let mut text = text;
    for _ in 0..8 {
        let p = engine.tokenize_text(wrap(&spec.wrapper, text)).await?;
        if p.fits() && p.len() <= n {
            return Ok(p);
        }
        if text.is_empty() {
            break;
        }
        // Shorter in proportion, with a margin; `len` is a lower bound when it did not fit.
        let ratio = n as f64 / p.len().max(1) as f64 * 0.9;
        let mut cut = (text.len() as f64 * ratio) as usize;
        if spec.keep_end {
            let mut from = text.len() - cut.min(text.len());
            while from < text.len() && !text.is_char_boundary(from) {
                from += 1;
            }
            text = &text[from..];
            continue;
        }
        while cut > 0 && !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text = &text[..cut];
    }
    let mut p = engine.tokenize_text(wrap(&spec.wrapper, text)).await?;
    p.truncate(n);
    Ok(p)
}

async fn embed_uncached(
    engine: &Engine,
    spec: &InputSpec,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, HeadError> {
    let pooling = Pooling::parse(&spec.pooling).unwrap_or(Pooling::Mean);
    let mut prompts = Vec::with_capacity(texts.len());
    for t in texts {
        prompts.push(prompt_for(engine, spec, t).await?);
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
    let tag = format!(
        "{VERSION}/{}/{}{}",
        spec.pooling,
        keep(engine, spec),
        if spec.keep_end { "/end" } else { "" }
    );
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
        let pooling = self.pooling();
        let prompt = prompt_for(engine, &self.input, text).await?;
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
