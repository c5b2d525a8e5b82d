//! Abuse protection of the gateway: rate limits per user, client id and IP ([`rate`]), the
//! cap on channel tasks in flight ([`in_flight`]), and the settings of both and of the other
//! limits (header bytes, CORS origins, trusted proxies, presence and webhook windows).
//!
//! Rate limits are counted in the store (Redis in production, so every replica shares one
//! budget; memory in `porter dev`) by atomic GCRA scripts (see `porter_store::ratelimit`):
//! the IP before a token or session is verified (so failed authentications are charged),
//! the user's buckets after. IPv6 clients are counted per /64; an authenticated caller's
//! `X-Client-ID` is counted within its user, since the header proves nothing. A store that
//! fails is logged and the request let through: a Redis outage must not take authorization
//! down with it.

pub mod in_flight;
pub mod rate;

use std::time::Duration;

use ipnet::IpNet;
use porter_store::Quota;

use crate::http::client::TrustedProxies;
use in_flight::InFlight;

/// Protection settings; the defaults limit nothing that the tests and benchmarks do.
#[derive(Debug, Clone)]
pub struct ProtectionConfig {
    /// Requests per authenticated user.
    pub rate_user: Option<Quota>,
    /// Requests per `X-Client-ID`.
    pub rate_client: Option<Quota>,
    /// Requests per client IP.
    pub rate_ip: Option<Quota>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Channel tasks this gateway may have in flight; `None` = no cap.
    pub max_tasks_in_flight: Option<usize>,
    /// Total bytes of request header names and values.
    pub max_header_bytes: usize,
    /// Origins allowed by CORS (`*` = any); empty = CORS off.
    pub cors_origins: Vec<String>,
    /// How long a heartbeat keeps a user online.
    pub presence_ttl: Duration,
    /// How old (or how far in the future) a webhook's `time_ms` may be.
    pub webhook_max_age: Duration,
}

impl Default for ProtectionConfig {
    fn default() -> ProtectionConfig {
        ProtectionConfig {
            rate_user: None,
            rate_client: None,
            rate_ip: None,
            trusted_proxies: Vec::new(),
            max_tasks_in_flight: None,
            max_header_bytes: 16 * 1024,
            cors_origins: Vec::new(),
            presence_ttl: Duration::from_secs(60),
            webhook_max_age: Duration::from_secs(300),
        }
    }
}

/// The protection state of one gateway.
#[derive(Debug, Default)]
pub struct Protection {
    pub config: ProtectionConfig,
    pub proxies: TrustedProxies,
    pub in_flight: InFlight,
}

impl Protection {
    pub fn new(config: ProtectionConfig) -> Protection {
        Protection {
            in_flight: InFlight::new(config.max_tasks_in_flight),
            proxies: TrustedProxies::new(config.trusted_proxies.clone()),
            config,
        }
    }
}
