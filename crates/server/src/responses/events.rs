//! The Responses API's stream events, from OpenAI chunk events: `response.created` and
//! `.in_progress`, each output item added, filled and done, then `response.completed` (or
//! `.incomplete`) with the whole response.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use serde_json::{Value, json};
use smallfirst_protocol::Usage;

use crate::render::Translate;
use crate::responses::wire::{Echo, call_item, response_id, text_item, usage};

/// An open output item of a streamed response.
#[derive(Debug)]
enum Item {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl Item {
    fn value(&self, status: &str) -> Value {
        match self {
            Item::Text { id, text } => text_item(id, text, status),
            Item::Call {
                id,
                call_id,
                name,
                arguments,
            } => call_item(id, call_id, name, arguments, status),
        }
    }
}

/// OpenAI chunk events in, Responses events out: `response.created` and `.in_progress`,
/// each output item added, filled (`output_text.delta`, `function_call_arguments.delta`) and
/// done, then `response.completed` (or `.incomplete`) with the whole response.
pub(crate) struct Events {
    echo: Echo,
    id: String,
    created: u64,
    seq: u64,
    /// Items in output order; the last may be open.
    items: Vec<Item>,
    open: bool,
    /// A call's index in the chunks → its item's index.
    calls: HashMap<u64, usize>,
    usage: Option<Usage>,
}

impl Events {
    pub(crate) fn new(echo: Echo) -> Self {
        Events {
            echo,
            id: String::new(),
            created: 0,
            seq: 0,
            items: Vec::new(),
            open: false,
            calls: HashMap::new(),
            usage: None,
        }
    }

    fn emit(&mut self, out: &mut BytesMut, mut value: Value) {
        value["sequence_number"] = json!(self.seq);
        self.seq += 1;
        let name = value["type"].as_str().unwrap_or("error").to_string();
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_slice(b"\ndata: ");
        // Writing a `Value` to memory cannot fail.
        let _ = serde_json::to_writer((&mut *out).writer(), &value);
        out.put_slice(b"\n\n");
    }

    fn snapshot(&self, status: &str) -> Value {
        let output = self.items.iter().map(|i| i.value("completed")).collect();
        let usage = self.usage.as_ref().map_or(Value::Null, usage);
        self.echo
            .response(&self.id, self.created, status, output, usage)
    }

