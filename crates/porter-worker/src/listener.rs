//! The worker's HTTP listener (`porter worker --http-listen ADDR`): `/healthz`, `/readyz` and
//! `/metrics`, for probes and Prometheus. It serves nothing else and decides nothing.
//!
//! - `/healthz`: 200 while the process answers.
//! - `/readyz`: 200 when the worker is connected to the broker, its store answers a ping
//!   within [`STORE_PING_TIMEOUT`], and it is consuming; else 503 with a JSON body naming what
//!   is not ready (`{"ready": false, "not_ready": ["store"], …}`). A draining worker has stopped
//!   consuming, so it turns not ready before it exits.
//! - `/metrics`: [`WorkerMetrics::render`], in the Prometheus text format.
//!
//! Another method on those paths answers 405 with `Allow: GET` and
//! `{"error": "method_not_allowed"}`, as the gateway does; any other path 404 with
//! `{"error": "not_found"}`.
//!
//! The server has one HTTP worker thread and does not listen to signals itself: the worker's
//! own SIGTERM handling stops the task loop, and the listener keeps answering (`/readyz` 503)
//! until the drain is over and [`Listener::stop`] is called.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, web};
use porter_broker::SourceStatus;
use porter_store::Store;
use serde_json::json;

use crate::metrics::{CONTENT_TYPE, WorkerMetrics};

/// How long `/readyz` waits for the store's answer before it counts the store unreachable: a
/// probe must answer in its own timeout (Kubernetes' default is 1 s).
pub const STORE_PING_TIMEOUT: Duration = Duration::from_millis(800);

/// What the listener reads.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<WorkerMetrics>,
    pub source: Arc<SourceStatus>,
    pub store: Arc<dyn Store>,
}

/// A running listener.
pub struct Listener {
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Listener {
    /// Binds `address` and serves in the background on the current runtime. Binding fails at
    /// once (address in use, not permitted), before the worker takes any task.
    pub fn start(address: SocketAddr, health: Health) -> std::io::Result<Listener> {
        let health = web::Data::new(health);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(health.clone())
                .service(get_only("/healthz").route(web::get().to(healthz)))
                .service(get_only("/readyz").route(web::get().to(readyz)))
                .service(get_only("/metrics").route(web::get().to(metrics)))
                .default_service(web::to(not_found))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(address)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(Listener { handle, task })
    }

    /// Stops serving (after the worker has drained).
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(health: web::Data<Health>) -> HttpResponse {
    let broker = health.source.is_connected();
    let consuming = health.source.is_consuming();
    let store = matches!(
        tokio::time::timeout(STORE_PING_TIMEOUT, health.store.ping()).await,
        Ok(Ok(()))
    );
    let not_ready: Vec<&str> = [
        ("broker", broker),
        ("store", store),
        ("consuming", consuming),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(name, _)| name)
    .collect();
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(json!({
        "ready": not_ready.is_empty(),
        "broker": broker,
        "store": store,
        "consuming": consuming,
        "not_ready": not_ready,
    }))
}

async fn metrics(health: web::Data<Health>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(health.metrics.render(Some(&health.source)))
}

/// A path served to `GET` only: any other method is answered 405.
fn get_only(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("Allow", "GET"))
        .json(json!({ "error": "method_not_allowed" }))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "not_found" }))
}
