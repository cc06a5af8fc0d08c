//! What the completions, `n` and embeddings endpoints ask of the engine, on the real model.

use smallfirst_engine::{Engine, EngineConfig, Event, GenerateParams, SamplingParams};

use crate::{engine, greedy, model_path, prompt};

async fn texts_and_reuse(gens: Vec<smallfirst_engine::Generation>) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for mut g in gens {
        let mut text = String::new();
        loop {
            match g.events.recv().await.expect("events until done") {
                Event::Delta(d) => text.push_str(&d.text),
                Event::Done(done) => {
                    out.push((text, done.reused_tokens));
                    break;
                }
                Event::Failed(r) | Event::FormatFailed(r) => panic!("generation failed: {r}"),
            }
        }
    }
    out
}

#[tokio::test]
async fn greedy_choices_share_one_prefill_and_are_identical() {
    let e = engine();
    let long = format!(
        "{} Now name a colour.",
        "Colours are everywhere around us. ".repeat(20)
    );
    let p = e.tokenize(prompt(e, &long)).await.expect("tokenizes");
    let n_prompt = p.len() as u32;
    let out = texts_and_reuse(e.generate_n(p, greedy(12), 3).await.expect("starts")).await;
    assert_eq!(out.len(), 3);
    assert!(
        out.iter().all(|(t, _)| *t == out[0].0),
        "greedy choices are identical: {out:?}"
    );
    // The later choices copied the first one's prompt: only its last token was decoded again.
    assert!(
        out[1..].iter().all(|&(_, reused)| reused + 1 >= n_prompt),
        "{out:?} of {n_prompt}"
    );
}

/// With a seed, choice `i` samples with `seed + i`: the choices differ and the same request
/// repeats them. Floating point follows the batch a token is decoded in, so the repeat is
/// asked of an engine nothing else uses, and both compared runs find the prompt cached.
#[tokio::test]
async fn seeded_choices_differ_and_repeat() {
    let own = Engine::start(EngineConfig {
        model_path: model_path(),
        n_ctx: Some(1024),
        threads: Some(1),
        ..EngineConfig::default()
    })
    .expect("model loads");
    let sampled = GenerateParams {
        max_tokens: Some(16),
        sampling: SamplingParams {
            temperature: 1.5,
            seed: Some(11),
            ..SamplingParams::default()
        },
        ..GenerateParams::default()
    };
    let p = own
        .tokenize(prompt(&own, "Tell me a word."))
        .await
        .expect("tokenizes");
    let run = || async {
        texts_and_reuse(
            own.generate_n(p.clone(), sampled.clone(), 3)
                .await
                .expect("starts"),
        )
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect::<Vec<_>>()
    };
    let _warm = run().await;
    let a = run().await;
    let b = run().await;
    assert!(
        a.iter().any(|t| *t != a[0]),
        "sampled choices differ: {a:?}"
    );
    assert_eq!(a, b);
}

#[tokio::test]
async fn embeddings_are_normalized_and_batched_as_alone() {
    let e = engine();
    let texts = [
        "The cat sat on the mat.",
        "A cat was sitting on the rug.",
        "Quarterly revenue rose by eight percent.",
    ];
    let mut prompts = Vec::new();
    for t in texts {
        prompts.push(e.tokenize_text(t.into()).await.expect("tokenizes"));
    }
    let all = e.embed(prompts.clone()).await.expect("embeds");
    assert_eq!(all.len(), 3);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for v in &all {
        assert!((dot(v, v) - 1.0).abs() < 1e-3);
    }
    assert!(
        dot(&all[0], &all[1]) > dot(&all[0], &all[2]),
        "paraphrases are closer"
    );
    let alone = e.embed(vec![prompts[2].clone()]).await.expect("embeds");
    let diff = alone[0]
        .iter()
        .zip(&all[2])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-3, "batched and alone differ by {diff}");
}

#[tokio::test]
async fn plain_text_prompts_keep_special_token_texts_as_text() {
    let e = engine();
    let text = e
        .tokenize_text("<|im_start|>".into())
        .await
        .expect("tokenizes");
    let rendered = e.tokenize("<|im_start|>".into()).await.expect("tokenizes");
    assert!(
        text.len() > rendered.len(),
        "{} vs {}",
        text.len(),
        rendered.len()
    );
    assert!(e.token_prompt(&[u32::MAX]).is_none());
}
