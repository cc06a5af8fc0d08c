//! Task heads: a classifier trained on the embedded model's pooled embeddings of a task's
//! labeled rows, its probabilities calibrated on held-out rows, bound to the model file it was
//! trained on. A task with a head answers from one prefill of its input, without decoding, and
//! the head's probability is the confidence the cascade judges. A [`verifier`] is a head of
//! the same kind that judges a generated answer instead.

mod cache;
mod data;
mod embed;
mod head;
mod train;
pub mod verifier;

pub use cache::{EmbeddingCache, file_sha256};
pub use data::{Row, read_rows, split};
pub use embed::{Answer, embed_texts};
pub use head::{FORMAT, Head, InputSpec, MAX_LABELS, ModelBinding, Prediction, Trained, wrap};
pub use train::{Binding, Examples, FitOptions, Score, ece, fit, score};

/// What goes wrong reading, training or using a head.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("head file {path}: {message}")]
    File { path: String, message: String },
    #[error(
        "the head for task `{task}` was trained on {trained}, but the embedded model is {serving}; its embeddings mean nothing to this model (hint: retrain it with `smallfirst train {task} --data ROWS.jsonl`)"
    )]
    OtherModel {
        task: String,
        trained: String,
        serving: String,
    },
    #[error("an embedding of {embedding} dimensions for a head of {head}")]
    Dimension { head: usize, embedding: usize },
    #[error("{0}")]
    Data(String),
    #[error("fitting the head: {0}")]
    Fit(String),
    #[error("embedding cache: {0}")]
    Cache(String),
    #[error("model file: {0}")]
    Model(String),
    #[error(transparent)]
    Engine(#[from] smallfirst_engine::EngineError),
}
