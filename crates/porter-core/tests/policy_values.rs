//! The policy parser never panics, whatever value an operator writes in whichever field
//! (issue 10, finding 8: `time_limit = 1e30` panicked in `Duration::from_secs_f64`); its errors
//! are one line; and what it accepts can be matched and explained without panicking either.
//!
//! Each case starts from a valid rule (and endpoint) and puts arbitrary TOML values (integers
//! of every size, floats including NaN, infinities and subnormals, strings that look like
//! durations, arrays, tables) at one to four places, top-level fields and nested ones alike.

use porter_core::policy::Policy;
use proptest::prelude::*;
use toml::{Table, Value};

/// Every place a policy has a value, as a path of keys from the document (`rule` and
/// `endpoint` are the first array entry).
const PLACES: &[&[&str]] = &[
    &["rule", "name"],
    &["rule", "pattern"],
    &["rule", "where"],
    &["rule", "where", "feature"],
    &["rule", "queue"],
    &["rule", "time_limit"],
    &["rule", "expires"],
    &["rule", "allow"],
    &["rule", "allow", "claims"],
    &["rule", "allow", "claims", "sub"],
    &["rule", "allow", "webhook"],
    &["rule", "allow", "webhook", "url"],
    &["rule", "allow", "webhook", "timeout"],
    &["rule", "allow", "any_of"],
    &["rule", "allow", "all_of"],
    &["rule", "data"],
    &["rule", "data", "events"],
    &["rule", "data", "online"],
    &["rule", "data", "user_info"],
    &["rule", "data", "user_id"],
    &["rule", "data", "info"],
    &["rule", "data", "info", "name"],
    &["rule", "cache"],
    &["rule", "cache", "scope"],
    &["rule", "cache", "ttl"],
    &["rule", "private_data"],
    &["endpoint", "path"],
    &["endpoint", "token"],
    &["endpoint", "token", "query"],
    &["endpoint", "token", "secret_env"],
    &["endpoint", "rules"],
    &["endpoint", "messages"],
    &["endpoint", "messages", "no_match"],
];

/// A valid starting point that uses every field, so each place is read.
const BASE: &str = r#"
[[rule]]
name = "r"
pattern = "private-{feature}@{object_id}"
where.feature = ["x", "y"]
queue = "auth"
time_limit = 2
expires = 2
allow = { all_of = [{ webhook = { url = "http://h/{feature}", timeout = "1s" } }, "owner"] }
data = { events = true, online = true, user_info = "none", user_id = "{object_id}", info = { name = "n" } }
cache = { scope = "user", ttl = 60 }
private_data = "signed"

[[endpoint]]
path = "/e/{feature}"
token = { query = "t", secret_env = "E_SECRET" }
rules = ["r"]
messages = { no_match = "no" }
"#;

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(60),
            Just(61),
            Just(86_400),
            Just(86_401)
        ]
        .prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        prop_oneof![
            Just(1e30),
            Just(-1e30),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(1e-4),
            Just(-0.0),
            Just(18_446_744_073_709_551_616.0),
        ]
        .prop_map(Value::Float),
    ]
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[0-9.e+-]{0,8}(ms|s)?",
        prop_oneof![
            Just("1e30"),
            Just("1e30ms"),
            Just("nan s"),
            Just("inf"),
            Just("-5ms"),
            Just("anonymous"),
            Just("user"),
            Just("anyone"),
            Just("owner"),
            Just("store"),
            Just("claims"),
            Just("events"),
            Just("auth/high"),
            Just("http://{object_id}/x"),
            Just("http://h/x?{feature}"),
            Just("{user_id}"),
            Just("{feature}-{nope}"),
            Just("private-{user_id}"),
            Just("/e/{user_id}"),
        ]
        .prop_map(str::to_owned),
        any::<String>(),
    ]
    .prop_map(Value::String)
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![number(), text(), any::<bool>().prop_map(Value::Boolean)];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("url".to_owned()),
                    Just("timeout".to_owned()),
                    Just("scope".to_owned()),
                    Just("ttl".to_owned()),
                    Just("webhook".to_owned()),
                    Just("claims".to_owned()),
                    Just("any_of".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..3,
            )
            .prop_map(|map| Value::Table(map.into_iter().collect())),
        ]
    })
}

/// Puts `value` at `path`, making tables on the way (replacing what was there).
fn place(document: &mut Table, path: &[&str], value: Value) {
    let (first, rest) = path.split_first().expect("paths are not empty");
    let mut slot = match document.get_mut(*first) {
        Some(Value::Array(entries)) if !entries.is_empty() => &mut entries[0],
        _ => return,
    };
    for key in rest {
        if !slot.is_table() {
            *slot = Value::Table(Table::new());
        }
        let Value::Table(table) = slot else {
            return;
        };
        slot = table
            .entry((*key).to_owned())
            .or_insert(Value::Table(Table::new()));
    }
    *slot = value;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn any_value_in_any_field_is_an_error_or_a_usable_policy(
        changes in proptest::collection::vec((0..PLACES.len(), value()), 1..5),
    ) {
        let mut document: Table = BASE.parse().expect("the base policy is TOML");
        for (place_index, value) in changes {
            place(&mut document, PLACES[place_index], value);
        }
        let Ok(source) = toml::to_string(&document) else {
            // Not every value tree serializes (e.g. an array mixing tables into a field
            // TOML can only write inline); nothing to parse then.
            return Ok(());
        };
        let parsed = Policy::from_toml(&source);
        if let Err(error) = &parsed {
            // The CLI prints it as its one line, and logs must not be forged through it.
            let text = error.to_string();
            prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
        }
        if let Ok(policy) = parsed {
            // Whatever was accepted can be matched and explained.
            for name in ["private-x@1", "private-y@2", "presence-x@1", "private-z@3"] {
                if let Ok(matched) = policy.match_name(name) {
                    let _ = matched.to_string();
                }
            }
        }
    }
}

#[test]
fn the_base_policy_is_valid() {
    // Otherwise every case above would only exercise the first error.
    let policy = Policy::from_toml(BASE).unwrap();
    assert_eq!(policy.rules().len(), 1);
    assert_eq!(policy.endpoints().len(), 1);
}

#[test]
fn absurd_durations_are_errors_not_panics() {
    for value in [
        "1e30",
        "-1e30",
        "nan",
        "inf",
        "1.8446744073709552e19",
        "\"1e30ms\"",
    ] {
        let source = BASE.replace("time_limit = 2", &format!("time_limit = {value}"));
        let error = Policy::from_toml(&source).unwrap_err().to_string();
        assert!(
            error.starts_with("rule #1 `r`: field `time_limit`:"),
            "{value}: {error}"
        );
    }
}
