//! What the policy decides on: a request's task, size, needs and privacy, read from the request
//! in microseconds (the task is inferred when the client does not say it).

use serde_json::Value;

use crate::confidence::{Estimator, MAX_SAMPLES};
use crate::privacy::Privacy;

/// Tasks with closed outputs, where the local answer's confidence is a reliable check.
pub const NARROW_TASKS: [&str; 4] = ["classify", "extract", "route", "tool_call"];
/// Tasks the default policy sends to the frontier tier when there is one.
pub const OPEN_TASKS: [&str; 2] = ["open_ended", "code"];

#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `classify`, `extract`, `summarize`, `route`, `tool_call`, `code`, `open_ended`, `chat`,
    /// or a task named in the configuration.
    pub task: String,
    pub task_source: TaskSource,
    /// The prompt's tokens as the local model counts them (rendered with its template).
    pub input_tokens: u32,
    /// `max_completion_tokens` / `max_tokens`, when the request gives one.
    pub max_output_tokens: Option<u32>,
    pub needs: Needs,
    /// `x-smallfirst-privacy: local-only`: never leaves the machine.
    pub local_only: bool,
    /// A classification's label set, from `metadata.labels`.
    pub labels: Option<Vec<String>>,
    /// `metadata.confidence` (with `metadata.samples`): how to judge the local answer, or
    /// why the request's choice is not one.
    pub confidence: Option<Result<Estimator, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSource {
    /// `x-smallfirst-task`.
    Header,
    /// `metadata.task`.
    Metadata,
    /// Read from the request's shape and words.
    Inferred,
}

impl TaskSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSource::Header => "header",
            TaskSource::Metadata => "metadata",
            TaskSource::Inferred => "inferred",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub tools: bool,
    pub json_schema: bool,
    pub vision: bool,
}

/// What the client said besides the request itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints<'a> {
    pub task: Option<&'a str>,
    /// The request's privacy hints combined ([`Privacy::of_request`]).
    pub privacy: Privacy,
}

impl Hints<'_> {
    /// Whether the privacy hints keep the request on this machine.
    pub fn local_only(&self) -> bool {
        self.privacy.local_only()
    }
}

/// Features of `request` (a chat completion body); `input_tokens` as counted by the caller.
pub fn extract(request: &Value, hints: Hints<'_>, input_tokens: u32) -> Features {
    let metadata = &request["metadata"];
    let labels = metadata["labels"].as_array().map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    let labels = labels.filter(|l| !l.is_empty());
    let (task, task_source) = match (hints.task, metadata["task"].as_str()) {
        (Some(t), _) if !t.trim().is_empty() => (t.trim().to_string(), TaskSource::Header),
        (_, Some(t)) if !t.trim().is_empty() => (t.trim().to_string(), TaskSource::Metadata),
        _ => (
            infer_task(request, labels.is_some()).to_string(),
            TaskSource::Inferred,
        ),
    };
    let max_output_tokens = request["max_completion_tokens"]
        .as_u64()
        .or_else(|| request["max_tokens"].as_u64())
        .map(|n| n.min(u64::from(u32::MAX)) as u32);
    let tools = request["tools"].as_array().is_some_and(|t| !t.is_empty())
        && request["tool_choice"] != "none";
    let json_schema = request["response_format"]["type"] == "json_schema";
    let vision = messages(request).any(|m| {
        m["content"]
            .as_array()
            .is_some_and(|parts| parts.iter().any(|p| p["type"] == "image_url"))
    });
    let local_only = hints.local_only();
    let confidence = estimator(metadata);
    Features {
        task,
        task_source,
        input_tokens,
        max_output_tokens,
        needs: Needs {
            tools,
            json_schema,
            vision,
        },
        local_only,
        labels,
        confidence,
    }
}

/// `metadata.confidence`, with `metadata.samples` for self-consistency (metadata values are
/// strings at OpenAI; a number is taken too).
fn estimator(metadata: &Value) -> Option<Result<Estimator, String>> {
    let name = match &metadata["confidence"] {
        Value::Null => return None,
        Value::String(s) => s.trim(),
        _ => return Some(Err("`metadata.confidence` must be a string".into())),
    };
    let samples = match &metadata["samples"] {
        Value::Null => None,
        v => {
            let n = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|n| (2..=u64::from(MAX_SAMPLES)).contains(n));
            match n {
                Some(n) => Some(n as u8),
                None => {
                    return Some(Err(format!(
                        "`metadata.samples` must be a whole number from 2 to {MAX_SAMPLES}"
                    )));
                }
            }
        }
    };
    Some(Estimator::parse(name, samples).ok_or_else(|| {
        format!(
            "unknown `metadata.confidence` `{name}` (methods: {})",
            Estimator::NAMES.join(", ")
        )
    }))
}

/// What an image is counted as when tokens are estimated (a high-detail tile's cost at OpenAI).
pub const IMAGE_TOKENS: u32 = 765;

