//! The GGUF header reader and its checks, then `fit` on whatever header they accept: no input
//! may panic, overflow or allocate without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smallfirst_inspect::fit::{self, Settings, Shape};
use smallfirst_inspect::gguf;

fuzz_target!(|data: &[u8]| {
    // The file may claim to be larger than the bytes given (tensor data not read).
    let Ok(report) = gguf::read(data, data.len() as u64) else {
        return;
    };
    let g = report.gguf;
    if let Ok(shape) = Shape::read(&g) {
        let s = Settings {
            ctx: 4096,
            parallel: 4,
            kv_type: fit::F16,
            swa_full: data.len().is_multiple_of(2),
            batch: 260,
            repack: true,
        };
        let m = fit::memory(&g, &shape, &s);
        let _ = fit::largest_ctx(&g, &shape, &s, m.total / 2);
        let speed = fit::speed(&g, &shape, &s, 2, 3e10);
        let _ = speed.decode_at(s.ctx);
    }
});
