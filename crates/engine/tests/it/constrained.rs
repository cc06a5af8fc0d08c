//! Constrained decoding on the real model: answers parse and follow their schema whatever the
//! model would have said, under greedy and sampled decoding and a tight token budget.

use serde_json::{Value, json};
use smallfirst_engine::schema::prepare;
use smallfirst_engine::tools::{self, ToolChoice, ToolDef, ToolSpec};
use smallfirst_engine::{
    ChatMessage, Constraint, EngineError, FinishReason, GenerateParams, SamplingParams,
};

use crate::{engine, greedy, run};

fn constrained(schema: Value, max_tokens: u32, sampling: SamplingParams) -> GenerateParams {
    GenerateParams {
        max_tokens: Some(max_tokens),
        sampling,
        constraint: Some(Constraint::Json(prepare(&schema, true).expect("supported"))),
        ..GenerateParams::default()
    }
}

fn person() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 130},
            "mood": {"enum": ["happy", "sad", "neutral"]},
            "pets": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3}
        },
        "required": ["name", "age", "mood", "pets"]
    })
}

fn check_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let o = v.as_object().expect("an object");
    assert_eq!(o.len(), 4, "strict: exactly the declared keys: {text}");
    assert!(
        o["name"].as_str().is_some_and(|s| s.chars().count() <= 40),
        "{text}"
    );
    assert!(
        o["age"].as_i64().is_some_and(|a| (0..=130).contains(&a)),
        "{text}"
    );
    assert!(
        ["happy", "sad", "neutral"].contains(&o["mood"].as_str().unwrap_or("")),
        "{text}"
    );
    let pets = o["pets"].as_array().expect("pets is an array");
    assert!(
        pets.len() <= 3 && pets.iter().all(Value::is_string),
        "{text}"
    );
}

#[tokio::test]
async fn json_schema_answer_parses_and_validates() {
    let out = run(
        engine(),
        "Describe a person called Ana who is 31 and has a cat.",
        constrained(person(), 96, SamplingParams::greedy()),
    )
    .await
    .expect("runs");
    assert_eq!(out.done.finish, FinishReason::Stop, "{}", out.text);
    check_person(&out.text);
    assert_eq!(out.deltas.concat(), out.text);
}

#[tokio::test]
async fn sampled_answers_are_valid_too() {
    for seed in 0..4 {
        let sampling = SamplingParams {
            temperature: 1.2,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        let out = run(
            engine(),
            "Invent a person.",
            constrained(person(), 128, sampling),
        )
        .await
        .expect("runs");
        check_person(&out.text);
    }
}

#[tokio::test]
async fn a_tight_budget_still_closes_the_answer() {
    // Unbounded strings and an unbounded array, and a prompt that asks for a lot: without
    // steering, the answer would be cut mid-string.
    let schema = json!({
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "paragraphs": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["title", "paragraphs"]
    });
    let ask = "Write a very long story about a lighthouse keeper, with many paragraphs.";
    let free = run(
        engine(),
        ask,
        constrained(schema.clone(), 400, SamplingParams::greedy()),
    )
    .await
    .expect("runs");
    // Budgets under the free answer's length but over the schema's shortest answer
    // (`{"title": "", "paragraphs": []}`, about 15 tokens).
    let n = free.done.completion_tokens;
    assert!(n >= 20, "a free answer long enough to cut: {}", free.text);
    for max_tokens in [n - 1, n - 4] {
        let out = run(
            engine(),
            ask,
            constrained(schema.clone(), max_tokens, SamplingParams::greedy()),
        )
        .await
        .expect("runs");
        assert!(out.done.completion_tokens <= max_tokens);
        let v: Value = serde_json::from_str(&out.text).unwrap_or_else(|e| {
            panic!(
                "max_tokens {max_tokens}: {e}: {:?} {:?}",
                out.deltas, out.done
            )
        });
        assert!(
            v["title"].is_string() && v["paragraphs"].is_array(),
            "{}",
            out.text
        );
        // Closed by the budget, not by the model: it says so.
        assert_eq!(out.done.finish, FinishReason::Length, "{}", out.text);
    }
}

/// The budget never changes an answer that fits it: with exactly the tokens the free answer
/// takes, the answer is the same and ends normally; with fewer, it says it was cut.
#[tokio::test]
async fn a_budget_that_fits_leaves_the_answer_alone() {
    let prompt = "Ana Lopez is 31 years old, happy, and has a cat called Tom.";
    let free = run(
        engine(),
        prompt,
        constrained(person(), 200, SamplingParams::greedy()),
    )
    .await
    .expect("runs");
    assert_eq!(free.done.finish, FinishReason::Stop, "{}", free.text);
    let n = free.done.completion_tokens;
    for budget in [n, n + 1, n + 8] {
        let out = run(
            engine(),
            prompt,
            constrained(person(), budget, SamplingParams::greedy()),
        )
        .await
        .expect("runs");
        assert_eq!(out.text, free.text, "budget {budget} of {n}");
        assert_eq!(
            out.done.finish,
            FinishReason::Stop,
            "budget {budget} of {n}"
        );
    }
    for budget in [n - 1, n / 2] {
        let out = run(
            engine(),
            prompt,
            constrained(person(), budget, SamplingParams::greedy()),
        )
        .await
        .expect("runs");
        assert!(out.done.completion_tokens <= budget, "{}", out.text);
        assert_eq!(
            out.done.finish,
            FinishReason::Length,
            "budget {budget} of {n}: {}",
            out.text
        );
    }
}

#[tokio::test]
async fn json_object_is_an_object() {
    let params = GenerateParams {
        constraint: Some(Constraint::json_object()),
        ..greedy(64)
    };
    let out = run(engine(), "Give me a JSON object about the moon.", params)
        .await
        .expect("runs");
    let v: Value = serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{e}: {}", out.text));
    assert!(v.is_object(), "{}", out.text);
}

fn weather_tools(choice: ToolChoice, parallel: bool) -> ToolSpec {
    let params = |p: Value| prepare(&p, true).expect("supported");
    ToolSpec {
        tools: vec![
            ToolDef {
                name: "get_weather".into(),
                description: Some("Current weather in a city".into()),
                parameters: params(json!({
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "maxLength": 40},
                        "unit": {"enum": ["celsius", "fahrenheit"]}
                    },
                    "required": ["city", "unit"]
                })),
            },
            ToolDef {
                name: "add".into(),
                description: Some("Adds two integers".into()),
                parameters: params(json!({
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"]
                })),
            },
        ],
        choice,
        parallel,
    }
}

