//! Unit tests of the policy: the built-in and example policies, matching, each allow mode,
//! the errors of malformed fields, and endpoints. What the parser refuses as unsafe is in
//! `refused_rules.rs`.

use std::time::Duration;

use super::*;
use crate::routing::Route;

fn explain(policy: &Policy, channel: &str) -> (String, Route, bool) {
    let m = policy.match_name(channel).unwrap();
    (m.rule.name.clone(), m.rule.route, m.rule.cache.is_some())
}

#[test]
fn default_policy_reproduces_the_replaced_systems_routing() {
    let policy = Policy::default();
    assert_eq!(
        explain(&policy, "presence-stream@42"),
        ("presence".into(), Route::HIGH, false)
    );
    assert_eq!(
        explain(&policy, "presence-session-exclusive@1"),
        ("presence".into(), Route::HIGH, false)
    );
    assert_eq!(
        explain(&policy, "private-stream@42"),
        ("private-stream".into(), Route::HIGH, true)
    );
    assert_eq!(
        explain(&policy, "private-encrypted-stream@42"),
        ("private-stream".into(), Route::HIGH, true)
    );
    assert_eq!(
        explain(&policy, "private-stream-viewer@42"),
        ("private".into(), Route::DEFAULT, true)
    );
    assert_eq!(
        explain(&policy, "private-user@7"),
        ("private-user".into(), Route::DEFAULT, true)
    );
    assert_eq!(
        explain(&policy, "private-encrypted-chat@9"),
        ("private".into(), Route::DEFAULT, true)
    );
    assert_eq!(
        explain(&policy, "private-campaign@3"),
        ("private-campaign".into(), Route::DEFAULT, true)
    );
}

#[test]
fn default_policy_retains_the_stream_and_campaign_events_and_fans_out_user_channels() {
    // Seed 000: `attatch_retained_events` for `private-stream` and `private-campaign`.
    let policy = Policy::default();
    let publish = |channel: &str| policy.match_name(channel).unwrap().rule.publish.clone();
    for channel in [
        "private-stream@42",
        "private-encrypted-stream@42",
        "private-campaign@3",
    ] {
        let spec = publish(channel);
        assert!(spec.retains("stream.online"), "{channel}");
        assert!(spec.retains("goal.progress.updated"), "{channel}");
        assert_eq!(spec.retain_ttl, Duration::from_secs(86_400), "{channel}");
    }
    for channel in ["private-user@7", "private-goal@1", "presence-stream@42"] {
        assert!(!publish(channel).retains("stream.online"), "{channel}");
    }
    let user = policy.match_name("private-user@7").unwrap();
    let owner = user
        .rule
        .publish
        .owner
        .as_ref()
        .expect("user channels have an owner");
    assert_eq!(owner.from_captures(&user.captures).as_deref(), Some("7"));
    assert_eq!(publish("private-stream@42").owner, None);
}

#[test]
fn publish_fields_are_checked_in_the_rule() {
    let rule = |extra: &str| {
        format!(
            "[[rule]]\nname = \"r\"\npattern = \"private-x@{{object_id}}\"\nallow = \"anyone\"\n{extra}"
        )
    };
    let error = Policy::from_toml(&rule("retain = [\"*\"]"))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("rule #1 `r`: field `retain`:") && error.contains("data.events = true"),
        "{error}"
    );
    let error = Policy::from_toml(&rule("owner = \"{feature}\""))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("rule #1 `r`: field `owner`:") && error.contains("`{feature}`"),
        "{error}"
    );
    let policy = Policy::from_toml(&rule(
        "data = { events = true }\nretain = [\"a.*\"]\nretain_ttl = 5",
    ))
    .unwrap();
    let spec = &policy.rules()[0].publish;
    assert!(spec.retains("a.b") && !spec.retains("b.a"));
    assert_eq!(spec.retain_ttl, Duration::from_secs(5));
}

