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
use llguidance::toktrie::SimpleVob;
use llguidance::{Matcher, ParserFactory, TokenParser};
use serde_json::Value;

use crate::EngineError;
use crate::schema;
use crate::tools::ToolSpec;

/// Compiled grammars kept per model.
const CACHE: usize = 64;

/// Tokens kept back at the end of a constrained answer's budget for closing it (half of
/// the budget when that is less); see [`Closers`].
pub(crate) const CLOSING_RESERVE: u32 = 32;

/// What an answer must follow.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// One JSON value matching this schema (already through [`schema::prepare`]).
    Json(Value),
    /// Text or tool calls, as the [`ToolSpec`] allows.
    Tools(ToolSpec),
}

impl Constraint {
    /// Any JSON object: OpenAI's `response_format: {"type": "json_object"}`.
    pub fn json_object() -> Self {
        Constraint::Json(serde_json::json!({"type": "object"}))
    }

    fn grammar(&self) -> TopLevelGrammar {
        match self {
            Constraint::Json(schema) => {
                let mut schema = schema.clone();
                if let Value::Object(map) = &mut schema {
                    map.insert("x-guidance".into(), schema::layout());
                }
                TopLevelGrammar::from_json_schema(schema)
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
}

impl Grammars {
    pub(crate) fn new(model: &LlamaModel) -> Result<Self, EngineError> {
        let env = LlamaSampler::llguidance_tok_env(model);
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| EngineError::Grammar(format!("cannot build the token table: {e}")))?;
        // Errors come back as values; nothing should print on its own.
        factory.quiet();
        Ok(Grammars {
            factory,
            cache: HashMap::new(),
            clock: 0,
        })
    }

    /// The end-of-generation tokens, and every token made only of `"`, `}`, `]` and spaces
    /// with at least one of the three.
    pub(crate) fn closers(&self) -> Closers {
        let trie = self.factory.tok_env().tok_trie();
        let eog = trie.eos_tokens().to_vec();
        let tokens = (0..trie.vocab_size() as u32)
            .filter(|&t| {
                let bytes = trie.token(t);
                bytes.iter().any(|b| b"\"}]".contains(b))
                    && bytes.iter().all(|b| b"\"}] ".contains(b))
            })
            .collect();
        Closers { eog, tokens }
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

/// What a constrained answer is steered to when its budget is nearly spent: the end if the
/// grammar allows it, else the likeliest allowed token that only closes (`"`, `}`, `]`).
/// Strings, numbers and arrays then end within a few tokens instead of running into
/// `max_tokens` unparseable.
#[derive(Debug, Default)]
pub(crate) struct Closers {
    eog: Vec<u32>,
    tokens: Vec<u32>,
}

impl Closers {
    /// `None` when nothing closing is allowed (a required key must come first): the caller
    /// samples as usual.
    pub(crate) fn pick(&self, logits: &[f32], allowed: &impl Fn(u32) -> bool) -> Option<u32> {
        if let Some(&end) = self.eog.iter().find(|&&t| allowed(t)) {
            return Some(end);
        }
        let logit = |t: u32| logits.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY);
        self.tokens
            .iter()
            .copied()
            .filter(|&t| allowed(t))
            .max_by(|&a, &b| logit(a).total_cmp(&logit(b)))
    }
}

/// One sequence's grammar state.
pub(crate) struct Guide {
    matcher: Matcher,
    mask: Option<SimpleVob>,
}

impl Guide {
    pub(crate) fn new(matcher: Matcher) -> Self {
        Guide {
            matcher,
            mask: None,
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
        Ok(tokens)
    }

    /// The grammar is complete and allows nothing more.
    pub(crate) fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}
