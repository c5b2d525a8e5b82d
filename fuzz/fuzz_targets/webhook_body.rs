//! The body of `POST /pusher/webhook` (`porter_gateway::handlers::presence::WebhookBody`),
//! read once its signature checks out; the realtime server is trusted to sign, not to be right.
//!
//! Invariants: reading never panics; a body it accepts is a JSON object with a `time_ms` that
//! fits a `u64` (so the freshness check is computed on what the sender signed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use porter_gateway::handlers::presence::WebhookBody;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = WebhookBody::parse(data) else {
        return;
    };
    let _ = format!("{body:?}");
    // A struct also deserializes from a JSON array of its fields; either way `time_ms` is a u64.
    match serde_json::from_slice::<Value>(data).expect("an accepted body is JSON") {
        Value::Object(object) => assert!(object.get("time_ms").is_some_and(Value::is_u64)),
        Value::Array(items) => assert!(items.first().is_some_and(Value::is_u64)),
        other => panic!("accepted a webhook body that is {other}"),
    }
});