#[test]
fn default_policy_refuses_unknown_features_and_public_channels() {
    let policy = Policy::default();
    assert_eq!(
        policy.match_name("private-unknown@1").unwrap_err(),
        MatchError::NoRule
    );
    assert_eq!(
        policy.match_name("presence-campaign@1").unwrap_err(),
        MatchError::NoRule
    );
    assert_eq!(
        policy.match_name("private-client@1").unwrap_err(),
        MatchError::NoRule
    );
    assert_eq!(
        policy.match_name("private-user").unwrap_err(),
        MatchError::NoRule
    );
    assert_eq!(
        policy.match_name("stream@1").unwrap_err().reason().as_str(),
        "public_channel"
    );
    assert_eq!(
        policy
            .match_name("private-a b")
            .unwrap_err()
            .reason()
            .as_str(),
        "invalid_channel"
    );
}

#[test]
fn default_cache_scope_is_anonymous_for_private_only() {
    let policy = Policy::default();
    for rule in policy.rules() {
        let presence = rule
            .patterns
            .iter()
            .all(|p| p.as_str().starts_with("presence-"));
        match rule.cache {
            Some(spec) => {
                assert!(!presence, "{}", rule.name);
                assert_eq!(spec.scope, CacheScope::Anonymous);
                assert_eq!(spec.ttl, Duration::from_secs(60));
            }
            None => assert!(presence, "{}", rule.name),
        }
    }
}

#[test]
fn first_match_wins() {
    let policy = Policy::from_toml(
        r#"
        [[rule]]
        name = "special"
        pattern = "private-stream@{object_id}"
        allow = "owner"
        [[rule]]
        name = "general"
        pattern = "private-{feature}@{object_id}"
        allow = "anyone"
        "#,
    )
    .unwrap();
    assert_eq!(
        policy.match_name("private-stream@1").unwrap().rule.name,
        "special"
    );
    assert_eq!(
        policy.match_name("private-user@1").unwrap().rule.name,
        "general"
    );
}

#[test]
fn guest_chat_rule_with_hyphenated_captures_and_claims() {
    let policy = Policy::from_toml(
        r#"
        [[rule]]
        name = "guest-chat"
        pattern = "private-hotel-{hotel_slug}-guest-chat-booking-{booking_id}"
        allow = { claims = { hotel = "hotel_slug", booking_id = "booking_id" } }
        private_data = "signed"
        data = { user_id = "guest_{booking_id}", info = { name = "Guest", booking_id = "{booking_id}" } }
        "#,
    )
    .unwrap();
    let m = policy
        .match_name("private-hotel-grand-hotel-guest-chat-booking-BK-2025-ABC123")
        .unwrap();
    assert_eq!(m.captures["hotel_slug"], "grand-hotel");
    assert_eq!(m.captures["booking_id"], "BK-2025-ABC123");
    assert_eq!(m.rule.private_data, Some(PrivateData::Signed));
    assert!(
        matches!(&m.rule.allow, Allow::Claims(c) if c.contains(&("hotel".into(), "hotel_slug".into())))
    );
    assert_eq!(m.rule.data.user_id.as_deref(), Some("guest_{booking_id}"));
    // Routing defaults for a private rule.
    assert_eq!(m.rule.route, Route::DEFAULT);
}

#[test]
fn allow_modes_parse() {
    let policy = Policy::from_toml(
        r#"
        [[rule]]
        name = "combo"
        pattern = "private-room-{object_id}"
        allow = { any_of = ["owner", "member", { all_of = ["authenticated", { webhook = "http://127.0.0.1:9/decide" }] }] }
        "#,
    )
    .unwrap();
    let rule = &policy.rules()[0];
    assert_eq!(
        rule.allow.to_string(),
        "any_of(owner, member, all_of(authenticated, webhook(http://127.0.0.1:9/decide)))"
    );
    assert_eq!(rule.allow.webhook_urls(), vec!["http://127.0.0.1:9/decide"]);
}

fn error_of(source: &str) -> String {
    Policy::from_toml(source).unwrap_err().to_string()
}

