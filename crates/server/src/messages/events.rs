//! Anthropic's stream events, from OpenAI chunk events: `message_start` and a `ping`, each
//! content block opened, filled and closed, then `message_delta` and `message_stop`.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use serde_json::{Value, json};
use smallfirst_protocol::Usage;

use crate::messages::wire::{error_event, event, message_id, stop_reason, usage};
use crate::render::Translate;

/// What kind of content block is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Tool,
}

/// Anthropic stream events written from an OpenAI answer: `message_start` and a `ping`, each
/// content block opened, filled and closed (text as `text_delta`, a call's arguments as
/// `input_json_delta`), then `message_delta` with the stop reason and usage, `message_stop`.
pub(crate) struct Events {
    model: String,
    open: Option<(usize, Open)>,
    next: usize,
    /// A call's index in the chunks → its block's index.
    calls: HashMap<u64, usize>,
}

impl Events {
    pub(crate) fn new(model: &str) -> Self {
        Events {
            model: model.to_string(),
            open: None,
            next: 0,
            calls: HashMap::new(),
        }
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some((index, _)) = self.open.take() {
            event(out, &json!({"type": "content_block_stop", "index": index}));
        }
    }

    fn open(&mut self, out: &mut BytesMut, kind: Open, block: Value) -> usize {
        self.close(out);
        let index = self.next;
        self.next += 1;
        self.open = Some((index, kind));
        event(
            out,
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }
}

impl Translate for Events {
    fn start(&mut self, chunk: &Value, out: &mut BytesMut) {
        let id = chunk["id"].as_str().unwrap_or("");
        event(
            out,
            &json!({"type": "message_start", "message": {
                "id": message_id(id), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        );
        event(out, &json!({"type": "ping"}));
    }

    fn text(&mut self, text: &str, out: &mut BytesMut) {
        let index = match self.open {
            Some((i, Open::Text)) => i,
            _ => self.open(out, Open::Text, json!({"type": "text", "text": ""})),
        };
        event(
            out,
            &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": text}}),
        );
    }

    fn call(&mut self, call: &Value, out: &mut BytesMut) {
        let n = call["index"].as_u64().unwrap_or(0);
        let index = match self.calls.get(&n) {
            Some(&i) => i,
            None => {
                let block = json!({"type": "tool_use",
                    "id": call["id"].as_str().unwrap_or(""),
                    "name": call["function"]["name"].as_str().unwrap_or(""),
                    "input": {}});
                let i = self.open(out, Open::Tool, block);
                self.calls.insert(n, i);
                i
            }
        };
        if let Some(args) = call["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        {
            event(
                out,
                &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": args}}),
            );
        }
    }

    fn end(&mut self, finish: Option<&str>, used: Option<&Usage>, out: &mut BytesMut) {
        self.close(out);
        let stop = stop_reason(finish.unwrap_or("stop"));
        let u = used.map(usage).unwrap_or_default();
        event(
            out,
            &json!({"type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                    "cache_read_input_tokens": u.cache_read_input_tokens,
                    "cache_creation_input_tokens": u.cache_creation_input_tokens}}),
        );
        event(out, &json!({"type": "message_stop"}));
    }

    fn fail(&mut self, status: u16, message: &str, out: &mut BytesMut) {
        out.put_slice(&error_event(status, message));
    }
}

#[cfg(test)]
mod tests {
    use smallfirst_router::sse::SseEvent;

    use super::*;
    use crate::render::Reader;

    #[test]
    fn a_stream_becomes_anthropic_events_in_order() {
        let mut events = Reader::new(Events::new("m"));
        let mut out = BytesMut::new();
        for data in [
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#,
            "[DONE]",
        ] {
            events.push(
                &SseEvent {
                    name: None,
                    data: data.into(),
                },
                &mut out,
            );
        }
        let text = String::from_utf8(out.to_vec()).expect("utf-8");
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(text.contains(r#""stop_reason":"tool_use""#), "{text}");
        assert!(text.contains(r#""output_tokens":4"#), "{text}");
        assert!(events.over());
    }
}
