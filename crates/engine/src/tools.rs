//! Tool calls: the grammar a model's answer must follow when tools are offered, and the
//! parsing of that answer back into calls.
//!
//! Calls are written the way Hermes-style templates (Qwen2.5 among them) teach models:
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```
//!
//! one block per call, blocks separated by a newline. Where the vocabulary has `<tool_call>` as
//! one token the grammar's literal matches it, so the model writes the token it was trained on.
//! The `arguments` of each function are compiled from its `parameters` schema, so a call is
//! valid by construction. A text answer (allowed with `tool_choice: auto` or `none`) may be
//! anything that does not start with the call marker.

use serde_json::Value;

use crate::schema;

pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";

/// One function the model may call; `parameters` already went through [`schema::prepare`].
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Value,
}

/// OpenAI's `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Text only; the tools are still described to the model.
    None,
    /// Text or calls, as the model decides.
    Auto,
    /// At least one call.
    Required,
    /// Exactly this function.
    Function(String),
}

/// The tools of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub tools: Vec<ToolDef>,
    pub choice: ToolChoice,
    /// More than one call in one answer.
    pub parallel: bool,
}

/// One call as the model made it; `arguments` is compact JSON text, as OpenAI sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

/// Whether `name` is a valid function name (OpenAI's rule: `^[a-zA-Z0-9_-]{1,64}$`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a lark grammar and its named JSON sub-grammars look like before compiling.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolGrammar {
    pub lark: String,
    /// `(name, schema)` for each `@name` the lark grammar references.
    pub schemas: Vec<(String, Value)>,
}

impl ToolSpec {
    /// The grammar an answer must follow.
    pub fn grammar(&self) -> ToolGrammar {
        let callable: Vec<(usize, &ToolDef)> = self
            .tools
            .iter()
            .enumerate()
            .filter(|(_, t)| match &self.choice {
                ToolChoice::Function(name) => &t.name == name,
                _ => true,
            })
            .collect();
        let mut lark = String::from("%llguidance {}\n");
        // Text that does not open a call (leading whitespace included), or nothing at all.
        let text = format!("TEXT: /(.|\\n)+/ & ~/[ \\t\\r\\n]*{CALL_OPEN}(.|\\n)*/\n");
        let start = match self.choice {
            ToolChoice::None => "start: TEXT?\n",
            ToolChoice::Auto => "start: TEXT? | calls\n",
            ToolChoice::Required | ToolChoice::Function(_) => "start: calls\n",
        };
        lark.push_str(start);
        lark.push_str(&text);
        let mut schemas = Vec::new();
        if self.choice != ToolChoice::None && !callable.is_empty() {
            // A named function is one call to it, as OpenAI makes it; left free, small models
            // repeat the call until the budget ends.
            let one = matches!(self.choice, ToolChoice::Function(_));
            lark.push_str(if self.parallel && !one {
                "calls: call (\"\\n\" call)*\n"
            } else {
                "calls: call\n"
            });
            lark.push_str(&format!(
                "call: \"{CALL_OPEN}\\n\" body \"\\n{CALL_CLOSE}\"\n"
            ));
            let bodies: Vec<String> = callable.iter().map(|(i, _)| format!("fn_{i}")).collect();
            lark.push_str(&format!("body: {}\n", bodies.join(" | ")));
            for (i, tool) in &callable {
                // Names are checked by `valid_name`, so they need no escaping here.
                lark.push_str(&format!(
                    "fn_{i}: \"{{\\\"name\\\": \\\"{}\\\", \\\"arguments\\\": \" @args_{i} \"}}\"\n",
                    tool.name
                ));
                schemas.push((format!("args_{i}"), schema::with_layout(&tool.parameters)));
            }
        } else {
            // `calls` must exist for the start rule to compile; with nothing callable it is
            // unreachable.
            lark.push_str("calls: TEXT\n");
        }
        ToolGrammar { lark, schemas }
    }
}

/// Reads a finished answer: the calls it makes, or `None` when it is a text answer. An answer
/// is a call list exactly when it starts with the call marker (the grammar lets no text start
/// that way); a last call cut short by `max_tokens` is left out.
pub fn parse(text: &str) -> Option<Vec<ToolCall>> {
    if !text.starts_with(CALL_OPEN) {
        return None;
    }
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some((call, used)) = block(rest) {
        calls.extend(call);
        rest = rest[used..].strip_prefix('\n').unwrap_or(&rest[used..]);
    }
    Some(calls)
}

