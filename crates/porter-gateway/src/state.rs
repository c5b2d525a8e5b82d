//! The gateway's shared state: everything a handler may hand to a service. Handlers are the
//! only code that sees it whole; services borrow the parts they use
//! ([`AppState::authorizer`], [`AppState::rate_limiter`]).

use std::sync::Arc;

use porter_broker::TaskClient;
use porter_core::cache::RuleStamps;
use porter_core::policy::Policy;
use porter_core::signing::Signer;
use porter_identity::Resolver;
use porter_store::Store;

use crate::admin_guard::AdminGuard;
use crate::authorize::{Authorizer, GatewayConfig};
use crate::metrics::Metrics;
use crate::protection::Protection;
use crate::protection::rate::RateLimiter;
use crate::scoped_keys::ScopedKeys;

/// Shared by all workers of the HTTP server.
pub struct AppState {
    pub signer: Signer,
    pub policy: Arc<Policy>,
    /// `RuleStamps::of(&policy)`: cache entries of other rules (or other versions of a rule)
    /// are never served.
    pub stamps: RuleStamps,
    pub tasks: Arc<dyn TaskClient>,
    pub store: Arc<dyn Store>,
    pub identity: Resolver,
    pub config: GatewayConfig,
    pub metrics: Metrics,
    /// Guards `/admin/*`.
    pub admin: AdminGuard,
    /// Rate limits, in-flight cap, CORS origins, presence and webhook settings.
    pub protection: Protection,
    /// Token keys of the policy's scoped-token endpoints.
    pub scoped: ScopedKeys,
}

impl AppState {
    /// What authorizing channels needs.
    pub fn authorizer(&self) -> Authorizer<'_> {
        Authorizer {
            signer: &self.signer,
            policy: &self.policy,
            stamps: &self.stamps,
            tasks: self.tasks.as_ref(),
            store: self.store.as_ref(),
            config: &self.config,
            metrics: &self.metrics,
            in_flight: &self.protection.in_flight,
        }
    }

    /// What charging rate limits needs.
    pub fn rate_limiter(&self) -> RateLimiter<'_> {
        RateLimiter {
            config: &self.protection.config,
            proxies: &self.protection.proxies,
            store: self.store.as_ref(),
            metrics: &self.metrics,
        }
    }
}
