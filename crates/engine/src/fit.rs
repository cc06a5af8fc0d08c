//! Whether a model fits before it is loaded: the engine's own settings turned into
//! [`fit::Settings`], the estimate compared with the memory this machine has available, less
//! the mapped files of engines this process already runs (their pages count as available to
//! the kernel, but they are in use).

use std::sync::atomic::{AtomicU64, Ordering};

use smallfirst_inspect::fit::{self, Memory, Settings, Shape, Verdict};
use smallfirst_inspect::gguf::Gguf;
use smallfirst_inspect::machine;

use crate::engine::context_size;
use crate::{DEFAULT_PREFILL_CHUNK, DEFAULT_SLOTS, EngineConfig, EngineError};

/// Bytes of model files mapped by the engines alive in this process.
static MAPPED: AtomicU64 = AtomicU64::new(0);

/// The settings `config` gives llama.cpp for this model.
pub fn settings(config: &EngineConfig, shape: &Shape, features: &[String]) -> Settings {
    let slots = config.slots.unwrap_or(DEFAULT_SLOTS) as u64;
    let n_ctx_train = u32::try_from(shape.context_length).unwrap_or(u32::MAX);
    let chunk = config.prefill_chunk.unwrap_or(DEFAULT_PREFILL_CHUNK) as u64;
    Settings {
        ctx: u64::from(context_size(config.n_ctx, n_ctx_train)),
        parallel: slots,
        kv_type: fit::F16,
        swa_full: true,
        batch: (chunk + slots).min(fit::UBATCH),
        repack: repacks(features),
    }
}

/// Whether llama.cpp's CPU backend interleaves 4-bit weights on this CPU.
pub fn repacks(features: &[String]) -> bool {
    features.iter().any(|f| f == "avx2" || f == "asimddp")
}

/// Memory already taken by this process's engines that `MemAvailable` still counts.
pub fn already_loaded() -> u64 {
    MAPPED.load(Ordering::Relaxed)
}

/// What loading the model would take and whether it fits; refuses with
/// [`EngineError::DoesNotFit`] when it does not (unless `config.ignore_fit`).
pub(crate) fn check(config: &EngineConfig, g: &Gguf) -> Result<Loaded, EngineError> {
    let shape = Shape::read(g).map_err(|e| EngineError::Load {
        path: config.model_path.clone(),
        reason: e.to_string(),
    })?;
    let s = settings(config, &shape, machine::cpu_features().as_slice());
    let need = fit::memory(g, &shape, &s);
    let available = machine::Memory::detect()
        .available
        .saturating_sub(already_loaded());
    if !config.ignore_fit && Verdict::of(need.total, available) == Verdict::DoesNotFit {
        return Err(EngineError::DoesNotFit {
            path: config.model_path.clone(),
            need: need.total,
            available,
            ctx: s.ctx,
            parallel: s.parallel,
            largest_ctx: fit::largest_ctx(g, &shape, &s, available),
        });
    }
    Ok(Loaded::new(need))
}

/// A loaded engine's share of [`MAPPED`], given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Loaded {
    file: u64,
}

impl Loaded {
    fn new(need: Memory) -> Loaded {
        MAPPED.fetch_add(need.file, Ordering::Relaxed);
        Loaded { file: need.file }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        MAPPED.fetch_sub(self.file, Ordering::Relaxed);
    }
}
