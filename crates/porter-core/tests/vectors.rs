//! Known-answer tests from the official Pusher server SDKs.
//!
//! `vectors/pusher_auth.json` is the project's shared vector file (generated with the Python
//! SDK); `vectors/pusher_docs.json` holds Pusher's published worked examples.

use porter_core::channel::{Channel, validate_socket_id};
use porter_core::signing::{Secret, Signer};
use serde_json::Value;

fn signer(app: &Value) -> Signer {
    Signer::new(
        app["app_id"].as_str().unwrap(),
        app["key"].as_str().unwrap(),
        &Secret::new(app["secret"].as_str().unwrap()),
        app["encryption_master_key_base64"].as_str(),
    )
    .unwrap()
}

fn run(file: &str) -> usize {
    let document: Value = serde_json::from_str(file).unwrap();
    let signer = signer(&document["app"]);
    let cases = document["cases"].as_array().unwrap();
    for case in cases {
        let expect = &case["expect"];
        match case["kind"].as_str().unwrap() {
            "channel" => {
                let socket_id = case["socket_id"].as_str().unwrap();
                let channel = case["channel"].as_str().unwrap();
                validate_socket_id(socket_id).unwrap();
                Channel::parse(channel).unwrap();
                let auth = signer
                    .sign_channel(socket_id, channel, case["channel_data"].as_str())
                    .unwrap();
                // The JSON the SDKs return, field for field.
                assert_eq!(serde_json::to_value(&auth).unwrap(), *expect, "{channel}");
            }
            "user" => {
                let auth = signer.sign_user(
                    case["socket_id"].as_str().unwrap(),
                    case["user_data"].as_str().unwrap(),
                );
                assert_eq!(serde_json::to_value(&auth).unwrap(), *expect);
            }
            "webhook" => {
                let body = case["body"].as_str().unwrap().as_bytes();
                let key = expect["x_pusher_key"].as_str().unwrap();
                let signature = expect["x_pusher_signature"].as_str().unwrap();
                assert_eq!(signer.webhook_signature(body), signature);
                assert!(signer.verify_webhook(key, signature, body));
            }
            other => panic!("unknown vector kind {other}"),
        }
    }
    cases.len()
}

#[test]
fn shared_vectors() {
    assert_eq!(run(include_str!("vectors/pusher_auth.json")), 8);
}

#[test]
fn pusher_documented_examples() {
    assert_eq!(run(include_str!("vectors/pusher_docs.json")), 4);
}
