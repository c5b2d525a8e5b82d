//! The body of `POST /pusher/webhook` (`porter_gateway::handlers::presence::WebhookBody`),
//! read once its signature checks out; the realtime server is trusted to sign, not to be right.
//!
//! Invariants: reading never panics; a body it accepts is a JSON object (or array) with a
//! `time_ms` that fits a `u64`, so the freshness check is computed on what the sender signed.
//! Invalid UTF-8 or an out-of-range number inside a field Porter ignores is accepted (serde_json
//! does not look into skipped values): harmless, and pinned by seeds and a unit test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porter_gateway::handlers::presence::WebhookBody;
use serde::de::IgnoredAny;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = WebhookBody::parse(data) else {
        return;
    };
    let _ = format!("{body:?}");
    // An accepted body is well-formed JSON.
    assert!(serde_json::from_slice::<IgnoredAny>(data).is_ok());
    // serde_json skips the value of a field it ignores without checking its UTF-8 or whether
    // its numbers fit an f64, so `Value` may refuse what the body reader accepts; where it
    // reads the body too, `time_ms` is a u64 (a struct also reads from an array of its fields).
    let text = String::from_utf8_lossy(data);
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => assert!(object.get("time_ms").is_some_and(Value::is_u64)),
        Ok(Value::Array(items)) => assert!(items.first().is_some_and(Value::is_u64)),
        Ok(other) => panic!("accepted a webhook body that is {other}"),
        Err(_) => {}
    }
});
