//! `/healthz` (the process answers), `/readyz` (broker connected, store reachable and, where
//! publishing is on, the events publisher connected) and `/metrics` (Prometheus).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::handlers::publish::Publishing;
use crate::metrics::ReplyCounts;
use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(
    state: web::Data<AppState>,
    publishing: Option<web::Data<Publishing>>,
) -> HttpResponse {
    let broker = state.tasks.is_ready();
    let store = state.store.ping().await.is_ok();
    // A gateway whose publications cannot be confirmed would answer every publish 503: it is
    // not ready either, though its task connection may be.
    let events = publishing.map(|publishing| publishing.is_ready());
    let status = if broker && store && events.unwrap_or(true) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "broker": broker, "store": store });
    if let Some(events) = events {
        body["events"] = json!(events);
    }
    HttpResponse::build(status).json(body)
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
