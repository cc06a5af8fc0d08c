//! Constrained decoding: a grammar decides which tokens may come next, so structured answers
//! are valid by construction.
//!
//! llguidance computes the allowed-token mask from the grammar's lexer and Earley parser in
//! tens of microseconds a token, against milliseconds for llama.cpp's GBNF sampler. Its token
//! table is built once per model, on the first constrained request (0.1–1 s), not at load;
//! compiled grammars are kept by their text (a schema costs milliseconds to compile), the
//! least recently used dropped past [`CACHE`] entries.

use std::collections::HashMap;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llguidance::api::{GrammarWithLexer, TopLevelGrammar};
use llguidance::toktrie::{SimpleVob, TokEnv};
use llguidance::{Matcher, ParserFactory, TokenParser};
use serde_json::Value;

use crate::EngineError;
use crate::schema;
use crate::tools::{CALL_OPEN, ToolChoice, ToolSpec};

/// Compiled grammars kept per model.
const CACHE: usize = 64;

/// Bytes of an answer's start kept to tell a tool call from text.
const HEAD: usize = 32;

/// Most tokens kept back at the end of a constrained answer's budget for closing it: each
/// required key still to come costs its forced key and a short value, about six tokens.
/// See [`Closers`].
pub(crate) const CLOSING_RESERVE: u32 = 64;

/// What an answer must follow.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// One JSON value matching this schema (already through [`schema::prepare`]).
    Json(Value),
    /// Text or tool calls, as the [`ToolSpec`] allows.
    Tools(ToolSpec),
    /// Exactly one of these strings (a classification's labels), nothing around it.
    Choice(Vec<String>),
}

impl Constraint {
    /// Any JSON object: OpenAI's `response_format: {"type": "json_object"}`.
    pub fn json_object() -> Self {
        Constraint::Json(serde_json::json!({"type": "object"}))
    }

    fn grammar(&self) -> TopLevelGrammar {
        match self {
            Constraint::Json(schema) => {
                TopLevelGrammar::from_json_schema(schema::with_layout(schema))
            }
            Constraint::Choice(options) => {
                // Lark string literals take JSON's escapes.
                let alternatives: Vec<String> = options
                    .iter()
                    .map(|o| serde_json::to_string(o).unwrap_or_default())
                    .collect();
                TopLevelGrammar::from_lark(format!("start: {}", alternatives.join(" | ")))
            }
            Constraint::Tools(spec) => {
                let g = spec.grammar();
                let mut grammars = vec![GrammarWithLexer::from_lark(g.lark)];
                grammars.extend(g.schemas.into_iter().map(|(name, schema)| {
                    let mut sub = GrammarWithLexer::from_json_schema(schema);
                    sub.name = Some(name);
                    sub
                }));
                TopLevelGrammar {
                    grammars,
                    max_tokens: None,
                }
            }
        }
    }
}

/// The per-model grammar compiler and its cache; lives on the engine thread.
pub(crate) struct Grammars {
    factory: ParserFactory,
    cache: HashMap<String, (TokenParser, u64)>,
    clock: u64,
    closers: Closers,
}

impl Grammars {
    pub(crate) fn new(model: &LlamaModel) -> Result<Self, EngineError> {
        Grammars::from_env(&LlamaSampler::llguidance_tok_env(model))
    }

    fn from_env(env: &TokEnv) -> Result<Self, EngineError> {
        let mut factory =
            ParserFactory::new_simple(env).map_err(|e| EngineError::TokenTable(e.to_string()))?;
        // Errors come back as values; nothing should print on its own.
        factory.quiet();
        let closers = Closers::new(env);
        Ok(Grammars {
            factory,
            cache: HashMap::new(),
            clock: 0,
            closers,
        })
    }

    /// What a constrained answer is steered to when its budget runs low.
    pub(crate) fn closers(&self) -> &Closers {
        &self.closers
    }

