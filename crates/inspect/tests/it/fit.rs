//! `fit` on GGUF headers written here (metadata and tensor table, no tensor data) with the
//! architecture keys and tensor tables of the shipped models, against figures computed by hand
//! (the KV, output and interleaved-weight sizes are the ones llama.cpp logs when it loads the
//! real files with the engine's settings).

use smallfirst_inspect::fit::{self, Settings, Shape, Verdict};
use smallfirst_inspect::gguf::{self, Gguf};

use crate::writer::{self, Kv, Tensor};

const F32: u32 = 0;
const Q4_1: u32 = 3;
const Q5_0: u32 = 6;
const Q8_0: u32 = 8;
const Q4_K: u32 = 12;
const Q6_K: u32 = 14;
const MIB: u64 = 1 << 20;

/// Architecture keys, vocabulary sizes and tensors; `file_size` is the real file's.
struct Spec {
    arch: &'static str,
    keys: Vec<(&'static str, u32)>,
    vocab: usize,
    merges: usize,
    tensors: Vec<(String, Vec<u64>, u32)>,
    file_size: u64,
}

fn header(spec: &Spec) -> Gguf {
    let mut kv = vec![Kv::string("general.architecture", spec.arch)];
    for (k, v) in &spec.keys {
        kv.push(Kv::u32(&format!("{}.{k}", spec.arch), *v));
    }
    let tokens: Vec<String> = (0..spec.vocab).map(|i| format!("t{i}")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    kv.push(Kv::string_array("tokenizer.ggml.tokens", &tokens));
    if spec.merges > 0 {
        kv.push(Kv::string_array(
            "tokenizer.ggml.merges",
            &vec!["a b"; spec.merges],
        ));
    }
    let mut offset = 0u64;
    let mut tensors = Vec::new();
    for (name, dims, ty) in &spec.tensors {
        tensors.push(Tensor {
            name: name.clone(),
            dims: dims.clone(),
            ggml_type: *ty,
            offset,
        });
        let (block, size) = gguf::type_layout(*ty).expect("known type");
        let n: u64 = dims.iter().product();
        offset += (n / block * size).div_ceil(32) * 32;
    }
    let file = writer::Gguf {
        magic: *b"GGUF",
        version: 3,
        tensor_count: None,
        kv_count: None,
        kv,
        tensors,
        data_len: 0,
    };
    let bytes = file.bytes();
    let report = gguf::read(&bytes[..], spec.file_size).expect("reads from memory");
    report.gguf
}

/// Per-layer tensors: (suffix, dims, type) for layer `il`.
fn layers(
    n: u64,
    per: impl Fn(u64) -> Vec<(&'static str, Vec<u64>, u32)>,
) -> Vec<(String, Vec<u64>, u32)> {
    (0..n)
        .flat_map(|il| {
            per(il)
                .into_iter()
                .map(move |(s, d, t)| (format!("blk.{il}.{s}.weight"), d, t))
        })
        .collect()
}

fn smollm2() -> Spec {
    let mut tensors = vec![
        ("token_embd.weight".to_string(), vec![576, 49152], Q8_0),
        ("output_norm.weight".to_string(), vec![576], F32),
    ];
    tensors.extend(layers(30, |_| {
        vec![
            ("attn_norm", vec![576], F32),
            ("attn_q", vec![576, 576], Q4_1),
            ("attn_k", vec![576, 192], Q4_1),
            ("attn_v", vec![576, 192], Q4_1),
            ("attn_output", vec![576, 576], Q4_1),
            ("ffn_norm", vec![576], F32),
            ("ffn_gate", vec![576, 1536], Q4_1),
            ("ffn_up", vec![576, 1536], Q4_1),
            ("ffn_down", vec![1536, 576], Q4_1),
        ]
    }));
    Spec {
        arch: "llama",
        keys: vec![
            ("block_count", 30),
            ("context_length", 8192),
            ("embedding_length", 576),
            ("feed_forward_length", 1536),
            ("attention.head_count", 9),
            ("attention.head_count_kv", 3),
        ],
        vocab: 49152,
        merges: 48900,
        tensors,
        file_size: 98_362_432,
    }
}

/// Qwen2.5-Coder: untied output; Q4_K_M's mix of types, half the layers differing.
fn qwen(layers_n: u64, n_embd: u64, n_ff: u64, heads: u32, file_size: u64, big: bool) -> Spec {
    let kv = if big { 256 } else { 128 };
    let (main, embd, out) = if big {
        (Q4_K, Q4_K, Q6_K)
    } else {
        (Q5_0, Q5_0, Q8_0)
    };
    let mut tensors = vec![
        ("token_embd.weight".to_string(), vec![n_embd, 151936], embd),
        ("output.weight".to_string(), vec![n_embd, 151936], out),
        ("output_norm.weight".to_string(), vec![n_embd], F32),
    ];
    tensors.extend(layers(layers_n, |il| {
        let alt = il % 2 == 0;
        vec![
            ("attn_norm", vec![n_embd], F32),
            ("attn_q", vec![n_embd, n_embd], main),
            ("attn_k", vec![n_embd, kv], main),
            (
                "attn_v",
                vec![n_embd, kv],
                if alt {
                    main
                } else {
                    if big { Q6_K } else { Q8_0 }
                },
            ),
            (
                "attn_output",
                vec![n_embd, n_embd],
                if big { Q4_K } else { Q5_0 },
            ),
            ("ffn_norm", vec![n_embd], F32),
            ("ffn_gate", vec![n_embd, n_ff], main),
            ("ffn_up", vec![n_embd, n_ff], main),
            (
                "ffn_down",
                vec![n_ff, n_embd],
                if alt { Q4_K } else { Q6_K },
            ),
        ]
    }));
    Spec {
        arch: "qwen2",
        keys: vec![
            ("block_count", layers_n as u32),
            ("context_length", 32768),
            ("embedding_length", n_embd as u32),
            ("feed_forward_length", n_ff as u32),
            ("attention.head_count", heads),
            ("attention.head_count_kv", 2),
        ],
        vocab: 151936,
        merges: 151387,
        tensors,
        file_size,
    }
}

fn gemma3() -> Spec {
    let mut tensors = vec![
        ("token_embd.weight".to_string(), vec![640, 262144], Q8_0),
        ("output_norm.weight".to_string(), vec![640], F32),
    ];
    tensors.extend(layers(18, |il| {
        let alt = il % 2 == 0;
        vec![
            ("attn_norm", vec![640], F32),
            ("attn_q", vec![640, 1024], Q5_0),
            ("attn_k", vec![640, 256], Q5_0),
            ("attn_v", vec![640, 256], if alt { Q5_0 } else { Q8_0 }),
            ("attn_output", vec![1024, 640], Q4_K),
            ("ffn_gate", vec![640, 2048], Q5_0),
            ("ffn_up", vec![640, 2048], Q5_0),
            ("ffn_down", vec![2048, 640], if alt { Q4_K } else { Q6_K }),
        ]
    }));
    Spec {
        arch: "gemma3",
        keys: vec![
            ("block_count", 18),
            ("context_length", 32768),
            ("embedding_length", 640),
            ("feed_forward_length", 2048),
            ("attention.head_count", 4),
            ("attention.head_count_kv", 1),
            ("attention.key_length", 256),
            ("attention.value_length", 256),
            ("attention.sliding_window", 512),
        ],
        vocab: 262144,
        merges: 0,
        tensors,
        file_size: 253_113_024,
    }
}

/// The engine's defaults: 4096 tokens for each of 4 sequences, f16 KV, 256-token prompt chunks.
fn engine_settings() -> Settings {
    Settings {
        ctx: 4096,
        parallel: 4,
        kv_type: fit::F16,
        swa_full: true,
        batch: 260,
        repack: true,
    }
}

fn bytes_of(ty: u32, elements: u64) -> u64 {
    let (block, size) = gguf::type_layout(ty).expect("known type");
    elements / block * size
}

#[test]
fn smollm2_as_llama_cpp_sizes_it() {
    let spec = smollm2();
    let g = header(&spec);
    let shape = Shape::read(&g).expect("shape");
    assert_eq!(shape.n_head_kv, vec![3; 30]);
    assert_eq!((shape.head_k, shape.head_v), (64, 64));
    assert!(shape.tied, "no output.weight: the embedding is the output");
    let m = fit::memory(&g, &shape, &engine_settings());
    // 30 layers × 3 KV heads × (64 + 64) × 2 bytes × 4096 cells × 4 streams: llama.cpp's
    // "KV buffer size = 360.00 MiB".
    assert_eq!(m.kv, 360 * MIB);
    // 49152 logits × 4 bytes × 4 sequences: "output buffer size = 0.75 MiB".
    assert_eq!(m.output, 786_432);
    // Q4_1 and Q8_0 are not interleaved.
    assert_eq!(m.repacked, 0);
    let weights = bytes_of(Q8_0, 576 * 49152)
        + 576 * 4
        + 30 * (2 * 576 * 4 + bytes_of(Q4_1, 576 * 576 * 2 + 576 * 192 * 2 + 576 * 1536 * 3));
    assert_eq!(m.weights, weights);
    // llama.cpp reserves 106.77 MiB: 512 rows of logits (96 MiB) and of the last layer's
    // activations, and a 4096 × 512 f16 mask.
    assert_eq!(
        m.compute_reserved,
        512 * (4 * 49152 + 24 * 576) + 512 * 4096 * 2
    );
    // Touched: 260 tokens × 4 bytes × (3 × 1536 + 3 × 576 + (9 + 2 × 3) × 64), the mask for
    // them, and one row of logits per sequence.
    assert_eq!(
        m.compute,
        260 * 4 * (3 * 1536 + 3 * 576 + 15 * 64) + 260 * 4096 * 2 + 4 * 49152 * 4
    );
    assert_eq!(m.tokenizer, 180 * 49152 + 160 * 48900);
    assert_eq!(
        m.total,
        m.file + m.kv + m.compute + m.output + m.tokenizer + m.process
    );
    // The file is mapped whole: the weights and the header.
    assert_eq!(m.file, spec.file_size);
}

#[test]
fn qwen_untied_with_interleaved_q4_k() {
    let g = header(&qwen(24, 896, 4864, 14, 491_400_064, false));
    let shape = Shape::read(&g).expect("shape");
    assert!(!shape.tied);
    let m = fit::memory(&g, &shape, &engine_settings());
    // 24 layers × 2 heads × 128 × 2 bytes × 16384 cells: "KV buffer size = 192.00 MiB".
    assert_eq!(m.kv, 192 * MIB);
    // "output buffer size = 2.32 MiB".
    assert_eq!(m.output, 151936 * 4 * 4);
    // The twelve Q4_K ffn_down: "CPU_REPACK model buffer size = 28.05 MiB".
    assert_eq!(m.repacked, 12 * bytes_of(Q4_K, 4864 * 896));
    assert_eq!(m.repacked / 10_000, 29_417_472 / 10_000);
    // Without AVX2 nothing is interleaved.
    let plain = fit::memory(
        &g,
        &shape,
        &Settings {
            repack: false,
            ..engine_settings()
        },
    );
    assert_eq!(plain.repacked, 0);
    assert_eq!(m.total - plain.total, m.repacked);
}

#[test]
fn qwen_1_5b_kv_and_interleaved_weights() {
    let g = header(&qwen(28, 1536, 8960, 12, 1_117_320_768, true));
    let shape = Shape::read(&g).expect("shape");
    let m = fit::memory(&g, &shape, &engine_settings());
    // 28 × 2 heads × 128 × 2 × 2 bytes × 16384: "KV buffer size = 448.00 MiB".
    assert_eq!(m.kv, 448 * MIB);
    // Every Q4_K matrix but the embedding: llama.cpp logs 596.53 MiB.
    let q4k =
        28 * (1536 * 1536 * 2 + 1536 * 256 + 1536 * 8960 * 2) + 14 * 1536 * 256 + 14 * 8960 * 1536;
    assert_eq!(m.repacked, bytes_of(Q4_K, q4k));
    assert!((m.repacked as f64 / MIB as f64 - 596.53).abs() < 0.05);
}

#[test]
fn gemma3_sliding_window_layers() {
    let g = header(&gemma3());
    let shape = Shape::read(&g).expect("shape");
    assert_eq!(shape.sliding_window, Some(512));
    // Every sixth layer attends globally: 5, 11 and 17.
    let global: Vec<usize> = (0..18).filter(|&il| !shape.swa_layers[il]).collect();
    assert_eq!(global, [5, 11, 17]);
    assert_eq!((shape.head_k, shape.head_v), (256, 256));
    let s = engine_settings();
    let m = fit::memory(&g, &shape, &s);
    // Kept at full size, as the engine asks: 18 layers × (256 + 256) × 2 bytes × 16384 cells,
    // llama.cpp's 48 MiB (global) + 240 MiB (sliding).
    assert_eq!(m.kv, 288 * MIB);
    assert_eq!(m.output, 4 * MIB);
    // attn_output (18) and half the ffn_down (9) are Q4_K: "12.66 MiB".
    assert_eq!(m.repacked, bytes_of(Q4_K, 18 * 1024 * 640 + 9 * 2048 * 640));
    // Two masks (global and sliding) in what llama.cpp reserves: its 526.28 MiB.
    assert_eq!(
        m.compute_reserved,
        512 * (4 * 262144 + 24 * 640) + 2 * 512 * 4096 * 2
    );
    // With windows kept to their size: 512 + a 512-token micro-batch = 1024 cells.
    let windowed = fit::memory(
        &g,
        &shape,
        &Settings {
            swa_full: false,
            ..s
        },
    );
    assert_eq!(windowed.kv, 3 * 1024 * 4096 * 4 + 15 * 1024 * 1024 * 4);
}

#[test]
fn contexts_are_padded_as_llama_cpp_pads_them() {
    let g = header(&smollm2());
    let shape = Shape::read(&g).expect("shape");
    // 1000 tokens × 3 sequences: llama.cpp makes it 3072 cells, 1024 each ("KV buffer size =
    // 67.50 MiB").
    let s = Settings {
        ctx: 1000,
        parallel: 3,
        ..engine_settings()
    };
    assert_eq!(s.cells(), 1024);
    assert_eq!(fit::memory(&g, &shape, &s).kv, 67 * MIB + MIB / 2);
}

#[test]
fn per_layer_kv_heads_and_layers_without_attention() {
    let mut spec = smollm2();
    spec.tensors.truncate(2);
    let mut g = header(&spec);
    // A hybrid: attention in every other layer, recurrent blocks between.
    let heads: Vec<gguf::Value> = (0..30)
        .map(|il| gguf::Value::U32(if il % 2 == 0 { 3 } else { 0 }))
        .collect();
    for (k, v) in &mut g.metadata {
        if k == "llama.attention.head_count_kv" {
            *v = gguf::Value::Array(heads.clone());
        }
    }
    let shape = Shape::read(&g).expect("shape");
    let m = fit::memory(&g, &shape, &engine_settings());
    assert_eq!(m.kv, 180 * MIB, "half the layers, half the cache");
    // An array of the wrong length is refused, not guessed at.
    for (k, v) in &mut g.metadata {
        if k == "llama.attention.head_count_kv" {
            *v = gguf::Value::Array(heads[..7].to_vec());
        }
    }
    assert!(Shape::read(&g).is_err());
}

#[test]
fn an_absurd_layer_count_is_refused_before_anything_is_sized_by_it() {
    // Found by the fuzzer: per-layer values were read into a vector as long as the claimed
    // layer count before that count was checked.
    let mut spec = smollm2();
    spec.keys.retain(|(k, _)| *k != "block_count");
    spec.keys.push(("block_count", 4_000_000_000));
    spec.tensors.truncate(2);
    let g = header(&spec);
    let e = Shape::read(&g).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "`llama.block_count` is 4000000000, which no model has"
    );
}

#[test]
fn every_size_a_header_gives_is_bounded() {
    // More KV heads than query heads, or keys wider than any model: refused, where they would
    // have overflowed the KV cache's size.
    let with = |key: &'static str, value: u32| {
        let mut spec = smollm2();
        spec.keys.retain(|(k, _)| *k != key);
        spec.keys.push((key, value));
        spec.tensors.truncate(2);
        Shape::read(&header(&spec))
    };
    let e = with("attention.head_count_kv", u32::MAX).expect_err("refused");
    assert!(e.to_string().contains("attention.head_count_kv"), "{e}");
    assert!(with("attention.key_length", u32::MAX).is_err());
    assert!(with("attention.value_length", 0).is_err());
    assert!(with("feed_forward_length", u32::MAX).is_err());
    // Within the bounds, the largest sizes saturate rather than wrap.
    let g = header(&smollm2());
    let shape = Shape::read(&g).expect("shape");
    let huge = Settings {
        ctx: u64::MAX,
        parallel: u64::MAX,
        batch: u64::MAX,
        ..engine_settings()
    };
    let m = fit::memory(&g, &shape, &huge);
    assert_eq!(m.total, u64::MAX);
}

#[test]
fn missing_keys_are_errors_naming_them() {
    let mut spec = smollm2();
    spec.keys.retain(|(k, _)| *k != "block_count");
    let g = header(&spec);
    let e = Shape::read(&g).expect_err("no block count");
    assert_eq!(e.to_string(), "the header has no `llama.block_count`");
}

#[test]
fn verdicts_and_the_largest_context_that_fits() {
    let g = header(&smollm2());
    let shape = Shape::read(&g).expect("shape");
    let s = engine_settings();
    let need = fit::memory(&g, &shape, &s).total;
    assert_eq!(Verdict::of(need, need * 2), Verdict::Fits);
    assert_eq!(Verdict::of(need, need + 1), Verdict::Tight);
    assert_eq!(Verdict::of(need, need - 1), Verdict::DoesNotFit);
    // Exactly what 2048 tokens per sequence need: 2048 is the answer, not more.
    let at_2048 = fit::memory(&g, &shape, &Settings { ctx: 2048, ..s }).total;
    assert_eq!(fit::largest_ctx(&g, &shape, &s, at_2048), Some(2048));
    assert_eq!(fit::largest_ctx(&g, &shape, &s, at_2048 - 1), Some(1792));
    // Never past the model's own context.
    assert_eq!(fit::largest_ctx(&g, &shape, &s, u64::MAX / 4), Some(8192));
    assert_eq!(fit::largest_ctx(&g, &shape, &s, 1 << 20), None);
}

#[test]
fn the_rule_of_thumb() {
    assert_eq!(
        fit::rule_of_thumb(1_000_000_000),
        (1_600_000_000, 4_800_000_000)
    );
    assert_eq!(fit::rule_of_thumb(0), (1_000_000_000, 4_000_000_000));
}

#[test]
fn decode_slows_with_context_and_bandwidth() {
    let g = header(&smollm2());
    let shape = Shape::read(&g).expect("shape");
    let s = engine_settings();
    let fast = fit::speed(&g, &shape, &s, 2, 40e9);
    let slow = fit::speed(&g, &shape, &s, 2, 4e9);
    assert!(fast.decode_at(0) > fast.decode_at(4096));
    assert!(fast.decode_at(0) > slow.decode_at(0));
    // With little bandwidth every byte waits on memory: the bytes over the bandwidth, plus the
    // per-layer cost.
    let memory_bound = 1.0 / (slow.bytes_per_token as f64 / 4e9 + 30.0 * 13e-6);
    assert!((slow.decode_at(0) / memory_bound - 1.0).abs() < 0.01);
    // A tied model reads its whole embedding (the output projection) every token.
    assert_eq!(fast.bytes_per_token, g.tensor_bytes());
    assert!(fast.prompt_tokens_per_s > 0.0);
}
