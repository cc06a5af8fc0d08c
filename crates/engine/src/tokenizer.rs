//! Prompts to tokens in time linear in their length.
//!
//! llama.cpp finds special tokens (`<|im_start|>`, `<tool_call>`, …) in a text by splitting it
//! into fragments, and its cost grows with the number of special tokens times the text's
//! length: a rendered conversation of 8,000 empty messages took 2.7 s to tokenize, 4,000 took
//! 0.74 s. Text on either side of a special token is tokenized on its own anyway, so a long
//! prompt is cut right after special tokens into pieces of a few KiB, each tokenized alone,
//! which gives the same tokens in linear time. The cut is only made where the next character
//! is not whitespace, so that tokens which strip the whitespace around them (llama.cpp's
//! `lstrip` / `rstrip` attributes) see the same neighbours as in one piece.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;

/// Prompts shorter than this are tokenized in one piece.
const PIECE: usize = 4096;

pub(crate) struct Tokenizer {
    model: Arc<LlamaModel>,
    /// The BOS token's text when the model adds one ("" otherwise), to avoid adding a second.
    bos_text: String,
    /// The vocabulary's special tokens' texts, when it has any.
    specials: Option<AhoCorasick>,
}

impl Tokenizer {
    pub(crate) fn new(model: Arc<LlamaModel>) -> Self {
        let bos_text = bos_text(&model);
        // Reading token attributes panics on bits llama.cpp does not define; a vocabulary
        // like that is tokenized in one piece.
        let specials = catch_unwind(AssertUnwindSafe(|| special_texts(&model)))
            .ok()
            .filter(|t| !t.is_empty())
            .and_then(|texts| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(texts)
                    .ok()
            });
        Tokenizer {
            model,
            bos_text,
            specials,
        }
    }

    /// A rendered prompt's tokens. The template may already print BOS; adding a second one
    /// degrades some models.
    pub(crate) fn tokenize(&self, prompt: &str) -> Vec<LlamaToken> {
        let add_bos = self.bos_text.is_empty() || !prompt.starts_with(&self.bos_text);
        let vocab = self.model.vocab();
        let Some(specials) = self.specials.as_ref().filter(|_| prompt.len() > PIECE) else {
            return vocab.tokenize(prompt.as_bytes(), add_bos, true);
        };
        let mut tokens = Vec::new();
        let mut start = 0;
        for cut in cuts(specials, prompt) {
            if cut - start >= PIECE {
                tokens.extend(vocab.tokenize(
                    &prompt.as_bytes()[start..cut],
                    add_bos && start == 0,
                    true,
                ));
                start = cut;
            }
        }
        tokens.extend(vocab.tokenize(&prompt.as_bytes()[start..], add_bos && start == 0, true));
        tokens
    }
}

impl Tokenizer {
    /// Plain text's tokens: special-token texts in it stay text (linear time, no cuts
    /// needed), with BOS when the model adds one and `bos` asks for it.
    pub(crate) fn tokenize_text(&self, text: &str, bos: bool) -> Vec<LlamaToken> {
        let add_bos = bos && !self.bos_text.is_empty();
        self.model.vocab().tokenize(text.as_bytes(), add_bos, false)
    }

    /// The model's fill-in-the-middle tokens (prefix, suffix, middle), when it has all three.
    pub(crate) fn fim(&self) -> Option<[LlamaToken; 3]> {
        let vocab = self.model.vocab();
        let tokens = [vocab.fim_pre(), vocab.fim_suf(), vocab.fim_mid()];
        tokens.iter().all(|t| t.0 >= 0).then_some(tokens)
    }

