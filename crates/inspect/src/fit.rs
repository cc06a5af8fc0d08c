//! What a GGUF model needs to run here, from its header alone: memory (weights exactly from the
//! tensor table, the KV cache from the architecture's keys, compute and output buffers, the
//! tokenizer's tables, the process) and speed (decode from the bytes each token reads, prompt
//! from the arithmetic each token costs).
//!
//! The figures follow what the engine does with llama.cpp: the file is mapped and read in
//! whole (so it all counts as resident), weights of the types llama.cpp's CPU backend
//! interleaves for its SIMD kernels are copied once more, each sequence has its own KV stream
//! of `ctx` cells (sliding-window layers at full size, as the engine keeps them for prefix
//! reuse), and compute memory is what a batch of the engine's largest size touches.

use serde::Serialize;

use crate::gguf::{Gguf, Value, type_layout};

/// ggml's F16, the KV cache's element type unless asked otherwise.
pub const F16: u32 = 1;

/// The process without a model: the runtime, llama.cpp's backend, thread stacks.
const PROCESS_BYTES: u64 = 18 << 20;
/// The tokenizer's tables per vocabulary entry and per BPE merge (llama.cpp's vocabulary, its
/// piece cache, and the engine's token trie for constrained decoding), measured on SmolLM2,
/// Qwen2.5 and Gemma 3 vocabularies.
const BYTES_PER_TOKEN: u64 = 180;
const BYTES_PER_MERGE: u64 = 160;
/// Bounds no model comes near, so sizes cannot overflow: layers, widths, heads.
const MOST_LAYERS: u64 = 4096;
const MOST_WIDTH: u64 = 1 << 20;
const MOST_HEADS: u64 = 1 << 14;
const MOST_VOCAB: u64 = 1 << 24;

/// llama.cpp's default micro-batch.
pub const UBATCH: u64 = 512;

/// How the engine will run the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// Context cells per sequence.
    pub ctx: u64,
    /// Sequences decoded together, each with its own KV stream.
    pub parallel: u64,
    /// The KV cache's ggml type.
    pub kv_type: u32,
    /// Sliding-window layers keep the whole context (the engine's choice, so a cached prefix
    /// stays usable) rather than the window.
    pub swa_full: bool,
    /// Most tokens the engine decodes in one batch (its prompt chunk plus one per sequence).
    pub batch: u64,
    /// The CPU backend copies Q4_0 / Q4_K / IQ4_NL weights into interleaved layouts (x86 with
    /// AVX2, Arm with dot-product instructions).
    pub repack: bool,
}

impl Settings {
    /// KV cells each sequence gets: llama.cpp pads the whole context to a multiple of 256 and
    /// splits it evenly among the sequences.
    pub fn cells(&self) -> u64 {
        let parallel = self.parallel.max(1);
        (self.ctx.saturating_mul(parallel))
            .div_ceil(256)
            .saturating_mul(256)
            / parallel
    }
}

/// The architecture keys `fit` reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    pub architecture: String,
    pub layers: u64,
    pub n_embd: u64,
    pub n_ff: u64,
    pub n_head: u64,
    /// KV heads per layer (0 for layers without attention).
    pub n_head_kv: Vec<u64>,
    pub head_k: u64,
    pub head_v: u64,
    pub n_vocab: u64,
    pub n_merges: u64,
    /// The sliding window, and which layers use it.
    pub sliding_window: Option<u64>,
    pub swa_layers: Vec<bool>,
    /// The context the model was trained for.
    pub context_length: u64,
    /// The output projection is the token embedding (no `output.weight`).
    pub tied: bool,
    /// Weight elements.
    pub params: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    #[error("the header has no `{0}`")]
    Missing(String),
    #[error("`{key}` is {value}, which no model has")]
    Implausible { key: String, value: u64 },
    #[error("`{0}` is not a whole number")]
    NotANumber(String),
    #[error("the header has no `general.architecture`")]
    NoArchitecture,
}

