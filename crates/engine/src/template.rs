//! Renders a conversation into a prompt with the model's own chat template.
//!
//! GGUF files carry the Hugging Face Jinja template in `tokenizer.chat_template`. It runs in
//! minijinja, not llama.cpp's built-in template matcher, because the matcher only knows
//! templates by pattern and renders unknown ones wrong. minijinja is a sandbox: templates reach
//! no files or environment, and a fuel limit ends a template that loops forever. Rendering
//! follows `transformers`: `trim_blocks`, `lstrip_blocks`, Python string methods, and the
//! `raise_exception` / `strftime_now` globals.
//!
//! A model without a template gets ChatML (`<|im_start|>role\n…<|im_end|>`), the most common
//! format among small instruct models, and a warning at load.
//!
//! A template is untrusted code, so besides the fuel limit its memory is bounded
//! ([`bounds`]), and it renders on a thread with a large stack ([`STACK`]): a template can
//! build values nested as deep as its fuel allows, and dropping or printing them recurses.

mod bounds;

use std::sync::Arc;

use minijinja::machinery::{CompiledTemplate, TemplateConfig, Vm, WhitespaceConfig};
use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, ErrorKind, Value as JinjaValue, context};
use serde::Serialize;
use serde_json::Value;

use crate::{EngineError, tools};

/// The longest template accepted from a model file; real ones are a few KiB.
pub(crate) const MAX_TEMPLATE: usize = 256 << 10;

/// The stack of the thread a template renders on. Pages are only committed when touched.
const STACK: usize = 256 << 20;

