//! Known answers from the official Node server SDK (`pusher` 5): publish requests it signed
//! (`vectors/publish_requests.json`, written by `crates/porter/tests/js/gen_publish_vectors.mjs`
//! with the clock pinned). Porter must accept each, and sign the same request identically.

use porter_core::publish::{
    ApiCredentials, PublishKind, SignedRequest, body_md5, parse_body, signed_query,
};
use porter_core::signing::Secret;
use serde_json::Value;

#[test]
fn requests_signed_by_the_node_sdk_verify_and_are_signed_alike() {
    let document: Value =
        serde_json::from_str(include_str!("vectors/publish_requests.json")).unwrap();
    let app = &document["app"];
    let key = app["key"].as_str().unwrap();
    let secret = Secret::new(app["secret"].as_str().unwrap());
    let credentials = ApiCredentials {
        key,
        secret: &secret,
    };
    let cases = document["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let path = case["path"].as_str().unwrap();
        let body = case["body"].as_str().unwrap();
        let query = case["query"].as_str().unwrap();
        let timestamp = case["timestamp"].as_u64().unwrap();
        assert_eq!(
            body_md5(body.as_bytes()),
            case["body_md5"].as_str().unwrap()
        );
        assert_eq!(
            signed_query(key, &secret, "POST", path, body.as_bytes(), timestamp),
            query,
            "{path}"
        );
        let pairs: Vec<(String, String)> = query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let request = SignedRequest {
            method: "POST",
            path,
            query: &pairs,
            body: body.as_bytes(),
        };
        let verified = credentials.verify(&request, timestamp + 1).unwrap();
        assert!(query.ends_with(&verified.signature));
        let kind = match case["kind"].as_str().unwrap() {
            "events" => PublishKind::Events,
            _ => PublishKind::BatchEvents,
        };
        assert!(!parse_body(kind, body).unwrap().is_empty());
    }
}