impl Shape {
    pub fn read(g: &Gguf) -> Result<Shape, FitError> {
        let arch = g
            .architecture()
            .ok_or(FitError::NoArchitecture)?
            .to_string();
        let need = |suffix: &str| {
            g.arch_u64(suffix)
                .ok_or_else(|| FitError::Missing(format!("{arch}.{suffix}")))
        };
        let bound = |suffix: &str, value: u64, most: u64| {
            if value == 0 || value > most {
                Err(FitError::Implausible {
                    key: format!("{arch}.{suffix}"),
                    value,
                })
            } else {
                Ok(value)
            }
        };
        // The layer count first: per-layer values are read into a vector of that length.
        let layers = bound("block_count", need("block_count")?, MOST_LAYERS)?;
        let n_embd = bound("embedding_length", need("embedding_length")?, MOST_WIDTH)?;
        let heads = per_layer(g, "attention.head_count", layers)?;
        let n_head = heads.iter().copied().max().unwrap_or(0);
        bound("attention.head_count", n_head, MOST_HEADS)?;
        // Without the key, every layer has as many KV heads as query heads.
        let n_head_kv = match g.arch_value("attention.head_count_kv") {
            Some(_) => per_layer(g, "attention.head_count_kv", layers)?,
            None => heads,
        };
        // Layers without attention have none; none has more than the query heads.
        if let Some(&most) = n_head_kv.iter().max()
            && most > n_head
        {
            bound("attention.head_count_kv", most, n_head)?;
        }
        let width = |suffix: &str, default: u64| match g.arch_value(suffix) {
            None => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) => bound(suffix, n, MOST_WIDTH),
                None => Err(FitError::NotANumber(format!("{arch}.{suffix}"))),
            },
        };
        let head_k = width("attention.key_length", n_embd / n_head)?;
        let head_v = width("attention.value_length", n_embd / n_head)?;
        let n_ff = match g.arch_value("feed_forward_length") {
            Some(_) => per_layer(g, "feed_forward_length", layers)?
                .into_iter()
                .max()
                .unwrap_or(0),
            None => 4 * n_embd,
        };
        if n_ff > 16 * MOST_WIDTH {
            bound("feed_forward_length", n_ff, 16 * MOST_WIDTH)?;
        }
        let array_len = |key: &str| g.get(key).and_then(Value::as_array).map(|a| a.len() as u64);
        let n_vocab = match array_len("tokenizer.ggml.tokens") {
            Some(n) => n,
            None => bound("vocab_size", need("vocab_size")?, MOST_VOCAB)?,
        };
        let sliding_window = g.arch_u64("attention.sliding_window").filter(|&w| w > 0);
        let swa_layers = match sliding_window {
            Some(_) => swa_pattern(g, &arch, layers),
            None => vec![false; layers as usize],
        };
        Ok(Shape {
            layers,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_k,
            head_v,
            n_vocab,
            n_merges: array_len("tokenizer.ggml.merges").unwrap_or(0),
            sliding_window,
            swa_layers,
            context_length: g.arch_u64("context_length").unwrap_or(0),
            tied: !g.tensors.iter().any(|t| t.name == "output.weight"),
            params: g
                .tensors
                .iter()
                .fold(0u64, |a, t| a.saturating_add(t.n_elements)),
            architecture: arch,
        })
    }

    /// KV bytes one sequence adds per position, over all layers.
    pub fn kv_bytes_per_position(&self, kv_type: u32) -> u64 {
        let per_layer: u64 = self
            .n_head_kv
            .iter()
            .map(|&h| h * (self.head_k + self.head_v))
            .sum();
        bytes_of(kv_type, per_layer)
    }
}

/// A key that is a scalar for every layer or an array with one value per layer.
fn per_layer(g: &Gguf, suffix: &str, layers: u64) -> Result<Vec<u64>, FitError> {
    let arch = g.architecture().unwrap_or_default();
    let key = format!("{arch}.{suffix}");
    match g.get(&key) {
        Some(Value::Array(a)) => {
            if a.len() as u64 != layers {
                return Err(FitError::Implausible {
                    key,
                    value: a.len() as u64,
                });
            }
            a.iter()
                .map(|v| v.as_u64().ok_or_else(|| FitError::NotANumber(key.clone())))
                .collect()
        }
        Some(v) => {
            let v = v
                .as_u64()
                .ok_or_else(|| FitError::NotANumber(key.clone()))?;
            Ok(vec![v; layers as usize])
        }
        None => Err(FitError::Missing(key)),
    }
}

