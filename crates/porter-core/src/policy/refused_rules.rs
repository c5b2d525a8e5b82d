//! The rules the parser refuses because they would be unsafe to run (issue 10): a shared cache
//! of anything that depends on the caller, member templates a caller could fill, cached claims
//! rules, durations and TTLs out of range, and webhook URLs with captures outside the path.
//! Each case was accepted (or, for `1e30`, panicked) before.

use super::*;

/// A one-rule policy's error, or `None` when the parser accepts it.
fn refusal(rule: &str) -> Option<String> {
    Policy::from_toml(&format!("[[rule]]\nname = \"r\"\n{rule}"))
        .err()
        .map(|e| e.to_string())
}

#[test]
fn shared_cache_is_refused_when_anything_depends_on_the_caller() {
    // Issue 10, finding 2: a webhook in `any_of` runs first, with the caller's identity, and
    // its per-caller data would be shared under `ANNON`.
    let shared = "cache = { scope = \"anonymous\" }";
    for (rule, because) in [
        (
            r#"pattern = "private-x@{object_id}"
allow = { any_of = [{ webhook = "http://h/x" }, "anyone"] }"#,
            "`webhook`",
        ),
        (
            r#"pattern = "private-x@{object_id}"
allow = { any_of = ["anyone", "member"] }"#,
            "`member`",
        ),
        (
            r#"pattern = "private-x@{object_id}"
allow = { all_of = ["anyone", { any_of = ["anyone", "owner"] }] }"#,
            "`owner`",
        ),
        (
            r#"pattern = "private-x@{object_id}"
allow = { any_of = ["anyone", { claims = { sub = "object_id" } }] }"#,
            "claims",
        ),
        (
            r#"pattern = "private-x@{object_id}"
allow = "authenticated""#,
            "`authenticated`",
        ),
        (
            r#"pattern = "private-x@{object_id}"
allow = "anyone"
data = { user_info = "store" }"#,
            "user info",
        ),
        (
            r#"pattern = "private-x@{object_id}"
allow = "anyone"
data = { user_info = "webhook" }"#,
            "webhook",
        ),
        (
            r#"pattern = "private-x@{object_id}"
allow = "anyone"
data = { info = { name = "Guest" } }"#,
            "member id is the caller's",
        ),
        // A presence member is the caller unless `data.user_id` says otherwise.
        (
            r#"pattern = "presence-x@{object_id}"
allow = "anyone"
data = { user_info = "none" }"#,
            "member id is the caller's",
        ),
    ] {
        let error =
            refusal(&format!("{rule}\n{shared}\n")).unwrap_or_else(|| panic!("accepted: {rule}"));
        assert!(
            // Claims are refused any cache before the scope is looked at.
            error.contains("field `cache`")
                && (rule.contains("claims") || error.contains("scope `anonymous`"))
                && error.contains(because),
            "{error} lacks {because}"
        );
        // Per user, the same rules are fine (claims aside: they may not be cached at all).
        if !rule.contains("claims") {
            assert_eq!(
                refusal(&format!("{rule}\ncache = {{ scope = \"user\" }}\n")),
                None,
                "{rule}"
            );
        }
    }
    // What is the channel's and not the caller's may be shared.
    for rule in [
        r#"pattern = "private-x@{object_id}"
allow = { all_of = ["anyone", { any_of = ["anyone"] }] }
data = { events = true, online = true }"#,
        r#"pattern = "presence-x@{object_id}"
where.object_id = ["1", "2"]
allow = "anyone"
data = { user_info = "none", user_id = "room-{object_id}", info = { name = "Room" } }"#,
    ] {
        assert_eq!(refusal(&format!("{rule}\n{shared}\n")), None, "{rule}");
    }
}

#[test]
fn member_templates_need_pinned_captures() {
    // Issue 10, finding 4: with `authenticated`, any caller could join as any member.
    let error = refusal(
        r#"pattern = "presence-x@{object_id}"
allow = "authenticated"
data = { user_id = "{object_id}" }
"#,
    )
    .unwrap();
    assert!(
        error.starts_with("rule #1 `r`: field `data.user_id`:")
            && error.contains("`{object_id}` is not pinned"),
        "{error}"
    );
    let error = refusal(
        r#"pattern = "presence-x-{room}@{object_id}"
allow = "owner"
data = { user_id = "{object_id}", info = { room = "{room}" } }
"#,
    )
    .unwrap();
    assert!(
        error.contains("field `data.info`") && error.contains("`{room}`"),
        "{error}"
    );
    // An `any_of` pins only what every option pins.
    let error = refusal(
        r#"pattern = "presence-x@{object_id}"
allow = { any_of = ["owner", "member"] }
data = { user_id = "u-{object_id}" }
"#,
    )
    .unwrap();
    assert!(error.contains("not pinned"), "{error}");
    // `{user_id}` is the caller's, so the rule must let in only callers who have one.
    let error = refusal(
        r#"pattern = "private-x@{object_id}"
allow = { any_of = ["anyone", "authenticated"] }
data = { user_id = "u-{user_id}" }
"#,
    )
    .unwrap();
    assert!(
        error.contains("field `data.user_id`") && error.contains("without one"),
        "{error}"
    );
    // A capture or route parameter named `user_id` would stand in for the caller's id.
    let error = refusal(
        r#"pattern = "presence-x@{user_id}"
allow = "authenticated"
"#,
    )
    .unwrap();
    assert!(
        error.contains("field `pattern`") && error.contains("`user_id`"),
        "{error}"
    );
    let error = Policy::from_toml(
        "[[rule]]\nname = \"g\"\npattern = \"private-g-{id}\"\nallow = { claims = { id = \"id\" } }\n[[endpoint]]\npath = \"/u/{user_id}\"\ntoken = { query = \"t\" }\nrules = \"g\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("endpoint #1: field `path`") && error.contains("`user_id`"),
        "{error}"
    );

    // Pinned by `owner`, `claims`, `all_of` or `where`, the same templates are accepted.
    for rule in [
        r#"pattern = "presence-x@{object_id}"
allow = "owner"
data = { user_id = "{object_id}" }"#,
        r#"pattern = "presence-x-{room}@{object_id}"
allow = { all_of = ["owner", { claims = { room = "room" } }] }
data = { user_id = "{object_id}", info = { room = "{room}" } }"#,
        r#"pattern = "presence-x-{room}@{object_id}"
where.room = ["lobby", "stage"]
allow = { any_of = ["owner", { all_of = ["owner", "member"] }] }
data = { user_id = "{object_id}-{room}", info = { me = "{user_id}" } }"#,
    ] {
        assert_eq!(refusal(&format!("{rule}\n")), None, "{rule}");
    }
}

