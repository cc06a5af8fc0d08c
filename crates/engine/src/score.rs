//! [`Engine::score`]: how likely the model finds each of a few short continuations of one
//! prompt — a label set's distribution, read in one pass instead of decoded.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::engine::Job;
use crate::{Engine, EngineError, Prompt};

impl Engine {
    /// The log-probability of each option as the continuation of `prompt`: the sum of its
    /// tokens' log-probabilities under the model's own distribution (no temperature, no
    /// penalties), the option tokenized as plain text after the prompt. The prompt is
    /// decoded once (and only what differs from the last prompt scored); the options go
    /// together, in batches of up to 63. Each option may be up to 256 tokens.
    pub async fn score(
        &self,
        prompt: Prompt,
        options: Vec<String>,
    ) -> Result<Vec<f64>, EngineError> {
        let n_ctx = self.inner.info.n_ctx;
        let prompt = prompt
            .tokens
            .map_err(|at_least| EngineError::ContextLength {
                n_ctx,
                prompt_tokens: at_least.min(u32::MAX as usize) as u32,
                at_least: true,
                requested: None,
            })?;
        let tokenizer = Arc::clone(&self.inner.tokenizer);
        let options = tokio::task::spawn_blocking(move || {
            options
                .iter()
                .map(|o| tokenizer.tokenize_text(o, false))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|_| EngineError::Stopped)?;
        if options.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.inner
            .jobs
            .as_ref()
            .ok_or(EngineError::Stopped)?
            .send(Job::Score {
                prompt,
                options,
                reply,
            })
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }
}