/// Which layers use the sliding window: a per-layer array where the file has one, else the
/// pattern llama.cpp fixes for the architecture (every layer when it knows none).
fn swa_pattern(g: &Gguf, arch: &str, layers: u64) -> Vec<bool> {
    if let Some(Value::Array(a)) = g.arch_value("attention.sliding_window_pattern")
        && a.len() as u64 == layers
    {
        return a.iter().map(|v| matches!(v, Value::Bool(true))).collect();
    }
    // A period n: every n-th layer attends globally, the others within the window.
    let period = match arch {
        "gemma2" => 2,
        "gemma3" | "gemma3n" => 6,
        "cohere2" | "llama4" => 4,
        _ => 0,
    };
    (0..layers)
        .map(|il| period == 0 || il % period < period - 1)
        .collect()
}

fn bytes_of(ggml_type: u32, elements: u64) -> u64 {
    let (block, size) = type_layout(ggml_type).unwrap_or((1, 2));
    elements.div_ceil(block).saturating_mul(size)
}

/// What a model needs in memory, in bytes, each part as it will be resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// The mapped file: the tensor table's bytes and the header.
    pub file: u64,
    /// Weights of the tensor table alone.
    pub weights: u64,
    /// Weights copied into the CPU backend's interleaved layouts.
    pub repacked: u64,
    pub kv: u64,
    /// Activations at the engine's largest batch.
    pub compute: u64,
    /// What llama.cpp reserves for compute (a 512-token batch with every row's logits); only
    /// the part a batch touches becomes resident.
    pub compute_reserved: u64,
    /// Logits kept for each sequence.
    pub output: u64,
    pub tokenizer: u64,
    pub process: u64,
    /// The peak resident set: the sum of the above, less `weights` and `compute_reserved`.
    pub total: u64,
}

/// Memory for `shape` (read from `g`) run with `s`.
pub fn memory(g: &Gguf, shape: &Shape, s: &Settings) -> Memory {
    // In u128 with saturating products: a header's values are bounded by `Shape::read`, but a
    // context times sequences times layers times heads can still pass u64.
    let w = u128::from;
    let weights = g.tensor_bytes();
    let repacked: u128 = if s.repack {
        g.tensors
            .iter()
            .filter(|t| {
                matches!(t.ggml_type, 2 | 12 | 20)
                    && t.dims.len() == 2
                    && t.dims[1] % 8 == 0
                    && t.name != "token_embd.weight"
            })
            .map(|t| w(t.n_bytes))
            .sum()
    } else {
        0
    };
    let cells = w(s.cells());
    let swa = |il: usize| shape.swa_layers.get(il).copied().unwrap_or(false);
    let window = |il: usize| match (shape.sliding_window, swa(il), s.swa_full) {
        // llama.cpp keeps the window plus a micro-batch, in cells padded to 256.
        (Some(win), true, false) => cells.min(w(win.saturating_add(UBATCH)).div_ceil(256) * 256),
        _ => cells,
    };
    let (block, size) = type_layout(s.kv_type).unwrap_or((1, 2));
    let kv: u128 = shape
        .n_head_kv
        .iter()
        .enumerate()
        .map(|(il, &heads)| {
            let per_cell = w(heads).saturating_mul(w(shape.head_k) + w(shape.head_v));
            (per_cell.div_ceil(w(block)) * w(size))
                .saturating_mul(window(il))
                .saturating_mul(w(s.parallel))
        })
        .fold(0, u128::saturating_add);
    let masks = if shape.sliding_window.is_some() { 2 } else { 1 };
    let max_kv = shape.n_head_kv.iter().copied().max().unwrap_or(0);
    // The widest activations live at once in a layer: the residual stream and its norm, the
    // attention's queries, keys, values and output, and the feed-forward's gate, up and
    // product; all f32. The attention mask is f16, one row per token per kind of layer.
    let per_token = 4
        * (3 * w(shape.n_ff)
            + 3 * w(shape.n_embd)
            + (w(shape.n_head) + 2 * w(max_kv)) * w(shape.head_k));
    let batch = w(s.batch);
    let vocab = w(shape.n_vocab);
    // One f32 row of logits per sequence, twice over: llama.cpp's output buffer, and the rows
    // the compute graph writes before copying them there.
    let output = w(s.parallel).saturating_mul(vocab * 4);
    let compute = (batch * per_token)
        .saturating_add(batch.saturating_mul(cells).saturating_mul(2 * masks))
        .saturating_add(output);
    let compute_reserved = (w(UBATCH) * (4 * vocab + 24 * w(shape.n_embd)).max(per_token))
        .saturating_add(w(UBATCH).saturating_mul(cells).saturating_mul(2 * masks));
    let tokenizer = w(BYTES_PER_TOKEN) * vocab + w(BYTES_PER_MERGE) * w(shape.n_merges);
    let file = g.file_size;
    let total = [
        w(file),
        repacked,
        kv,
        compute,
        output,
        tokenizer,
        w(PROCESS_BYTES),
    ]
    .into_iter()
    .fold(0, u128::saturating_add);
    let sat = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
    Memory {
        file,
        weights,
        repacked: sat(repacked),
        kv: sat(kv),
        compute: sat(compute),
        compute_reserved: sat(compute_reserved),
        output: sat(output),
        tokenizer: sat(tokenizer),
        process: PROCESS_BYTES,
        total: sat(total),
    }
}

