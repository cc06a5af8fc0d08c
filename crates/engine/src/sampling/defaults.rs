//! What a request that leaves a sampling parameter out gets: the model's recommended value.
//!
//! Each parameter is taken, in order, from the model file's `general.sampling.*` keys (written
//! by the converter from the model's `generation_config.json`), from the catalog entry or the
//! configuration, and last from llama.cpp's own defaults — what `llama-server` and Ollama apply.

use serde::Serialize;
pub use smallfirst_inspect::sampling::Recommended;

/// Where a default came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The model file's `general.sampling.*` keys.
    Gguf,
    /// The catalog entry, or the configuration.
    Catalog,
    /// llama.cpp's defaults.
    LlamaCpp,
}

/// One parameter's default and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Setting<T> {
    pub value: T,
    pub from: Origin,
}

/// The resolved defaults for one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SamplingDefaults {
    pub temperature: Setting<f32>,
    pub top_p: Setting<f32>,
    pub top_k: Setting<u32>,
    pub min_p: Setting<f32>,
    pub repetition_penalty: Setting<f32>,
}

impl SamplingDefaults {
    /// Each parameter from the first of `gguf`, `catalog`, llama.cpp's defaults that sets it.
    pub fn resolve(gguf: Recommended, catalog: Recommended) -> SamplingDefaults {
        fn pick<T: Copy>(gguf: Option<T>, catalog: Option<T>, fallback: T) -> Setting<T> {
            match (gguf, catalog) {
                (Some(value), _) => Setting {
                    value,
                    from: Origin::Gguf,
                },
                (None, Some(value)) => Setting {
                    value,
                    from: Origin::Catalog,
                },
                (None, None) => Setting {
                    value: fallback,
                    from: Origin::LlamaCpp,
                },
            }
        }
        // llama.cpp's `common_params_sampling` defaults.
        SamplingDefaults {
            temperature: pick(gguf.temperature, catalog.temperature, 0.8),
            top_p: pick(gguf.top_p, catalog.top_p, 0.95),
            top_k: pick(gguf.top_k, catalog.top_k, 40),
            min_p: pick(gguf.min_p, catalog.min_p, 0.05),
            repetition_penalty: pick(gguf.repetition_penalty, catalog.repetition_penalty, 1.0),
        }
    }
}

impl SamplingDefaults {
    /// The sampling of a request that sets nothing.
    pub fn params(&self) -> crate::SamplingParams {
        crate::SamplingParams {
            temperature: self.temperature.value,
            top_p: self.top_p.value,
            top_k: self.top_k.value,
            min_p: self.min_p.value,
            repetition_penalty: self.repetition_penalty.value,
            ..crate::SamplingParams::default()
        }
    }
}

impl Default for SamplingDefaults {
    fn default() -> Self {
        SamplingDefaults::resolve(Recommended::default(), Recommended::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_parameter_comes_from_the_first_source_that_sets_it() {
        let gguf = Recommended {
            temperature: Some(0.6),
            ..Recommended::default()
        };
        let catalog = Recommended {
            temperature: Some(0.2),
            top_p: Some(0.9),
            ..Recommended::default()
        };
        let d = SamplingDefaults::resolve(gguf, catalog);
        assert_eq!(
            d.temperature,
            Setting {
                value: 0.6,
                from: Origin::Gguf
            }
        );
        assert_eq!(
            d.top_p,
            Setting {
                value: 0.9,
                from: Origin::Catalog
            }
        );
        assert_eq!(
            d.top_k,
            Setting {
                value: 40,
                from: Origin::LlamaCpp
            }
        );
        assert_eq!(d.min_p.value, 0.05);
        assert_eq!(d.repetition_penalty.value, 1.0);
    }
}