async fn tool_answer(spec: ToolSpec, user: &str) -> String {
    tool_answer_within(spec, user, 96).await.0
}

async fn tool_answer_within(
    spec: ToolSpec,
    user: &str,
    max_tokens: u32,
) -> (String, smallfirst_engine::Done) {
    let described: Vec<Value> = spec
        .tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
        .collect();
    let prompt = engine()
        .render_with_tools(&[ChatMessage::new("user", user)], &described)
        .expect("renders");
    let params = GenerateParams {
        constraint: Some(Constraint::Tools(spec)),
        ..greedy(max_tokens)
    };
    let mut g = engine().generate(prompt, params).await.expect("starts");
    let mut text = String::new();
    while let Some(event) = g.events.recv().await {
        match event {
            smallfirst_engine::Event::Delta(d) => text.push_str(&d.text),
            smallfirst_engine::Event::Done(done) => return (text, done),
            smallfirst_engine::Event::Failed(r) | smallfirst_engine::Event::FormatFailed(r) => {
                panic!("failed: {r}")
            }
        }
    }
    panic!("no Done: {text}")
}

/// A call that takes exactly the budget is whole, and ends as a call does; one token less
/// and the answer says it was cut.
#[tokio::test]
async fn a_call_that_takes_exactly_the_budget_is_whole() {
    let ask = "What is the weather in Paris in celsius?";
    for parallel in [false, true] {
        let (free, done) =
            tool_answer_within(weather_tools(ToolChoice::Required, parallel), ask, 96).await;
        assert_eq!(done.finish, FinishReason::Stop, "{free}");
        let n = done.completion_tokens;
        let (exact, done) =
            tool_answer_within(weather_tools(ToolChoice::Required, parallel), ask, n).await;
        assert_eq!(exact, free, "parallel {parallel}");
        assert_eq!(
            done.finish,
            FinishReason::Stop,
            "parallel {parallel}: {exact}"
        );
        assert!(
            tools::parse(&exact).is_some_and(|c| !c.is_empty()),
            "{exact}"
        );
        let (_, done) =
            tool_answer_within(weather_tools(ToolChoice::Required, parallel), ask, n - 1).await;
        assert_eq!(done.finish, FinishReason::Length, "parallel {parallel}");
    }
}

