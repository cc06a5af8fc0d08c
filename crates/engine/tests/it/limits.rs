//! What the engine refuses: prompts beyond the context, missing files, unsafe files, models
//! that would not fit in memory.

use smallfirst_engine::{Engine, EngineConfig, EngineError};

use crate::{greedy, model_path, run};

#[tokio::test]
async fn prompt_longer_than_context_is_refused() {
    let small = Engine::start(EngineConfig {
        model_path: model_path(),
        n_ctx: Some(64),
        threads: Some(1),
        ..EngineConfig::default()
    })
    .expect("loads");
    assert_eq!(small.info().n_ctx, 64);
    let long = "word ".repeat(200);
    match run(&small, &long, greedy(4)).await {
        Err(EngineError::ContextLength {
            n_ctx: 64,
            prompt_tokens,
            at_least: false,
            requested: Some(4),
        }) => {
            assert!(prompt_tokens > 64)
        }
        other => panic!("expected ContextLength, got {:?}", other.map(|o| o.text)),
    }
    // Fits alone, but not with the completion asked for.
    match run(&small, "hi", greedy(60)).await {
        Err(EngineError::ContextLength {
            requested: Some(60),
            ..
        }) => {}
        other => panic!("expected ContextLength, got {:?}", other.map(|o| o.text)),
    }
    // Without max_tokens the completion gets whatever room is left.
    let out = run(&small, "hi", smallfirst_engine::GenerateParams::default())
        .await
        .expect("fits");
    assert!(out.done.prompt_tokens + out.done.completion_tokens <= 64);
}

#[test]
fn missing_model_file_is_a_clear_error() {
    let err = Engine::start(EngineConfig {
        model_path: "/nonexistent/model.gguf".into(),
        n_ctx: None,
        threads: None,
        ..EngineConfig::default()
    })
    .err()
    .expect("fails");
    assert!(matches!(err, EngineError::ModelMissing { .. }), "{err}");
}

#[test]
fn a_file_that_is_not_gguf_fails_to_load_without_panicking() {
    let dir = std::env::temp_dir().join(format!("smallfirst-notgguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("bad.gguf");
    std::fs::write(&path, b"this is not a model").expect("write");
    let err = Engine::start(EngineConfig {
        model_path: path,
        n_ctx: None,
        threads: Some(1),
        ..EngineConfig::default()
    })
    .err()
    .expect("fails");
    assert!(
        matches!(&err, EngineError::Unsafe { findings, .. } if findings.contains("gguf.magic")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_cut_off_model_is_refused_before_llama_cpp_reads_it() {
    // A download cut short: the header is whole, the tensors run past the end of the file.
    let dir = tempfile_dir("cut");
    let path = dir.join("cut.gguf");
    let whole = std::fs::read(model_path()).expect("reads the test model");
    std::fs::write(&path, &whole[..whole.len() / 2]).expect("write");
    let err = Engine::start(EngineConfig {
        model_path: path,
        threads: Some(1),
        ..EngineConfig::default()
    })
    .err()
    .expect("refused");
    assert!(
        matches!(&err, EngineError::Unsafe { findings, .. } if findings.contains("gguf.tensor-bounds")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_model_that_would_not_fit_is_refused_with_what_would() {
    // A million tokens for each of 64 sequences: over a terabyte of KV cache. Refused before
    // llama.cpp allocates anything.
    let err = Engine::start(EngineConfig {
        model_path: model_path(),
        n_ctx: Some(1_000_000),
        slots: Some(64),
        threads: Some(1),
        ..EngineConfig::default()
    })
    .err()
    .expect("refused");
    match &err {
        EngineError::DoesNotFit {
            need,
            available,
            ctx: 1_000_000,
            parallel: 64,
            largest_ctx,
            ..
        } => {
            assert!(need > available, "{err}");
            assert!(
                largest_ctx.is_some_and(|c| c % 256 == 0 && c <= 8192),
                "{err}"
            );
        }
        other => panic!("expected DoesNotFit, got {other}"),
    }
    assert!(err.to_string().contains("a context of"), "{err}");
}

#[test]
fn a_loaded_model_counts_against_the_next() {
    let path = std::fs::canonicalize(model_path()).expect("model");
    let size = std::fs::metadata(&path).expect("model").len();
    let e = Engine::start(EngineConfig {
        model_path: path.clone(),
        n_ctx: Some(256),
        slots: Some(1),
        threads: Some(1),
        ..EngineConfig::default()
    })
    .expect("loads");
    // Its mapped file is memory the kernel still calls available; loading another model
    // counts it as taken, loading the same file again (shared pages) does not.
    let mapped = smallfirst_inspect::machine::mapped_models();
    let ours = mapped.iter().find(|m| m.path == path).expect("mapped");
    assert!(ours.pids.contains(&std::process::id()));
    assert!(ours.bytes >= size - size / 50, "{} of {size}", ours.bytes);
    let elsewhere = std::path::Path::new("/elsewhere.gguf");
    let taken = smallfirst_engine::fit::in_use_except(&mapped, elsewhere);
    let shared = smallfirst_engine::fit::in_use_except(&mapped, &path);
    assert_eq!(taken - shared, ours.bytes);
    drop(e);
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("smallfirst-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}
