//! The audit log: one line, under the tracing target [`TARGET`], for every refusal and every
//! failed authentication: who (user id, client id, IP), which channel, which rule, why.
//!
//! Request-level lines are written by one middleware (`crate::middleware::audit`) from the
//! [`crate::error::ApiError`] a response carries and the [`KnownCaller`] that identification
//! left in the request; channel-level refusals by the authorization of the batch, one per
//! channel.
//!
//! Architecture Invariant: an audit line never carries a token, a secret, a signature or a
//! session id: only the identifiers above, the rule's name and a stable reason code. The
//! callers pass codes (`ApiError::code`, `reason::*`), never free text from a request.
//! Caller-supplied strings (client id, channel) are logged with `Debug`, which escapes
//! control characters, so a crafted value cannot forge a log line.

use std::net::IpAddr;

use tracing::info;

use porter_identity::Identity;

/// The tracing target of audit lines; route it with e.g. `RUST_LOG=info,porter::audit=info`.
pub const TARGET: &str = "porter::audit";

/// Who made a request, as far as it is known.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    pub user: Option<&'a str>,
    pub client: Option<&'a str>,
    pub ip: Option<IpAddr>,
}

impl<'a> Who<'a> {
    pub fn of(identity: &'a Identity, ip: Option<IpAddr>) -> Who<'a> {
        Who {
            user: identity.user_id.as_deref(),
            client: identity.client_id.as_deref(),
            ip,
        }
    }

    pub fn ip(ip: Option<IpAddr>) -> Who<'a> {
        Who {
            ip,
            ..Who::default()
        }
    }
}

/// Who a request turned out to be, left in the request's extensions once identification
/// has run, for the audit middleware to name.
#[derive(Debug, Clone, Default)]
pub struct KnownCaller {
    pub user: Option<String>,
    pub client: Option<String>,
}

impl KnownCaller {
    pub fn of(identity: &Identity) -> KnownCaller {
        KnownCaller {
            user: identity.user_id.clone(),
            client: identity.client_id.clone(),
        }
    }

    pub fn who(&self, ip: Option<IpAddr>) -> Who<'_> {
        Who {
            user: self.user.as_deref(),
            client: self.client.as_deref(),
            ip,
        }
    }
}

fn ip_text(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string())
}

/// A failed authentication (bad token, no user where one is needed, forged webhook, …).
pub fn auth_failed(who: &Who<'_>, why: &str) {
    info!(
        target: TARGET,
        event = "auth_failed",
        user = ?who.user.unwrap_or("-"),
        client = ?who.client.unwrap_or("-"),
        ip = %ip_text(who.ip),
        why,
        "authentication failed"
    );
}

/// A refusal: of a whole request by a protection rule, or of one channel by the policy.
pub fn refused(who: &Who<'_>, channel: Option<&str>, rule: &str, why: &str) {
    info!(
        target: TARGET,
        event = "refused",
        user = ?who.user.unwrap_or("-"),
        client = ?who.client.unwrap_or("-"),
        ip = %ip_text(who.ip),
        channel = ?channel.unwrap_or("-"),
        rule,
        why,
        "refused"
    );
}