#[tokio::test]
async fn required_tool_call_is_a_valid_call() {
    let text = tool_answer(
        weather_tools(ToolChoice::Required, false),
        "What is the weather in Paris in celsius?",
    )
    .await;
    let calls = tools::parse(&text).unwrap_or_else(|| panic!("not a call: {text}"));
    assert_eq!(calls.len(), 1, "{text}");
    let args: Value = serde_json::from_str(&calls[0].arguments).expect("arguments are JSON");
    match calls[0].name.as_str() {
        "get_weather" => {
            assert!(args["city"].is_string(), "{text}");
            assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap_or("")));
        }
        "add" => assert!(args["a"].is_i64() && args["b"].is_i64(), "{text}"),
        other => panic!("unknown function {other}: {text}"),
    }
}

#[tokio::test]
async fn named_tool_choice_calls_that_function() {
    let text = tool_answer(
        weather_tools(ToolChoice::Function("add".into()), true),
        "What is 2 plus 3?",
    )
    .await;
    let calls = tools::parse(&text).unwrap_or_else(|| panic!("not a call: {text}"));
    // One call, even with parallel calls allowed: the grammar ends after it.
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0].name, "add");
    let args: Value = serde_json::from_str(&calls[0].arguments).expect("JSON");
    assert!(args["a"].is_i64() && args["b"].is_i64(), "{text}");
}

#[tokio::test]
async fn tool_choice_none_answers_in_text() {
    let text = tool_answer(
        weather_tools(ToolChoice::None, true),
        "What is the weather in Paris?",
    )
    .await;
    assert_eq!(tools::parse(&text), None, "{text}");
}

#[tokio::test]
async fn a_grammar_that_does_not_compile_is_refused_at_start() {
    let bad = json!({"type": "string", "pattern": "(unclosed"});
    let params = GenerateParams {
        constraint: Some(Constraint::Json(bad)),
        ..greedy(8)
    };
    let err = run(engine(), "hi", params).await.err().expect("refused");
    assert!(matches!(err, EngineError::Grammar(_)), "{err}");
}

#[tokio::test]
async fn forced_tokens_have_logprobs_and_count_as_completion_tokens() {
    let params = GenerateParams {
        logprobs: Some(2),
        ..constrained(person(), 96, SamplingParams::greedy())
    };
    let out = run(engine(), "Describe Bo, 40, sad, no pets.", params)
        .await
        .expect("runs");
    check_person(&out.text);
    assert_eq!(out.logprobs.len() as u32, out.done.completion_tokens);
    let joined: Vec<u8> = out.logprobs.iter().flat_map(|l| l.bytes.clone()).collect();
    assert_eq!(String::from_utf8_lossy(&joined), out.text);
    assert!(
        out.logprobs
            .iter()
            .all(|l| l.logprob <= 0.0 && l.top.len() == 2)
    );
}

#[tokio::test]
async fn a_choice_answers_one_label_and_traces_its_probability() {
    let labels: Vec<String> = ["card_arrival", "card_linking", "exchange_rate", "refund"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for sampling in [
        SamplingParams::greedy(),
        SamplingParams {
            temperature: 1.0,
            seed: Some(3),
            ..SamplingParams::greedy()
        },
    ] {
        let params = GenerateParams {
            max_tokens: Some(16),
            sampling,
            constraint: Some(Constraint::Choice(labels.clone())),
            confidence: true,
            ..GenerateParams::default()
        };
        let out = run(engine(), "When will my new card arrive?", params)
            .await
            .expect("runs");
        assert!(
            labels.contains(&out.text),
            "exactly one label: {:?}",
            out.text
        );
        assert_eq!(out.done.finish, FinishReason::Stop);
        let trace = &out.done.trace;
        assert!(
            !trace.is_empty(),
            "the first token is a choice among labels"
        );
        let p: f32 = trace.iter().map(|s| s.p).product();
        assert!(p > 0.0 && p <= 1.0, "{p}");
        for s in trace {
            assert!(
                s.p + s.runner_up <= 1.0 + 1e-4,
                "two allowed tokens share one distribution"
            );
            assert!((s.offset as usize) < out.text.len());
        }
    }
}

#[tokio::test]
async fn free_text_traces_every_sampled_token_and_counts_agree() {
    let params = GenerateParams {
        max_tokens: Some(8),
        sampling: SamplingParams::greedy(),
        confidence: true,
        ..GenerateParams::default()
    };
    let e = engine();
    let out = run(e, "Say hello.", params).await.expect("runs");
    assert_eq!(
        out.done.trace.len() as u32,
        out.done.completion_tokens + u32::from(out.done.finish == FinishReason::Stop)
    );
    assert!(
        out.done
            .trace
            .iter()
            .all(|s| s.p > 0.0 && s.p >= s.runner_up),
        "greedy picks the top token"
    );
    assert_eq!(
        e.count_tokens(&crate::prompt(e, "Say hello.")) as u32,
        out.prompt_tokens
    );
}
