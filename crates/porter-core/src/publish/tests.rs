use proptest::prelude::*;

use super::*;
use crate::signing::Secret;

fn events(body: &str) -> Result<Vec<PublishedEvent>, PublishError> {
    parse_body(PublishKind::Events, body)
}

fn batch(body: &str) -> Result<Vec<PublishedEvent>, PublishError> {
    parse_body(PublishKind::BatchEvents, body)
}

fn event_json(name: &str, data: &str, channels: &[String]) -> String {
    serde_json::json!({ "name": name, "data": data, "channels": channels }).to_string()
}

fn channels(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}")).collect()
}

#[test]
fn an_event_to_several_channels_is_one_event_per_channel() {
    let body = r#"{"name":"e","data":"{\"a\":1}","channels":["a","private-b@1"],"socket_id":"1.2","extra":5}"#;
    let got = events(body).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].channel, "private-b@1");
    assert_eq!(got[0].name, "e");
    assert_eq!(got[0].data, r#"{"a":1}"#);
    assert_eq!(got[0].socket_id.as_deref(), Some("1.2"));
    let single = events(r#"{"name":"e","data":"x","channel":"a"}"#).unwrap();
    assert_eq!(single[0].channel, "a");
    assert_eq!(single[0].socket_id, None);
}

#[test]
fn a_batch_is_one_event_per_item_in_order() {
    let body = r##"{"batch":[{"channel":"a","name":"x","data":"1"},{"channel":"#server-to-user-7","name":"y","data":"2","info":"user_count,subscription_count"}]}"##;
    let got = batch(body).unwrap();
    assert_eq!(
        got.iter()
            .map(|e| (e.channel.as_str(), e.name.as_str()))
            .collect::<Vec<_>>(),
        [("a", "x"), ("#server-to-user-7", "y")]
    );
}

#[test]
fn each_limit_is_refused_at_one_past_and_accepted_at_it() {
    let name = "n".repeat(MAX_EVENT_NAME_LEN);
    assert!(events(&event_json(&name, "", &channels(1))).is_ok());
    let too_long = format!("{name}n");
    assert_eq!(
        events(&event_json(&too_long, "", &channels(1))),
        Err(PublishError::EventNameTooLong)
    );

    assert!(events(&event_json("e", "", &channels(MAX_CHANNELS_PER_EVENT))).is_ok());
    assert_eq!(
        events(&event_json("e", "", &channels(MAX_CHANNELS_PER_EVENT + 1))),
        Err(PublishError::TooManyChannels(MAX_CHANNELS_PER_EVENT + 1))
    );

    let channel = "c".repeat(MAX_PUBLISH_CHANNEL_LEN);
    assert!(events(&event_json("e", "", std::slice::from_ref(&channel))).is_ok());
    assert_eq!(
        events(&event_json("e", "", &[format!("{channel}c")])),
        Err(PublishError::ChannelNameTooLong)
    );

    let data = "d".repeat(MAX_DATA_BYTES);
    assert!(events(&event_json("e", &data, &channels(1))).is_ok());
    let error = events(&event_json("e", &format!("{data}d"), &channels(1))).unwrap_err();
    assert_eq!(error, PublishError::DataTooLarge(MAX_DATA_BYTES + 1));
    assert_eq!(error.class(), PublishErrorClass::TooLarge);

    let item = r#"{"channel":"a","name":"x","data":"1"}"#;
    let items = |n: usize| format!(r#"{{"batch":[{}]}}"#, vec![item; n].join(","));
    assert_eq!(
        batch(&items(MAX_BATCH_EVENTS)).unwrap().len(),
        MAX_BATCH_EVENTS
    );
    assert_eq!(
        batch(&items(MAX_BATCH_EVENTS + 1)),
        Err(PublishError::TooManyEvents(MAX_BATCH_EVENTS + 1))
    );
}

#[test]
fn malformed_bodies_are_refused_with_their_code() {
    let cases: &[(&str, PublishKind, PublishErrorCode)] = &[
        (
            "not json",
            PublishKind::Events,
            PublishErrorCode::InvalidBody,
        ),
        (
            r#"{"data":"x","channel":"a"}"#,
            PublishKind::Events,
            PublishErrorCode::InvalidBody,
        ),
        (
            r#"{"name":"e","data":{"a":1},"channel":"a"}"#,
            PublishKind::Events,
            PublishErrorCode::InvalidBody,
        ),
        (
            r#"{"name":"","data":"x","channel":"a"}"#,
            PublishKind::Events,
            PublishErrorCode::InvalidEventName,
        ),
        (
            r#"{"name":"e","data":"x"}"#,
            PublishKind::Events,
            PublishErrorCode::NoChannels,
        ),
        (
            r#"{"name":"e","data":"x","channels":[]}"#,
            PublishKind::Events,
            PublishErrorCode::NoChannels,
        ),
        (
            r#"{"name":"e","data":"x","channels":["a"],"channel":"a"}"#,
            PublishKind::Events,
            PublishErrorCode::NoChannels,
        ),
        (
            r#"{"name":"e","data":"x","channel":"a b"}"#,
            PublishKind::Events,
            PublishErrorCode::InvalidChannel,
        ),
        (
            r#"{"name":"e","data":"x","channel":""}"#,
            PublishKind::Events,
            PublishErrorCode::InvalidChannel,
        ),
        (
            r##"{"name":"e","data":"x","channel":"#server-to-user-"}"##,
            PublishKind::Events,
            PublishErrorCode::InvalidChannel,
        ),
        (
            r#"{"name":"e","data":"x","channel":"a","socket_id":"1.2\n"}"#,
            PublishKind::Events,
            PublishErrorCode::InvalidSocketId,
        ),
        (
            r#"{"name":"e","data":"x","channel":"a","info":"user_count,colour"}"#,
            PublishKind::Events,
            PublishErrorCode::InvalidInfo,
        ),
        (
            r#"{"batch":[]}"#,
            PublishKind::BatchEvents,
            PublishErrorCode::EmptyBatch,
        ),
        (
            r#"{"name":"e","data":"x","channel":"a"}"#,
            PublishKind::BatchEvents,
            PublishErrorCode::InvalidBody,
        ),
        (
            r#"{"batch":[{"channel":"a","name":"x"}]}"#,
            PublishKind::BatchEvents,
            PublishErrorCode::InvalidBody,
        ),
        (
            r#"{"batch":[{"channel":"a!","name":"x","data":"1"}]}"#,
            PublishKind::BatchEvents,
            PublishErrorCode::InvalidChannel,
        ),
    ];
    for (body, kind, code) in cases {
        let error = parse_body(*kind, body).unwrap_err();
        assert_eq!(error.code(), *code, "{body}: {error}");
        assert_eq!(error.class(), PublishErrorClass::BadRequest, "{body}");
        assert!(!error.to_string().contains('\n'), "{error}");
    }
}

#[test]
fn accept_keeps_the_body_byte_for_byte_and_events_reads_it_back() {
    let body = br#"{ "name" : "e", "data":"{\"x\": 1}",  "channels":["a","b"] }"#;
    let (publication, count) =
        Publication::accept("id-1".into(), "1".into(), PublishKind::Events, body, 9).unwrap();
    assert_eq!(count, 2);
    assert_eq!(publication.body.as_bytes(), body);
    assert_eq!(publication.events().unwrap().len(), 2);
    let json = serde_json::to_string(&publication).unwrap();
    assert_eq!(
        serde_json::from_str::<Publication>(&json).unwrap(),
        publication
    );

    assert_eq!(
        Publication::accept("i".into(), "1".into(), PublishKind::Events, b"{\xff}", 9).unwrap_err(),
        PublishError::InvalidUtf8
    );
    let mut newer = publication;
    newer.v = PUBLICATION_VERSION + 1;
    assert_eq!(
        newer.events(),
        Err(PublishError::UnknownVersion(PUBLICATION_VERSION + 1))
    );
}

#[test]
fn codes_are_distinct_snake_case_strings_matching_serde() {
    let all = [
        PublishErrorCode::UnknownApp,
        PublishErrorCode::MissingAuthParameter,
        PublishErrorCode::DuplicateParameter,
        PublishErrorCode::UnknownKey,
        PublishErrorCode::UnsupportedAuthVersion,
        PublishErrorCode::InvalidTimestamp,
        PublishErrorCode::StaleTimestamp,
        PublishErrorCode::InvalidBodyMd5,
        PublishErrorCode::InvalidSignature,
        PublishErrorCode::InvalidBody,
        PublishErrorCode::InvalidEventName,
        PublishErrorCode::NoChannels,
        PublishErrorCode::TooManyChannels,
        PublishErrorCode::InvalidChannel,
        PublishErrorCode::EmptyBatch,
        PublishErrorCode::TooManyEvents,
        PublishErrorCode::DataTooLarge,
        PublishErrorCode::InvalidSocketId,
        PublishErrorCode::InvalidInfo,
        PublishErrorCode::UnknownVersion,
    ];
    let mut seen = std::collections::HashSet::new();
    for code in all {
        assert!(seen.insert(code.as_str()), "{code:?}");
        assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
    }
}

const KEY: &str = "key";

fn secret() -> Secret {
    Secret::new("secret")
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn verify(query: &str, body: &[u8], now: u64) -> Result<VerifiedRequest, PublishError> {
    let secret = secret();
    let credentials = ApiCredentials {
        key: KEY,
        secret: &secret,
    };
    let query = query_pairs(query);
    credentials.verify(
        &SignedRequest {
            method: "POST",
            path: "/apps/1/events",
            query: &query,
            body,
        },
        now,
    )
}

#[test]
fn a_request_signed_like_the_sdk_verifies_and_names_its_signature() {
    let body = br#"{"name":"e","data":"x","channel":"a"}"#;
    let query = signed_query(KEY, &secret(), "POST", "/apps/1/events", body, 1_000);
    let verified = verify(&query, body, 1_000).unwrap();
    assert!(query.ends_with(&format!("auth_signature={}", verified.signature)));
    assert_eq!(verified.timestamp, 1_000);
    // Within the window either way, at its edges.
    assert!(verify(&query, body, 1_000 + TIMESTAMP_WINDOW_SECS).is_ok());
    assert!(verify(&query, body, 1_000 - TIMESTAMP_WINDOW_SECS).is_ok());
}

#[test]
fn every_broken_part_of_a_signature_is_refused_with_its_code() {
    let body = br#"{"name":"e","data":"x","channel":"a"}"#;
    let good = signed_query(KEY, &secret(), "POST", "/apps/1/events", body, 1_000);
    let other_secret = signed_query(
        KEY,
        &Secret::new("nope"),
        "POST",
        "/apps/1/events",
        body,
        1_000,
    );
    let other_key = signed_query("yek", &secret(), "POST", "/apps/1/events", body, 1_000);
    let other_path = signed_query(KEY, &secret(), "POST", "/apps/2/events", body, 1_000);
    let without = |name: &str| {
        good.split('&')
            .filter(|pair| !pair.starts_with(&format!("{name}=")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let cases: Vec<(String, &[u8], u64, PublishErrorCode)> = vec![
        (
            other_secret,
            body,
            1_000,
            PublishErrorCode::InvalidSignature,
        ),
        (other_path, body, 1_000, PublishErrorCode::InvalidSignature),
        (other_key, body, 1_000, PublishErrorCode::UnknownKey),
        (
            good.clone(),
            body,
            1_000 + TIMESTAMP_WINDOW_SECS + 1,
            PublishErrorCode::StaleTimestamp,
        ),
        (
            good.clone(),
            body,
            1_000 - TIMESTAMP_WINDOW_SECS - 1,
            PublishErrorCode::StaleTimestamp,
        ),
        (
            good.clone(),
            br#"{"name":"f","data":"x","channel":"a"}"#,
            1_000,
            PublishErrorCode::InvalidBodyMd5,
        ),
        (
            good.replace("auth_version=1.0", "auth_version=2.0"),
            body,
            1_000,
            PublishErrorCode::UnsupportedAuthVersion,
        ),
        (
            good.replace("auth_timestamp=1000", "auth_timestamp=soon"),
            body,
            1_000,
            PublishErrorCode::InvalidTimestamp,
        ),
        (
            format!("{good}&auth_key={KEY}"),
            body,
            1_000,
            PublishErrorCode::DuplicateParameter,
        ),
        (
            format!("{good}&auth_signature=00"),
            body,
            1_000,
            PublishErrorCode::DuplicateParameter,
        ),
        (
            format!("{good}&extra=1"),
            body,
            1_000,
            PublishErrorCode::InvalidSignature,
        ),
        (
            without("auth_key"),
            body,
            1_000,
            PublishErrorCode::MissingAuthParameter,
        ),
        (
            without("auth_signature"),
            body,
            1_000,
            PublishErrorCode::MissingAuthParameter,
        ),
        (
            without("body_md5"),
            body,
            1_000,
            PublishErrorCode::MissingAuthParameter,
        ),
        (
            without("auth_timestamp"),
            body,
            1_000,
            PublishErrorCode::MissingAuthParameter,
        ),
    ];
    for (query, body, now, code) in cases {
        let error = verify(&query, body, now).unwrap_err();
        assert_eq!(error.code(), code, "{query}: {error}");
        assert_eq!(error.class(), PublishErrorClass::Unauthorized);
    }
}

#[test]
fn parameter_keys_are_compared_lower_cased_as_pusher_specifies() {
    let body = b"{}";
    let good = signed_query(KEY, &secret(), "POST", "/apps/1/events", body, 1_000);
    let shouted = good
        .replace("auth_key=", "AUTH_KEY=")
        .replace("body_md5=", "Body_MD5=");
    assert!(verify(&shouted, body, 1_000).is_ok());
}

proptest! {
    #[test]
    fn any_body_signed_verifies_and_any_other_body_does_not(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        other in proptest::collection::vec(any::<u8>(), 1..256),
        now in 600u64..4_000_000_000,
    ) {
        let query = signed_query(KEY, &secret(), "POST", "/apps/1/events", &body, now);
        prop_assert!(verify(&query, &body, now).is_ok());
        if other != body {
            // An empty body is signed without `body_md5`, so another body misses it.
            let expected = if body.is_empty() {
                PublishErrorCode::MissingAuthParameter
            } else {
                PublishErrorCode::InvalidBodyMd5
            };
            prop_assert_eq!(verify(&query, &other, now).unwrap_err().code(), expected);
        }
    }

    #[test]
    fn parsing_never_panics_and_refusals_are_one_line(body in ".{0,300}") {
        for kind in [PublishKind::Events, PublishKind::BatchEvents] {
            if let Err(error) = parse_body(kind, &body) {
                prop_assert!(!error.to_string().contains('\n'));
            }
        }
    }
}

#[test]
fn a_publication_id_names_the_signed_request() {
    let body = br#"{"name":"e","data":"x","channel":"a"}"#;
    let query = signed_query(KEY, &secret(), "POST", "/apps/1/events", body, 1_000);
    let id = |query: &str, body: &[u8], app_id: &str| {
        publication_id(app_id, &verify(query, body, 1_000).unwrap())
    };
    let first = id(&query, body, "1");
    // Every copy of the request, checked at any time within the window, with its parameters in
    // any order: the same id.
    let copy = publication_id("1", &verify(&query, body, 1_300).unwrap());
    assert_eq!(copy, first);
    let reordered = query.split('&').rev().collect::<Vec<_>>().join("&");
    assert_eq!(id(&reordered, body, "1"), first);
    // Fixed length, hex, and not the signature itself.
    assert_eq!(first.len(), 64);
    assert!(
        first
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(!query.contains(&first));
    // Another request (another second, another body) or another app: another id.
    let later = signed_query(KEY, &secret(), "POST", "/apps/1/events", body, 1_001);
    assert_ne!(id(&later, body, "1"), first);
    let other_body = br#"{"name":"e","data":"y","channel":"a"}"#;
    let other = signed_query(KEY, &secret(), "POST", "/apps/1/events", other_body, 1_000);
    assert_ne!(id(&other, other_body, "1"), first);
    assert_ne!(id(&query, body, "2"), first);
}
