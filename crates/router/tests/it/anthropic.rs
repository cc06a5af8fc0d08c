//! Anthropic Messages: the documented examples in `tests/fixtures/anthropic/`, translated both
//! ways.

use serde_json::Value;
use smallfirst_router::anthropic::wire::{Stream, error_from_wire, from_wire, to_wire};
use smallfirst_router::{Meta, WireError};

use crate::fixtures::{assert_same, json, sse};

const BACKEND: &str = "anthropic";

fn meta() -> Meta {
    Meta {
        id: "chatcmpl-smallfirst".into(),
        created: 1_750_000_000,
    }
}

/// The chunks a recorded stream becomes, and the error that ended it, if one did.
fn replay(name: &str, include_usage: bool) -> (Vec<Value>, Option<WireError>) {
    let mut stream = Stream::new(meta(), include_usage);
    let mut chunks = Vec::new();
    for (event, data) in sse(BACKEND, name) {
        match stream.event(event.as_deref().unwrap_or_default(), &data) {
            Ok(more) => chunks.extend(more),
            Err(e) => return (chunks, Some(e)),
        }
    }
    (chunks, None)
}

#[test]
fn requests_become_messages_requests() {
    for case in [
        "basic",
        "multi_turn",
        "tool_use",
        "tool_result",
        "prompt_caching",
    ] {
        let request = json(BACKEND, &format!("{case}.request.json"));
        let got = to_wire(&request, "claude-sonnet-4-5").expect(case);
        assert_same(
            &got,
            &json(BACKEND, &format!("{case}.wire-request.json")),
            case,
        );
    }
}

#[test]
fn messages_responses_become_chat_completions() {
    for case in [
        "basic",
        "tool_use",
        "tool_result",
        "prompt_caching",
        "cache_read",
    ] {
        let response = json(BACKEND, &format!("{case}.wire-response.json"));
        let got = from_wire(&response, &meta()).expect(case);
        assert_same(&got, &json(BACKEND, &format!("{case}.response.json")), case);
    }
}

#[test]
fn a_text_stream_becomes_chunks_with_usage_last() {
    let (chunks, error) = replay("text.sse", true);
    assert_eq!(error, None);
    assert_same(
        &chunks.into(),
        &json(BACKEND, "text.chunks.json"),
        "text.sse",
    );
}

#[test]
fn a_tool_use_stream_becomes_tool_call_deltas() {
    let (chunks, error) = replay("tool_use.sse", false);
    assert_eq!(error, None);
    assert_same(
        &chunks.into(),
        &json(BACKEND, "tool_use.chunks.json"),
        "tool_use.sse",
    );
}

#[test]
fn an_error_event_ends_the_stream_as_an_upstream_error() {
    let (chunks, error) = replay("error.sse", true);
    assert_same(
        &chunks.into(),
        &json(BACKEND, "error.chunks.json"),
        "error.sse",
    );
    assert_eq!(
        error,
        Some(WireError::Upstream {
            kind: "overloaded_error".into(),
            message: "Overloaded".into(),
        })
    );
}

#[test]
fn an_error_body_becomes_an_openai_error() {
    let body = serde_json::to_vec(&json(BACKEND, "rate_limit.wire-error.json")).expect("body");
    assert_same(
        &error_from_wire(429, &body),
        &json(BACKEND, "rate_limit.error.json"),
        "rate_limit",
    );
}