    /// A fresh matcher for `constraint`, compiling its grammar unless it is cached.
    pub(crate) fn matcher(&mut self, constraint: &Constraint) -> Result<Matcher, EngineError> {
        let grammar = constraint.grammar();
        let key = serde_json::to_string(&grammar)
            .map_err(|e| EngineError::Grammar(format!("cannot serialise the grammar: {e}")))?;
        self.clock += 1;
        if let Some((parser, used)) = self.cache.get_mut(&key) {
            *used = self.clock;
            return Ok(Matcher::new(Ok(parser.deep_clone())));
        }
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| EngineError::Grammar(e.to_string()))?;
        if self.cache.len() >= CACHE
            && let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.cache.remove(&oldest);
        }
        let matcher = Matcher::new(Ok(parser.deep_clone()));
        self.cache.insert(key, (parser, self.clock));
        Ok(matcher)
    }
}

/// What a constrained answer is steered to when its budget is nearly spent, in this order:
/// the end, if the grammar allows it; the likeliest allowed token that only closes (`"`, `}`,
/// `]`); the likeliest that moves on to the next required key (`,`, `",`). Strings, numbers and
/// arrays then end within a few tokens instead of running into `max_tokens` unparseable.
#[derive(Debug)]
pub(crate) struct Closers {
    eog: Vec<u32>,
    close: Vec<u32>,
    next: Vec<u32>,
}

impl Closers {
    /// The end-of-generation tokens, every token made only of `"`, `}`, `]` and spaces with at
    /// least one of the three, and every one made of those and `,` with a `,`.
    fn new(env: &TokEnv) -> Self {
        let trie = env.tok_trie();
        let only = |t: u32, set: &[u8], one_of: &[u8]| {
            let bytes = trie.token(t);
            bytes.iter().any(|b| one_of.contains(b)) && bytes.iter().all(|b| set.contains(b))
        };
        let vocab = 0..trie.vocab_size() as u32;
        Closers {
            eog: trie.eos_tokens().to_vec(),
            close: vocab
                .clone()
                .filter(|&t| only(t, b"\"}] ", b"\"}]"))
                .collect(),
            next: vocab.filter(|&t| only(t, b"\"}], ", b",")).collect(),
        }
    }

    /// `None` when none of these is allowed (a number's first digit, a key): the caller
    /// samples as usual.
    pub(crate) fn pick(&self, logits: &[f32], allowed: &impl Fn(u32) -> bool) -> Option<u32> {
        if let Some(&end) = self.eog.iter().find(|&&t| allowed(t)) {
            return Some(end);
        }
        let logit = |t: u32| logits.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY);
        let best = |tokens: &[u32]| {
            tokens
                .iter()
                .copied()
                .filter(|&t| allowed(t))
                .max_by(|&a, &b| logit(a).total_cmp(&logit(b)))
        };
        best(&self.close).or_else(|| best(&self.next))
    }
}

/// One sequence's grammar state.
pub(crate) struct Guide {
    matcher: Matcher,
    mask: Option<SimpleVob>,
    /// The answer may be free text (tools with `auto` / `none`): only an answer that opened a
    /// call is steered closed when the budget runs low; text is left to end as it ends.
    text_allowed: bool,
    /// The answer's first bytes, enough to tell a call from text.
    head: Vec<u8>,
}

impl Guide {
    pub(crate) fn new(matcher: Matcher, constraint: &Constraint) -> Self {
        let text_allowed = match constraint {
            Constraint::Json(_) | Constraint::Choice(_) => false,
            Constraint::Tools(spec) => {
                !matches!(spec.choice, ToolChoice::Required | ToolChoice::Function(_))
            }
        };
        Guide {
            matcher,
            mask: None,
            text_allowed,
            head: Vec::new(),
        }
    }

    /// Whether running out of budget should steer this answer closed (see [`Closers`]).
    pub(crate) fn steers_closed(&self) -> bool {
        !self.text_allowed || self.head.starts_with(CALL_OPEN.as_bytes())
    }

