//! The gateway's HTTP server: the app of [`crate::routes`] on actix-http's HTTP/1 service,
//! over sockets whose pre-app refusals go out in the JSON error shape
//! ([`crate::http::head_refusals`]), audited and counted.
//!
//! It assembles what `actix_web::HttpServer::bind` does (the same server builder, HTTP/1
//! service, timeouts, connection cap and graceful shutdown) with one addition HttpServer has
//! no place for: each accepted socket is wrapped in an [`ObservedIo`] before actix-http sees
//! it. HTTP/1 only, as before (actix-web's `http2` feature is off).
//!
//! The app sees actix-web's default `AppConfig` (host `localhost:8080`): actix-web keeps the
//! constructor of a real one private. Nothing in the gateway reads it: the client's address
//! is the socket's peer, handed to actix-http with the socket, and `Host` comes from requests.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_http::HttpService;
use actix_http::error::DispatchError;
use actix_server::Server;
use actix_service::{ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::{App, web};
use tokio::net::TcpStream;

use crate::audit::{self, Who};
use crate::handlers::publish::Publishing;
use crate::http::head_refusals::{HeadRefusal, ObservedIo, RefusalObserver};
use crate::http::limits::EdgeLimits;
use crate::state::AppState;

/// The protection rule under which refusals of an unreadable request head are audited and
/// counted (`porter_protection_refusals_total{rule="request_head"}`).
const RULE: &str = "request_head";

/// Binds `listen` and returns the server, to be awaited. `publishing` serves the publish
/// endpoints (`crate::handlers::publish`); without it they answer 404.
pub fn bind(
    state: web::Data<AppState>,
    publishing: Option<web::Data<Publishing>>,
    listen: SocketAddr,
    workers: Option<usize>,
    edge: EdgeLimits,
) -> io::Result<Server> {
    let builder = Server::build()
        .max_concurrent_connections(edge.max_connections)
        .shutdown_timeout(drain_seconds(&state));
    let builder = match workers {
        Some(workers) => builder.workers(workers.max(1)),
        None => builder,
    };
    let shutdown = builder.graceful_shutdown_signal();
    let observer: Arc<dyn RefusalObserver> = Arc::new(Audited(state.clone()));
    let builder = builder.bind("porter-gateway", listen, move || {
        let shutdown = shutdown.clone();
        let mut app = App::new().app_data(state.clone());
        if let Some(publishing) = &publishing {
            app = app.app_data(publishing.clone());
        }
        let app = app
            .app_data(edge)
            .configure(|cfg| crate::configure(cfg, &state.policy));
        let http = HttpService::build()
            .client_request_timeout(edge.head_timeout)
            .client_disconnect_timeout(edge.disconnect_timeout)
            .local_addr(listen)
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .h1(map_config(
                actix_service::IntoServiceFactory::into_factory(app)
                    .map_err(|error: actix_web::Error| error.error_response()),
                |()| AppConfig::default(),
            ));
        let observer = observer.clone();
        fn_service(move |socket: TcpStream| {
            let observer = observer.clone();
            async move {
                let peer = socket.peer_addr().ok();
                // As HttpServer does: answers are small and latency-bound.
                let _ = socket.set_nodelay(true);
                Ok::<_, DispatchError>((ObservedIo::new(socket, peer, observer), peer))
            }
        })
        .and_then(http)
    })?;
    Ok(builder.run())
}

/// How long a stopping gateway lets requests in hand finish: the longest batch deadline
/// (the largest `expires` of the policy plus the grace), rounded up, and a second to write
/// the answer. actix's default of 30 s would cut off a policy whose `expires` is longer.
fn drain_seconds(state: &AppState) -> u64 {
    let longest = state
        .policy
        .rules()
        .iter()
        .map(|rule| rule.route.expires)
        .max()
        .unwrap_or_default();
    (longest + state.config.grace).as_secs_f64().ceil() as u64 + 1
}

/// Audits and counts a refusal like the app's own protection refusals: a `porter::audit` line
/// with the peer's address and the code, `porter_protection_refusals_total{rule}` and
/// `porter_http_requests_total{endpoint="request_head",status}`.
struct Audited(web::Data<AppState>);

impl RefusalObserver for Audited {
    fn refused(&self, refusal: HeadRefusal, peer: Option<SocketAddr>) {
        audit::refused(&Who::ip(peer.map(|p| p.ip())), None, RULE, refusal.code());
        let metrics = &self.0.metrics;
        metrics.protection_refusal(RULE);
        metrics.request(RULE, refusal.status());
    }
}