/// Whether a need fits what is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Leaves at least a tenth of what is available, and 256 MiB, for everything else.
    Fits,
    /// Fits, with less than that left over: other programs may push it into swap.
    Tight,
    DoesNotFit,
    /// The machine does not say how much memory is available.
    Unknown,
}

impl Verdict {
    pub fn of(need: u64, available: u64) -> Verdict {
        let spare = (available / 10).max(256 << 20);
        if need.saturating_add(spare) <= available {
            Verdict::Fits
        } else if need <= available {
            Verdict::Tight
        } else {
            Verdict::DoesNotFit
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Fits => "fits",
            Verdict::Tight => "tight",
            Verdict::DoesNotFit => "does not fit",
            Verdict::Unknown => "unknown (available memory not known)",
        }
    }
}

/// The largest context per sequence, a multiple of 256 and at most the model's own, whose
/// memory is at most `available`; `None` when not even 256 fits.
pub fn largest_ctx(g: &Gguf, shape: &Shape, s: &Settings, available: u64) -> Option<u64> {
    let at = |ctx: u64| memory(g, shape, &Settings { ctx, ..*s }).total;
    // The model's own context, or what was asked when the header does not say.
    let own = if shape.context_length > 0 {
        shape.context_length
    } else {
        s.ctx
    };
    let top = own.max(256) / 256;
    if at(256) > available {
        return None;
    }
    // Memory grows with the context, so search the multiples of 256.
    let (mut lo, mut hi) = (1u64, top);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if at(mid * 256) <= available {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo * 256)
}

/// The seed's rule of thumb, in bytes: 0.6 to 0.8 GB per billion parameters at 4 bits, plus 1
/// to 4 GB for context and overhead.
pub fn rule_of_thumb(params: u64) -> (u64, u64) {
    let billions = params as f64 / 1e9;
    let gb = 1e9;
    (
        ((0.6 * billions + 1.0) * gb) as u64,
        ((0.8 * billions + 4.0) * gb) as u64,
    )
}

/// How fast llama.cpp's CPU kernels use one weight type on one thread: bytes of weights per
/// second and seconds per matrix row in a matrix-vector product (decode; short rows do not
/// amortise a dot product's setup), and arithmetic per second and seconds per row and token in
/// a matrix-matrix product (prompt). Measured with `scripts/fit_rates.py` (synthetic single-type models, one wide and
/// one deep) on an x86-64 core with AVX2; other CPUs differ, and the measured bandwidth bounds
/// them all.
struct Rate {
    decode_bytes: f64,
    row_s: f64,
    prompt_flops: f64,
    prompt_row_s: f64,
}

fn rate(ggml_type: u32) -> Option<Rate> {
    let (decode_gb, row_ns, prompt_gflop, prompt_row_ns) = match ggml_type {
        0 => (25.4, 25.2, 113.0, 10.3),  // F32
        1 => (30.4, 35.1, 136.0, 10.4),  // F16
        30 => (30.9, 32.4, 289.0, 10.3), // BF16
        2 => (24.7, 25.1, 202.0, 7.6),   // Q4_0
        3 => (13.0, 29.1, 59.0, 15.7),   // Q4_1
        6 => (14.1, 30.0, 124.0, 8.2),   // Q5_0
        7 => (14.0, 30.7, 58.0, 19.2),   // Q5_1
        8 => (24.8, 30.8, 158.0, 7.8),   // Q8_0
        10 => (18.0, 26.7, 116.0, 9.4),  // Q2_K
        11 => (12.9, 34.9, 314.0, 9.3),  // Q3_K
        12 => (28.8, 27.9, 216.0, 8.4),  // Q4_K
        13 => (19.2, 37.8, 454.0, 9.1),  // Q5_K
        14 => (29.0, 41.5, 276.0, 8.9),  // Q6_K
        20 => (22.6, 23.3, 199.0, 7.4),  // IQ4_NL
        23 => (13.9, 31.3, 438.0, 8.9),  // IQ4_XS
        _ => return None,
    };
    Some(Rate {
        decode_bytes: decode_gb * 1e9,
        row_s: row_ns * 1e-9,
        prompt_flops: prompt_gflop * 1e9,
        prompt_row_s: prompt_row_ns * 1e-9,
    })
}

