//! Streamed `GenerateContentResponse`s → `chat.completion.chunk`s, one SSE event at a time.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    blocked, candidate_index, candidates, finish_reason, function_call, part_text, parts,
    str_field, usage,
};
use crate::wire::{ChunkHead, Meta, WireError};

/// One streamed Gemini response becoming OpenAI chunks.
///
/// Gemini's events are unnamed, each a whole `GenerateContentResponse` holding the next piece
/// of every candidate; a function call arrives whole, never in pieces. There is no stop event:
/// usage goes out with the last finish, or from [`Stream::finish`] when the stream ends without
/// one.
#[derive(Debug)]
pub struct Stream {
    head: ChunkHead,
    /// Until the first event: its `responseId` and `modelVersion` name every chunk.
    named: bool,
    include_usage: bool,
    /// Candidate index → what has been streamed for it.
    choices: BTreeMap<u64, Choice>,
    /// Function calls streamed, for made-up ids unique in the stream.
    calls_made: u64,
    /// The latest `usageMetadata`: each event carries the counts so far.
    usage: Option<Value>,
    usage_sent: bool,
}

#[derive(Debug, Default)]
struct Choice {
    tool_calls: u64,
    finished: bool,
}

impl Stream {
    /// `meta.id` stands unless Gemini gives a `responseId`, and `model` (the model requested)
    /// unless it gives a `modelVersion`; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(meta: Meta, model: &str, include_usage: bool) -> Self {
        Stream {
            head: ChunkHead {
                id: meta.id,
                created: meta.created,
                model: model.into(),
            },
            named: false,
            include_usage,
            choices: BTreeMap::new(),
            calls_made: 0,
            usage: None,
            usage_sent: false,
        }
    }

    /// The chunks one event's data produces. An `{"error": …}` event (Gemini's way of failing
    /// mid-stream) is [`WireError::Upstream`].
    pub fn event(&mut self, data: &Value) -> Result<Vec<Value>, WireError> {
        if let Some(error) = data.get("error") {
            return Err(WireError::Upstream {
                kind: str_field(error, "status").unwrap_or("error").into(),
                message: str_field(error, "message").unwrap_or_default().into(),
            });
        }
        let candidates = candidates(data)?;
        if !self.named {
            self.named = true;
            if let Some(id) = str_field(data, "responseId") {
                self.head.id = id.into();
            }
            if let Some(model) = str_field(data, "modelVersion") {
                self.head.model = model.into();
            }
        }
        match data.get("usageMetadata") {
            None | Some(Value::Null) => {}
            Some(metadata) => self.usage = Some(usage(Some(metadata))?),
        }

        let mut chunks = Vec::new();
        let mut finished = false;
        for (position, candidate) in candidates.iter().enumerate() {
            let index = candidate_index(candidate, position);
            self.start(index, &mut chunks);
            for part in parts(candidate)? {
                if let Some(text) = part_text(part)? {
                    if !text.is_empty() {
                        chunks.push(self.head.choice(index, json!({"content": text}), None));
                    }
                } else if let Some(call) = function_call(part, &mut self.calls_made)? {
                    let choice = self.choices.entry(index).or_default();
                    let delta = json!({"tool_calls": [{
                        "index": choice.tool_calls,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }]});
                    choice.tool_calls += 1;
                    chunks.push(self.head.choice(index, delta, None));
                }
            }
            if let Some(reason) = str_field(candidate, "finishReason") {
                let choice = self.choices.entry(index).or_default();
                choice.finished = true;
                let finish = finish_reason(Some(reason), choice.tool_calls > 0);
                chunks.push(self.head.choice(index, json!({}), Some(finish)));
                finished = true;
            }
        }
        if candidates.is_empty() && blocked(data).is_some() {
            self.start(0, &mut chunks);
            if let Some(choice) = self.choices.get_mut(&0) {
                choice.finished = true;
            }
            chunks.push(self.head.choice(0, json!({}), Some("content_filter")));
            finished = true;
        }
        if finished && self.choices.values().all(|c| c.finished) {
            chunks.extend(self.usage_chunk());
        }
        Ok(chunks)
    }

    /// What is still owed when the stream has ended: the usage chunk, if the client asked for
    /// it and no finish sent it.
    pub fn finish(&mut self) -> Vec<Value> {
        self.usage_chunk().into_iter().collect()
    }

    /// The role chunk, the first time candidate `index` shows.
    fn start(&mut self, index: u64, chunks: &mut Vec<Value>) {
        if self.choices.contains_key(&index) {
            return;
        }
        self.choices.insert(index, Choice::default());
        let delta = json!({"role": "assistant", "content": ""});
        chunks.push(self.head.choice(index, delta, None));
    }

    /// The usage chunk, once, if the client asked for it and Gemini reported usage.
    fn usage_chunk(&mut self) -> Option<Value> {
        if !self.include_usage || self.usage_sent {
            return None;
        }
        let usage = self.usage.take()?;
        self.usage_sent = true;
        Some(self.head.usage(usage))
    }
}
