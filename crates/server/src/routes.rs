//! The router, its state, and the small routes (`/v1/models`, `/health`, fallbacks).

use std::future::Future;

use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde_json::{Value, json};
use smallfirst_protocol::{ModelList, ModelObject};
use tokio::net::TcpListener;

use crate::state::AppState;
use crate::{
    ApiError, chat, completions, embeddings, guard, listen, messages, observe, report, responses,
};

/// The routes, behind the guard (host, origin, key, content type, whole body), the panic
/// catcher and the request log, outermost last.
pub fn app(state: AppState) -> Router {
    let max_body = state.inner.options.max_body;
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/completions", post(completions::create))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/messages", post(messages::create))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/responses", post(responses::create))
        .route("/v1/smallfirst/report", get(report::report))
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
/// finish. Connections have deadlines and a cap ([`Options`](crate::Options)).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::run(listener, app(state.clone()), state, shutdown).await
}

fn model_object(state: &AppState) -> Option<ModelObject> {
    let local = state.inner.gateway.embedded()?;
    Some(ModelObject::new(
        local.model_id.clone(),
        state.inner.created,
    ))
}

/// The embedded model, then each upstream tier by name and by its model.
fn model_objects(state: &AppState) -> Vec<ModelObject> {
    let mut list: Vec<ModelObject> = model_object(state).into_iter().collect();
    for t in state.inner.gateway.remotes() {
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
    if state
        .inner
        .gateway
        .embedded()
        .is_some_and(|e| e.answers_to(&id))
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
        .gateway
        .remotes()
        .iter()
        .map(|t| json!({"tier": t.name(), "model": t.model(), "circuit": t.circuit().as_str()}))
        .collect();
    let Some(local) = state.inner.gateway.embedded() else {
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
