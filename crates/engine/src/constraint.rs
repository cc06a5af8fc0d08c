//! Constrained decoding: a grammar decides which tokens may come next, so structured answers
//! are valid by construction.
//!
//! llguidance computes the allowed-token mask from the grammar's lexer and Earley parser in
//! tens of microseconds a token, against milliseconds for llama.cpp's GBNF sampler. Grammars
//! are compiled on their own thread ([`crate::compiler`]); a sequence holds a [`Guide`], which
//! also knows the shortest way to an end from where the answer is, so that the token budget
//! steers an answer only when the model's own next token would leave it unable to close.

use std::sync::Arc;

use llguidance::Matcher;
use llguidance::api::{GrammarWithLexer, TopLevelGrammar};
use llguidance::toktrie::{SimpleVob, TokEnv};
use serde_json::Value;

use crate::EngineError;
use crate::schema;
use crate::tools::{CALL_OPEN, ToolChoice, ToolSpec};

/// Bytes of an answer's start kept to tell a tool call from text.
const HEAD: usize = 32;

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

    pub(crate) fn grammar(&self) -> TopLevelGrammar {
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

/// What a constrained answer is steered to when its budget would not hold the model's own
/// next token and the shortest way to an end after it, in this order: the end, if the grammar
/// allows it; the longest allowed token that only closes (`"`, `}`, `]`); the longest that
/// moves on to the next required key (`,`, `",`); else the longest allowed token that opens
/// nothing. The same order measures that shortest way ([`Guide::shortest_end`]), so a steered
/// answer ends within the tokens it was measured to need.
pub(crate) struct Closers {
    env: TokEnv,
    /// Longest first.
    close: Vec<u32>,
    /// Longest first.
    next: Vec<u32>,
}

impl Closers {
    /// Every token made only of `"`, `}`, `]` and spaces with at least one of the three, and
    /// every one made of those and `,` with a `,`.
    pub(crate) fn new(env: &TokEnv) -> Self {
        let trie = env.tok_trie();
        let only = |t: u32, set: &[u8], one_of: &[u8]| {
            let bytes = trie.token(t);
            bytes.iter().any(|b| one_of.contains(b)) && bytes.iter().all(|b| set.contains(b))
        };
        let vocab = 0..trie.vocab_size() as u32;
        let longest_first = |mut v: Vec<u32>| {
            v.sort_by_key(|&t| (std::cmp::Reverse(trie.token_len(t)), t));
            v
        };
        Closers {
            close: longest_first(
                vocab
                    .clone()
                    .filter(|&t| only(t, b"\"}] ", b"\"}]"))
                    .collect(),
            ),
            next: longest_first(vocab.filter(|&t| only(t, b"\"}], ", b",")).collect()),
            env: env.clone(),
        }
    }

    /// The token the shortest way to an end takes next under `mask`; `None` when nothing is
    /// allowed.
    fn pick(&self, mask: &SimpleVob) -> Option<u32> {
        let allowed = |t: &&u32| mask.is_allowed(**t);
        if let Some(&t) = self.close.iter().find(allowed) {
            return Some(t);
        }
        if let Some(&t) = self.next.iter().find(allowed) {
            return Some(t);
        }
        let trie = self.env.tok_trie();
        let mut best: Option<(bool, bool, usize, u32)> = None;
        mask.iter_set_entries(|t| {
            let t = t as u32;
            let bytes = trie.token(t);
            if bytes.is_empty() || trie.eos_tokens().contains(&t) {
                return;
            }
            // Prefer tokens that open nothing and need nothing after them (a `-` needs a
            // digit), then the longest.
            let key = (
                !bytes.iter().any(|b| matches!(b, b'{' | b'[')),
                bytes != b"-",
                bytes.len(),
                u32::MAX - t,
            );
            if best.is_none_or(|b| key > b) {
                best = Some(key);
            }
        });
        best.map(|(_, _, _, t)| u32::MAX - t)
    }
}

/// The shortest way to an end the grammar allows from some state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End {
    /// Tokens it takes, sampled and forced (the end-of-generation token not counted).
    pub tokens: u32,
    /// Its first token; `None` when the grammar may end right there.
    pub first: Option<u32>,
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
    closers: Arc<Closers>,
}

