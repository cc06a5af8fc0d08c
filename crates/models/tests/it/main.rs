//! `pull` against real sources that run here: a loopback HTTP server (ranges, redirects, pin
//! headers), local files, and pip reading wheels from a local directory.

mod http;
mod local;

use sha2::{Digest, Sha256};
use smallfirst_models::{Cache, PipConfig, Puller};

/// A small well-formed GGUF header (version 3, no tensors, an architecture and, when given, a
/// chat template), padded to its alignment.
pub fn gguf_header_with(template: Option<&str>) -> Vec<u8> {
    let text = |s: &str| {
        let mut b = (s.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(s.as_bytes());
        b
    };
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    v.extend((1 + u64::from(template.is_some())).to_le_bytes());
    v.extend(text("general.architecture"));
    v.extend(8u32.to_le_bytes());
    v.extend(text("llama"));
    if let Some(t) = template {
        v.extend(text("tokenizer.chat_template"));
        v.extend(8u32.to_le_bytes());
        v.extend(text(t));
    }
    while !v.len().is_multiple_of(32) {
        v.push(0);
    }
    v
}

/// A fake model: a well-formed GGUF header, then `len` pseudo-random bytes.
pub fn model_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut v = gguf_header_with(None);
    let mut x = seed as u32 | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v
}

pub fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn puller(dir: &std::path::Path) -> Puller {
    Puller::new(Cache::new(dir), PipConfig::default(), false)
}
