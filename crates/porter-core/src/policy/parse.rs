//! Reading a policy document: TOML into rules and scoped-token endpoints, with every check
//! that a rule is usable. Errors name the rule and the field.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Value;

use super::endpoint::{Endpoint, parse_endpoints, route_params_by_rule};
use super::error::{PolicyError, field_error, one_line};
use super::fields::{
    parse_allow, parse_cache, parse_data, parse_duration, string_list, webhook_timeouts,
};
use super::publish::parse_publish;
use super::rule::{CacheScope, CacheSpec, DataSpec, PrivateData, Rule, UserInfoSource};
use super::signin::{Signin, parse_signin};
use crate::pattern::{Constraints, Pattern, PatternError, template_names};
use crate::routing::{Queue, Route};

/// What a policy document holds: its rules, scoped-token endpoints and `[signin]` section.
pub(super) type Parsed = (Vec<Rule>, Vec<Endpoint>, Option<Signin>);

/// Parses a TOML policy document into its rules, endpoints and `[signin]` section.
pub(super) fn parse_policy(source: &str) -> Result<Parsed, PolicyError> {
    let document: toml::Table = source
        .parse()
        .map_err(|e: toml::de::Error| PolicyError::Syntax(one_line(e.message())))?;
    for key in document.keys() {
        if key != "rule" && key != "endpoint" && key != "signin" {
            return Err(PolicyError::Document(format!(
                "unknown top-level key `{}` (expected `[[rule]]` and `[[endpoint]]` tables and a `[signin]` table)",
                one_line(key)
            )));
        }
    }
    let raw_rules = match document.get("rule") {
        None => return Err(PolicyError::NoRules),
        Some(Value::Array(rules)) => rules,
        Some(_) => {
            return Err(PolicyError::Document(
                "`rule` must be an array of tables: write `[[rule]]`".into(),
            ));
        }
    };
    if raw_rules.is_empty() {
        return Err(PolicyError::NoRules);
    }
    // Route parameters of the endpoints that list a rule are comparable in its `claims`
    // and usable in its templates, like captures.
    let route_params = route_params_by_rule(document.get("endpoint"));
    let mut rules: Vec<Rule> = Vec::with_capacity(raw_rules.len());
    for (index, raw) in raw_rules.iter().enumerate() {
        let rule = parse_rule(index, raw, &route_params)?;
        if rules.iter().any(|r| r.name == rule.name) {
            return Err(field_error(
                &rule.name,
                "name",
                "another rule has this name",
            ));
        }
        rules.push(rule);
    }
    let endpoints = match document.get("endpoint") {
        None => Vec::new(),
        Some(raw) => parse_endpoints(raw, &rules)?,
    };
    let signin = document.get("signin").map(parse_signin).transpose()?;
    Ok((rules, endpoints, signin))
}

const RULE_FIELDS: &[&str] = &[
    "name",
    "pattern",
    "where",
    "queue",
    "time_limit",
    "expires",
    "allow",
    "data",
    "cache",
    "private_data",
    "retain",
    "retain_ttl",
    "owner",
];

