//! Checks across a whole header, once it has been read: tensor placement, the vocabulary and
//! its special tokens, layers.

use std::collections::{HashMap, HashSet};

use super::{MAX_LAYERS, Report, Value};
use crate::{Finding, Severity};

/// Checks across the header: tensor placement, vocabulary, special tokens, layers.
pub(super) fn check(report: &mut Report) {
    let g = &report.gguf;
    let mut found = Vec::new();
    let mut flag = |rule: &'static str, severity, message: String| {
        found.push(Finding::new(rule, severity, message));
    };
    // Tensors: aligned, inside the file, not overlapping, named once.
    let data_len = g.file_size.saturating_sub(g.data_offset);
    let mut names = HashSet::new();
    let mut spans = Vec::new();
    for t in &g.tensors {
        if !names.insert(t.name.as_str()) {
            flag(
                "gguf.duplicate-tensor",
                Severity::Critical,
                format!("tensor `{}` appears twice", t.name),
            );
        }
        if t.offset % g.alignment != 0 {
            flag(
                "gguf.tensor-align",
                Severity::Error,
                format!(
                    "tensor `{}` starts at {}, not a multiple of the alignment {}",
                    t.name, t.offset, g.alignment
                ),
            );
        }
        match t.offset.checked_add(t.n_bytes) {
            Some(end) if end <= data_len => spans.push((t.offset, end, t.name.as_str())),
            _ => flag(
                "gguf.tensor-bounds",
                Severity::Critical,
                format!(
                    "tensor `{}` ({} bytes at {}) ends past the {data_len} bytes of data",
                    t.name, t.n_bytes, t.offset
                ),
            ),
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            flag(
                "gguf.tensor-overlap",
                Severity::Critical,
                format!("tensors `{}` and `{}` overlap", w[0].2, w[1].2),
            );
        }
    }
    // Vocabulary: the token list, its per-token arrays, the embedding's rows, special ids.
    let tokens = g.get("tokenizer.ggml.tokens");
    let n_vocab = tokens.and_then(Value::as_array).map(<[Value]>::len);
    if tokens.is_some() && n_vocab.is_none() {
        flag(
            "gguf.vocab",
            Severity::Error,
            "tokenizer.ggml.tokens is not an array".into(),
        );
    }
    // Element types llama.cpp's vocabulary loader reads the arrays as (an array is of one type,
    // so its first element says).
    for (key, want, is) in [
        (
            "tokenizer.ggml.tokens",
            "string",
            is_string as fn(&Value) -> bool,
        ),
        ("tokenizer.ggml.merges", "string", is_string),
        ("tokenizer.ggml.scores", "f32", |v| {
            matches!(v, Value::F32(_))
        }),
        ("tokenizer.ggml.token_type", "i32", |v| {
            matches!(v, Value::I32(_))
        }),
    ] {
        if let Some(first) = g
            .get(key)
            .and_then(Value::as_array)
            .and_then(<[Value]>::first)
            && !is(first)
        {
            flag(
                "gguf.vocab",
                Severity::Error,
                format!("{key} holds {first:?}-like values where llama.cpp reads {want}s"),
            );
        }
    }
    if let Some(n) = n_vocab {
        for key in ["tokenizer.ggml.scores", "tokenizer.ggml.token_type"] {
            if let Some(v) = g.get(key) {
                let len = v.as_array().map(<[Value]>::len);
                if len != Some(n) {
                    flag(
                        "gguf.vocab",
                        Severity::Critical,
                        format!("{key} has {len:?} entries for {n} tokens"),
                    );
                }
            }
        }
        if let Some(embd) = g.tensors.iter().find(|t| t.name == "token_embd.weight")
            && embd.dims.get(1).is_some_and(|&rows| rows != n as u64)
        {
            flag(
                "gguf.vocab",
                Severity::Critical,
                format!(
                    "token_embd.weight has {} rows for {n} tokens",
                    embd.dims.get(1).copied().unwrap_or(0)
                ),
            );
        }
        for (key, v) in &g.metadata {
            let Some(which) = key
                .strip_prefix("tokenizer.ggml.")
                .and_then(|k| k.strip_suffix("_token_id"))
            else {
                continue;
            };
            match v.as_i64() {
                Some(id) if id == -1 || (0..n as i64).contains(&id) => {}
                _ => flag(
                    "gguf.special-token",
                    Severity::Critical,
                    format!("the {which} token id {v:?} is outside the {n}-token vocabulary"),
                ),
            }
        }
    }
    // Layers: a sane count, and no tensor of a layer past it.
    let layers = g.arch_u64("block_count");
    match layers {
        Some(n) if n == 0 || n > MAX_LAYERS => flag(
            "gguf.layers",
            Severity::Error,
            format!("block_count {n} is not 1 to {MAX_LAYERS}"),
        ),
        _ => {}
    }
    if let Some(n) = layers {
        let mut past: HashMap<u64, &str> = HashMap::new();
        for t in &g.tensors {
            if let Some(i) = t
                .name
                .strip_prefix("blk.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<u64>().ok())
                && i >= n
            {
                past.entry(i).or_insert(&t.name);
            }
        }
        if let Some((i, name)) = past.into_iter().min() {
            flag(
                "gguf.layers",
                Severity::Critical,
                format!("tensor `{name}` is in layer {i}; block_count is {n}"),
            );
        }
    }
    report.findings.extend(found);
}

fn is_string(v: &Value) -> bool {
    matches!(v, Value::String(_))
}
