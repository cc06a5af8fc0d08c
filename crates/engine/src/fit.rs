//! Whether a model fits before it is loaded: the engine's own settings turned into
//! [`fit::Settings`], the estimate compared with the memory this machine has available, less
//! the GGUF files running models (this process's included) have mapped: the kernel counts
//! those pages as available, but they are in use. The file being loaded is not taken off, since
//! its pages would be shared.

use std::path::Path;

use smallfirst_inspect::fit::{self, Settings, Shape, Verdict};
use smallfirst_inspect::gguf::Gguf;
use smallfirst_inspect::machine;

use crate::engine::context_size;
use crate::{DEFAULT_PREFILL_CHUNK, DEFAULT_SLOTS, EngineConfig, EngineError};

/// The settings `config` gives llama.cpp for this model.
pub fn settings(config: &EngineConfig, shape: &Shape, features: &[String]) -> Settings {
    let slots = config.slots.unwrap_or(DEFAULT_SLOTS).max(1) as u64;
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

/// Memory available for loading `path`: what the kernel calls available, less the GGUF files
/// other than `path` that running models have mapped; `None` where the kernel does not say.
pub fn available_for(path: &Path) -> Option<u64> {
    let in_use = in_use_except(&machine::mapped_models(), path);
    machine::Memory::detect_less(in_use).available
}

/// Bytes of `mapped` files other than `path`.
pub fn in_use_except(mapped: &[machine::MappedModel], path: &Path) -> u64 {
    let own = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mapped
        .iter()
        .filter(|m| m.path != own)
        .map(|m| m.bytes)
        .fold(0, u64::saturating_add)
}

/// Refuses with [`EngineError::DoesNotFit`] a model whose estimate is more than is available
/// (unless `config.ignore_fit`, or the header lacks what the estimate needs).
pub(crate) fn check(config: &EngineConfig, g: &Gguf) -> Result<(), EngineError> {
    if config.ignore_fit {
        return Ok(());
    }
    // An architecture whose keys `fit` does not know is loaded unchecked rather than refused:
    // llama.cpp may well run it.
    let shape = match Shape::read(g) {
        Ok(shape) => shape,
        Err(e) => {
            tracing::warn!(path = %config.model_path.display(), "cannot estimate the model's memory, loading it unchecked: {e}");
            return Ok(());
        }
    };
    let s = settings(config, &shape, machine::cpu_features().as_slice());
    let need = fit::memory(g, &shape, &s);
    let Some(available) = available_for(&config.model_path) else {
        tracing::warn!("this system does not say how much memory is available; loading unchecked");
        return Ok(());
    };
    if Verdict::of(need.total, available) == Verdict::DoesNotFit {
        return Err(EngineError::DoesNotFit {
            path: config.model_path.clone(),
            need: need.total,
            available,
            ctx: s.ctx,
            parallel: s.parallel,
            largest_ctx: fit::largest_ctx(g, &shape, &s, available),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use smallfirst_inspect::gguf::Value;

    use super::*;

    #[test]
    fn an_architecture_fit_cannot_size_is_not_refused() {
        let g = Gguf {
            metadata: vec![("general.architecture".into(), Value::String("mamba".into()))],
            ..Gguf::default()
        };
        let config = EngineConfig {
            model_path: "/models/mamba.gguf".into(),
            ..EngineConfig::default()
        };
        assert!(Shape::read(&g).is_err());
        assert!(check(&config, &g).is_ok());
    }

    #[test]
    fn settings_follow_the_engine_config() {
        let shape = Shape {
            architecture: "llama".into(),
            layers: 2,
            n_embd: 64,
            n_ff: 128,
            n_head: 2,
            n_head_kv: vec![1, 1],
            head_k: 32,
            head_v: 32,
            n_vocab: 100,
            n_merges: 0,
            sliding_window: None,
            swa_layers: vec![false, false],
            context_length: 2048,
            tied: true,
            params: 0,
        };
        let config = EngineConfig {
            slots: Some(3),
            ..EngineConfig::default()
        };
        let s = settings(&config, &shape, &["avx2".to_string()]);
        // The model's own context (under the 4096 cap), 3 sequences, a 256-token chunk plus one
        // token per sequence.
        assert_eq!((s.ctx, s.parallel, s.batch), (2048, 3, 259));
        assert!(s.repack && s.swa_full);
        let asked = EngineConfig {
            n_ctx: Some(512),
            ..config
        };
        assert_eq!(settings(&asked, &shape, &[]).ctx, 512);
        assert!(!settings(&asked, &shape, &[]).repack);
    }
}