/// The request's input tokens without a tokenizer: four bytes of message text per token, and
/// [`IMAGE_TOKENS`] per image (its data URL is not text).
pub fn estimate_tokens(request: &Value) -> u32 {
    let mut bytes = 0usize;
    let mut images = 0u32;
    for m in messages(request) {
        match &m["content"] {
            Value::String(s) => bytes += s.len(),
            Value::Array(parts) => {
                for p in parts {
                    match p["text"].as_str() {
                        Some(t) => bytes += t.len(),
                        None if p["type"] == "image_url" => images += 1,
                        None => {}
                    }
                }
            }
            _ => {}
        }
        if let Some(calls) = m["tool_calls"].as_array() {
            bytes += calls.iter().map(|c| c.to_string().len()).sum::<usize>();
        }
    }
    ((bytes / 4) as u32).saturating_add(images.saturating_mul(IMAGE_TOKENS))
}

fn messages(request: &Value) -> impl Iterator<Item = &Value> {
    request["messages"].as_array().into_iter().flatten()
}

/// The task a request is for, from its shape first (a label set, a schema, tools) and then from
/// the words of its last user turn and system prompt. Checked in order; `chat` when nothing
/// says otherwise.
pub fn infer_task(request: &Value, has_labels: bool) -> &'static str {
    if has_labels {
        return "classify";
    }
    let format = &request["response_format"];
    if format["type"] == "json_schema" {
        return if enum_only(&format["json_schema"]["schema"]) {
            "classify"
        } else {
            "extract"
        };
    }
    if request["tools"].as_array().is_some_and(|t| !t.is_empty())
        && request["tool_choice"] != "none"
    {
        return "tool_call";
    }
    if format["type"] == "json_object" {
        return "extract";
    }
    // The instruction first: a system prompt says what the task is more surely than the
    // material the user pastes under it, whose words can be about anything.
    let mut system = String::new();
    for m in messages(request) {
        if matches!(m["role"].as_str(), Some("system" | "developer")) {
            push_text(&mut system, &m["content"]);
        }
    }
    let mut user = String::new();
    if let Some(last) = messages(request).filter(|m| m["role"] == "user").last() {
        push_text(&mut user, &last["content"]);
    }
    match from_words(&system) {
        "chat" => from_words(&user),
        task => task,
    }
}

/// The task an instruction's words name; `chat` when none.
fn from_words(text: &str) -> &'static str {
    let lower = text.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(&[
        "route this",
        "which team",
        "which department",
        "forward to",
        "assign to",
        "assign it to",
    ]) {
        return "route";
    }
    if has(&[
        "classif",
        "categor",
        "intent",
        "sentiment",
        "label",
        "tag this",
        "tag the",
        "which kind",
        "what kind",
        "which type",
        "what type",
        "belong",
        "one of the following",
        "one of these",
        "is this spam",
        "assign one",
        "assign a",
    ]) {
        return "classify";
    }
    if has(&[
        "extract",
        "entit",
        "pull out",
        "pull the",
        "list every",
        "list all",
        "find the names",
        "names in",
        "proper noun",
        "identify all",
        "slots",
        "fill in the fields",
        "mentioned",
    ]) {
        return "extract";
    }
    if has(&[
        "summar",
        "tl;dr",
        "tldr",
        "recap",
        "gist",
        "key points",
        "main points",
        "condense",
        "in a few words",
        "brief",
    ]) {
        return "summarize";
    }
    if lower.contains("```")
        || has(&[
            "write a function",
            "write code",
            "implement",
            "refactor",
            "debug",
            "stack trace",
            "compile",
            "python",
            "javascript",
            "typescript",
            "rust ",
            "sql",
        ])
    {
        return "code";
    }
    if has(&[
        "write an essay",
        "write a story",
        "write a poem",
        "brainstorm",
        "explain in detail",
        "step by step",
        "plan a",
        "design a",
        "compare and contrast",
        "pros and cons",
    ]) {
        return "open_ended";
    }
    "chat"
}

fn push_text(out: &mut String, content: &Value) {
    match content {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(parts) => {
            for p in parts {
                if let Some(t) = p["text"].as_str() {
                    out.push_str(t);
                    out.push('\n');
                }
            }
        }
        _ => {}
    }
}

/// A schema whose answer is a closed choice: an enum, a const, a boolean, or an object of
/// such (one level deep or more).
pub fn enum_only(schema: &Value) -> bool {
    if schema.get("enum").is_some() || schema.get("const").is_some() {
        return true;
    }
    match schema["type"].as_str() {
        Some("boolean") => true,
        Some("object") => schema["properties"]
            .as_object()
            .is_some_and(|p| !p.is_empty() && p.values().all(enum_only)),
        _ => false,
    }
}

