//! Rate limits: which buckets a request charges, and when.
//!
//! Architecture Invariant: the IP is charged once per request, BEFORE any token, session id
//! or admin token is looked at, so failed authentications cost budget: [`identify`] for the
//! endpoints that resolve a caller, the `crate::middleware::rate_limit` middleware for the
//! ones that authenticate otherwise (`/admin`, `POST /auth`, the scoped endpoints). An
//! authenticated caller's `X-Client-ID` bucket lives within its user, since the header
//! proves nothing.

use std::net::IpAddr;

use actix_web::HttpMessage;
use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use porter_identity::{Caller, Resolver};
use porter_store::{Quota, RateCheck, RateDecision, Store};
use tracing::warn;

use crate::audit::KnownCaller;
use crate::error::{ApiError, Audit};
use crate::http::client::{self, TrustedProxies};
use crate::metrics::Metrics;
use crate::protection::ProtectionConfig;

/// The rate limiter of one request: the quotas, and the store that counts them.
pub struct RateLimiter<'a> {
    pub config: &'a ProtectionConfig,
    pub proxies: &'a TrustedProxies,
    pub store: &'a dyn Store,
    pub metrics: &'a Metrics,
}

/// One bucket to charge: the rule that names it in refusals, its key, its quota.
type Bucket = (&'static str, String, Quota);

/// The rate-limit bucket of a client IP: the address for IPv4, the /64 network for IPv6,
/// since one subscriber usually holds a whole /64 and could otherwise rotate through 2^64
/// fresh buckets.
pub fn ip_bucket(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let network = std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1));
            format!("ip:{network}/64")
        }
    }
}

/// The bucket of an `X-Client-ID`. The header is not authenticated, so an authenticated
/// caller's client id is counted within its user (`client:{user}:{client}`): nobody can
/// spend another user's client budget by sending their client id. Anonymous callers share
/// `client:{client}`.
fn client_bucket(user: Option<&str>, client: &str) -> String {
    match user {
        Some(user) => format!("client:{user}:{client}"),
        None => format!("client:{client}"),
    }
}

impl RateLimiter<'_> {
    /// The buckets of a request before anyone is identified: its IP, and its client id's
    /// anonymous bucket when `with_client` (a request that names a user has its client id
    /// charged within that user instead, once the user is known).
    fn anonymous_buckets(&self, request: &HttpRequest, with_client: bool) -> Vec<Bucket> {
        let mut buckets = Vec::with_capacity(2);
        if let (Some(quota), Some(ip)) = (self.config.rate_ip, self.proxies.client_ip(request)) {
            buckets.push(("rate_limit_ip", ip_bucket(ip), quota));
        }
        if let (Some(quota), Some(client), true) = (
            self.config.rate_client,
            client::client_id_of(request),
            with_client,
        ) {
            buckets.push(("rate_limit_client", client_bucket(None, client), quota));
        }
        buckets
    }

    /// Charges the IP and anonymous client-id buckets of a request that authenticates by
    /// other means than a user's identity (an admin token, `POST /auth`'s body, a scoped
    /// token), before that is looked at: no user is resolved here, so the client id is
    /// charged on its own bucket whatever credential the request carries.
    pub async fn charge_anonymous(&self, request: &HttpRequest) -> Result<(), ApiError> {
        self.charge(self.anonymous_buckets(request, true)).await
    }

    /// Resolves the caller with the rate limits charged around it: the IP bucket (and, for a
    /// request without credentials, its client-id bucket) BEFORE the token or session is
    /// looked at, so failed authentications are paid for; the user's buckets once the user
    /// is known. The caller is left in the request for the audit log.
    pub async fn identify(
        &self,
        resolver: &Resolver,
        request: &HttpRequest,
    ) -> Result<Caller, ApiError> {
        let names_a_user = client::carries_credential(request);
        self.charge(self.anonymous_buckets(request, !names_a_user))
            .await?;
        let caller = resolver.resolve(client::presented(request)).await?;
        let identity = caller.identity();
        request.extensions_mut().insert(KnownCaller::of(identity));
        let Some(user) = identity.user_id.as_deref() else {
            return Ok(caller);
        };
        let mut after: Vec<Bucket> = Vec::with_capacity(2);
        if let Some(quota) = self.config.rate_user {
            after.push(("rate_limit_user", format!("user:{user}"), quota));
        }
        if let (Some(quota), Some(client)) =
            (self.config.rate_client, identity.client_id.as_deref())
        {
            after.push((
                "rate_limit_client",
                client_bucket(Some(user), client),
                quota,
            ));
        }
        self.charge(after).await?;
        Ok(caller)
    }

    /// Charges `buckets` in one atomic store call (none when any refuses).
    async fn charge(&self, buckets: Vec<Bucket>) -> Result<(), ApiError> {
        if buckets.is_empty() {
            return Ok(());
        }
        let checks: Vec<RateCheck<'_>> = buckets
            .iter()
            .map(|(_, bucket, quota)| RateCheck {
                bucket,
                quota: *quota,
            })
            .collect();
        match self.store.rate_limit(&checks).await {
            Ok(RateDecision::Allowed) => Ok(()),
            Ok(RateDecision::Limited {
                bucket,
                retry_after,
            }) => {
                let rule = buckets
                    .get(bucket)
                    .map_or("rate_limit", |(rule, _, _)| *rule);
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests; retry after the number of seconds in Retry-After",
                )
                .with_retry_after(retry_after.as_secs_f64().ceil() as u64)
                .audited(Audit::Refused { rule }))
            }
            Err(error) => {
                // Fail open: losing Redis must not refuse every caller.
                self.metrics.cache_error();
                warn!(%error, "rate-limit check failed; letting the request through");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_64_and_ipv4_per_address() {
        let bucket = |ip: &str| ip_bucket(ip.parse().unwrap());
        assert_eq!(bucket("203.0.113.7"), "ip:203.0.113.7");
        assert_ne!(bucket("203.0.113.7"), bucket("203.0.113.8"));
        assert_eq!(bucket("::ffff:203.0.113.7"), "ip:203.0.113.7");
        // One subscriber's /64: rotating the interface id buys no new budget.
        assert_eq!(bucket("2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(
            bucket("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            bucket("2001:db8:1:2::1")
        );
        assert_ne!(bucket("2001:db8:1:3::1"), bucket("2001:db8:1:2::1"));
    }

    #[test]
    fn client_ids_of_users_are_counted_within_the_user() {
        assert_eq!(client_bucket(Some("7"), "web"), "client:7:web");
        assert_ne!(
            client_bucket(Some("7"), "web"),
            client_bucket(Some("8"), "web")
        );
        assert_ne!(client_bucket(Some("7"), "web"), client_bucket(None, "web"));
        assert_eq!(client_bucket(None, "web"), "client:web");
    }
}
