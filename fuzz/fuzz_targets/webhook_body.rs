//! The body of `POST /pusher/webhook` (`porter_gateway::handlers::presence::WebhookBody`),
//! read once its signature checks out; the realtime server is trusted to sign, not to be right.
//!
//! Invariants: reading never panics; a body it accepts is a JSON object (or array) with a
//! `time_ms` that fits a `u64`, so the freshness check is computed on what the sender signed.
//! Invalid UTF-8 inside a string of a field Porter ignores is accepted (serde_json does not
//! look into skipped strings): harmless, and pinned by a seed and a unit test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porter_gateway::handlers::presence::WebhookBody;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = WebhookBody::parse(data) else {
        return;
    };
    let _ = format!("{body:?}");
    // serde_json skips a field it ignores without checking its UTF-8, so an accepted body is
    // JSON once invalid bytes (which can only be inside such strings) are replaced.
    let text = String::from_utf8_lossy(data);
    // A struct also deserializes from a JSON array of its fields; either way `time_ms` is a u64.
    match serde_json::from_str::<Value>(&text).expect("an accepted body is JSON") {
        Value::Object(object) => assert!(object.get("time_ms").is_some_and(Value::is_u64)),
        Value::Array(items) => assert!(items.first().is_some_and(Value::is_u64)),
        other => panic!("accepted a webhook body that is {other}"),
    }
});
