//! Gemini: the documented examples in `tests/fixtures/gemini/`, translated both ways.

use serde_json::Value;
use smallfirst_router::Meta;
use smallfirst_router::gemini::wire::{Stream, error_from_wire, from_wire, path, to_wire};

use crate::fixtures::{assert_same, json, sse};

const BACKEND: &str = "gemini";
const MODEL: &str = "gemini-2.5-flash";

fn meta() -> Meta {
    Meta {
        id: "chatcmpl-smallfirst".into(),
        created: 1_750_000_000,
    }
}

/// The chunks a recorded stream becomes, through its end.
fn replay(name: &str, include_usage: bool) -> Vec<Value> {
    let mut stream = Stream::new(meta(), MODEL, include_usage);
    let mut chunks = Vec::new();
    for (event, data) in sse(BACKEND, name) {
        assert_eq!(event, None, "Gemini's events are unnamed");
        chunks.extend(stream.event(&data).expect(name));
    }
    chunks.extend(stream.finish());
    chunks
}

#[test]
fn requests_become_generate_content_requests() {
    for case in ["text", "function_call", "function_response", "multimodal"] {
        let request = json(BACKEND, &format!("{case}.request.json"));
        let got = to_wire(&request).expect(case);
        assert_same(
            &got,
            &json(BACKEND, &format!("{case}.wire-request.json")),
            case,
        );
    }
}

#[test]
fn responses_become_chat_completions() {
    for case in ["text", "function_call", "blocked"] {
        let response = json(BACKEND, &format!("{case}.wire-response.json"));
        let got = from_wire(&response, &meta(), "gemini-requested").expect(case);
        assert_same(&got, &json(BACKEND, &format!("{case}.response.json")), case);
    }
}

#[test]
fn a_text_stream_becomes_chunks_with_usage_after_the_finish() {
    assert_same(
        &replay("text.sse", true).into(),
        &json(BACKEND, "text.chunks.json"),
        "text.sse",
    );
}

#[test]
fn a_function_call_stream_gives_each_call_whole() {
    assert_same(
        &replay("function_call.sse", false).into(),
        &json(BACKEND, "function_call.chunks.json"),
        "function_call.sse",
    );
}

#[test]
fn an_error_body_becomes_an_openai_error() {
    let body =
        serde_json::to_vec(&json(BACKEND, "resource_exhausted.wire-error.json")).expect("body");
    assert_same(
        &error_from_wire(429, &body),
        &json(BACKEND, "resource_exhausted.error.json"),
        "resource_exhausted",
    );
}

#[test]
fn the_path_names_the_model_once() {
    assert_eq!(
        path("gemini-2.5-flash", false),
        "models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        path("models/gemini-2.5-flash", true),
        "models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
}