/// One complete `<tool_call>` block at the start of `text`: its call (if the body names one)
/// and the bytes it spans; `None` while the block is incomplete. The body is read as one JSON
/// value, so a `</tool_call>` inside an argument string does not end it.
fn block(text: &str) -> Option<(Option<ToolCall>, usize)> {
    let body_start = text.strip_prefix(CALL_OPEN)?.strip_prefix('\n')?;
    let mut values = serde_json::Deserializer::from_str(body_start).into_iter::<Value>();
    let value = values.next()?.ok()?;
    let after = &body_start[values.byte_offset()..];
    let tail = after.strip_prefix('\n')?.strip_prefix(CALL_CLOSE)?;
    Some((call_of(&value), text.len() - tail.len()))
}

fn call_of(v: &Value) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?.to_string();
    let arguments = v
        .get("arguments")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    Some(ToolCall {
        name,
        arguments: serde_json::to_string(&arguments).ok()?,
    })
}

/// Reads an answer while it streams: decides text or calls from its first characters, then
/// hands out each call as soon as its block closes.
#[derive(Debug, Default)]
pub struct CallScanner {
    buffer: String,
    mode: Option<Mode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Text,
    Calls,
}

/// What a piece of streamed answer turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scanned {
    /// Answer text, to stream as content.
    Text(String),
    /// Calls whose blocks closed.
    Calls(Vec<ToolCall>),
}

impl CallScanner {
    pub fn new() -> Self {
        CallScanner::default()
    }

    /// Whether the answer is a list of calls (known once its start has been seen).
    pub fn is_calls(&self) -> bool {
        self.mode == Some(Mode::Calls)
    }

    /// Feeds the next piece of text.
    pub fn push(&mut self, piece: &str) -> Option<Scanned> {
        self.buffer.push_str(piece);
        if self.mode.is_none() {
            if self.buffer.starts_with(CALL_OPEN) {
                self.mode = Some(Mode::Calls);
            } else if CALL_OPEN.starts_with(self.buffer.as_str()) {
                return None;
            } else {
                self.mode = Some(Mode::Text);
            }
        }
        if self.mode == Some(Mode::Text) {
            return Some(Scanned::Text(std::mem::take(&mut self.buffer)));
        }
        let mut calls = Vec::new();
        loop {
            let rest = self.buffer.strip_prefix('\n').unwrap_or(&self.buffer);
            let skipped = self.buffer.len() - rest.len();
            let Some((call, used)) = block(rest) else {
                break;
            };
            calls.extend(call);
            self.buffer.drain(..skipped + used);
        }
        (!calls.is_empty()).then_some(Scanned::Calls(calls))
    }

    /// Whatever is left when the answer ends: held text, or a call cut short by `max_tokens`
    /// (dropped: it is not a valid call).
    pub fn finish(&mut self) -> Option<Scanned> {
        let rest = std::mem::take(&mut self.buffer);
        match self.mode {
            Some(Mode::Calls) => None,
            _ if rest.is_empty() => None,
            _ => {
                self.mode = Some(Mode::Text);
                Some(Scanned::Text(rest))
            }
        }
    }
}

