//! `/healthz` (the process answers), `/readyz` (broker connected and store reachable) and
//! `/metrics` (Prometheus).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::metrics::ReplyCounts;
use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let broker = state.tasks.is_ready();
    let store = state.store.ping().await.is_ok();
    let status = if broker && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(json!({ "broker": broker, "store": store }))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let pending = state.tasks.pending();
    let mut body = state.metrics.render(ReplyCounts {
        pending: pending.len(),
        late: pending.dropped(),
        unauthenticated: pending.unauthenticated(),
    });
    body.push_str(&state.metrics.render_protection(
        state.protection.in_flight.count(),
        state.protection.in_flight.cap(),
    ));
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(body)
}
