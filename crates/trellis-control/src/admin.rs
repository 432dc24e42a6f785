//! The admin HTTP API (127.0.0.1 by default): health, readiness, Prometheus metrics and JSON
//! views of services, workloads, proxies and config.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::control::ControlPlane;

/// Builds the admin router over the control plane.
pub(crate) fn router(control: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/services", get(services))
        .route("/api/workloads", get(workloads))
        .route("/api/proxies", get(proxies))
        .route("/api/config", get(config))
        .with_state(control)
}

type Control = State<Arc<ControlPlane>>;

async fn readyz(State(control): Control) -> Response {
    if control.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading config").into_response()
    }
}

async fn metrics(State(control): Control) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        control.render_metrics(),
    )
        .into_response()
}

async fn services(State(control): Control) -> Response {
    let model = control.model();
    Json(model.services.values().cloned().collect::<Vec<_>>()).into_response()
}

async fn workloads(State(control): Control) -> Response {
    Json(control.workloads()).into_response()
}

async fn proxies(State(control): Control) -> Response {
    Json(control.proxies()).into_response()
}

async fn config(State(control): Control) -> Response {
    Json(control.config()).into_response()
}
