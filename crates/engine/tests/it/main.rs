//! Engine tests on the real SmolLM2-135M model.
//!
//! The model comes from `SMALLFIRST_TEST_MODEL`, else the default cache path; the test
//! command (`scripts/test.sh`) pulls it first.

use std::path::PathBuf;
use std::sync::OnceLock;

use smallfirst_engine::{
    ChatMessage, Done, Engine, EngineConfig, EngineError, Event, FinishReason, GenerateParams,
    SamplingParams, TokenLogprob,
};

mod batching;
mod constrained;
mod endpoints;
mod generate;
mod limits;
mod score;

pub fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SMALLFIRST_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("SMALLFIRST_MODELS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("smallfirst/models"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/smallfirst/models"))
        })
        .expect("set SMALLFIRST_TEST_MODEL or HOME");
    let path = base.join("smollm2-135m-instruct.gguf");
    assert!(
        path.is_file(),
        "test model missing at {}: run `smallfirst pull smollm2-135m-instruct` or set SMALLFIRST_TEST_MODEL",
        path.display()
    );
    path
}

/// One engine shared by the tests of this binary (loading it once keeps them fast).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::start(EngineConfig {
            model_path: model_path(),
            n_ctx: Some(2048),
            threads: Some(2),
            ..EngineConfig::default()
        })
        .expect("model loads")
    })
}

pub fn prompt(engine: &Engine, user: &str) -> String {
    engine
        .render(&[ChatMessage::new("user", user)])
        .expect("template renders")
}

pub struct Output {
    pub text: String,
    pub deltas: Vec<String>,
    pub logprobs: Vec<TokenLogprob>,
    pub done: Done,
    pub prompt_tokens: u32,
}

pub async fn run(
    engine: &Engine,
    user: &str,
    params: GenerateParams,
) -> Result<Output, EngineError> {
    let mut g = engine.generate(prompt(engine, user), params).await?;
    let mut out = Output {
        text: String::new(),
        deltas: Vec::new(),
        logprobs: Vec::new(),
        done: Done {
            finish: FinishReason::Stop,
            prompt_tokens: 0,
            completion_tokens: 0,
            trace: Vec::new(),
            reused_tokens: 0,
        },
        prompt_tokens: g.prompt_tokens,
    };
    while let Some(event) = g.events.recv().await {
        match event {
            Event::Delta(d) => {
                out.text.push_str(&d.text);
                out.deltas.push(d.text);
                out.logprobs.extend(d.logprobs);
            }
            Event::Done(done) => {
                out.done = done;
                return Ok(out);
            }
            Event::Failed(reason) | Event::FormatFailed(reason) => {
                panic!("generation failed: {reason}")
            }
        }
    }
    panic!("event stream ended without Done");
}

/// A rendered prompt's answer text and the prompt tokens kept from the cache.
pub async fn text_and_reuse(e: &Engine, prompt: String, params: GenerateParams) -> (String, u32) {
    let mut g = e.generate(prompt, params).await.expect("starts");
    let mut text = String::new();
    while let Some(ev) = g.events.recv().await {
        match ev {
            Event::Delta(d) => text.push_str(&d.text),
            Event::Done(done) => return (text, done.reused_tokens),
            Event::Failed(r) | Event::FormatFailed(r) => panic!("generation failed: {r}"),
        }
    }
    panic!("event stream ended without Done")
}

pub fn greedy(max_tokens: u32) -> GenerateParams {
    GenerateParams {
        max_tokens: Some(max_tokens),
        sampling: SamplingParams::greedy(),
        ..GenerateParams::default()
    }
}
