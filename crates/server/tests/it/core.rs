//! The core without HTTP: `Gateway::complete` on the real embedded model and remote tiers whose
//! backend is scripted in-process (answers, failures), and the `Outcome` each path produces.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{Value, json};
use smallfirst_router::backend::BoxFuture;
use smallfirst_router::{Answer, Backend, BackendError, Config, Policy, Privacy, RemoteTier};
use smallfirst_server::gateway::{Failover, Failure, Reply, Request};
use smallfirst_server::{AppState, EmbeddedTier, Limits, Options, app};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::{collect, engine};

/// What a scripted backend does on each try, in order (the last step repeats).
#[derive(Clone, Copy)]
enum Step {
    Answer,
    Fail(u16),
}

#[derive(Debug)]
struct Scripted {
    model: String,
    steps: Mutex<VecDeque<Step>>,
    /// The bodies it was sent.
    seen: Mutex<Vec<Value>>,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Answer => f.write_str("Answer"),
            Step::Fail(s) => write!(f, "Fail({s})"),
        }
    }
}

impl Scripted {
    fn new(model: &str, steps: &[Step]) -> Arc<Self> {
        Arc::new(Scripted {
            model: model.into(),
            steps: Mutex::new(steps.iter().copied().collect()),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn seen(&self) -> Vec<Value> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Backend for Scripted {
    fn model(&self) -> &str {
        &self.model
    }

    fn chat<'a>(
        &'a self,
        request: &'a Bytes,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<Answer, BackendError>> {
        let body: Value = serde_json::from_slice(request).expect("the core sends JSON");
        self.seen.lock().expect("lock").push(body);
        let step = {
            let mut steps = self.steps.lock().expect("lock");
            if steps.len() > 1 {
                steps.pop_front()
            } else {
                steps.front().copied()
            }
        };
        let model = self.model.clone();
        Box::pin(async move {
            match step.unwrap_or(Step::Answer) {
                Step::Answer => Ok(Answer::Json(Bytes::from(
                    json!({
                        "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0,
                        "model": model,
                        "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "billing"}}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
                    })
                    .to_string(),
                ))),
                Step::Fail(status) => Err(BackendError::Status {
                    tier: model,
                    status,
                    message: "scripted failure".into(),
                    body: Bytes::from_static(b"{\"error\":{\"message\":\"scripted failure\"}}"),
                    retry_after: None,
                }),
            }
        })
    }
}

const CONFIG: &str = r#"
[tiers.local]
backend = "embedded"
model = "smollm2-135m-instruct"

[tiers.mid]
backend = "openai"
model = "mid-model"
base_url = "http://127.0.0.1:9/v1"
local = true
fallback = "frontier"
context_window = 8192
retry = { attempts = 1 }

[tiers.frontier]
backend = "openai"
model = "big-model"
base_url = "http://127.0.0.1:9/v1"
context_window = 100000
retry = { attempts = 1 }

[tasks.triage]
tier = "local"
escalate = ["frontier"]
threshold = 1.0
labels = ["billing", "technical", "other"]
"#;

struct Fixture {
    state: AppState,
    mid: Arc<Scripted>,
    frontier: Arc<Scripted>,
}

fn fixture(mid: &[Step], frontier: &[Step]) -> Fixture {
    let config = Config::parse(CONFIG).expect("valid config");
    let mid_backend = Scripted::new("mid-model", mid);
    let frontier_backend = Scripted::new("big-model", frontier);
    let remote = |name: &str, backend: Arc<Scripted>| {
        RemoteTier::new(config.tier(name).expect("tier"), backend)
    };
    let engine = engine();
    let window = engine.info().n_ctx;
    let state = AppState::with_tiers(
        Some(EmbeddedTier {
            engine,
            model_id: "smollm2-135m-instruct".into(),
            name: "local".into(),
            heads: Default::default(),
            verifiers: Default::default(),
            priors: Default::default(),
        }),
        vec![
            remote("mid", Arc::clone(&mid_backend)),
            remote("frontier", Arc::clone(&frontier_backend)),
        ],
        Policy::new(&config, Some(window)),
        Limits::default(),
        Options::default(),
    );
    Fixture {
        state,
        mid: mid_backend,
        frontier: frontier_backend,
    }
}

fn request(body: Value, privacy: Privacy, task: Option<&str>) -> Request {
    Request {
        chat: serde_json::from_value(body.clone()).expect("a chat request"),
        raw: Bytes::from(body.to_string()),
        native: None,
        privacy,
        task: task.map(str::to_string),
        key: None,
        only: None,
    }
}

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn a_named_tier_fails_over_down_its_chain_and_says_so() {
    let f = fixture(&[Step::Fail(503)], &[Step::Answer]);
    let outcome = f
        .state
        .gateway()
        .complete(request(ask("mid", "hi"), Privacy::Unset, None))
        .await;
    assert_eq!(outcome.tier.as_deref(), Some("frontier"));
    assert_eq!(
        outcome.failover,
        [Failover {
            tier: "mid".into(),
            code: "upstream_error"
        }]
    );
    assert!(matches!(outcome.answer, Ok(Reply::Json(_))), "{outcome:?}");
    assert_eq!(outcome.reason.code, "model=mid");
    assert_eq!(outcome.usage.map(|u| u.total_tokens), Some(8));
    assert!(!outcome.escalated);
}

#[tokio::test]
async fn a_local_only_request_never_leaves_the_machine() {
    let f = fixture(&[Step::Fail(503)], &[Step::Answer]);
    let gateway = f.state.gateway();
    let refused = gateway
        .complete(request(ask("frontier", "hi"), Privacy::LocalOnly, None))
        .await;
    assert!(
        matches!(&refused.answer, Err(Failure::Request(e)) if e.to_string().contains("local-only")),
        "{refused:?}"
    );
    // On the machine, `mid` may answer, but its fallback is not: its failure stands.
    let failed = gateway
        .complete(request(ask("mid", "hi"), Privacy::LocalOnly, None))
        .await;
    assert!(
        matches!(
            &failed.answer,
            Err(Failure::Tier(BackendError::Status { status: 503, .. }))
        ),
        "{failed:?}"
    );
    assert_eq!(failed.tier.as_deref(), Some("mid"));
    assert!(failed.failover.is_empty());
    assert!(
        f.frontier.seen().is_empty(),
        "the frontier was never sent it"
    );
    assert_eq!(f.mid.seen().len(), 1);
}

fn triage() -> Value {
    json!({"model": "auto", "max_tokens": 8, "metadata": {"labels": ["billing", "technical", "other"]},
        "messages": [{"role": "user", "content": "I was charged twice for my order."}]})
}

#[tokio::test]
async fn a_low_confidence_answer_escalates_with_its_confidence_kept() {
    let f = fixture(&[Step::Answer], &[Step::Answer]);
    let outcome = f
        .state
        .gateway()
        .complete(request(triage(), Privacy::Unset, Some("triage")))
        .await;
    assert!(outcome.escalated, "{outcome:?}");
    assert_eq!(outcome.tier.as_deref(), Some("frontier"));
    assert!(
        outcome.reason.code.starts_with("low_confidence"),
        "{:?}",
        outcome.reason
    );
    let c = outcome.confidence.expect("the local answer was judged");
    assert!(c.value < 1.0);
    assert_eq!(outcome.task.as_ref().map(|t| t.0.as_str()), Some("triage"));
    assert!(outcome.timings.decide.is_some());
    // The escalated body is the client's, less the labels OpenAI would refuse.
    let sent = f.frontier.seen();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].get("metadata").is_none(), "{}", sent[0]);
    assert_eq!(sent[0]["messages"], triage()["messages"]);
}

#[tokio::test]
async fn a_request_kept_to_one_tier_is_routed_and_judged_there_but_never_escalated() {
    let f = fixture(&[Step::Answer], &[Step::Answer]);
    // The triage task escalates everything below 1.0; kept to the embedded tier, its answer
    // is still the task's (a label, judged) and stands.
    let mut req = request(triage(), Privacy::Unset, Some("triage"));
    req.only = Some("local".into());
    let outcome = f.state.gateway().complete(req).await;
    assert!(!outcome.escalated, "{outcome:?}");
    assert_eq!(outcome.tier.as_deref(), Some("local"));
    assert!(outcome.confidence.is_some(), "the answer was judged");
    let label = outcome.label.expect("a label answer");
    assert!(["billing", "technical", "other"].contains(&label.label.as_str()));
    assert!(
        outcome.reason.code.contains("only=local"),
        "{:?}",
        outcome.reason
    );
    assert!(f.frontier.seen().is_empty(), "nothing was escalated");
    // Kept to a remote tier, it is answered there alone.
    let mut req = request(triage(), Privacy::Unset, Some("triage"));
    req.only = Some("mid".into());
    let outcome = f.state.gateway().complete(req).await;
    assert_eq!(outcome.tier.as_deref(), Some("mid"));
    assert!(outcome.confidence.is_none());
    assert_eq!(f.mid.seen().len(), 1);
    assert!(f.frontier.seen().is_empty());
}

#[tokio::test]
async fn this_servers_metadata_is_not_sent_on() {
    let f = fixture(&[Step::Answer], &[Step::Answer]);
    let mut body = triage();
    body["metadata"]["confidence"] = json!("label");
    body["metadata"]["samples"] = json!(3);
    body["metadata"]["user"] = json!("u-1");
    let outcome = f
        .state
        .gateway()
        .complete(request(body, Privacy::Unset, Some("triage")))
        .await;
    assert!(outcome.escalated, "{outcome:?}");
    let sent = f.frontier.seen();
    assert_eq!(sent[0]["metadata"], json!({"user": "u-1"}), "{}", sent[0]);
}

#[tokio::test]
async fn when_escalation_fails_the_local_answer_stands() {
    let f = fixture(&[Step::Answer], &[Step::Fail(500)]);
    let outcome = f
        .state
        .gateway()
        .complete(request(triage(), Privacy::Unset, Some("triage")))
        .await;
    assert!(!outcome.escalated);
    assert_eq!(outcome.tier.as_deref(), Some("local"));
    assert!(
        outcome.reason.words.contains("escalation failed"),
        "{:?}",
        outcome.reason
    );
    assert_eq!(
        outcome.failover,
        [Failover {
            tier: "frontier".into(),
            code: "upstream_error"
        }]
    );
    let Ok(Reply::Completion(c)) = &outcome.answer else {
        panic!("the local answer: {outcome:?}");
    };
    let label = outcome.label.as_ref().expect("a label");
    assert_eq!(
        c.choices[0].message.content.as_deref(),
        Some(label.label.as_str())
    );
    assert!(["billing", "technical", "other"].contains(&label.label.as_str()));
    assert!(outcome.usage.is_some_and(|u| u.prompt_tokens > 0));
}

/// The `auto` path answered on the embedded tier parses the body once, renders its template
/// once and tokenizes its prompt once (the features and the generation share them).
#[tokio::test]
async fn an_auto_request_is_parsed_rendered_and_tokenized_once() {
    let f = fixture(&[Step::Answer], &[Step::Answer]);
    let body = json!({"model": "auto", "max_tokens": 4,
        "messages": [{"role": "user", "content": "Write a haiku about tea."}]});
    let send = |request| async {
        collect(
            app(f.state.clone())
                .oneshot(request)
                .await
                .expect("infallible"),
        )
        .await
    };
    let post = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("x-smallfirst-task", "chat")
        .body(axum::body::Body::from(body.to_string()))
        .expect("request");
    let reply = send(post).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.headers["x-smallfirst-tier"], "local");
    let metrics = || {
        let get = axum::http::Request::builder()
            .uri("/metrics")
            .header("host", "localhost")
            .body(axum::body::Body::empty())
            .expect("request");
        async { String::from_utf8(send(get).await.body).expect("text") }
    };
    let counted = |text: &str, n: u32| {
        for name in [
            "smallfirst_body_parses_total",
            "smallfirst_template_renders_total",
            "smallfirst_tokenizations_total",
        ] {
            assert!(
                text.contains(&format!("{name} {n}\n")),
                "{name} {n}:\n{text}"
            );
        }
    };
    counted(&metrics().await, 1);
    // A classification held, its labels listed to the model, judged and escalated: the prompt
    // the features counted is the one generated from.
    let post = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("x-smallfirst-task", "triage")
        .body(axum::body::Body::from(triage().to_string()))
        .expect("request");
    let reply = send(post).await;
    assert_eq!(reply.headers["x-smallfirst-escalated"], "true");
    counted(&metrics().await, 2);
}
