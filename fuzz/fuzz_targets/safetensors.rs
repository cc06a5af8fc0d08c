//! The safetensors header checks: the 8-byte length, then the JSON against the data's length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smallfirst_inspect::safetensors;

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    let _ = safetensors::sniff(data, size);
    if let Some(head) = data.first_chunk::<8>() {
        let _ = safetensors::header_len(head, size);
        let _ = safetensors::check(&data[8..], size);
    }
});