    fn remember(&mut self, tokens: &[u32]) {
        if self.head.len() >= HEAD {
            return;
        }
        if let Ok(env) = self.matcher.tok_env() {
            for &t in tokens {
                self.head.extend_from_slice(env.tok_trie().token(t));
            }
        }
    }

    /// The tokens allowed next (end-of-sequence included where the grammar may end).
    pub(crate) fn mask(&mut self) -> Result<&SimpleVob, EngineError> {
        if self.mask.is_none() {
            let mask = self
                .matcher
                .compute_mask_or_eos()
                .map_err(|e| EngineError::Grammar(e.to_string()))?;
            self.mask = Some(mask);
        }
        self.mask
            .as_ref()
            .ok_or_else(|| EngineError::Grammar("no mask".into()))
    }

    /// Advances past `token`, which must have been allowed.
    pub(crate) fn accept(&mut self, token: u32) -> Result<(), EngineError> {
        self.mask = None;
        self.remember(&[token]);
        self.matcher
            .consume_token(token)
            .map_err(|e| EngineError::Grammar(e.to_string()))
    }

    /// Consumes what the grammar forces next, as tokens from `tokenize` (at most `limit`),
    /// and returns them; empty when nothing is forced. The last token of the forced text is
    /// left to the model, since it may merge with what follows (`" "` + `Paris` → `" Paris`).
    pub(crate) fn forced(
        &mut self,
        tokenize: impl Fn(&[u8]) -> Vec<u32>,
        limit: usize,
    ) -> Result<Vec<u32>, EngineError> {
        let bytes = self.matcher.compute_ff_bytes();
        let text = match std::str::from_utf8(&bytes) {
            Ok(_) => &bytes[..],
            Err(e) => &bytes[..e.valid_up_to()],
        };
        if text.len() < 2 {
            return Ok(Vec::new());
        }
        let mut tokens = tokenize(text);
        tokens.pop();
        tokens.truncate(limit);
        if tokens.is_empty() {
            return Ok(tokens);
        }
        // A tokenizer that adds a space prefix can disagree with the grammar: keep only what
        // the grammar accepts.
        let n = self
            .matcher
            .try_consume_tokens(&tokens)
            .map_err(|e| EngineError::Grammar(e.to_string()))?;
        tokens.truncate(n);
        self.mask = None;
        self.remember(&tokens);
        Ok(tokens)
    }

    /// The grammar is complete and allows nothing more.
    pub(crate) fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}

#[cfg(test)]
mod tests {
    use llguidance::toktrie::ApproximateTokEnv;
    use serde_json::json;

    use super::*;
    use crate::schema::prepare;
    use crate::tools::ToolDef;

    /// A tokenizer with one token per byte: every string is spelled byte by byte.
    fn grammars() -> Grammars {
        Grammars::from_env(&ApproximateTokEnv::single_byte_env()).expect("token table")
    }

    fn accepts(g: &mut Grammars, c: &Constraint, text: &str) -> bool {
        let mut m = g.matcher(c).expect("compiles");
        let tokens: Vec<u32> = text.bytes().map(u32::from).collect();
        m.try_consume_tokens(&tokens)
            .is_ok_and(|n| n == tokens.len())
            && m.is_accepting().unwrap_or(false)
    }

    fn json(schema: serde_json::Value) -> Constraint {
        Constraint::Json(prepare(&schema, true).expect("supported"))
    }

