//! Porter's HTTP gateway (actix-web): validates requests, resolves identity, serves cache
//! hits, fans the rest out as tasks, awaits the replies until the batch deadline, signs and
//! aggregates.
//!
//! Layers, each importing only the ones above it:
//!
//! - [`error`], [`audit`], [`metrics`]: one `ApiError`; the audit log's lines; Prometheus.
//! - [`http`]: size limits, client IP and id, presented credentials, the one field parser.
//! - [`admin_guard`], [`scoped_keys`]: the admin token; the scoped endpoints' token keys.
//! - [`protection`]: rate limits and the in-flight cap.
//! - [`authorize`]: matching, the cache round trip, fan-out, signing, the answer shapes.
//! - [`state`]: what the handlers share, lent to services in the parts they use.
//! - [`middleware`]: request metrics, audit, CORS, size and rate limits, the admin guard.
//! - [`handlers`]: one file per endpoint group.
//! - [`routes`]: paths → handlers inside the middleware stack ([`configure`]).
//! - [`server`]: the HTTP server around them, whose sockets answer actix-http's own refusals
//!   in JSON.
//!
//! Identity (tokens, key sets, sessions, revocations) lives in `porter-identity`.
//!
//! Architecture Invariant: signing happens only here (`authorize::sign`); the Pusher secret
//! never leaves the gateway, and tasks never carry the socket id.

pub mod admin_guard;
pub mod audit;
pub mod authorize;
pub mod error;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod middleware;
pub mod protection;
pub mod routes;
pub mod scoped_keys;
pub mod server;
pub mod state;

pub use authorize::GatewayConfig;
pub use routes::configure;
pub use state::AppState;