    /// [`tokenize`](Self::tokenize), unless the prompt is plainly longer than `limit` tokens:
    /// then `Err` with a count it is longer than, found by tokenizing only its start (a prompt
    /// of 2 MB is refused for a 4,096-token context after reading 32 KiB of it).
    pub(crate) fn tokenize_within(
        &self,
        prompt: &str,
        limit: usize,
    ) -> Result<Vec<LlamaToken>, usize> {
        // Text runs at about four bytes a token; eight per token is a generous start.
        let head = limit.saturating_mul(8).max(PIECE);
        if prompt.len() > head {
            let mut cut = head;
            while !prompt.is_char_boundary(cut) {
                cut -= 1;
            }
            // A cut mid-word can split what the whole prompt spells as one token, but never
            // merges more than a few: the slack keeps the verdict safe.
            let n = self.tokenize(&prompt[..cut]).len();
            if n > limit.saturating_add(HEAD_SLACK) {
                return Err(n - HEAD_SLACK);
            }
        }
        Ok(self.tokenize(prompt))
    }
}

/// Tokens a cut through a prompt can add over the same text whole.
const HEAD_SLACK: usize = 8;

/// Where `prompt` may be cut: right after a special token that is followed by something other
/// than whitespace.
fn cuts<'a>(specials: &'a AhoCorasick, prompt: &'a str) -> impl Iterator<Item = usize> + 'a {
    specials.find_iter(prompt).filter_map(|m| {
        let next = prompt[m.end()..].chars().next()?;
        (!next.is_whitespace()).then_some(m.end())
    })
}

/// The texts llama.cpp matches as special tokens: control and user-defined tokens.
fn special_texts(model: &LlamaModel) -> Vec<String> {
    let vocab = model.vocab();
    (0..vocab.n_tokens().max(0))
        .map(LlamaToken)
        .filter(|&t| {
            let attr = vocab.attr(t);
            attr.contains(LlamaTokenAttr::Control) || attr.contains(LlamaTokenAttr::UserDefined)
        })
        .filter_map(|t| {
            vocab
                .text(t)
                .and_then(|c| c.to_str().ok())
                .map(str::to_string)
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The BOS token's text when the model adds one ("" otherwise).
pub(crate) fn bos_text(model: &LlamaModel) -> String {
    let vocab = model.vocab();
    if vocab.should_add_bos() {
        String::from_utf8_lossy(&vocab.token_to_piece(vocab.bos(), true, None)).into_owned()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use llama_cpp_2::model::params::LlamaModelParams;

    use super::*;

    /// The test model (the test script sets its path).
    fn model() -> Arc<LlamaModel> {
        let path = std::env::var("SMALLFIRST_TEST_MODEL").expect("SMALLFIRST_TEST_MODEL is set");
        let backend = crate::runner::backend().expect("llama.cpp backend");
        Arc::new(
            LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
                .expect("test model loads"),
        )
    }

    #[test]
    fn pieces_give_the_tokens_of_the_whole() {
        let model = model();
        let t = Tokenizer::new(Arc::clone(&model));
        assert!(t.specials.is_some(), "the test model has special tokens");
        let mut prompt = String::new();
        for i in 0..1200 {
            let role = ["user", "assistant", "system"][i % 3];
            let content = match i % 5 {
                0 => String::new(),
                1 => format!("  message {i} with  double  spaces\n\n and lines "),
                2 => format!(
                    "<tool_call>\n{{\"name\": \"f\", \"arguments\": {{\"n\": {i}}}}}\n</tool_call>"
                ),
                3 => "héllo wörld ✓ <|im_end|>inside".to_string(),
                _ => format!("x{i}<|im_start|>"),
            };
            prompt.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
        }
        prompt.push_str("<|im_start|>assistant\n");
        assert!(prompt.len() > 8 * PIECE, "long enough to be cut");
        let whole = model.vocab().tokenize(
            prompt.as_bytes(),
            t.bos_text.is_empty() || !prompt.starts_with(&t.bos_text),
            true,
        );
        assert_eq!(t.tokenize(&prompt), whole);
        assert_eq!(t.tokenize_within(&prompt, whole.len()), Ok(whole.clone()));
        let over = t
            .tokenize_within(&prompt, 100)
            .expect_err("plainly too long");
        assert!(over > 100 && over < whole.len(), "{over}");
        let short = "<|im_start|>user\nhi<|im_end|>\n";
        assert_eq!(
            t.tokenize(short),
            model.vocab().tokenize(short.as_bytes(), true, true)
        );
    }
}
