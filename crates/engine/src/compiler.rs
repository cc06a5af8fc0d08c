//! Grammars compiled off the engine thread, on a thread of their own.
//!
//! Compiling a schema into a grammar recurses over it and can take from milliseconds to (for a
//! hostile schema) much longer. On the engine thread that would hold up every running stream,
//! and an overflow of that thread's stack would take the process down. So a request's grammar
//! is compiled before it is queued, by one compiler thread with a large stack ([`STACK`]);
//! the schema checks in [`crate::schema::limits`] keep what it is asked to compile far inside
//! that stack, and a panic in the grammar library is caught and becomes the request's error.
//! The token table is built on the first constrained request (0.1–1 s), not at load; compiled
//! grammars are kept by their text (a schema costs milliseconds to compile), the least recently
//! used dropped past [`CACHE`] entries.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Instant;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llguidance::toktrie::TokEnv;
use llguidance::{Matcher, ParserFactory, TokenParser};
use tokio::sync::oneshot;

use crate::EngineError;
use crate::constraint::{Closers, Constraint, Guide, compile_error};

/// Compiled grammars kept per model.
const CACHE: usize = 64;

/// The compiler thread's stack. A grammar's compilation recursion grows with the schema's
/// size; the request limits keep that to about 1.5 MiB at most (5,000 properties), where the
/// default 2 MiB thread stack overflowed at 7,500. Pages are only committed when touched.
pub(crate) const STACK: usize = 64 << 20;

/// A handle to the compiler thread; cheap to clone.
#[derive(Clone)]
pub(crate) struct Compiler {
    jobs: mpsc::Sender<Job>,
}

struct Job {
    constraint: Constraint,
    reply: oneshot::Sender<Result<Guide, EngineError>>,
}

impl Compiler {
    /// Starts the compiler thread for `model`.
    pub(crate) fn start(model: Arc<LlamaModel>) -> Result<Compiler, EngineError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("smallfirst-grammar".into())
            .stack_size(STACK)
            .spawn(move || serve(&model, &rx))
            .map_err(|e| EngineError::Grammar(format!("cannot start the grammar compiler: {e}")))?;
        Ok(Compiler { jobs })
    }

    /// The grammar state a sequence under `constraint` starts from.
    pub(crate) async fn guide(&self, constraint: &Constraint) -> Result<Guide, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job {
                constraint: constraint.clone(),
                reply,
            })
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }
}

/// The compiler thread's body: one job at a time until every handle is gone.
fn serve(model: &LlamaModel, jobs: &mpsc::Receiver<Job>) {
    let mut grammars: Option<Grammars> = None;
    while let Ok(job) = jobs.recv() {
        if job.reply.is_closed() {
            continue;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            if grammars.is_none() {
                let t = Instant::now();
                grammars = Some(Grammars::new(&LlamaSampler::llguidance_tok_env(model))?);
                tracing::info!(
                    elapsed_ms = t.elapsed().as_millis() as u64,
                    "built the token table for constrained decoding"
                );
            }
            match grammars.as_mut() {
                Some(g) => g.guide(&job.constraint),
                None => Err(EngineError::Grammar("no token table".into())),
            }
        }));
        let result = result.unwrap_or_else(|_| {
            // The cache may be half-updated: start it again.
            grammars = None;
            Err(EngineError::Grammar(
                "the grammar compiler failed on this schema; simplify it".into(),
            ))
        });
        let _ = job.reply.send(result);
    }
}

/// The per-model grammar compiler and its cache.
pub(crate) struct Grammars {
    factory: ParserFactory,
    cache: HashMap<String, (TokenParser, u64)>,
    clock: u64,
    closers: Arc<Closers>,
}

impl Grammars {
    pub(crate) fn new(env: &TokEnv) -> Result<Self, EngineError> {
        let mut factory =
            ParserFactory::new_simple(env).map_err(|e| EngineError::TokenTable(e.to_string()))?;
        // Errors come back as values; nothing should print on its own, and an error names
        // what is wrong without the parser's state or the whole grammar.
        factory.quiet();
        factory.limits_mut().verbose_errors = false;
        Ok(Grammars {
            factory,
            cache: HashMap::new(),
            clock: 0,
            closers: Arc::new(Closers::new(env)),
        })
    }

    /// A sequence's grammar state, with the first mask computed: a grammar whose parser gives
    /// up at once (too many alternatives in one row) is refused here, before the request is
    /// queued, rather than failing its first step.
    pub(crate) fn guide(&mut self, constraint: &Constraint) -> Result<Guide, EngineError> {
        let mut matcher = self.matcher(constraint)?;
        let mask = matcher
            .compute_mask()
            .map_err(|e| EngineError::Grammar(compile_error(&e.to_string())))?;
        let mut guide = Guide::new(matcher, constraint, Arc::clone(&self.closers));
        guide.set_mask(mask);
        Ok(guide)
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
            .map_err(|e| EngineError::Grammar(compile_error(&e.to_string())))?;
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

    #[cfg(test)]
    pub(crate) fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// Compiles `constraint`'s grammar against a byte-level token table (no model needed) and
/// computes its first mask: the refusals a model's compiler gives, for checking a request or a
/// schema offline. Runs on the caller's thread.
pub fn check_offline(constraint: &Constraint) -> Result<(), EngineError> {
    let env = llguidance::toktrie::ApproximateTokEnv::single_byte_env();
    Grammars::new(&env)?.guide(constraint).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_errors_are_one_short_line() {
        let long = format!(
            "lexer error: {}\nstate: {}",
            "x".repeat(500),
            "y".repeat(100)
        );
        let e = compile_error(&long);
        assert!(!e.contains('\n') && !e.contains("state:"), "{e}");
        assert!(e.chars().count() < 300, "{e}");
        assert!(compile_error("").starts_with("the grammar does not compile"));
        let row = "Parser Error: Current row has 9995 items; max is 2000; consider making";
        assert!(compile_error(row).contains("too many alternatives"));
    }
}