    fn close(&mut self, out: &mut BytesMut) {
        if !self.open {
            return;
        }
        self.open = false;
        let index = self.items.len() - 1;
        let done = match &self.items[index] {
            Item::Text { id, text } => vec![
                json!({"type": "response.output_text.done", "item_id": id, "output_index": index,
                    "content_index": 0, "text": text}),
                json!({"type": "response.content_part.done", "item_id": id, "output_index": index,
                    "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}),
            ],
            Item::Call { id, arguments, .. } => vec![json!({
                "type": "response.function_call_arguments.done", "item_id": id,
                "output_index": index, "arguments": arguments})],
        };
        for e in done {
            self.emit(out, e);
        }
        let item = self.items[index].value("completed");
        self.emit(
            out,
            json!({"type": "response.output_item.done", "output_index": index, "item": item}),
        );
    }

    fn add(&mut self, out: &mut BytesMut, item: Item) -> usize {
        self.close(out);
        let index = self.items.len();
        let added = item.value("in_progress");
        let mut added = added;
        if let Item::Text { .. } = item {
            added["content"] = json!([]);
        }
        let item_id = match &item {
            Item::Text { id, .. } | Item::Call { id, .. } => id.clone(),
        };
        let is_text = matches!(item, Item::Text { .. });
        self.items.push(item);
        self.open = true;
        self.emit(
            out,
            json!({"type": "response.output_item.added", "output_index": index, "item": added}),
        );
        if is_text {
            self.emit(
                out,
                json!({"type": "response.content_part.added", "item_id": item_id,
                "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
        }
        index
    }
}

impl Translate for Events {
    fn start(&mut self, chunk: &Value, out: &mut BytesMut) {
        self.id = response_id(chunk["id"].as_str().unwrap_or("chatcmpl-stream"));
        self.created = chunk["created"].as_u64().unwrap_or(0);
        let mut r = self.echo.response(
            &self.id,
            self.created,
            "in_progress",
            Vec::new(),
            Value::Null,
        );
        self.emit(
            out,
            json!({"type": "response.created", "response": r.clone()}),
        );
        r["status"] = json!("in_progress");
        self.emit(out, json!({"type": "response.in_progress", "response": r}));
    }

    fn text(&mut self, delta: &str, out: &mut BytesMut) {
        let index = match self.items.last() {
            Some(Item::Text { .. }) if self.open => self.items.len() - 1,
            _ => {
                let id = format!("msg_{}_{}", &self.id[5..], self.items.len());
                self.add(
                    out,
                    Item::Text {
                        id,
                        text: String::new(),
                    },
                )
            }
        };
        let Item::Text { id, text } = &mut self.items[index] else {
            return;
        };
        text.push_str(delta);
        let id = id.clone();
        self.emit(
            out,
            json!({"type": "response.output_text.delta", "item_id": id,
            "output_index": index, "content_index": 0, "delta": delta}),
        );
    }

    fn call(&mut self, call: &Value, out: &mut BytesMut) {
        let n = call["index"].as_u64().unwrap_or(0);
        let index = match self.calls.get(&n) {
            Some(&i) => i,
            None => {
                let item = Item::Call {
                    id: format!("fc_{}_{}", &self.id[5..], self.items.len()),
                    call_id: call["id"].as_str().unwrap_or("").to_string(),
                    name: call["function"]["name"].as_str().unwrap_or("").to_string(),
                    arguments: String::new(),
                };
                let i = self.add(out, item);
                self.calls.insert(n, i);
                i
            }
        };
        let Some(delta) = call["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        let Item::Call { id, arguments, .. } = &mut self.items[index] else {
            return;
        };
        arguments.push_str(delta);
        let id = id.clone();
        self.emit(
            out,
            json!({"type": "response.function_call_arguments.delta", "item_id": id,
            "output_index": index, "delta": delta}),
        );
    }

    fn end(&mut self, finish: Option<&str>, usage: Option<&Usage>, out: &mut BytesMut) {
        self.close(out);
        self.usage = usage.copied();
        let incomplete = finish == Some("length");
        let (kind, status) = if incomplete {
            ("response.incomplete", "incomplete")
        } else {
            ("response.completed", "completed")
        };
        let response = self.snapshot(status);
        self.emit(out, json!({"type": kind, "response": response}));
    }

    fn fail(&mut self, _status: u16, message: &str, out: &mut BytesMut) {
        self.emit(
            out,
            json!({"type": "error", "code": null, "message": message, "param": null}),
        );
    }
}

#[cfg(test)]
mod tests {
    use smallfirst_router::sse::SseEvent;

    use super::*;
    use crate::render::Reader;

    #[test]
    fn a_stream_becomes_response_events_in_order() {
        let req: smallfirst_protocol::responses::ResponsesRequest =
            serde_json::from_value(json!({"model": "m", "input": "x"})).expect("a request");
        let echo = Echo::of(&req);
        let mut events = Reader::new(Events::new(echo));
        let mut out = BytesMut::new();
        for data in [
            r#"{"id":"chatcmpl-1","created":1,"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"stop"}]}"#,
            r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
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
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let last = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .expect("data");
        let v: Value = serde_json::from_str(last).expect("json");
        assert_eq!(v["response"]["output"][0]["content"][0]["text"], "Hi there");
        assert_eq!(v["response"]["usage"]["output_tokens"], 2);
        assert_eq!(v["sequence_number"], 9);
    }
}