/// The system-prompt section that describes `tools` to a model whose chat template has no
/// tool support of its own; it teaches the same call format the grammar enforces.
pub fn system_prompt(tools: &[Value]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        s.push('\n');
        s.push_str(&t.to_string());
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// An assistant turn's calls as the model writes them, for templates without tool support.
pub fn render_calls(calls: &[(String, Value)]) -> String {
    calls
        .iter()
        .map(|(name, args)| {
            let body = serde_json::json!({"name": name, "arguments": args});
            format!("{CALL_OPEN}\n{body}\n{CALL_CLOSE}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(choice: ToolChoice, parallel: bool) -> ToolSpec {
        ToolSpec {
            tools: vec![
                ToolDef {
                    name: "get_weather".into(),
                    description: None,
                    parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
                },
                ToolDef {
                    name: "add".into(),
                    description: Some("adds".into()),
                    parameters: json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
                },
            ],
            choice,
            parallel,
        }
    }

    #[test]
    fn grammar_follows_tool_choice() {
        let g = spec(ToolChoice::Auto, true).grammar();
        assert!(g.lark.contains("start: TEXT? | calls"), "{}", g.lark);
        assert!(g.lark.contains("calls: call (\"\\n\" call)*"), "{}", g.lark);
        assert!(g.lark.contains("body: fn_0 | fn_1"), "{}", g.lark);
        assert_eq!(g.schemas.len(), 2);
        assert_eq!(g.schemas[0].1["x-guidance"], schema::layout());

        // Named, it is one call even where parallel calls are allowed.
        let g = spec(ToolChoice::Function("add".into()), true).grammar();
        assert!(g.lark.contains("start: calls\n"), "{}", g.lark);
        assert!(g.lark.contains("calls: call\n"), "{}", g.lark);
        assert!(g.lark.contains("body: fn_1\n"), "{}", g.lark);
        assert_eq!(g.schemas.len(), 1);
        assert_eq!(g.schemas[0].0, "args_1");

        let g = spec(ToolChoice::None, true).grammar();
        assert!(
            g.lark.contains("start: TEXT?\n") && g.schemas.is_empty(),
            "{}",
            g.lark
        );
    }

    #[test]
    fn parses_calls_and_text() {
        let out = "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        assert_eq!(
            parse(out),
            Some(vec![
                ToolCall {
                    name: "add".into(),
                    arguments: "{\"a\":1}".into()
                },
                ToolCall {
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into()
                },
            ])
        );
        assert_eq!(parse("It is sunny."), None);
        // Only an answer that starts with the marker is a call list, as the grammar has it.
        assert_eq!(
            parse("\u{3000}<tool_call>\n{\"name\": \"rm\", \"arguments\": {}}\n</tool_call>"),
            None
        );
        // The marker inside an argument string does not end the block.
        let inner = "<tool_call>\n{\"name\": \"w\", \"arguments\": {\"s\": \"a </tool_call> b\"}}\n</tool_call>";
        assert_eq!(
            parse(inner),
            Some(vec![ToolCall {
                name: "w".into(),
                arguments: "{\"s\":\"a </tool_call> b\"}".into()
            }])
        );
        let mut s = CallScanner::new();
        assert_eq!(s.push(&inner[..60]), None);
        assert_eq!(
            s.push(&inner[60..]),
            Some(Scanned::Calls(vec![ToolCall {
                name: "w".into(),
                arguments: "{\"s\":\"a </tool_call> b\"}".into()
            }]))
        );
        // Cut short by max_tokens: the incomplete call is not a call.
        assert_eq!(
            parse("<tool_call>\n{\"name\": \"add\", \"argu"),
            Some(vec![])
        );
    }

    #[test]
    fn scanner_streams_text_and_calls() {
        let mut s = CallScanner::new();
        assert_eq!(s.push("<tool"), None);
        assert_eq!(s.push("_call>\n{\"name\": \"add\", "), None);
        assert!(s.is_calls());
        assert_eq!(
            s.push("\"arguments\": {\"a\": 2}}\n</tool_call>\n"),
            Some(Scanned::Calls(vec![ToolCall {
                name: "add".into(),
                arguments: "{\"a\":2}".into()
            }]))
        );
        assert_eq!(s.push("<tool_call>\n{\"name\""), None);
        assert_eq!(s.finish(), None);

        let mut s = CallScanner::new();
        assert_eq!(s.push("<"), None);
        assert_eq!(s.push("b>bold"), Some(Scanned::Text("<b>bold".into())));
        assert_eq!(s.push(" more"), Some(Scanned::Text(" more".into())));

        let mut s = CallScanner::new();
        assert_eq!(s.push("<tool"), None);
        assert_eq!(s.finish(), Some(Scanned::Text("<tool".into())));
    }

    #[test]
    fn names_follow_openai_rules() {
        assert!(valid_name("get_weather-2"));
        assert!(!valid_name("math.add"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn rendered_calls_parse_back() {
        let text = render_calls(&[("add".into(), json!({"a": 1}))]);
        assert_eq!(
            parse(&text),
            Some(vec![ToolCall {
                name: "add".into(),
                arguments: "{\"a\":1}".into()
            }])
        );
        assert!(
            system_prompt(&[json!({"type": "function"})])
                .contains("<tools>\n{\"type\":\"function\"}\n</tools>")
        );
    }
}