#[test]
fn claims_rules_are_never_cached() {
    // Issue 10, finding 5: an entry per user id does not say which claims it was decided for.
    for rule in [
        r#"pattern = "private-team-{team}"
allow = { claims = { team = "team" } }"#,
        r#"pattern = "private-team-{team}"
allow = { all_of = ["authenticated", { any_of = ["member", { claims = { team = "team" } }] }] }"#,
        r#"pattern = "private-team-{team}"
allow = "authenticated"
data = { user_info = "claims" }"#,
    ] {
        assert_eq!(refusal(&format!("{rule}\n")), None, "{rule}");
        let error = refusal(&format!(
            "{rule}\ncache = {{ scope = \"user\", ttl = 30 }}\n"
        ))
        .unwrap();
        assert!(
            error.contains("field `cache`") && error.contains("token claims"),
            "{error}"
        );
    }
}

#[test]
fn numeric_fields_are_checked_before_they_become_durations() {
    // Issue 10, finding 8: `1e30` panicked in `Duration::from_secs_f64`.
    let base = r#"pattern = "private-x@{object_id}"
allow = "anyone"
"#;
    for value in [
        "1e30",
        "-1",
        "-0.5",
        "nan",
        "inf",
        "-inf",
        "0",
        "0.0",
        "1e-300",
        "0.0004",
        "61",
        "9223372036854775807",
        "-9223372036854775808",
        "\"1e30ms\"",
        "\"nan s\"",
        "\"inf\"",
        "\"-5ms\"",
        "\"0.1ms\"",
        "[1]",
        "{ a = 1 }",
        "true",
    ] {
        for field in ["time_limit", "expires"] {
            let error = refusal(&format!("{base}{field} = {value}\n"))
                .unwrap_or_else(|| panic!("{field} = {value} accepted"));
            assert!(
                error.starts_with(&format!("rule #1 `r`: field `{field}`:")),
                "{error}"
            );
        }
        let error = refusal(&format!(
            "pattern = \"private-x@{{object_id}}\"\ntime_limit = 2\nallow = {{ webhook = {{ url = \"http://h/x\", timeout = {value} }} }}\n"
        ))
        .unwrap_or_else(|| panic!("webhook timeout = {value} accepted"));
        assert!(
            error.contains("field `allow`") && error.contains("webhook timeout"),
            "{error}"
        );
    }
    for value in [
        "0",
        "-1",
        "86401",
        "9223372036854775807",
        "-9223372036854775808",
        "1.5",
        "1e30",
        "nan",
        "\"60\"",
    ] {
        let error = refusal(&format!("{base}cache = {{ ttl = {value} }}\n"))
            .unwrap_or_else(|| panic!("ttl = {value} accepted"));
        assert!(
            error.contains("field `cache`") && error.contains("ttl"),
            "{error}"
        );
    }
    // A scope that is not a string is not the shared default.
    let error = refusal(&format!("{base}cache = {{ scope = 1 }}\n")).unwrap();
    assert!(
        error.contains("field `cache`") && error.contains("scope"),
        "{error}"
    );
    // The bounds themselves are accepted.
    let policy = Policy::from_toml(&format!(
        "[[rule]]\nname = \"r\"\n{base}time_limit = 60\nexpires = \"1ms\"\ncache = {{ ttl = 86400 }}\n"
    ))
    .unwrap();
    let rule = &policy.rules()[0];
    assert_eq!(
        (
            rule.route.time_limit,
            rule.route.expires,
            rule.cache.map(|c| c.ttl)
        ),
        (MAX_DURATION, MIN_DURATION, Some(MAX_CACHE_TTL))
    );
}

#[test]
fn webhook_urls_take_captures_in_the_path_only() {
    // Issue 10, finding 9.
    let rule = |url: &str| {
        format!(
            "pattern = \"private-hook-{{verdict}}@{{object_id}}\"\nallow = {{ webhook = \"{url}\" }}\n"
        )
    };
    assert_eq!(
        refusal(&rule("http://app/porter/{verdict}/{object_id}?v=1")),
        None
    );
    for (url, needle) in [
        ("http://{verdict}.app/x", "authority"),
        ("http://u:{verdict}@app/x", "authority"),
        ("http://app/x?v={verdict}", "query or fragment"),
        ("http://app/x#{verdict}", "query or fragment"),
        ("http://app/{nope}", "`{nope}`"),
        ("ftp://app/x", "http://"),
    ] {
        let error = refusal(&rule(url)).unwrap_or_else(|| panic!("{url} accepted"));
        assert!(
            error.starts_with("rule #1 `r`: field `allow`: webhook url") && error.contains(needle),
            "{error} lacks {needle}"
        );
    }
}
