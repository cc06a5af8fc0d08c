//! The router, its state, and the small routes (`/v1/models`, `/health`, fallbacks).

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde_json::{Value, json};
use smallfirst_engine::Engine;
use smallfirst_protocol::{ModelList, ModelObject};
use tokio::net::TcpListener;

use crate::metrics::{Limits, Metrics};
use crate::options::Options;
use crate::{ApiError, chat, guard, listen, observe};
use smallfirst_router::{Policy, RemoteTier};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<StateInner>,
}

pub(crate) struct StateInner {
    /// The embedded model, when a tier runs one.
    pub local: Option<LocalTier>,
    pub created: u64,
    pub metrics: Arc<Metrics>,
    /// How `model: "auto"` requests are routed.
    pub policy: Policy,
    /// Remote tiers, reached when a request's `model` names one of them or a fallback leads
    /// there.
    pub remotes: Vec<Arc<RemoteTier>>,
    /// Who may call, from where, how fast.
    pub options: Options,
    /// Chat template renders running at once: each may build up to 64 MiB, so they are not
    /// left to the number of connections.
    pub renders: tokio::sync::Semaphore,
}

/// The tier the embedded engine serves.
pub struct LocalTier {
    pub engine: Engine,
    /// The id `/v1/models` lists and responses carry.
    pub model_id: String,
    /// The tier's name in the configuration (`local` without one).
    pub name: String,
}

impl AppState {
    /// The embedded engine alone, as tier `local`.
    pub fn new(engine: Engine, model_id: impl Into<String>) -> Self {
        let local = LocalTier {
            engine,
            model_id: model_id.into(),
            name: "local".into(),
        };
        let window = local.engine.info().n_ctx;
        let config = smallfirst_router::Config::embedded(&local.model_id);
        AppState::with_tiers(
            Some(local),
            Vec::new(),
            Policy::new(&config, Some(window)),
            Limits::default(),
            Options::default(),
        )
    }

    /// The embedded tier, if one is configured, plus remote tiers, routed by `policy`, the
    /// embedded engine's work bounded by `limits`, requests let in as `options` say.
    pub fn with_tiers(
        local: Option<LocalTier>,
        remotes: Vec<RemoteTier>,
        policy: Policy,
        limits: Limits,
        options: Options,
    ) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        AppState {
            inner: Arc::new(StateInner {
                local,
                created,
                metrics: Metrics::new(limits),
                policy,
                remotes: remotes.into_iter().map(Arc::new).collect(),
                options,
                renders: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
                ),
            }),
        }
    }

    /// The remote tier a request's `model` names (the tier's name or its model), if any.
    /// The embedded model's own names win.
    pub(crate) fn remote_for(&self, model: &str) -> Option<&Arc<RemoteTier>> {
        if self.answers_to(model) {
            return None;
        }
        self.inner
            .remotes
            .iter()
            .find(|t| t.name() == model || t.model() == model)
    }

    /// The remote tier named `name`.
    pub(crate) fn remote(&self, name: &str) -> Option<&Arc<RemoteTier>> {
        self.inner.remotes.iter().find(|t| t.name() == name)
    }

    pub(crate) fn is_local_tier(&self, name: &str) -> bool {
        self.inner.local.as_ref().is_some_and(|l| l.name == name)
    }

    /// Whether a request's `model` names what this server answers with: its id, the embedded
    /// tier's name, or the tier words `local` and `auto`.
    pub(crate) fn answers_to(&self, model: &str) -> bool {
        self.inner
            .local
            .as_ref()
            .is_some_and(|l| model == l.model_id || model == l.name || model == "local")
    }
}

/// The routes, behind the guard (host, origin, key, content type, whole body), the panic
/// catcher and the request log, outermost last.
pub fn app(state: AppState) -> Router {
    let max_body = state.inner.options.max_body;
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            observe::panicked,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish. Connections have deadlines and a cap ([`Options`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::run(listener, app(state.clone()), state, shutdown).await
}

fn model_object(state: &AppState) -> Option<ModelObject> {
    let local = state.inner.local.as_ref()?;
    Some(ModelObject::new(
        local.model_id.clone(),
        state.inner.created,
    ))
}

/// The embedded model, then each upstream tier by name and by its model.
fn model_objects(state: &AppState) -> Vec<ModelObject> {
    let mut list: Vec<ModelObject> = model_object(state).into_iter().collect();
    for t in &state.inner.remotes {
        for id in [t.name(), t.model()] {
            if !list.iter().any(|m| m.id == id) {
                let mut m = ModelObject::new(id, state.inner.created);
                m.owned_by = format!("smallfirst:{}", t.name());
                list.push(m);
            }
        }
    }
    list
}

async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList::new(model_objects(&state)))
}

async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    if state.answers_to(&id)
        && let Some(m) = model_object(&state)
    {
        return Ok(Json(m));
    }
    model_objects(&state)
        .into_iter()
        .find(|m| m.id == id)
        .map(Json)
        .ok_or(ApiError::ModelNotFound(id))
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    let tiers: Vec<Value> = state
        .inner
        .remotes
        .iter()
        .map(|t| json!({"tier": t.name(), "model": t.model(), "circuit": t.circuit().as_str()}))
        .collect();
    let Some(local) = &state.inner.local else {
        return Json(json!({"status": "ok", "model": null, "remotes": tiers}));
    };
    let info = local.engine.info();
    Json(json!({
        "status": "ok",
        "model": local.model_id,
        "architecture": info.architecture,
        "n_ctx": info.n_ctx,
        "threads": info.threads,
        "remotes": tiers,
    }))
}

async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.inner.metrics.render(),
    )
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("unknown request URL: {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {method} is not allowed on {}", uri.path()))
}