/// Time per token and layer beside the matrices (graph nodes, thread barriers).
const LAYER_OVERHEAD_S: f64 = 13e-6;

/// Estimated speed on `threads` threads with `bandwidth` bytes per second of memory reads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Speed {
    /// Seconds per generated token at position 0.
    pub decode_fixed_s: f64,
    /// Seconds each position already in the context adds (its keys and values are read).
    pub decode_per_position_s: f64,
    /// Prompt tokens per second for a prompt of [`PROMPT_TOKENS`].
    pub prompt_tokens_per_s: f64,
    /// Weight bytes each generated token reads.
    pub bytes_per_token: u64,
}

/// The prompt length prompt speed is given for (llama-bench's pp256).
pub const PROMPT_TOKENS: u64 = 256;

impl Speed {
    /// Generated tokens per second with `position` tokens already in the context.
    pub fn decode_at(&self, position: u64) -> f64 {
        1.0 / (self.decode_fixed_s + self.decode_per_position_s * position as f64)
    }
}

pub fn speed(g: &Gguf, shape: &Shape, s: &Settings, threads: usize, bandwidth: f64) -> Speed {
    let threads = threads.max(1) as f64;
    let bandwidth = bandwidth.max(1e6);
    // Decode takes the longer of the kernels' time and the memory's: a roofline.
    let mut kernels = 0.0;
    let mut prompt = 0.0;
    let mut bytes_per_token = 0u64;
    for t in &g.tensors {
        let embedding = t.name == "token_embd.weight";
        // An untied model reads one row of its embedding per token (a lookup, not a product).
        let rows = t
            .dims
            .iter()
            .skip(1)
            .fold(1u64, |a, &d| a.saturating_mul(d));
        if embedding && !shape.tied {
            bytes_per_token = bytes_per_token.saturating_add(t.n_bytes / rows.max(1));
            continue;
        }
        bytes_per_token = bytes_per_token.saturating_add(t.n_bytes);
        let r = rate(t.ggml_type);
        kernels += match &r {
            Some(r) if t.dims.len() >= 2 => {
                t.n_bytes as f64 / (r.decode_bytes * threads) + rows as f64 * r.row_s / threads
            }
            _ => t.n_bytes as f64 / bandwidth,
        };
        // Prompt tokens go through every matrix but the embedding lookup and the output
        // projection (only the last token's logits are computed).
        let matrix = t.dims.len() >= 2 && !embedding && t.name != "output.weight";
        if matrix && let Some(r) = r {
            prompt += 2.0 * t.n_elements as f64 / (r.prompt_flops * threads)
                + rows as f64 * r.prompt_row_s / threads;
        }
    }
    let decode = kernels.max(bytes_per_token as f64 / bandwidth);
    let kv = shape.kv_bytes_per_position(s.kv_type) as f64;
    // Attention over the prompt so far: queries against keys, weights against values.
    let attention = 4.0 * (shape.n_head * shape.head_k) as f64 * shape.layers as f64;
    let f16 = rate(F16).map_or(1e10, |r| r.prompt_flops) * threads;
    prompt += attention * (PROMPT_TOKENS / 2) as f64 / f16;
    // The output projection, once for the whole prompt.
    let output = g
        .tensors
        .iter()
        .find(|t| t.name == "output.weight" || (shape.tied && t.name == "token_embd.weight"))
        .map_or(0.0, |t| t.n_bytes as f64 / bandwidth);
    prompt += output / PROMPT_TOKENS as f64;
    Speed {
        decode_fixed_s: decode + shape.layers as f64 * LAYER_OVERHEAD_S,
        decode_per_position_s: kv / bandwidth,
        prompt_tokens_per_s: if prompt > 0.0 { 1.0 / prompt } else { 0.0 },
        bytes_per_token,
    }
}
