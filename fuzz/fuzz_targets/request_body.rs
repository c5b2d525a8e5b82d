//! The bodies of `POST /pusher/auth` (pusher-js's `socket_id=…&channel_name=…`, the
//! `pusher-js-auth` plugin's `&socket_id=…&channel_name[0]=…`, or either as a JSON object),
//! read by `porter_gateway::http::fields::Fields::from_body` and then as the handler does.
//!
//! Invariants: nothing panics; a body whose `Content-Type` is not JSON reads exactly as a form;
//! a JSON body is accepted exactly when it is an object, and every string in it (directly or in
//! an array, as `key[i]`) is a value of its key; `first` is the first of `all`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porter_core::channel::{Channel, validate_socket_id};
use porter_gateway::http::fields::{Fields, FieldsError, is_json};
use serde_json::Value;

/// The `Content-Type` headers a client may send; the first input byte picks one.
const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some("application/x-www-form-urlencoded"),
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
    Some("application/jsonp"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let read = Fields::from_body(content_type, body);
    if is_json(content_type) {
        check_json(body, &read);
    } else {
        let fields = read.as_ref().expect("a form body always reads");
        assert_eq!(
            format!("{fields:?}"),
            format!("{:?}", Fields::from_form(body))
        );
    }
    if let Ok(fields) = &read {
        read_as_the_handler_does(fields);
    }
});

fn check_json(body: &[u8], read: &Result<Fields, FieldsError>) {
    match serde_json::from_slice::<Value>(body) {
        Err(_) => assert_eq!(read.as_ref().err(), Some(&FieldsError::NotJson)),
        Ok(Value::Object(object)) => {
            let fields = read.as_ref().expect("a JSON object always reads");
            for (key, value) in &object {
                match value {
                    Value::String(text) => assert!(fields.all(key).any(|v| v == text)),
                    Value::Array(items) => {
                        for (index, item) in items.iter().enumerate() {
                            if let Value::String(text) = item {
                                let indexed = format!("{key}[{index}]");
                                assert!(fields.all(&indexed).any(|v| v == text));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(_) => assert_eq!(read.as_ref().err(), Some(&FieldsError::NotObject)),
    }
}

fn read_as_the_handler_does(fields: &Fields) {
    for key in ["socket_id", "channel_name"] {
        assert_eq!(fields.first(key), fields.all(key).next());
        assert!(fields.any_of(&[key]).eq(fields.all(key)));
    }
    if let Some(socket_id) = fields.first("socket_id") {
        let _ = validate_socket_id(socket_id);
    }
    for channel in fields.indexed("channel_name") {
        let _ = Channel::parse(&channel);
    }
    if let Some(channel) = fields.first("channel_name") {
        let _ = Channel::parse(channel);
    }
}
