//! Abuse protection of the gateway: rate limits per user, client id and IP; the cap on
//! channel tasks in flight; the request header and body size limits; the client IP behind trusted
//! proxies; and the audited identity look-up.
//!
//! Rate limits are counted in the store (Redis in production, so every replica shares one
//! budget; memory in `porter dev`) by atomic GCRA scripts (see `porter_store::ratelimit`):
//! the IP before a token or session is verified (so failed authentications are charged),
//! the user's buckets after. IPv6 clients are counted per /64; an authenticated caller's
//! `X-Client-ID` is counted within its user, since the header proves nothing. A store that fails is logged and the request let through:
//! a Redis outage must not take authorization down with it.
//!
//! Architecture Invariant: the in-flight cap is checked before any task is published, and a
//! [`TaskPermit`] is held for exactly as long as the batch waits for its replies, so the
//! count cannot drift: a refused request publishes nothing and never waits.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError, web};
use porter_core::reason;
use porter_core::wire::Task;
use porter_store::{Quota, RateCheck, RateDecision};
use thiserror::Error;
use tracing::warn;

use crate::AppState;
use crate::audit::{self, Who};
use crate::error::ApiError;
use crate::identity::Identity;

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
    in_flight: InFlight,
}

impl Protection {
    pub fn new(config: ProtectionConfig) -> Protection {
        Protection {
            in_flight: InFlight::new(config.max_tasks_in_flight),
            config,
        }
    }

    /// Channel tasks in flight now.
    pub fn tasks_in_flight(&self) -> usize {
        self.in_flight.count.load(Ordering::Relaxed)
    }

    pub fn tasks_in_flight_cap(&self) -> Option<usize> {
        self.in_flight.cap
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(ip))
    }

    /// The client's IP: the peer, or, when the peer is a trusted proxy, the nearest
    /// untrusted hop of `X-Forwarded-For` (read from the right, as proxies append).
    pub fn client_ip(&self, request: &HttpRequest) -> Option<IpAddr> {
        let peer = request.peer_addr()?.ip().to_canonical();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let hops: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !self.is_trusted(client) {
                break;
            }
        }
        Some(client)
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    address: IpAddr,
    prefix: u8,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid network `{0}`: use an address or CIDR, e.g. 10.0.0.0/8 or ::1")]
pub struct IpNetError(String);

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(text: &str) -> Result<IpNet, IpNetError> {
        let error = || IpNetError(text.to_owned());
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| error())?;
        let address = address.to_canonical();
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| error())?,
            None => bits,
        };
        if prefix > bits {
            return Err(error());
        }
        Ok(IpNet { address, prefix })
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// Resolves the caller, auditing and counting a failed authentication. Async so that an
/// identity check that needs the store (sessions, revocations) slots in unchanged.
pub async fn identify(state: &AppState, request: &HttpRequest) -> Result<Identity, ApiError> {
    state
        .identity
        .identify(request)
        .await
        .inspect_err(|error| audit_unauthorized(state, request, None, error))
}

/// Audits and counts a 401 (any other error is left alone): for failures found after the
/// identity was resolved, e.g. a revoked token found in the cache round trip.
pub fn audit_unauthorized(
    state: &AppState,
    request: &HttpRequest,
    identity: Option<&Identity>,
    error: &ApiError,
) {
    if error.status != StatusCode::UNAUTHORIZED {
        return;
    }
    let header_client = crate::identity::client_id_of(request);
    let ip = state.protection.client_ip(request);
    let who = match identity {
        Some(identity) => Who::of(identity, ip),
        None => Who {
            client: header_client,
            ..Who::ip(ip)
        },
    };
    audit::auth_failed(&who, error.code);
    state.metrics.auth_failure(error.code);
}

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

/// Whether a request carries a credential (a token or a session), i.e. names a user.
fn carries_credential(request: &HttpRequest) -> bool {
    let headers = request.headers();
    headers.contains_key("authorization") || headers.contains_key("x-session-id")
}

