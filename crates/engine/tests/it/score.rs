//! `Engine::score` on the real model: each option's log-probability as the whole answer,
//! the same whether it is scored alone or beside others, after a fresh prompt or one that
//! shares a prefix with the last.

use smallfirst_engine::{EngineError, Prompt};

use crate::{engine, prompt};

async fn tokens(user: &str) -> Prompt {
    let e = engine();
    e.tokenize(prompt(e, user)).await.expect("tokenizes")
}

fn options(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn options_score_the_same_alone_and_together() {
    let e = engine();
    let labels = options(&["card_arrival", "refund", "exchange_rate", "Yes"]);
    let q = "When will my new card arrive?";
    let together = e
        .score(tokens(q).await, labels.clone())
        .await
        .expect("scores");
    assert_eq!(together.len(), labels.len());
    assert!(
        together.iter().all(|s| s.is_finite() && *s < 0.0),
        "log-probabilities: {together:?}"
    );
    for (label, want) in labels.iter().zip(&together) {
        // Another prompt in between: the second scoring reuses only the shared prefix.
        e.score(tokens("Is the sky blue?").await, options(&["no"]))
            .await
            .expect("scores");
        let alone = e
            .score(tokens(q).await, vec![label.clone()])
            .await
            .expect("scores");
        assert!(
            (alone[0] - want).abs() < 0.02,
            "{label}: {} alone, {want} in a batch",
            alone[0]
        );
    }
}

#[tokio::test]
async fn the_likely_answer_scores_higher() {
    let e = engine();
    let s = e
        .score(
            tokens("What is the capital of France? Answer with one word.").await,
            options(&["Paris", "Banana"]),
        )
        .await
        .expect("scores");
    assert!(s[0] > s[1] + 1.0, "{s:?}");
}

#[tokio::test]
async fn bad_options_are_refused() {
    let e = engine();
    let empty = e.score(tokens("hi").await, options(&[""])).await;
    assert!(matches!(empty, Err(EngineError::EmptyPrompt)), "{empty:?}");
    let long = e.score(tokens("hi").await, vec!["word ".repeat(400)]).await;
    assert!(
        matches!(long, Err(EngineError::ContextLength { .. })),
        "{long:?}"
    );
    assert!(
        e.score(tokens("hi").await, Vec::new())
            .await
            .expect("nothing to score")
            .is_empty()
    );
}