impl Guide {
    pub(crate) fn new(matcher: Matcher, constraint: &Constraint, closers: Arc<Closers>) -> Self {
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
            closers,
        }
    }

    /// The mask of the state the guide starts in, computed where it was compiled.
    pub(crate) fn set_mask(&mut self, mask: SimpleVob) {
        self.mask = Some(mask);
    }

    /// Whether the budget applies to this answer as to a structure that must close: always,
    /// except for a text answer under `auto` / `none`, which ends as text does.
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
                .map_err(|e| EngineError::Grammar(compile_error(&e.to_string())))?;
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
        let text = utf8_prefix(&bytes);
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

    /// The grammar may end here: what was written is a whole answer.
    pub(crate) fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// The shortest way from here to an end, if it takes at most `limit` tokens: the steering
    /// order of [`Closers`] followed, with what the grammar forces on the way tokenized by
    /// `tokenize`, then undone. Costs a mask per token it walks.
    pub(crate) fn shortest_end(
        &mut self,
        tokenize: &impl Fn(&[u8]) -> Vec<u32>,
        limit: u32,
    ) -> Result<Option<End>, EngineError> {
        let mut consumed = 0usize;
        let walked = self.walk_to_end(tokenize, limit, &mut consumed);
        let undone = self.matcher.rollback(consumed);
        let end = walked?;
        undone.map_err(|e| EngineError::Grammar(e.to_string()))?;
        Ok(end)
    }

    /// [`shortest_end`](Self::shortest_end) after `token`, which is not kept.
    pub(crate) fn shortest_end_after(
        &mut self,
        token: u32,
        tokenize: &impl Fn(&[u8]) -> Vec<u32>,
        limit: u32,
    ) -> Result<Option<End>, EngineError> {
        self.matcher
            .consume_token(token)
            .map_err(|e| EngineError::Grammar(e.to_string()))?;
        let mut consumed = 0usize;
        let walked = self.walk_to_end(tokenize, limit, &mut consumed);
        let undone = self.matcher.rollback(consumed + 1);
        let end = walked?;
        undone.map_err(|e| EngineError::Grammar(e.to_string()))?;
        Ok(end)
    }

    fn walk_to_end(
        &mut self,
        tokenize: &impl Fn(&[u8]) -> Vec<u32>,
        limit: u32,
        consumed: &mut usize,
    ) -> Result<Option<End>, EngineError> {
        let mut first = None;
        let mut tokens = 0u32;
        loop {
            if self.matcher.is_accepting().map_err(grammar)? {
                return Ok(Some(End { tokens, first }));
            }
            if self.matcher.is_stopped() || tokens >= limit {
                return Ok(None);
            }
            let forced = self.matcher.compute_ff_bytes();
            let text = utf8_prefix(&forced);
            if !text.is_empty() {
                let ts = tokenize(text);
                let n = self.matcher.try_consume_tokens(&ts).map_err(grammar)?;
                if n > 0 {
                    *consumed += n;
                    tokens += n as u32;
                    first = first.or(ts.first().copied());
                    continue;
                }
            }
            let mask = self.matcher.compute_mask().map_err(grammar)?;
            let Some(t) = self.closers.pick(&mask) else {
                return Ok(None);
            };
            self.matcher.consume_token(t).map_err(grammar)?;
            *consumed += 1;
            tokens += 1;
            first = first.or(Some(t));
        }
    }
}

/// The grammar library's error as one line a client can act on: its first line, without the
/// grammar text or parser state it may quote, at most 200 characters.
pub(crate) fn compile_error(e: &str) -> String {
    if e.contains("items; max is") {
        return "the format allows too many alternatives at one point for the grammar to \
                follow (optional properties, `anyOf` branches, `enum` values); make properties \
                required or offer fewer alternatives"
            .into();
    }
    let first = e.lines().next().unwrap_or("").trim();
    let mut short: String = first.chars().take(200).collect();
    if short.len() < first.len() {
        short.push('…');
    }
    if short.is_empty() {
        short = "the grammar does not compile".into();
    }
    format!("{short} (simplify the schema: fewer alternatives, shorter patterns, smaller bounds)")
}

fn grammar(e: impl std::fmt::Display) -> EngineError {
    EngineError::Grammar(e.to_string())
}

/// The longest prefix of `bytes` that is whole UTF-8.
fn utf8_prefix(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes,
        Err(e) => &bytes[..e.valid_up_to()],
    }
}

#[cfg(test)]
mod tests {
    use llguidance::toktrie::ApproximateTokEnv;
    use serde_json::json;

    use super::*;
    use crate::schema::prepare;
    use crate::tools::ToolDef;

    use crate::compiler::Grammars;

    /// A tokenizer with one token per byte: every string is spelled byte by byte.
    fn grammars() -> Grammars {
        Grammars::new(&ApproximateTokEnv::single_byte_env()).expect("token table")
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

    /// One token per byte, as the single-byte table has.
    fn bytes(b: &[u8]) -> Vec<u32> {
        b.iter().map(|&x| u32::from(x)).collect()
    }

    #[test]
    fn the_shortest_end_is_measured_then_undone() {
        let mut g = grammars();
        let c = json(
            json!({"type": "object", "required": ["name", "age"], "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"}}}),
        );
        let mut guide = g.guide(&c).expect("compiles");
        for t in bytes(b"{\"name\": \"Jo") {
            guide.accept(t).expect("allowed");
        }
        let rest = "\", \"age\": 0}";
        let end = guide
            .shortest_end(&bytes, 100)
            .expect("walks")
            .expect("ends");
        assert_eq!(end.tokens, rest.len() as u32);
        assert_eq!(end.first, Some(u32::from(b'"')));
        assert_eq!(
            guide.shortest_end(&bytes, 5).expect("walks"),
            None,
            "past the limit"
        );
        // After one more letter the way is as long; after the closing quote, one shorter.
        let after = guide
            .shortest_end_after(u32::from(b'h'), &bytes, 100)
            .expect("walks")
            .expect("ends");
        assert_eq!(after.tokens, rest.len() as u32);
        let after = guide
            .shortest_end_after(u32::from(b'"'), &bytes, 100)
            .expect("walks")
            .expect("ends");
        assert_eq!(after.tokens, rest.len() as u32 - 1);
        // Nothing was kept: the answer goes on from where it was, and ends as measured.
        for t in bytes(b"hn") {
            guide.accept(t).expect("still in the string");
        }
        for t in bytes(rest.as_bytes()) {
            guide.accept(t).expect("the measured end");
        }
        assert!(guide.is_accepting());
        assert_eq!(
            guide.shortest_end(&bytes, 10).expect("walks"),
            Some(End {
                tokens: 0,
                first: None
            })
        );
    }

    #[test]
    fn compiled_grammars_are_cached_and_bounded() {
        let mut g = grammars();
        let c = json(json!({"type": "integer"}));
        assert!(accepts(&mut g, &c, "42"));
        assert!(accepts(&mut g, &c, "7"), "a cached grammar starts fresh");
        assert_eq!(g.cached(), 1);
        for i in 0..70 {
            let _ = g.matcher(&json(json!({"const": i}))).expect("compiles");
        }
        assert_eq!(g.cached(), 64);
    }
}
