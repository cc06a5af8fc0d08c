//! Many sequences at once: concurrent greedy answers equal each one alone, prompts prefilled in
//! chunks answer the same, a shared system prompt is prefilled once across slots, and a client
//! that goes away frees its slot.

use std::time::Duration;

use smallfirst_engine::{ChatMessage, Engine, EngineConfig, Event, GenerateParams};

use crate::{greedy, model_path, text_and_reuse as answer};

fn engine(slots: usize, prefill_chunk: usize) -> Engine {
    Engine::start(EngineConfig {
        model_path: model_path(),
        n_ctx: Some(512),
        threads: Some(2),
        slots: Some(slots),
        prefill_chunk: Some(prefill_chunk),
        ..EngineConfig::default()
    })
    .expect("loads")
}

fn chat(e: &Engine, system: Option<&str>, user: &str) -> String {
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(ChatMessage::new("system", s));
    }
    messages.push(ChatMessage::new("user", user));
    e.render(&messages).expect("renders")
}

const QUESTIONS: [&str; 6] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Why is the sky blue?",
    "Name a famous painter.",
    "How do I boil an egg?",
];

fn cold(max_tokens: u32) -> GenerateParams {
    GenerateParams {
        prefix_reuse: false,
        ..greedy(max_tokens)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_greedy_answers_equal_each_alone() {
    // Four slots for six requests: two wait for a slot, and join the batch between steps.
    let e = engine(4, 256);
    let mut alone = Vec::new();
    for q in QUESTIONS {
        alone.push(answer(&e, chat(&e, None, q), cold(32)).await.0);
    }
    let together = futures::future::join_all(
        QUESTIONS
            .iter()
            .map(|q| answer(&e, chat(&e, None, q), cold(32))),
    )
    .await;
    for ((q, a), (t, _)) in QUESTIONS.iter().zip(&alone).zip(&together) {
        assert!(!a.is_empty(), "{q}");
        assert_eq!(a, t, "{q}: the same answer alone and batched");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_prefilled_in_small_chunks_answer_the_same() {
    // llama.cpp's CPU flash attention switches to a tiled kernel, which rounds differently, at
    // 64 query rows of one sequence; below that, where chunks end changes nothing.
    let whole = engine(2, 63);
    let chunked = engine(2, 7);
    let system = "You sort customer messages for a bank. Reply with one word. ".repeat(4);
    for q in &QUESTIONS[..3] {
        let a = answer(&whole, chat(&whole, Some(&system), q), cold(24)).await;
        let b = answer(&chunked, chat(&chunked, Some(&system), q), cold(24)).await;
        assert_eq!(a.0, b.0, "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_prompt_is_shared_across_slots_and_answers_stay_the_same() {
    let e = engine(4, 64);
    let system = "You are a support assistant for a bank. Answer in one short sentence. ".repeat(6);
    let warm = || GenerateParams {
        prefix_reuse: true,
        ..greedy(16)
    };
    // One request caches the system prompt; each question alone then starts from it.
    answer(&e, chat(&e, Some(&system), "Hello"), warm()).await;
    let mut alone = Vec::new();
    for q in &QUESTIONS[..4] {
        let (text, reused) = answer(&e, chat(&e, Some(&system), q), warm()).await;
        assert!(
            reused > 64,
            "{q}: the system prompt was kept alone ({reused})"
        );
        alone.push(text);
    }
    // Four at once start from it too, whichever slot each lands in: the slot that has it, or
    // a copy of it in another.
    let together = futures::future::join_all(
        QUESTIONS[..4]
            .iter()
            .map(|q| answer(&e, chat(&e, Some(&system), q), warm())),
    )
    .await;
    for ((q, a), (t, reused)) in QUESTIONS.iter().zip(&alone).zip(&together) {
        assert!(*reused > 64, "{q}: the system prompt was kept ({reused})");
        assert_eq!(a, t, "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_frees_its_slot() {
    let e = engine(1, 256);
    let long = chat(&e, None, "Count from 1 to 500, one number per line.");
    let mut g = e.generate(long, cold(400)).await.expect("starts");
    // A few tokens arrive, then the client goes.
    for _ in 0..3 {
        assert!(matches!(g.events.recv().await, Some(Event::Delta(_))));
    }
    drop(g);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while e.load().running > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopped_at = e.load();
    assert_eq!(stopped_at.running, 0, "the sequence ended");
    // It ended at its next step, not after the 400 tokens it was allowed.
    assert!(
        stopped_at.generated_tokens < 100,
        "{} tokens generated for nobody",
        stopped_at.generated_tokens
    );
    // The only slot serves the next request, and its four tokens are counted by the time the
    // answer is read.
    let four = GenerateParams {
        ignore_eos: true,
        ..cold(4)
    };
    let next = answer(&e, chat(&e, None, "Hi"), four).await;
    assert!(!next.0.is_empty());
    assert_eq!(e.load().generated_tokens, stopped_at.generated_tokens + 4);
}
