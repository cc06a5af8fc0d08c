//! Task heads on the real model: trained on a slice of banking77, scored on a disjoint slice of
//! its test set; bound to the model file; embeddings kept by the cache.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use smallfirst_engine::{Engine, EngineConfig};
use smallfirst_heads::{
    Binding, EmbeddingCache, Examples, FitOptions, Head, HeadError, InputSpec, ModelBinding,
    embed_texts, read_rows, split,
};

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SMALLFIRST_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("set SMALLFIRST_TEST_MODEL or HOME");
    PathBuf::from(home).join(".cache/smallfirst/models/smollm2-135m-instruct.gguf")
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}

fn spec() -> InputSpec {
    InputSpec {
        wrapper: "{text}".into(),
        pooling: "mean".into(),
        max_tokens: 128,
        keep_end: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_on_a_banking77_slice_is_far_above_chance_on_unseen_rows_and_bound_to_its_model() {
    let engine = Engine::start(EngineConfig {
        model_path: model_path(),
        n_ctx: Some(512),
        threads: Some(2),
        slots: Some(1),
        ..EngineConfig::default()
    })
    .expect("engine");
    let sha = smallfirst_heads::file_sha256(&model_path()).expect("sha");
    let rows = read_rows(&data("banking77_slice_train.jsonl")).expect("rows");
    let test = read_rows(&data("banking77_slice_test.jsonl")).expect("rows");
    assert!(
        test.iter().all(|t| rows.iter().all(|r| r.text != t.text)),
        "the test rows are not among the training rows"
    );
    let mut labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), 8);
    let ix = |l: &str| labels.iter().position(|x| x == l).expect("label");

    let mut cache = EmbeddingCache::in_memory().expect("cache");
    let texts: Vec<String> = rows.iter().map(|r| r.text.clone()).collect();
    let vectors = embed_texts(&engine, &spec(), &sha, &texts, Some(&mut cache), &|_| {})
        .await
        .expect("embeds");
    // A second pass is read from the cache: every row done before any is embedded.
    let first_report = AtomicUsize::new(usize::MAX);
    let again = embed_texts(&engine, &spec(), &sha, &texts, Some(&mut cache), &|n| {
        let _ = first_report.compare_exchange(usize::MAX, n, Ordering::SeqCst, Ordering::SeqCst);
    })
    .await
    .expect("embeds");
    assert_eq!(first_report.load(Ordering::SeqCst), texts.len());
    assert_eq!(again, vectors);

    let (train, held) = split(&rows, 0.2);
    assert!(!held.is_empty() && train.len() + held.len() == rows.len());
    let pick = |i: &[usize]| -> (Vec<Vec<f32>>, Vec<usize>) {
        (
            i.iter().map(|&i| vectors[i].clone()).collect(),
            i.iter().map(|&i| ix(&rows[i].label)).collect(),
        )
    };
    let (tx, ty) = pick(&train);
    let (hx, hy) = pick(&held);
    let head = smallfirst_heads::fit(
        Binding {
            task: "banking".into(),
            model: ModelBinding {
                sha256: sha.clone(),
                file: "smollm2.gguf".into(),
            },
            input: spec(),
            labels: labels.clone(),
            features: Vec::new(),
            judges: None,
        },
        Examples {
            vectors: &tx,
            labels: &ty,
        },
        Examples {
            vectors: &hx,
            labels: &hy,
        },
        &FitOptions::default(),
    )
    .expect("fits");
    assert!(head.temperature > 0.0 && head.trained.holdout_ece.is_finite());

    // Saved and read back, it answers the unseen rows one at a time, as the server does.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("banking.head.json");
    head.save(&path).expect("saves");
    let head = Head::load(&path).expect("loads");
    let mut right = 0;
    for t in &test {
        let a = head.classify(&engine, &t.text).await.expect("classifies");
        assert!(a.prompt_tokens > 0 && a.prompt_tokens <= 128);
        let p = a.prediction;
        assert!((0.0..=1.0).contains(&p.probability) && p.margin >= 0.0);
        right += usize::from(head.labels[p.index] == t.label);
    }
    let accuracy = right as f64 / test.len() as f64;
    // An input far longer than the context is cut by its text, not refused.
    let long = "my card has not arrived yet ".repeat(2_000);
    let a = head.classify(&engine, &long).await.expect("a long input");
    assert!(a.prompt_tokens <= 128, "{}", a.prompt_tokens);
    // Chance is 1/8 = 12.5%.
    assert!(
        accuracy >= 0.5,
        "accuracy {accuracy:.3} on {} unseen rows",
        test.len()
    );

    // Bound to the model file: another sha256 is refused, saying what to do.
    assert!(head.check_model("banking", &sha, "smollm2.gguf").is_ok());
    let other = "0".repeat(64);
    let err = head
        .check_model("banking", &other, "other.gguf")
        .expect_err("refused");
    assert!(matches!(err, HeadError::OtherModel { .. }));
    let message = err.to_string();
    assert!(
        message.contains("other.gguf") && message.contains("smallfirst train banking"),
        "{message}"
    );
}