fn parse_rule(
    index: usize,
    raw: &Value,
    route_params: &BTreeMap<String, Vec<String>>,
) -> Result<Rule, PolicyError> {
    let position = format!("#{}", index + 1);
    let table = raw
        .as_table()
        .ok_or_else(|| field_error(&position, "rule", "must be a table"))?;
    let name = match table.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        Some(_) => return Err(field_error(&position, "name", "must be a non-empty string")),
        None => return Err(field_error(&position, "name", "is required")),
    };
    let label = format!("{position} `{name}`");
    let err = |field: &str, message: String| field_error(&label, field, message);

    if let Some(unknown) = table.keys().find(|k| !RULE_FIELDS.contains(&k.as_str())) {
        return Err(err(
            unknown,
            format!("unknown field; expected one of {}", RULE_FIELDS.join(", ")),
        ));
    }

    let patterns = match table.get("pattern") {
        Some(Value::String(p)) => vec![p.as_str()],
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| err("pattern", "every pattern must be a string".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(err(
                "pattern",
                "must be a string or a non-empty array of strings".into(),
            ));
        }
        None => return Err(err("pattern", "is required".into())),
    };
    let patterns: Vec<Pattern> = patterns
        .into_iter()
        .map(|p| {
            let pattern = Pattern::parse(p)
                .map_err(|e: PatternError| err("pattern", format!("`{p}`: {e}")))?;
            if !["private-", "presence-"]
                .iter()
                .any(|prefix| p.starts_with(prefix))
            {
                return Err(err(
                    "pattern",
                    format!(
                        "`{p}` must start with `private-`, `private-encrypted-` or `presence-`"
                    ),
                ));
            }
            Ok(pattern)
        })
        .collect::<Result<_, _>>()?;

    let capture_names: Vec<&str> = patterns.iter().flat_map(|p| p.capture_names()).collect();
    if capture_names.contains(&"user_id") {
        return Err(err(
            "pattern",
            "a capture may not be named `user_id`: in `data` templates `{user_id}` is the caller's own user id".into(),
        ));
    }
    // What `claims` and templates may name: the captures, and the route parameters of every
    // scoped endpoint that serves this rule.
    let mut comparable = capture_names.clone();
    if let Some(params) = route_params.get(&name) {
        comparable.extend(params.iter().map(String::as_str));
    }

    let constraints = match table.get("where") {
        None => Constraints::new(),
        Some(Value::Table(t)) => {
            let mut constraints = Constraints::new();
            for (capture, values) in t {
                if !capture_names.contains(&capture.as_str()) {
                    return Err(err(
                        "where",
                        format!("`{capture}` is not a capture of the pattern"),
                    ));
                }
                let values = string_list(values).ok_or_else(|| {
                    err("where", format!("`{capture}` must be an array of strings"))
                })?;
                constraints.insert(capture.clone(), values);
            }
            constraints
        }
        Some(_) => return Err(err("where", "must be a table of capture = [values]".into())),
    };

    let is_presence = patterns.iter().all(|p| p.as_str().starts_with("presence-"));
    let default_route = if is_presence {
        Route::HIGH
    } else {
        Route::DEFAULT
    };
    let queue = match table.get("queue") {
        None => default_route.queue,
        Some(Value::String(q)) => Queue::parse(q).ok_or_else(|| {
            err(
                "queue",
                format!("`{q}` is not a queue; use `auth` or `auth/high`"),
            )
        })?,
        Some(_) => return Err(err("queue", "must be a string".into())),
    };
    let duration = |field: &str, default: Duration| -> Result<Duration, PolicyError> {
        match table.get(field) {
            None => Ok(default),
            Some(v) => parse_duration(v).map_err(|m| err(field, m)),
        }
    };
    let route = Route {
        queue,
        time_limit: duration("time_limit", default_route.time_limit)?,
        expires: duration("expires", default_route.expires)?,
    };

    let allow = match table.get("allow") {
        None => {
            return Err(err(
                "allow",
                "is required (e.g. `allow = \"authenticated\"`)".into(),
            ));
        }
        Some(v) => parse_allow(v, &comparable).map_err(|m| err("allow", m))?,
    };
    if let Some(timeout) = webhook_timeouts(&allow)
        .into_iter()
        .find(|t| *t >= route.time_limit)
    {
        return Err(err(
            "allow",
            format!(
                "webhook timeout {} ms must be shorter than the rule's time_limit ({} ms), or the time limit cuts the call off first",
                timeout.as_millis(),
                route.time_limit.as_millis()
            ),
        ));
    }

    let data = match table.get("data") {
        None => DataSpec {
            events: false,
            online: false,
            user_info: if is_presence {
                UserInfoSource::Store
            } else {
                UserInfoSource::None
            },
            user_id: None,
            info: Vec::new(),
        },
        Some(v) => parse_data(v, is_presence, &comparable)
            .map_err(|(f, m)| err(&format!("data.{f}"), m))?,
    };

    let cache = match table.get("cache") {
        None | Some(Value::Boolean(false)) => None,
        Some(v) => Some(parse_cache(v).map_err(|m| err("cache", m))?),
    };
    let private_data = match table.get("private_data") {
        None => None,
        Some(Value::String(s)) if s == "events" => Some(PrivateData::Events),
        Some(Value::String(s)) if s == "signed" => Some(PrivateData::Signed),
        Some(_) => return Err(err("private_data", "must be `events` or `signed`".into())),
    };

    let publish = parse_publish(table, &capture_names, data.events).map_err(|(f, m)| err(f, m))?;

    let rule = Rule {
        name,
        patterns,
        constraints,
        route,
        allow,
        data,
        cache,
        private_data,
        publish,
    };
    check_member_templates(&rule).map_err(|(f, m)| err(f, m))?;
    check_cache(&rule).map_err(|m| err("cache", m))?;
    Ok(rule)
}

/// A member id or info field must not be a value the caller picks: every capture in a
/// `data.user_id` or `data.info` template must be pinned by the decision (`owner`, `claims`)
/// or by `where`, or any caller could join as any member. `{user_id}` is the caller's own id,
/// so it needs a decision that allows only callers who have one.
fn check_member_templates(rule: &Rule) -> Result<(), (&'static str, String)> {
    let mut pinned = rule.allow.pinned_captures();
    pinned.extend(rule.constraints.keys().map(String::as_str));
    for (field, template) in rule.data.templates() {
        let field = if field == "user_id" {
            "data.user_id"
        } else {
            "data.info"
        };
        for name in template_names(template) {
            if name == "user_id" {
                if !rule.allow.requires_user() {
                    return Err((
                        field,
                        format!(
                            "`{template}`: `{{user_id}}` is the caller's user id, but `allow` also lets in callers without one; require `authenticated`, `owner` or `member`"
                        ),
                    ));
                }
            } else if !pinned.contains(name) {
                return Err((
                    field,
                    format!(
                        "`{template}`: `{{{name}}}` is not pinned, so any caller could choose it; compare it with `owner` or `claims`, or list its values in `where`"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A shared result (`ANNON`) must not depend on the caller at all, and no cached result may
/// come from token claims: an entry is keyed by user id, not by the claims it compared, so
/// another token of the same user (or, shared, anyone) would be served it.
fn check_cache(rule: &Rule) -> Result<(), String> {
    let Some(CacheSpec { scope, .. }) = rule.cache else {
        return Ok(());
    };
    if rule.reads_claims() {
        return Err(
            "the rule reads token claims (`allow` with `claims`, or `data.user_info = \"claims\"`), and a cache entry does not record which claims it was decided for; remove `cache`".into(),
        );
    }
    if scope == CacheScope::Anonymous
        && let Some(why) = rule.caller_dependence()
    {
        return Err(format!(
            "scope `anonymous` shares one result with every caller, so it needs `allow = \"anyone\"` and data that does not depend on the caller, but {why}; use scope `user`"
        ));
    }
    Ok(())
}
