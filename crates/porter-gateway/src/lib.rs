//! Porter's HTTP gateway (actix-web): validates requests, resolves identity, serves cache
//! hits, fans the rest out as tasks, awaits the replies until the batch deadline, signs and
//! aggregates.
//!
//! - [`admin`]: the admin token guard.
//! - [`admin_api`]: members, retained events and decisions, behind the guard.
//! - [`batch`]: the fan-out/aggregate core shared by every endpoint.
//! - [`routes`]: the endpoints and their request formats.
//! - [`scoped`]: the policy's scoped-token endpoints (`[[endpoint]]`, seed 003's guest chat).
//! - [`identity`]: who is asking (JWT bearer tokens, sessions, client id).
//! - [`jwks`]: public keys from a JWKS file or URL, cached and refreshed on rotation.
//! - [`sessions`]: `POST /auth` and `X-Session-ID` (seed 001).
//! - [`revocation`]: `POST /admin/tokens/revoke` and the revocation check (seed 004).
//! - [`error`]: request-level errors as JSON with stable codes.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`protection`]: rate limits, the in-flight cap, header limit, client IP.
//! - [`presence`]: global presence (heartbeat, Pusher webhooks).
//! - [`cors`]: CORS for browser clients.
//! - [`audit`]: the audit log of refusals and failed authentications.
//!
//! Architecture Invariant: signing happens only here; the Pusher secret never leaves the
//! gateway, and tasks never carry the socket id.

pub mod admin;
pub mod admin_api;
pub mod audit;
pub mod batch;
pub mod cors;
pub mod error;
pub mod identity;
pub mod jwks;
pub mod metrics;
pub mod presence;
pub mod protection;
pub mod revocation;
pub mod routes;
pub mod scoped;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use porter_broker::TaskClient;
use porter_core::policy::{Policy, PrivateData};
use porter_core::signing::Signer;
use porter_store::Store;

pub use routes::configure;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Channels one request may ask for.
    pub max_channels: usize,
    /// Added to the largest `expires` of a batch to form its deadline.
    pub grace: Duration,
    /// How private channels carry their data unless a rule says otherwise.
    pub private_data: PrivateData,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            max_channels: 100,
            grace: Duration::from_millis(250),
            private_data: PrivateData::Events,
        }
    }
}

/// Everything a request handler needs; shared by all workers of the HTTP server.
pub struct AppState {
    pub signer: Signer,
    pub policy: Arc<Policy>,
    pub tasks: Arc<dyn TaskClient>,
    pub store: Arc<dyn Store>,
    pub identity: identity::Verifier,
    pub config: GatewayConfig,
    pub metrics: metrics::Metrics,
    /// Guards `/admin/*`.
    pub admin: admin::AdminGuard,
    /// Rate limits, in-flight cap, CORS origins, presence and webhook settings.
    pub protection: protection::Protection,
    /// Token keys of the policy's scoped-token endpoints.
    pub scoped: scoped::ScopedKeys,
}