/// The fallback for models whose GGUF has no `tokenizer.chat_template`.
pub const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n\
{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Enough for any real chat template over a long conversation; a template that needs more
/// is looping.
const FUEL: u64 = 5_000_000;

/// One message as templates see it (`message.role`, `message.content`, and for tool use
/// `message.tool_calls` / `message.tool_call_id`, as Hugging Face templates expect them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// An assistant turn's calls: `{"id", "type": "function", "function": {"name",
    /// "arguments"}}` with `arguments` a JSON object, not a string (the Hugging Face
    /// convention templates are written for).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Value>,
    /// A tool result's call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A compiled chat template plus the special tokens it may print.
pub struct ChatTemplate {
    /// The bounded functions, filters and formatter the rewritten template calls. Kept for
    /// the process's life, as the compiled template borrows from it (one per loaded model).
    env: &'static Environment<'static>,
    compiled: Arc<CompiledTemplate<'static>>,
    bos_token: String,
    eos_token: String,
    is_fallback: bool,
    /// The template renders `tools` and tool turns itself, in the `<tool_call>` format the
    /// grammar enforces (Qwen2.5, Hermes). Templates that teach another format (Llama 3.1's
    /// `{"name", "parameters"}`) are given the tools the way templates without tools are.
    knows_tools: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("is_fallback", &self.is_fallback)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`, or the ChatML fallback when the model has none.
    pub fn new(
        source: Option<String>,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, EngineError> {
        let is_fallback = source.is_none();
        let source = source.unwrap_or_else(|| CHATML.to_string());
        if source.len() > MAX_TEMPLATE {
            return Err(EngineError::Template(format!(
                "the chat template is {} KiB, more than the {} KiB accepted",
                source.len() >> 10,
                MAX_TEMPLATE >> 10
            )));
        }
        // The bounded operators are called by these names; a template may not define its own.
        if source.contains("__smallfirst") {
            return Err(EngineError::Template(
                "the chat template uses names reserved for the server (`__smallfirst…`)".into(),
            ));
        }
        let knows_tools = source.contains("tools")
            && source.contains("tool_calls")
            && source.contains(tools::CALL_OPEN);
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        bounds::install(&mut env);
        let env: &'static Environment<'static> = Box::leak(Box::new(env));
        let source: &'static str = Box::leak(source.into_boxed_str());
        let config = TemplateConfig {
            syntax_config: SyntaxConfig,
            ws_config: WhitespaceConfig {
                keep_trailing_newline: false,
                lstrip_blocks: true,
                trim_blocks: true,
            },
            default_auto_escape: Arc::new(|_| AutoEscape::None),
        };
        let mut compiled = CompiledTemplate::new("chat", source, &config).map_err(|e| {
            EngineError::Template(format!("the chat template does not compile: {e}"))
        })?;
        compiled.instructions = bounds::rewrite(&compiled.instructions);
        for block in compiled.blocks.values_mut() {
            *block = bounds::rewrite(block);
        }
        Ok(ChatTemplate {
            env,
            compiled: Arc::new(compiled),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            is_fallback,
            knows_tools,
        })
    }

    /// Whether this is the ChatML fallback rather than the model's own template.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }

    /// The prompt for `messages`, ending where the assistant's answer starts, with `tools`
    /// (OpenAI tool objects; may be empty) described to the model.
    ///
    /// A template that handles tools gets them as `tools` and the messages as they are. For
    /// one that does not, smallfirst does what such templates do: the tools are described in
    /// the system prompt, an assistant's calls become `<tool_call>` blocks in its text, and a
    /// tool's result becomes a user turn in `<tool_response>` tags.
    pub fn render(&self, messages: &[ChatMessage], tools: &[Value]) -> Result<String, EngineError> {
        let uses_tools = !tools.is_empty()
            || messages
                .iter()
                .any(|m| !m.tool_calls.is_empty() || m.role == "tool");
        let root = if self.knows_tools || !uses_tools {
            let tools = (!tools.is_empty()).then_some(tools);
            context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => true,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            }
        } else {
            context! {
                messages => inline_tools(messages, tools),
                add_generation_prompt => true,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            }
        };
        let env = self.env;
        let compiled = Arc::clone(&self.compiled);
        let run = move || {
            let mut out = String::new();
            let result = Vm::new(env).eval(
                &compiled.instructions,
                root,
                &compiled.blocks,
                &mut minijinja::machinery::make_string_output(&mut out),
                AutoEscape::None,
            );
            // Whatever the template built is dropped here, on the large stack.
            result.map(|_| out).map_err(|e| render_error(&e))
        };
        let rendered = std::thread::Builder::new()
            .name("smallfirst-template".into())
            .stack_size(STACK)
            .spawn(run)
            .map_err(|e| EngineError::Template(format!("cannot start a render: {e}")))?
            .join()
            .map_err(|_| EngineError::Template("the chat template failed to render".into()))?;
        rendered.map_err(EngineError::Template)
    }
}

/// The conversation for a template without tool support: tools in the system prompt, calls
/// and results as text.
fn inline_tools(messages: &[ChatMessage], tools: &[Value]) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    if !tools.is_empty() {
        let described = tools::system_prompt(tools);
        match messages.first() {
            Some(first) if first.role == "system" => {
                out.push(ChatMessage::new(
                    "system",
                    format!("{}\n\n{described}", first.content),
                ));
            }
            _ => out.push(ChatMessage::new("system", described)),
        }
    }
    let skip =
        usize::from(!tools.is_empty() && messages.first().is_some_and(|m| m.role == "system"));
    for m in &messages[skip..] {
        if m.role == "tool" {
            let text = format!("<tool_response>\n{}\n</tool_response>", m.content);
            // Consecutive results go into one user turn, as Hermes-style templates do.
            match out.last_mut() {
                Some(prev)
                    if prev.role == "user" && prev.content.starts_with("<tool_response>") =>
                {
                    prev.content.push('\n');
                    prev.content.push_str(&text);
                }
                _ => out.push(ChatMessage::new("user", text)),
            }
        } else if !m.tool_calls.is_empty() {
            let calls: Vec<(String, Value)> = m
                .tool_calls
                .iter()
                .map(|c| {
                    let f = &c["function"];
                    (
                        f["name"].as_str().unwrap_or_default().to_string(),
                        f["arguments"].clone(),
                    )
                })
                .collect();
            let calls = tools::render_calls(&calls);
            let content = if m.content.is_empty() {
                calls
            } else {
                format!("{}\n{calls}", m.content)
            };
            out.push(ChatMessage::new(m.role.clone(), content));
        } else {
            out.push(ChatMessage::new(m.role.clone(), m.content.clone()));
        }
    }
    out
}

fn render_error(e: &minijinja::Error) -> String {
    if let Some(bound) =
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<bounds::Exceeded>())
    {
        return format!("the chat template was stopped: {bound}");
    }
    match e.kind() {
        ErrorKind::InvalidOperation => format!(
            "the chat template refused the conversation: {}",
            e.detail().unwrap_or("no reason given")
        ),
        ErrorKind::OutOfFuel => "the chat template ran too long and was stopped".to_string(),
        _ => format!("the chat template failed: {e}"),
    }
}

fn raise_exception(message: String) -> Result<JinjaValue, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)` for the directives chat templates use (`%Y %m %d %b %B %H %M %S`).
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime(&format, secs)
}

fn strftime(format: &str, unix_secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('b') => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(m - 1) as usize]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (ChatML with a default system prompt).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_the_model_template() {
        let t = ChatTemplate::new(Some(SMOLLM2.into()), "<|im_start|>", "<|im_end|>")
            .expect("compiles");
        let p = t
            .render(&[ChatMessage::new("user", "Hi")], &[])
            .expect("renders");
        assert!(p.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
        assert!(p.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
        assert!(!t.is_fallback());
    }

    #[test]
    fn tools_go_into_the_prompt_of_a_template_without_tool_support() {
        let t = ChatTemplate::new(Some(SMOLLM2.into()), "", "").expect("compiles");
        let tool = serde_json::json!({"type": "function", "function": {"name": "add"}});
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = vec![serde_json::json!({
            "id": "call_1", "type": "function",
            "function": {"name": "add", "arguments": {"a": 1}}
        })];
        let mut result = ChatMessage::new("tool", "3");
        result.tool_call_id = Some("call_1".into());
        let p = t
            .render(
                &[
                    ChatMessage::new("system", "Be brief."),
                    ChatMessage::new("user", "1+2?"),
                    call,
                    result,
                ],
                &[tool],
            )
            .expect("renders");
        assert!(
            p.starts_with("<|im_start|>system\nBe brief.\n\n# Tools"),
            "{p}"
        );
        assert!(
            p.contains(
                "<tools>\n{\"type\":\"function\",\"function\":{\"name\":\"add\"}}\n</tools>"
            ),
            "{p}"
        );
        // `name` before `arguments`, as the format is taught.
        assert!(
            p.contains("<|im_start|>assistant\n<tool_call>\n{\"name\":\"add\",\"arguments\":{\"a\":1}}\n</tool_call><|im_end|>"),
            "{p}"
        );
        assert!(
            p.contains("<|im_start|>user\n<tool_response>\n3\n</tool_response><|im_end|>"),
            "{p}"
        );
        assert_eq!(p.matches("<|im_start|>system").count(), 1, "{p}");
    }

    #[test]
    fn a_template_with_tool_support_gets_the_tools() {
        let src = "{% if tools %}{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% endif %}\
{% for m in messages %}{{ m.role }}:{{ m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }} {{ c.function.arguments | tojson }}</tool_call>{% endfor %}{% endif %};{% endfor %}";
        let t = ChatTemplate::new(Some(src.into()), "", "").expect("compiles");
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls =
            vec![serde_json::json!({"function": {"name": "add", "arguments": {"a": 1}}})];
        let p = t
            .render(
                &[
                    ChatMessage::new("user", "q"),
                    call,
                    ChatMessage::new("tool", "3"),
                ],
                &[serde_json::json!({"type": "function", "function": {"name": "add"}})],
            )
            .expect("renders");
        assert_eq!(
            p,
            "[add]user:q;assistant:<tool_call>add {\"a\":1}</tool_call>;tool:3;"
        );
        // A template that teaches another call format gets the tools the inline way, so the
        // model is taught the format the grammar enforces.
        let llama = "{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}\
{% for m in messages %}{{ m.role }}:{{ m.content }}{% if m.tool_calls %}{\"name\"{% endif %};{% endfor %}";
        let t = ChatTemplate::new(Some(llama.into()), "", "").expect("compiles");
        let p = t
            .render(
                &[ChatMessage::new("user", "q")],
                &[serde_json::json!({"type": "function", "function": {"name": "add"}})],
            )
            .expect("renders");
        assert!(p.starts_with("system:# Tools"), "{p}");
    }

    #[test]
    fn fallback_is_chatml() {
        let t = ChatTemplate::new(None, "", "").expect("compiles");
        let p = t
            .render(
                &[
                    ChatMessage::new("system", "S"),
                    ChatMessage::new("user", "U"),
                ],
                &[],
            )
            .expect("renders");
        assert_eq!(
            p,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(t.is_fallback());
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0].content.strip().upper() }}";
        let t = ChatTemplate::new(Some(src.into()), "", "").expect("compiles");
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  hi ")], &[])
                .expect("renders"),
            "HI"
        );
        let err = t
            .render(&[ChatMessage::new("system", "x")], &[])
            .expect_err("refused");
        assert!(err.to_string().contains("first must be user"), "{err}");
    }

    #[test]
    fn a_looping_template_runs_out_of_fuel() {
        let src = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(Some(src.into()), "", "").expect("compiles");
        let err = t.render(&[], &[]).expect_err("stopped");
        assert!(err.to_string().contains("ran too long"), "{err}");
    }

    /// Renders `src` over a short conversation.
    fn render(src: &str) -> Result<String, EngineError> {
        let t = ChatTemplate::new(Some(src.into()), "<s>", "</s>").expect("compiles");
        t.render(&[ChatMessage::new("user", "hi")], &[])
    }

    #[test]
    fn the_rewritten_template_renders_as_minijinja_does() {
        // Loops (with `loop.index`, `break`, `else`), macros with and without `caller`, a
        // recursive loop, filters, tests, `+`, `~`, `*`, list literals and slices.
        let src = "{% macro m(x, y=2) %}[{{ x ~ '-' ~ y }}{% if caller %}{{ caller() }}{% endif %}]{% endmacro %}\
{% set ns = namespace(n=0, s='') %}\
{% for m_ in messages %}{{ loop.index }}:{{ m_.role|upper }}={{ m_.content * 2 }};\
{% set ns.n = ns.n + loop.length %}{% set ns.s = ns.s ~ m_.role[:1] %}{% endfor %}\
{% for i in range(10) %}{% if i > 3 %}{% break %}{% endif %}{{ i }}{% else %}none{% endfor %}\
{% for x in [] %}x{% else %}empty{% endfor %}\
{{ m(1) }}{% call m(3, y=4) %}inside{% endcall %}\
{% for item in [[1, [2, [3]]], 4] recursive %}{% if item is sequence %}<{{ loop(item) }}>{% else %}{{ item }}{% endif %}{% endfor %}\
{{ ns.n }}|{{ ns.s }}|{{ ([1, 2] + [3])|join(',') }}|{{ 'ab' * 3 }}|{{ 2 * 3 + 1.5 }}|{{ [1, 2, 3][1:] }}\
|{{ messages|map(attribute='role')|join('/') }}|{{ 'x,y'.split(',') }}|{{ '{} {}'.format('a', 'b') }}\
{% if add_generation_prompt %}<gen>{% endif %}";
        let messages = [
            ChatMessage::new("system", "S"),
            ChatMessage::new("user", "U"),
        ];
        let ours = ChatTemplate::new(Some(src.into()), "", "")
            .expect("compiles")
            .render(&messages, &[])
            .expect("renders");
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        let theirs = env
            .render_str(
                src,
                context! { messages => messages, add_generation_prompt => true },
            )
            .expect("minijinja renders it");
        assert_eq!(ours, theirs);
        assert!(ours.contains("<1<2<3>>>4"), "{ours}");
    }

    #[test]
    fn templates_that_grow_without_bound_are_stopped() {
        for src in [
            // The doubling of the issue: thirty concatenations, a GiB.
            "{% set ns = namespace(s='a') %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            "{% set ns = namespace(s='a') %}{% for i in range(30) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "{{ 'a' * 100000000 }}",
            // A repeated list stays lazy (no memory) until it is made a list.
            "{% set l = [1] * 10000000 %}{{ l|list|length }}",
            "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
            // Output captured by a macro never reaches the writer (1 KiB a pass, 100,000 passes:
            // past the memory bound well before the fuel runs out).
            "{% macro m() %}{% for i in range(100000) %}{{ '' }}LITERAL{% endfor %}{% endmacro %}{% set x = m() %}",
            // Filters that copy their input, and slices.
            "{% set s = 'a' * 4000000 %}{{ ([s] * 100000)|map('lower')|length }}",
            "{% set s = 'a' * 4000000 %}{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = ns.l + [s[1:]] %}{% endfor %}",
            "{% set s = 'a b ' * 1000000 %}{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = ns.l + [s.split('x')] %}{% endfor %}",
            "{% set big = 'x' * 1000000 %}{{ ([big] * 10000)|join }}",
            "{{ ('a' * 1000000)|replace('a', 'bbbbbbbbbb') }}",
            "{{ 'a\nb'|indent(100000000) }}",
            "{{ ('x' * 1000000).replace('x', 'yyyyyyyy') }}",
            "{{ '{:>99999999}'.format(1) }}",
            "{{ (('ab ' * 1000000)|string).split() }}",
        ] {
            let src = src.replace("LITERAL", &"x".repeat(1024));
            let e = render(&src).expect_err(&src).to_string();
            assert!(e.contains("stopped"), "{}: {e}", &src[..src.len().min(120)]);
        }
        // A loop that builds nothing runs out of fuel instead.
        let e = render("{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}")
            .expect_err("out of fuel")
            .to_string();
        assert!(e.contains("ran too long"), "{e}");
        // Names the bounded operators use are reserved.
        assert!(
            ChatTemplate::new(
                Some("{% macro __smallfirst_charge(n) %}{% endmacro %}".into()),
                "",
                ""
            )
            .is_err()
        );
    }

    #[test]
    fn deep_values_are_built_and_dropped_on_the_large_stack() {
        let src = "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l|length }}";
        assert_eq!(render(src).expect("renders"), "1");
    }

    #[test]
    fn a_template_too_large_is_refused() {
        let src = "x".repeat(MAX_TEMPLATE + 1);
        assert!(ChatTemplate::new(Some(src), "", "").is_err());
    }

    #[test]
    fn broken_template_is_an_error_not_a_panic() {
        assert!(ChatTemplate::new(Some("{% for %}".into()), "", "").is_err());
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-02-29 13:05:09 UTC
        assert_eq!(
            strftime("%d %b %Y %H:%M:%S", 1_709_211_909),
            "29 Feb 2024 13:05:09"
        );
        assert_eq!(strftime("%B %m 100%%", 0), "January 01 100%");
    }
}
