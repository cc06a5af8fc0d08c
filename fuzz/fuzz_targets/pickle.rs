//! The pickle walker, in both modes: no stream may panic or make it run without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smallfirst_inspect::pickle;

fuzz_target!(|data: &[u8]| {
    let _ = pickle::sniff(data);
    let _ = pickle::walk(data, 0, false);
    let _ = pickle::walk(data, 0, true);
});
