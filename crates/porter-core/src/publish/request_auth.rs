//! The request signature of Pusher's HTTP API, as the official server SDKs write it.
//!
//! A request carries, in its query string, `auth_key` (the app key), `auth_timestamp` (unix
//! seconds), `auth_version` (`1.0`), `body_md5` (hex MD5 of the body, when there is one) and
//! `auth_signature`: hex HMAC-SHA256 under the app secret of
//! `"{METHOD}\n{path}\n{query}"`, where `query` is every other parameter as `key=value`
//! (keys lower-cased, values decoded), sorted by key and joined by `&`.
//! (https://pusher.com/docs/channels/library_auth_reference/rest-api/#authentication)

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::PublishError;
use crate::signing::Secret;

/// How far `auth_timestamp` may be from the server's clock, either way (Pusher's 600 s).
pub const TIMESTAMP_WINDOW_SECS: u64 = 600;

/// The only `auth_version` there is.
const AUTH_VERSION: &str = "1.0";

/// A request to check, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `POST`.
    pub method: &'a str,
    /// The path as requested, e.g. `/apps/1/events`.
    pub path: &'a str,
    /// The decoded query parameters, in the order they came.
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    /// Its `auth_signature` (lower-case hex): it covers method, path, timestamp and body, so
    /// it names the signed request, for replay detection.
    pub signature: String,
    /// Its `auth_timestamp`.
    pub timestamp: u64,
}

/// The app's credentials a request must be signed with.
#[derive(Debug, Clone, Copy)]
pub struct ApiCredentials<'a> {
    pub key: &'a str,
    pub secret: &'a Secret,
}

impl ApiCredentials<'_> {
    /// Checks a request's key, version, timestamp (within [`TIMESTAMP_WINDOW_SECS`] of
    /// `now_secs`), `body_md5` and signature, in that order. Key and signature are compared in
    /// constant time.
    pub fn verify(
        &self,
        request: &SignedRequest<'_>,
        now_secs: u64,
    ) -> Result<VerifiedRequest, PublishError> {
        let mut params: Vec<(String, &str)> = Vec::with_capacity(request.query.len());
        let mut signature = None;
        // A set, not a scan of `params`: this runs before the signature is checked, so a head
        // of thousands of parameters must cost linear time, not quadratic.
        let mut seen = std::collections::HashSet::with_capacity(request.query.len());
        for (key, value) in request.query {
            let key = key.to_ascii_lowercase();
            if !seen.insert(key.clone()) {
                return Err(PublishError::DuplicateParameter);
            }
            if key == "auth_signature" {
                signature = Some(value.as_str());
            } else {
                params.push((key, value.as_str()));
            }
        }
        let param = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| *value)
        };

        let key = param("auth_key").ok_or(PublishError::MissingAuthParameter("auth_key"))?;
        if !bool::from(key.as_bytes().ct_eq(self.key.as_bytes())) {
            return Err(PublishError::UnknownKey);
        }
        let version =
            param("auth_version").ok_or(PublishError::MissingAuthParameter("auth_version"))?;
        if version != AUTH_VERSION {
            return Err(PublishError::UnsupportedAuthVersion);
        }
        let timestamp = param("auth_timestamp")
            .ok_or(PublishError::MissingAuthParameter("auth_timestamp"))?
            .parse::<u64>()
            .map_err(|_| PublishError::InvalidTimestamp)?;
        if timestamp.abs_diff(now_secs) > TIMESTAMP_WINDOW_SECS {
            return Err(PublishError::StaleTimestamp);
        }
        match param("body_md5") {
            Some(md5) if !md5.eq_ignore_ascii_case(&body_md5(request.body)) => {
                return Err(PublishError::BodyMd5Mismatch);
            }
            None if !request.body.is_empty() => {
                return Err(PublishError::MissingAuthParameter("body_md5"));
            }
            _ => {}
        }
        let signature = signature.ok_or(PublishError::MissingAuthParameter("auth_signature"))?;

        params.sort_by(|a, b| a.0.cmp(&b.0));
        let query = params
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join("&");
        let expected = sign(
            self.secret,
            &format!("{}\n{}\n{query}", request.method, request.path),
        );
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return Err(PublishError::InvalidSignature);
        }
        Ok(VerifiedRequest {
            signature: expected,
            timestamp,
        })
    }
}

/// Hex MD5 of a body: its `body_md5`.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Hex HMAC-SHA256 of the string to sign under the app secret.
fn sign(secret: &Secret, string_to_sign: &str) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Signs a request as the official SDKs do: the query string (`auth_*`, `body_md5` and
/// `auth_signature`) for `method path` with `body` at `timestamp`. For tests and tools that
/// stand in for an SDK (the upstream forwarding of published events signs its requests so).
pub fn signed_query(
    key: &str,
    secret: &Secret,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: u64,
) -> String {
    let mut query =
        format!("auth_key={key}&auth_timestamp={timestamp}&auth_version={AUTH_VERSION}");
    if !body.is_empty() {
        query.push_str("&body_md5=");
        query.push_str(&body_md5(body));
    }
    let signature = sign(secret, &format!("{method}\n{path}\n{query}"));
    format!("{query}&auth_signature={signature}")
}
