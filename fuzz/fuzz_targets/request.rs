//! The request path without a model: a body parsed, its parameters planned, its schemas and
//! tools checked against the limits, and their grammar compiled (against a byte-level token
//! table). No body may panic, overflow a stack, or run without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(structure) = smallfirst_server::validate(data, 50_000)
        && let Some(constraint) = structure.constraint
    {
        let _ = smallfirst_engine::check_offline(&constraint);
    }
});