    #[test]
    fn schemas_accept_exactly_their_instances() {
        let mut g = grammars();
        let cases = [
            (
                json!({"enum": ["red", "green"]}),
                vec!["\"red\""],
                vec!["\"blue\"", "red"],
            ),
            (
                json!({"type": "object", "required": ["a"], "properties": {
                    "a": {"type": "object", "required": ["b"], "properties": {"b": {"type": "integer"}}}}}),
                vec!["{\"a\": {\"b\": 1}}"],
                // Strict: no other keys; compact layout: no other whitespace.
                vec![
                    "{\"a\": {\"b\": 1, \"c\": 2}}",
                    "{\"a\":{\"b\":1}}",
                    "{\"a\": {}}",
                ],
            ),
            (
                json!({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}),
                vec!["[1]", "[1, -2]"],
                vec!["[]", "[1, 2, 3]", "[1.5]"],
            ),
            (
                json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
                vec!["\"x\"", "null"],
                vec!["1"],
            ),
            (
                json!({"$defs": {"P": {"type": "integer", "minimum": 0}}, "type": "object",
                       "properties": {"p": {"$ref": "#/$defs/P"}}, "required": ["p"]}),
                vec!["{\"p\": 3}"],
                vec!["{\"p\": -1}", "{}"],
            ),
            (
                json!({"type": "string", "format": "date"}),
                vec!["\"2024-02-29\""],
                vec!["\"2024-13-01\"", "\"yesterday\""],
            ),
            (
                json!({"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"}),
                vec!["\"AB123\""],
                vec!["\"ab123\"", "\"AB1234\""],
            ),
            (
                json!({"type": "number", "minimum": 0, "maximum": 1}),
                vec!["0.25", "1"],
                vec!["1.5", "-0.1"],
            ),
        ];
        for (schema, good, bad) in cases {
            let c = json(schema.clone());
            for text in good {
                assert!(accepts(&mut g, &c, text), "{schema} should accept {text}");
            }
            for text in bad {
                assert!(!accepts(&mut g, &c, text), "{schema} should refuse {text}");
            }
        }
    }

    fn tools(choice: ToolChoice, parallel: bool) -> Constraint {
        let def = |name: &str, params: serde_json::Value| ToolDef {
            name: name.into(),
            description: None,
            parameters: prepare(&params, true).expect("supported"),
        };
        Constraint::Tools(ToolSpec {
            tools: vec![
                def(
                    "add",
                    json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}),
                ),
                def("ping", json!({"type": "object", "properties": {}})),
            ],
            choice,
            parallel,
        })
    }

    #[test]
    fn tool_grammars_follow_tool_choice() {
        let mut g = grammars();
        let add = "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n</tool_call>";
        let ping = "<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>";
        let two = format!("{add}\n{ping}");
        let auto = tools(ToolChoice::Auto, true);
        assert!(accepts(&mut g, &auto, "It is sunny."));
        assert!(accepts(&mut g, &auto, ""));
        assert!(accepts(&mut g, &auto, add));
        assert!(accepts(&mut g, &auto, &two));
        // Arguments follow the schema; names are the offered ones; text never opens a call.
        assert!(!accepts(&mut g, &auto, &add.replace("1}", "\"x\"}")));
        assert!(!accepts(&mut g, &auto, &add.replace("add", "sub")));
        assert!(!accepts(&mut g, &auto, " <tool_call>\nanything"));

        let required = tools(ToolChoice::Required, false);
        assert!(accepts(&mut g, &required, add));
        assert!(!accepts(&mut g, &required, "It is sunny."));
        assert!(!accepts(&mut g, &required, &two), "one call only");

        let named = tools(ToolChoice::Function("ping".into()), true);
        assert!(accepts(&mut g, &named, ping));
        assert!(!accepts(&mut g, &named, add));

        let none = tools(ToolChoice::None, true);
        assert!(accepts(&mut g, &none, "It is sunny."));
        assert!(!accepts(&mut g, &none, add));
    }

    #[test]
    fn compiled_grammars_are_cached_and_bounded() {
        let mut g = grammars();
        let c = json(json!({"type": "integer"}));
        assert!(accepts(&mut g, &c, "42"));
        assert!(accepts(&mut g, &c, "7"), "a cached grammar starts fresh");
        assert_eq!(g.cache.len(), 1);
        for i in 0..CACHE + 3 {
            let _ = g.matcher(&json(json!({"const": i}))).expect("compiles");
        }
        assert_eq!(g.cache.len(), CACHE);
    }
}
