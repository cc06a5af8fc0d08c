//! The request path without a model: a body parsed (as a chat completion, an Anthropic
//! Messages request and a Responses request, the last two translated to a chat request), its
//! parameters planned, its schemas and tools checked against the limits, and their grammar
//! compiled (against a byte-level token table). No body may panic, overflow a stack, or run
//! without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smallfirst_server::{validate, validate_messages, validate_responses};

fuzz_target!(|data: &[u8]| {
    for check in [validate, validate_messages, validate_responses] {
        if let Ok(structure) = check(data, 50_000)
            && let Some(constraint) = structure.constraint
        {
            let _ = smallfirst_engine::check_offline(&constraint);
        }
    }
});