/// One bucket to charge: the rule that names it in refusals, its key, its quota.
type Bucket = (&'static str, String, Quota);

/// Checks and charges the rate limits of one request: 429 `rate_limited` with
/// `Retry-After` when any of its buckets (user, client id, IP) is exhausted. All in one
/// store call; for endpoints whose identity takes no work to find (anonymous callers, admin
/// and `/auth` requests). Endpoints that verify a token or a session use
/// [`identify_rate_limited`], which charges the IP before that work.
pub async fn check_rate(
    state: &AppState,
    request: &HttpRequest,
    identity: &Identity,
) -> Result<(), ApiError> {
    let config = &state.protection.config;
    let mut buckets: Vec<Bucket> = Vec::with_capacity(3);
    if let (Some(quota), Some(user)) = (config.rate_user, identity.user_id.as_deref()) {
        buckets.push(("rate_limit_user", format!("user:{user}"), quota));
    }
    if let (Some(quota), Some(client)) = (config.rate_client, identity.client_id.as_deref()) {
        let bucket = client_bucket(identity.user_id.as_deref(), client);
        buckets.push(("rate_limit_client", bucket, quota));
    }
    let ip = state.protection.client_ip(request);
    if let (Some(quota), Some(ip)) = (config.rate_ip, ip) {
        buckets.push(("rate_limit_ip", ip_bucket(ip), quota));
    }
    charge(state, &Who::of(identity, ip), buckets).await
}

/// Resolves the caller with the rate limits charged around it: the IP bucket (and, for a
/// request without credentials, its client-id bucket) BEFORE the token or session is looked
/// at, so failed authentications are paid for; the user's buckets once the user is known.
/// The IP is charged once per request.
pub async fn identify_rate_limited(
    state: &AppState,
    request: &HttpRequest,
) -> Result<Identity, ApiError> {
    let config = &state.protection.config;
    let ip = state.protection.client_ip(request);
    let credential = carries_credential(request);
    let mut before: Vec<Bucket> = Vec::with_capacity(2);
    if let (Some(quota), Some(ip)) = (config.rate_ip, ip) {
        before.push(("rate_limit_ip", ip_bucket(ip), quota));
    }
    let client = crate::identity::client_id_of(request);
    if let (Some(quota), Some(client), false) = (config.rate_client, client, credential) {
        before.push(("rate_limit_client", client_bucket(None, client), quota));
    }
    let who = Who {
        client,
        ..Who::ip(ip)
    };
    charge(state, &who, before).await?;
    let identity = identify(state, request).await?;
    let Some(user) = identity.user_id.as_deref() else {
        return Ok(identity);
    };
    let mut after: Vec<Bucket> = Vec::with_capacity(2);
    if let Some(quota) = config.rate_user {
        after.push(("rate_limit_user", format!("user:{user}"), quota));
    }
    if let (Some(quota), Some(client)) = (config.rate_client, identity.client_id.as_deref()) {
        after.push((
            "rate_limit_client",
            client_bucket(Some(user), client),
            quota,
        ));
    }
    charge(state, &Who::of(&identity, ip), after).await?;
    Ok(identity)
}

/// Middleware for endpoints that authenticate by other means than a user's identity
/// (`/admin/tokens/revoke`): charges the IP and client-id buckets before the handler runs,
/// so guessing the admin token costs a rate-limit budget like guessing a user's.
pub async fn rate_limit_before_handler(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(state) = request.app_data::<web::Data<AppState>>().cloned() {
        let identity = Identity {
            client_id: crate::identity::client_id_of(request.request()).map(str::to_owned),
            ..Identity::default()
        };
        if let Err(error) = check_rate(&state, request.request(), &identity).await {
            return Ok(request
                .into_response(error.error_response())
                .map_into_right_body());
        }
    }
    next.call(request)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Charges `buckets` in one atomic store call (none when any refuses).
async fn charge(state: &AppState, who: &Who<'_>, buckets: Vec<Bucket>) -> Result<(), ApiError> {
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
    match state.store.rate_limit(&checks).await {
        Ok(RateDecision::Allowed) => Ok(()),
        Ok(RateDecision::Limited {
            bucket,
            retry_after,
        }) => {
            let rule = buckets
                .get(bucket)
                .map_or("rate_limit", |(rule, _, _)| *rule);
            state.metrics.protection_refusal(rule);
            audit::refused(who, None, rule, "rate_limited");
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry after the number of seconds in Retry-After",
            )
            .with_retry_after(retry_after.as_secs_f64().ceil() as u64))
        }
        Err(error) => {
            // Fail open: losing Redis must not refuse every caller.
            state.metrics.cache_error();
            warn!(%error, "rate-limit check failed; letting the request through");
            Ok(())
        }
    }
}

/// Counts channel tasks in flight against an optional cap.
#[derive(Debug, Default)]
struct InFlight {
    count: AtomicUsize,
    cap: Option<usize>,
}

impl InFlight {
    fn new(cap: Option<usize>) -> InFlight {
        InFlight {
            count: AtomicUsize::new(0),
            cap: cap.filter(|c| *c > 0),
        }
    }

    /// Takes `n` slots, or none when that would pass the cap. A batch larger than the cap
    /// is admitted when nothing else is in flight, so a cap below the channel limit never
    /// makes a request impossible.
    fn try_acquire(&self, n: usize) -> Option<TaskPermit<'_>> {
        let mut current = self.count.load(Ordering::Relaxed);
        loop {
            if let Some(cap) = self.cap
                && current > 0
                && current + n > cap
            {
                return None;
            }
            match self.count.compare_exchange_weak(
                current,
                current + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(TaskPermit { in_flight: self, n }),
                Err(actual) => current = actual,
            }
        }
    }
}