/// The enum of an enum-only schema's single choice: the schema's own, or its one property's.
pub fn label_set(schema: &Value) -> Option<Vec<String>> {
    let strings = |v: &Value| -> Option<Vec<String>> {
        v["enum"].as_array().map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
    };
    if let Some(l) = strings(schema) {
        return Some(l);
    }
    let props = schema["properties"].as_object()?;
    match props.values().collect::<Vec<_>>().as_slice() {
        [only] => strings(only),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user(text: &str) -> Value {
        json!({"model": "auto", "messages": [{"role": "user", "content": text}]})
    }

    #[test]
    fn the_client_names_the_task_first() {
        let mut r = user("Summarize this.");
        r["metadata"] = json!({"task": "triage"});
        let hinted = extract(
            &r,
            Hints {
                task: Some("billing"),
                privacy: Privacy::Unset,
            },
            5,
        );
        assert_eq!(
            (hinted.task.as_str(), hinted.task_source),
            ("billing", TaskSource::Header)
        );
        let f = extract(&r, Hints::default(), 5);
        assert_eq!(
            (f.task.as_str(), f.task_source),
            ("triage", TaskSource::Metadata)
        );
    }

    #[test]
    fn a_request_may_name_its_confidence_method() {
        let mut r = user("I lost my card");
        assert_eq!(extract(&r, Hints::default(), 5).confidence, None);
        r["metadata"] = json!({"confidence": "self_consistency", "samples": "7"});
        assert_eq!(
            extract(&r, Hints::default(), 5).confidence,
            Some(Ok(Estimator::SelfConsistency { samples: 7 }))
        );
        for bad in [
            json!({"confidence": "vibes"}),
            json!({"confidence": 3}),
            json!({"confidence": "self_consistency", "samples": "99"}),
        ] {
            r["metadata"] = bad.clone();
            let f = extract(&r, Hints::default(), 5);
            assert!(matches!(f.confidence, Some(Err(_))), "{bad}");
        }
    }

    #[test]
    fn the_shape_then_the_words_say_what_a_request_is() {
        let mut labeled = user("I lost my card");
        labeled["metadata"] = json!({"labels": ["lost_card", "refund"]});
        let f = extract(&labeled, Hints::default(), 5);
        assert_eq!(f.task, "classify");
        assert_eq!(
            f.labels.as_deref(),
            Some(&["lost_card".to_string(), "refund".to_string()][..])
        );
        let mut schema = user("Receipt: ACME, 12.50");
        schema["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "r",
            "schema": {"type": "object", "properties": {"total": {"type": "number"}}}}});
        assert_eq!(infer_task(&schema, false), "extract");
        schema["response_format"]["json_schema"]["schema"] =
            json!({"type": "object", "properties": {"label": {"enum": ["a", "b"]}}});
        assert_eq!(infer_task(&schema, false), "classify");
        let mut tools = user("Weather in Paris?");
        tools["tools"] = json!([{"type": "function", "function": {"name": "w"}}]);
        assert_eq!(infer_task(&tools, false), "tool_call");
        for (text, task) in [
            ("Classify the sentiment of: great product", "classify"),
            ("Extract the names from this email", "extract"),
            ("Summarize the following dialogue", "summarize"),
            ("Write a function that reverses a list in Python", "code"),
            ("Write an essay about the sea", "open_ended"),
            ("Hi there!", "chat"),
        ] {
            assert_eq!(infer_task(&user(text), false), task, "{text}");
        }
    }

    #[test]
    fn needs_privacy_and_length() {
        let mut r = json!({"model": "auto", "max_tokens": 30, "messages": [{"role": "user",
            "content": [{"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]});
        r["tools"] = json!([{"type": "function", "function": {"name": "w"}}]);
        let f = extract(
            &r,
            Hints {
                task: None,
                privacy: Privacy::LocalOnly,
            },
            42,
        );
        assert!(f.needs.vision && f.needs.tools && !f.needs.json_schema);
        assert!(f.local_only);
        assert_eq!((f.input_tokens, f.max_output_tokens), (42, Some(30)));
        r["tool_choice"] = json!("none");
        assert!(!extract(&r, Hints::default(), 1).needs.tools);
    }

    #[test]
    fn images_are_not_counted_as_their_data_urls() {
        let big = format!("data:image/png;base64,{}", "A".repeat(1_000_000));
        let r = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": big}}]}]});
        assert_eq!(estimate_tokens(&r), 24 / 4 + IMAGE_TOKENS);
    }

    #[test]
    fn label_sets_come_from_enum_schemas() {
        let s = json!({"type": "object", "properties": {"intent": {"type": "string", "enum": ["a", "b"]}}});
        assert_eq!(label_set(&s), Some(vec!["a".into(), "b".into()]));
        assert_eq!(label_set(&json!({"enum": ["x"]})), Some(vec!["x".into()]));
        let two =
            json!({"type": "object", "properties": {"a": {"enum": ["x"]}, "b": {"enum": ["y"]}}});
        assert!(enum_only(&two) && label_set(&two).is_none());
    }
}