#[test]
fn errors_name_the_rule_and_field() {
    let e = error_of("[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"everyone\"\n");
    assert!(e.starts_with("rule #1 `a`: field `allow`:"), "{e}");

    let e = error_of(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"anyone\"\nqueue = \"low\"\n",
    );
    assert!(e.contains("field `queue`") && e.contains("`low`"), "{e}");

    let e = error_of("[[rule]]\nname = \"a\"\npattern = \"private-{x\"\nallow = \"anyone\"\n");
    assert!(e.contains("field `pattern`"), "{e}");

    let e = error_of("[[rule]]\nname = \"a\"\npattern = \"public-{x}\"\nallow = \"anyone\"\n");
    assert!(e.contains("field `pattern`"), "{e}");

    let e = error_of(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"anyone\"\ntime_limit = 0\n",
    );
    assert!(e.contains("field `time_limit`"), "{e}");

    let e = error_of(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"anyone\"\nexpires = \"soon\"\n",
    );
    assert!(e.contains("field `expires`"), "{e}");

    let e = error_of(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"anyone\"\ncolour = 1\n",
    );
    assert!(e.contains("field `colour`") && e.contains("unknown"), "{e}");

    let e = error_of(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = { claims = { hotel = \"slug\" } }\n",
    );
    assert!(e.contains("`slug`"), "{e}");

    let e = error_of(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"authenticated\"\ncache = true\n",
    );
    assert!(e.contains("field `cache`") && e.contains("anyone"), "{e}");

    let e = error_of(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"anyone\"\nwhere.y = [\"1\"]\n",
    );
    assert!(e.contains("field `where`"), "{e}");

    let e = error_of(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"anyone\"\ndata = { info = { n = \"{nope}\" } }\n",
    );
    assert!(e.contains("field `data.info`"), "{e}");

    let e = error_of("[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"owner\"\n");
    assert!(e.contains("object_id"), "{e}");

    let e = error_of("[[rule]]\npattern = \"private-{x}\"\nallow = \"anyone\"\n");
    assert_eq!(e, "rule #1: field `name`: is required");

    let e = error_of(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"anyone\"\n[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"anyone\"\n",
    );
    assert!(e.contains("another rule has this name"), "{e}");

    assert_eq!(error_of(""), "policy has no rules");
    assert!(error_of("rule = 3").contains("[[rule]]"));
    assert!(error_of("[[rule]\n").starts_with("policy is not valid TOML"));
}

#[test]
fn user_cache_scope_is_allowed_for_caller_dependent_rules() {
    let policy = Policy::from_toml(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"member\"\ncache = { scope = \"user\", ttl = 30 }\n",
    )
    .unwrap();
    assert_eq!(
        policy.rules()[0].cache,
        Some(CacheSpec {
            scope: CacheScope::User,
            ttl: Duration::from_secs(30)
        })
    );
}

#[test]
fn durations_accept_seconds_and_millis() {
    let policy = Policy::from_toml(
        "[[rule]]\nname = \"a\"\npattern = \"private-{x}\"\nallow = \"anyone\"\ntime_limit = \"250ms\"\nexpires = 1.5\n",
    )
    .unwrap();
    assert_eq!(
        policy.rules()[0].route.time_limit,
        Duration::from_millis(250)
    );
    assert_eq!(policy.rules()[0].route.expires, Duration::from_millis(1500));
}

#[test]
fn explain_output_lists_everything() {
    let policy = Policy::default();
    let text = policy.match_name("private-stream@42").unwrap().to_string();
    assert!(text.contains("rule:        private-stream"), "{text}");
    assert!(
        text.contains("captures:    feature = stream, object_id = 42"),
        "{text}"
    );
    assert!(text.contains("queue:       auth/high"), "{text}");
    assert!(text.contains("time_limit:  4000 ms"), "{text}");
    assert!(
        text.contains("cache:       shared (ANNON) for 60 s"),
        "{text}"
    );
    assert!(
        text.contains("published:   retains * for 86400 s"),
        "{text}"
    );
    let user = policy.match_name("private-user@7").unwrap().to_string();
    assert!(
        user.contains("published:   to the sessions of user {object_id}"),
        "{user}"
    );
    let goal = policy.match_name("private-goal@1").unwrap().to_string();
    assert!(!goal.contains("published:"), "{goal}");
}

/// The shipped example policy: the built-in catalogue plus the hotel guest chat endpoint.
const EXAMPLE_POLICY: &str = include_str!("../../../../deploy/policy.example.toml");

#[test]
fn example_policy_is_valid_and_declares_the_guest_chat_endpoint() {
    let policy = Policy::from_toml(EXAMPLE_POLICY).unwrap();
    let endpoint = &policy.endpoints()[0];
    assert_eq!(
        endpoint.path,
        "/api/guest/hotel/{hotel_slug}/chat/pusher/auth"
    );
    assert_eq!(endpoint.params, vec!["hotel_slug".to_owned()]);
    assert_eq!(endpoint.token_query, "token");
    assert_eq!(endpoint.secret_env, "PORTER_GUEST_TOKEN_SECRET");
    assert_eq!(endpoint.message("no_match"), Some("Invalid channel format"));
    assert!(policy.is_scoped("guest-chat"));
    assert!(!policy.is_scoped("private"));
    // The catalogue is the built-in one.
    for rule in Policy::default().rules() {
        assert_eq!(policy.rule(&rule.name), Some(rule));
    }
}

#[test]
fn endpoint_route_parameters_pin_captures() {
    let policy = Policy::from_toml(EXAMPLE_POLICY).unwrap();
    let endpoint = &policy.endpoints()[0];
    let params = BTreeMap::from([("hotel_slug".to_owned(), "grand-hotel".to_owned())]);
    let channel =
        Channel::parse("private-hotel-grand-hotel-guest-chat-booking-BK-2025-ABC123").unwrap();
    let matched = policy
        .match_for_endpoint(endpoint, &channel, &params)
        .unwrap();
    assert_eq!(matched.rule.name, "guest-chat");
    assert_eq!(matched.captures["hotel_slug"], "grand-hotel");
    assert_eq!(matched.captures["booking_id"], "BK-2025-ABC123");
    // Another hotel's channel, or another shape, matches nothing at this route.
    for other in [
        "private-hotel-seaside-guest-chat-booking-BK-1",
        "private-some-other-format",
        "private-stream@42",
    ] {
        let channel = Channel::parse(other).unwrap();
        assert_eq!(
            policy
                .match_for_endpoint(endpoint, &channel, &params)
                .unwrap_err(),
            MatchError::NoRule,
            "{other}"
        );
    }
}

#[test]
fn endpoints_are_checked() {
    let rule = "[[rule]]\nname = \"g\"\npattern = \"private-g-{id}\"\nallow = { claims = { id = \"id\" } }\n";
    let bad = [
        (
            "[[endpoint]]\npath = \"/x\"\ntoken = { query = \"t\" }\nrules = [\"nope\"]\n",
            "no rule is named",
        ),
        (
            "[[endpoint]]\npath = \"x\"\ntoken = { query = \"t\" }\nrules = [\"g\"]\n",
            "absolute path",
        ),
        (
            "[[endpoint]]\npath = \"/pusher/auth\"\ntoken = { query = \"t\" }\nrules = [\"g\"]\n",
            "collides",
        ),
        (
            "[[endpoint]]\npath = \"/auth\"\ntoken = { query = \"t\" }\nrules = [\"g\"]\n",
            "collides",
        ),
        ("[[endpoint]]\npath = \"/x\"\nrules = [\"g\"]\n", "token"),
        (
            "[[endpoint]]\npath = \"/x\"\ntoken = { query = \"t\", secret_env = \"lower\" }\nrules = [\"g\"]\n",
            "secret_env",
        ),
        (
            "[[endpoint]]\npath = \"/x\"\ntoken = { query = \"t\" }\nrules = [\"g\"]\nextra = 1\n",
            "unknown field",
        ),
    ];
    for (endpoint, needle) in bad {
        let error = Policy::from_toml(&format!("{rule}{endpoint}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(needle), "{error} lacks {needle}");
    }
    let presence = "[[rule]]\nname = \"p\"\npattern = \"presence-{id}\"\nallow = \"authenticated\"\n[[endpoint]]\npath = \"/x\"\ntoken = { query = \"t\" }\nrules = [\"p\"]\n";
    assert!(
        Policy::from_toml(presence)
            .unwrap_err()
            .to_string()
            .contains("private")
    );
}

#[test]
fn claims_may_compare_route_parameters_of_the_serving_endpoint() {
    let rule = "[[rule]]\nname = \"concierge\"\npattern = \"private-concierge-{booking_id}\"\nallow = { claims = { hotel = \"hotel_slug\", booking_id = \"booking_id\" } }\ndata = { info = { hotel = \"{hotel_slug}\" } }\n";
    // Without an endpoint that has `{hotel_slug}`, the rule names something that is not there.
    let error = Policy::from_toml(rule).unwrap_err().to_string();
    assert!(error.contains("route parameter"), "{error}");
    let endpoint = "[[endpoint]]\npath = \"/h/{hotel_slug}/auth\"\ntoken = { query = \"t\" }\nrules = \"concierge\"\n";
    let policy = Policy::from_toml(&format!("{rule}{endpoint}")).unwrap();
    let params = BTreeMap::from([("hotel_slug".to_owned(), "grand-hotel".to_owned())]);
    let channel = Channel::parse("private-concierge-BK-1").unwrap();
    let matched = policy
        .match_for_endpoint(&policy.endpoints()[0], &channel, &params)
        .unwrap();
    assert_eq!(
        matched.captures,
        BTreeMap::from([
            ("booking_id".to_owned(), "BK-1".to_owned()),
            ("hotel_slug".to_owned(), "grand-hotel".to_owned()),
        ])
    );
}

#[test]
fn webhook_timeouts_parse_and_must_fit_the_time_limit() {
    let rule = |allow: &str| {
        format!(
            "[[rule]]\nname = \"w\"\npattern = \"private-w@{{object_id}}\"\ntime_limit = 1\nallow = {allow}\n"
        )
    };
    let policy = Policy::from_toml(&rule(
        "{ webhook = { url = \"http://h/x\", timeout = \"250ms\" } }",
    ))
    .unwrap();
    assert_eq!(
        policy.rules()[0].allow,
        Allow::Webhook {
            url: WebhookUrl::parse("http://h/x", &[]).unwrap(),
            timeout: Some(Duration::from_millis(250)),
        }
    );
    assert_eq!(
        policy.rules()[0].allow.to_string(),
        "webhook(http://h/x, timeout 250 ms)"
    );
    for (allow, needle) in [
        (
            "{ webhook = { url = \"http://h/x\", timeout = 1 } }",
            "shorter than the rule's time_limit",
        ),
        (
            "{ any_of = [{ webhook = { url = \"http://h/x\", timeout = 2 } }] }",
            "shorter",
        ),
        (
            "{ webhook = { url = \"http://h/x\", timeout = \"soon\" } }",
            "webhook timeout",
        ),
        (
            "{ webhook = { url = \"http://h/x\", retries = 2 } }",
            "unknown field `retries`",
        ),
    ] {
        let error = Policy::from_toml(&rule(allow)).unwrap_err().to_string();
        assert!(error.contains(needle), "{error} lacks {needle}");
    }
}

#[test]
fn every_toml_example_in_the_policy_docs_is_a_valid_policy() {
    let docs = include_str!("../../../../docs/policy.md");
    let mut examples = 0;
    for block in docs.split("```toml\n").skip(1) {
        let source = block.split("```").next().unwrap();
        if let Err(error) = Policy::from_toml(source) {
            panic!("docs/policy.md example does not parse: {error}\n{source}");
        }
        examples += 1;
    }
    assert!(examples >= 2, "the docs have their examples");
}

#[test]
fn private_data_says_which_servers_accept_it() {
    let policy = Policy::from_toml(
        r#"
        [[rule]]
        name = "signed"
        pattern = "private-a-{id}"
        allow = "authenticated"
        private_data = "signed"

        [[rule]]
        name = "default"
        pattern = "private-b-{id}"
        allow = "authenticated"

        [[rule]]
        name = "presence"
        pattern = "presence-c-{id}"
        allow = "authenticated"
        private_data = "signed"
        "#,
    )
    .unwrap();
    let under = |default| -> Vec<(&str, Option<PrivateData>)> {
        policy
            .rules()
            .iter()
            .map(|r| (r.name.as_str(), r.private_data_under(default)))
            .collect()
    };
    assert_eq!(
        under(PrivateData::Events),
        [
            ("signed", Some(PrivateData::Signed)),
            ("default", Some(PrivateData::Events)),
            ("presence", None),
        ]
    );
    assert_eq!(
        under(PrivateData::Signed)[1],
        ("default", Some(PrivateData::Signed))
    );
    assert!(
        PrivateData::Signed
            .accepted_by()
            .contains("sockudo and soketi refuse")
    );
    assert!(PrivateData::Events.accepted_by().starts_with("every"));
}