/// `n` slots of the in-flight count, given back on drop.
#[derive(Debug)]
pub struct TaskPermit<'a> {
    in_flight: &'a InFlight,
    n: usize,
}

impl Drop for TaskPermit<'_> {
    fn drop(&mut self) {
        self.in_flight.count.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// Admits `n` channel tasks of a batch, or refuses the request with 503 `overloaded` and
/// `Retry-After` at once.
/// Called by `batch::fan_out`, so every endpoint that publishes tasks is capped.
pub fn admit_tasks<'a>(state: &'a AppState, tasks: &[Task]) -> Result<TaskPermit<'a>, ApiError> {
    state
        .protection
        .in_flight
        .try_acquire(tasks.len())
        .ok_or_else(|| {
            state.metrics.protection_refusal("tasks_in_flight_cap");
            // Every task of a batch carries the same caller.
            let who = Who {
                user: tasks.first().and_then(|t| t.user_id.as_deref()),
                client: tasks.first().and_then(|t| t.client_id.as_deref()),
                ip: None,
            };
            audit::refused(&who, None, "tasks_in_flight_cap", reason::OVERLOADED);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                reason::OVERLOADED,
                "too many authorizations in flight; retry shortly",
            )
            .with_retry_after(1)
        })
}

/// Middleware: refuses, before any handler runs, a request whose header names and values
/// together exceed `max_header_bytes` (431 `headers_too_large`) or whose declared
/// `Content-Length` exceeds [`crate::routes::MAX_BODY`] (413 `body_too_large`). Bodies
/// without a declared length are still cut off at `MAX_BODY` by the extractors.
pub async fn limit_request_size(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(state) = request.app_data::<web::Data<AppState>>().cloned() {
        let limit = state.protection.config.max_header_bytes;
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        let body_bytes = request
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let refusal = if header_bytes > limit {
            Some((
                "max_header_bytes",
                ApiError::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "headers_too_large",
                    format!("request headers may total at most {limit} bytes"),
                ),
            ))
        } else if body_bytes > crate::routes::MAX_BODY as u64 {
            Some((
                "max_body_bytes",
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "the request body may be at most {} bytes",
                        crate::routes::MAX_BODY
                    ),
                ),
            ))
        } else {
            None
        };
        if let Some((rule, error)) = refusal {
            state.metrics.protection_refusal(rule);
            let ip = state.protection.client_ip(request.request());
            audit::refused(&Who::ip(ip), None, rule, error.code);
            return Ok(request
                .into_response(error.error_response())
                .map_into_right_body());
        }
    }
    next.call(request)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn protection(trusted: &[&str]) -> Protection {
        Protection::new(ProtectionConfig {
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..ProtectionConfig::default()
        })
    }

    #[test]
    fn networks_parse_and_match() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
        let host: IpNet = "::1".parse().unwrap();
        assert!(host.contains("::1".parse().unwrap()));
        assert!(!host.contains("::2".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let request = TestRequest::default()
            .peer_addr("10.0.0.5:1234".parse().unwrap())
            .insert_header(("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.0.0.9"))
            .to_http_request();
        // Untrusted peer: its own address, whatever the header says.
        assert_eq!(
            protection(&[]).client_ip(&request),
            Some("10.0.0.5".parse().unwrap())
        );
        // Trusted proxies: the nearest untrusted hop, not the spoofable leftmost one.
        assert_eq!(
            protection(&["10.0.0.0/8"]).client_ip(&request),
            Some("203.0.113.7".parse().unwrap())
        );
        // Garbage in the chain stops the walk at the last good hop.
        let garbage = TestRequest::default()
            .peer_addr("10.0.0.5:1234".parse().unwrap())
            .insert_header(("X-Forwarded-For", "203.0.113.7, junk"))
            .to_http_request();
        assert_eq!(
            protection(&["10.0.0.0/8"]).client_ip(&garbage),
            Some("10.0.0.5".parse().unwrap())
        );
    }

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

    #[test]
    fn the_in_flight_cap_admits_up_to_the_cap_and_frees_on_drop() {
        let in_flight = InFlight::new(Some(5));
        let a = in_flight.try_acquire(3).expect("3 of 5");
        let b = in_flight.try_acquire(2).expect("5 of 5");
        assert!(in_flight.try_acquire(1).is_none());
        drop(a);
        assert!(in_flight.try_acquire(4).is_none());
        let c = in_flight.try_acquire(3).expect("5 of 5 again");
        drop((b, c));
        assert_eq!(in_flight.count.load(Ordering::Relaxed), 0);
        // Alone, a batch larger than the cap is admitted.
        let big = in_flight.try_acquire(9).expect("alone");
        assert!(in_flight.try_acquire(1).is_none());
        drop(big);
        let unlimited = InFlight::new(None);
        let _many = unlimited.try_acquire(1_000_000).expect("no cap");
    }
}
