//! What one channel's authorization ends as, and how that is answered.
//!
//! A worker's reply becomes a [`Verdict`] (allowed with data, refused, or no reply in time);
//! the gateway signs an allowed verdict into an [`Outcome`]. Every HTTP status a channel
//! reason can get comes from [`status_of`], one exhaustive table over
//! [`porter_core::reason::ReasonClass`]: a reason without a status does not compile.

use actix_web::http::StatusCode;
use porter_core::reason::{Reason, ReasonClass};
use porter_core::wire::{AuthData, Event};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Value, json};

/// A worker's decision on one channel, before signing.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allowed(AuthData),
    Refused(Reason),
    /// No reply before the batch deadline.
    TimedOut,
}

/// What the client receives for an authorized channel.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SignedChannel {
    pub auth: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<String>,
    /// Retained events of a private channel, outside the signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
}

/// One channel's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Signed(SignedChannel),
    Refused(Reason),
    TimedOut,
}

impl Outcome {
    /// Why the channel was not signed; `None` when it was.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Outcome::Signed(_) => None,
            Outcome::Refused(reason) => Some(reason.clone()),
            Outcome::TimedOut => Some(Reason::Timeout),
        }
    }
}

/// The status and error code of a refused single-channel request.
pub fn status_of(reason: &Reason) -> (StatusCode, &'static str) {
    match reason.class() {
        ReasonClass::Invalid => (StatusCode::BAD_REQUEST, "invalid_channel"),
        ReasonClass::Refused => (StatusCode::FORBIDDEN, "forbidden"),
        ReasonClass::TimedOut => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        ReasonClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

/// The batch response body: `{channel: {auth…} | {"reason": …}}`, channels in the order of
/// `results`.
pub fn batch_body(results: &[(String, Outcome)]) -> BatchBody<'_> {
    BatchBody(results)
}

/// The batch response body, serialized straight from the outcomes: building a
/// `serde_json::Value` first (a map, and a copy of every string in it) cost as much as writing
/// the JSON (docs/benchmarks.md, "Gateway per-request cost").
pub struct BatchBody<'a>(&'a [(String, Outcome)]);

impl Serialize for BatchBody<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Refused {
            reason: Option<Reason>,
        }
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, outcome) in self.0 {
            match outcome {
                Outcome::Signed(signed) => map.serialize_entry(name, signed)?,
                refused => map.serialize_entry(
                    name,
                    &Refused {
                        reason: refused.reason(),
                    },
                )?,
            }
        }
        map.end()
    }
}

/// The `pusher-js-auth` plugin's format: `{"<channel>": {"status": 200, "data": {…}}}`; a
/// refused channel is `{"status": 403, "reason"}` whatever the reason, as the plugin reads
/// any non-200 as a failed subscription.
pub fn plugin_body(results: &[(String, Outcome)]) -> Value {
    let mut body = serde_json::Map::with_capacity(results.len());
    for (name, outcome) in results {
        let value = match outcome {
            Outcome::Signed(signed) => json!({ "status": 200, "data": signed }),
            refused => json!({ "status": 403, "reason": refused.reason() }),
        };
        body.insert(name.clone(), value);
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_a_status() {
        assert_eq!(status_of(&Reason::PublicChannel).0, StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of(&Reason::ClaimMismatch("id".into())).0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(status_of(&Reason::Expired).0, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            status_of(&Reason::EncryptionNotConfigured).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // A store that did not answer is a retry-later, never a refusal.
        assert_eq!(
            status_of(&Reason::StoreUnavailable),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
    }

    #[test]
    fn bodies_carry_the_stable_reason_strings() {
        let results = vec![
            ("a".to_owned(), Outcome::TimedOut),
            ("b".to_owned(), Outcome::Refused(Reason::TimeLimitExceeded)),
        ];
        assert_eq!(
            serde_json::to_value(batch_body(&results)).unwrap(),
            json!({"a": {"reason": "timeout"}, "b": {"reason": "time limit exceeded"}})
        );
        assert_eq!(plugin_body(&results)["b"]["status"], 403);
    }

    #[test]
    fn the_batch_body_keeps_the_channels_order_and_skips_absent_fields() {
        let signed = |auth: &str, shared_secret: Option<&str>| {
            Outcome::Signed(SignedChannel {
                auth: auth.to_owned(),
                channel_data: None,
                shared_secret: shared_secret.map(str::to_owned),
                events: None,
            })
        };
        let results = vec![
            ("private-z".to_owned(), signed("k:1", None)),
            ("private-encrypted-a".to_owned(), signed("k:2", Some("s="))),
            ("private-m".to_owned(), Outcome::Refused(Reason::NoRule)),
        ];
        assert_eq!(
            serde_json::to_string(&batch_body(&results)).unwrap(),
            r#"{"private-z":{"auth":"k:1"},"private-encrypted-a":{"auth":"k:2","shared_secret":"s="},"private-m":{"reason":"no_rule"}}"#
        );
    }
}
