//! Sampling, stop strings, log-probabilities and usage on the real model.

use smallfirst_engine::{
    ChatMessage, Engine, EngineConfig, FinishReason, GenerateParams, SamplingParams,
};

use crate::{engine, greedy, run};

#[tokio::test]
async fn greedy_is_deterministic_and_counts_tokens() {
    let a = run(engine(), "Name three colors.", greedy(24))
        .await
        .expect("runs");
    let b = run(engine(), "Name three colors.", greedy(24))
        .await
        .expect("runs");
    assert!(!a.text.trim().is_empty());
    assert_eq!(a.text, b.text);
    assert_eq!(a.done.prompt_tokens, a.prompt_tokens);
    assert!(a.done.completion_tokens >= 1 && a.done.completion_tokens <= 24);
    if a.done.finish == FinishReason::Length {
        assert_eq!(a.done.completion_tokens, 24);
    }
}

#[tokio::test]
async fn max_tokens_ends_with_length() {
    let out = run(engine(), "Write a long story about a dragon.", greedy(5))
        .await
        .expect("runs");
    assert_eq!(out.done.finish, FinishReason::Length);
    assert_eq!(out.done.completion_tokens, 5);
}

#[tokio::test]
async fn same_seed_same_text_other_seeds_differ() {
    let params = |seed| GenerateParams {
        max_tokens: Some(30),
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        ..GenerateParams::default()
    };
    let q = "Tell me something about cats.";
    let a = run(engine(), q, params(7)).await.expect("runs").text;
    let b = run(engine(), q, params(7)).await.expect("runs").text;
    assert_eq!(a, b);
    let mut others = Vec::new();
    for seed in 100..104 {
        others.push(run(engine(), q, params(seed)).await.expect("runs").text);
    }
    assert!(
        others.iter().any(|o| *o != a),
        "five seeds gave one text: {a:?}"
    );
}

#[tokio::test]
async fn stop_string_cuts_the_answer() {
    let q = "Count from 1 to 20, separated by commas.";
    let full = run(engine(), q, greedy(60)).await.expect("runs").text;
    // Stop on a piece from the middle of what the model says unprompted.
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 12, "answer too short to test: {full:?}");
    let mid = chars.len() / 2;
    let stop: String = chars[mid..mid + 3].iter().collect();
    let params = GenerateParams {
        stop: vec![stop.clone()],
        ..greedy(60)
    };
    let cut = run(engine(), q, params).await.expect("runs");
    assert_eq!(cut.done.finish, FinishReason::Stop);
    assert!(
        !cut.text.contains(&stop),
        "{:?} contains {stop:?}",
        cut.text
    );
    let expected = &full[..full.find(&stop).expect("stop is in the full text")];
    assert_eq!(cut.text, expected);
}

#[tokio::test]
async fn logprobs_cover_every_token_and_agree_with_greedy() {
    let params = GenerateParams {
        logprobs: Some(3),
        ..greedy(12)
    };
    let out = run(engine(), "Say hello.", params).await.expect("runs");
    assert_eq!(out.logprobs.len() as u32, out.done.completion_tokens);
    let bytes: Vec<u8> = out.logprobs.iter().flat_map(|l| l.bytes.clone()).collect();
    assert_eq!(String::from_utf8_lossy(&bytes), out.text);
    for lp in &out.logprobs {
        assert!(lp.logprob <= 0.0);
        assert_eq!(lp.top.len(), 3);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        // Greedy picks the most likely token.
        assert_eq!(lp.top[0].0, lp.bytes);
        assert!((lp.top[0].1 - lp.logprob).abs() < 1e-6);
        let mass: f32 = lp.top.iter().map(|t| t.1.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "top-3 mass {mass}");
    }
}

#[tokio::test]
async fn multibyte_text_streams_whole_characters() {
    let out = run(
        engine(),
        "Translate to Japanese and Chinese: good morning, thank you, tea.",
        greedy(48),
    )
    .await
    .expect("runs");
    for d in &out.deltas {
        assert!(!d.contains('\u{FFFD}'), "delta {d:?} split a character");
    }
}

#[tokio::test]
async fn a_dropped_receiver_cancels_and_the_engine_goes_on() {
    let e = engine();
    let mut g = e
        .generate(
            crate::prompt(e, "Write a very long essay about rivers."),
            greedy(2000),
        )
        .await
        .expect("starts");
    let _ = g.events.recv().await;
    drop(g);
    let out = run(e, "Say yes.", greedy(4))
        .await
        .expect("engine still serves");
    assert!(out.done.completion_tokens >= 1);
}

#[tokio::test]
async fn bench_reports_each_repetition() {
    let report = engine().bench(32, 8, 2).await.expect("benches");
    assert_eq!(report.runs.len(), 2);
    assert!(
        report
            .runs
            .iter()
            .all(|r| r.prompt_tokens_per_s > 0.0 && r.decode_tokens_per_s > 0.0)
    );
}

#[tokio::test]
async fn a_shared_prefix_is_reused_and_answers_are_the_same() {
    // An engine of its own: other tests' prompts would take the cache in between.
    let own = Engine::start(EngineConfig {
        model_path: crate::model_path(),
        n_ctx: Some(1024),
        threads: Some(1),
        ..EngineConfig::default()
    })
    .expect("loads");
    let e = &own;
    let system = "You are a support assistant for a bank. Answer in one short sentence. ".repeat(8);
    let ask = |user: &str, reuse: bool| {
        let prompt = e
            .render(&[
                ChatMessage {
                    role: "system".into(),
                    content: system.clone(),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                },
                ChatMessage {
                    role: "user".into(),
                    content: user.into(),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                },
            ])
            .expect("renders");
        let params = GenerateParams {
            prefix_reuse: reuse,
            ..greedy(16)
        };
        crate::text_and_reuse(e, prompt, params)
    };
    for user in [
        "Where is my card?",
        "How do I change my PIN?",
        "Where is my card?",
    ] {
        let (cold, reused_cold) = ask(user, false).await;
        assert_eq!(reused_cold, 0);
        let (warm_first, _) = ask(user, true).await;
        let (warm, reused) = ask(user, true).await;
        assert!(
            reused > 64,
            "the system prompt and more were kept: {reused}"
        );
        assert_eq!(cold, warm_first, "{user}");
        assert_eq!(cold, warm, "{user}: the same answer with and without reuse");
    }
}

#[tokio::test]
async fn ignore_eos_generates_max_tokens() {
    let e = crate::engine();
    let short = crate::run(e, "Reply with the word yes.", greedy(48))
        .await
        .expect("runs");
    assert!(
        short.done.completion_tokens < 48,
        "the turn ends by itself: {}",
        short.done.completion_tokens
    );
    let long = crate::run(
        e,
        "Reply with the word yes.",
        GenerateParams {
            ignore_eos: true,
            ..greedy(48)
        },
    )
    .await
    .expect("runs");
    assert_eq!(long.done.completion_tokens, 48);
    assert_eq!(long.done.finish, FinishReason::Length);
    assert!(
        long.text.starts_with(&short.text),
        "{:?} then {:?}",
        short.text,
        long.text
    );
}
