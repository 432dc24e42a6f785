//! The admin HTTP API (127.0.0.1 by default): health, readiness, Prometheus metrics, JSON
//! views of services, workloads, proxies, config, route status and request stats, and the
//! dashboard drawn from them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::ca::{CaService, JoinToken};
use crate::control::ControlPlane;
use crate::proxy_admin;
use crate::registry::unix;
use crate::stats::Collector;
use crate::status::route_statuses;

/// Builds the admin router over the control plane, its CA and the proxies' stats
/// (`/api/stats`).
pub(crate) fn router(
    control: Arc<ControlPlane>,
    ca: Arc<CaService<JoinToken>>,
    stats: Arc<Collector>,
) -> Router {
    let identity = Router::new()
        .route("/api/identity", get(identity))
        .route("/api/identity/rotate", post(rotate))
        .with_state(ca);
    let tap = crate::tap::router(control.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/services", get(services))
        .route("/api/workloads", get(workloads))
        .route("/api/proxies", get(proxies))
        .route("/api/proxies/{node_id}/config", get(proxy_config))
        .route("/api/config", get(config))
        .route("/api/routes", get(routes))
        .with_state(control)
        .merge(identity)
        .merge(crate::stats::router(stats))
        .merge(crate::dashboard::router())
        .merge(tap)
}

type Ca = State<Arc<CaService<JoinToken>>>;

/// Roots (active first) and unexpired SVIDs; never any key material.
async fn identity(State(ca): Ca) -> Response {
    let roots: Vec<_> = ca
        .roots()
        .iter()
        .map(|r| {
            serde_json::json!({
                "fingerprint": r.fingerprint,
                "subject": r.subject,
                "not_before_unix": unix(r.not_before),
                "not_after_unix": unix(r.not_after),
                "state": format!("{:?}", r.state),
            })
        })
        .collect();
    let issued: Vec<_> = ca
        .issued()
        .iter()
        .map(|i| {
            serde_json::json!({
                "identity": i.identity.to_string(),
                "serial": i.serial,
                "not_after_unix": unix(i.not_after),
                "signed_by": i.signed_by,
            })
        })
        .collect();
    Json(serde_json::json!({ "roots": roots, "issued": issued })).into_response()
}

async fn rotate(State(ca): Ca) -> Response {
    match ca.rotate() {
        Ok(()) => (
            StatusCode::OK,
            "root rotation started: the new root is in the trust bundle, and signs once every proxy has had the time to trust it\n",
        )
            .into_response(),
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
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

/// The config a proxy has applied: its `/config_dump`, read from the admin address it
/// advertised. 404 for a proxy that is not connected, 502 when its admin server cannot be read.
async fn proxy_config(State(control): Control, Path(node_id): Path<String>) -> Response {
    let Some(meta) = control.node_meta(&node_id) else {
        let message = format!(
            "no connected proxy has node id {node_id:?}: GET /api/proxies lists the connected ones\n"
        );
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    match proxy_admin::get(meta.admin.as_deref(), "/config_dump").await {
        Ok(dump) => ([(header::CONTENT_TYPE, "application/json")], dump).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("proxy {node_id:?}: {e}\n")).into_response(),
    }
}

async fn config(State(control): Control) -> Response {
    Json(control.config()).into_response()
}

/// Gateway API status (`Accepted`, `ResolvedRefs`) of every route, per parent.
async fn routes(State(control): Control) -> Response {
    Json(route_statuses(&control.model())).into_response()
}
