//! Scoped-token endpoints: extra authorization routes a policy declares with `[[endpoint]]`.
//!
//! Some products hand their users a token that is good for one narrow purpose (the hotel guest
//! chat's token: a hotel, a booking id, an expiry) and authorize at a URL of their own
//! (`/api/guest/hotel/{hotel_slug}/chat/pusher/auth?token=…`). An endpoint declares that URL, where
//! its token comes from, which rules it may authorize, and the message a client gets for each
//! refusal. The gateway registers one route per endpoint at start-up; the decision itself still
//! runs in the workers with the rule's `allow`, and the route's parameters are handed over as
//! captures, so a `claims` rule can compare token claims with them.
//!
//! Rules an endpoint lists are served only by that endpoint: a scoped token is never a key
//! to the general endpoints, and a general bearer token never opens a scoped rule.

use std::collections::BTreeMap;

use toml::Value;

use super::error::{PolicyError, field_error};
use super::rule::Rule;
use crate::pattern::{Pattern, template_names};

/// The environment variable that holds an endpoint's token secret unless it names another.
pub const DEFAULT_SECRET_ENV: &str = "PORTER_GUEST_TOKEN_SECRET";

/// Refusal message keys an endpoint may set, besides reason codes and `claim_mismatch:{claim}`.
pub const MESSAGE_INVALID_TOKEN: &str = "invalid_token";
/// The channel matches none of the endpoint's rules for this route.
pub const MESSAGE_NO_MATCH: &str = "no_match";

/// One `[[endpoint]]` of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The route, actix syntax: `/api/guest/hotel/{hotel_slug}/chat/pusher/auth`.
    pub path: String,
    /// The names of the route's `{parameters}`.
    pub params: Vec<String>,
    /// The query parameter that carries the token.
    pub token_query: String,
    /// The environment variable that holds the HS256 secret of the token.
    pub secret_env: String,
    /// The rules this endpoint may authorize, tried in order.
    pub rules: Vec<String>,
    /// Refusal reason (or `invalid_token`, `no_match`, `claim_mismatch:{claim}`) → message.
    pub messages: BTreeMap<String, String>,
}

impl Endpoint {
    /// The client message for a refusal reason, if the endpoint names one.
    pub fn message(&self, reason: &str) -> Option<&str> {
        self.messages.get(reason).map(String::as_str)
    }
}

const ENDPOINT_FIELDS: &[&str] = &["path", "token", "rules", "messages"];

fn endpoint_error(index: usize, field: &str, message: impl Into<String>) -> PolicyError {
    field_error(&format!("endpoint #{}", index + 1), field, message)
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The route parameters each rule may compare with, read leniently from the raw `[[endpoint]]`
/// tables before the rules are parsed (their errors are reported by [`parse_endpoints`]): the
/// parameters common to every endpoint that lists the rule.
pub(super) fn route_params_by_rule(raw: Option<&Value>) -> BTreeMap<String, Vec<String>> {
    let mut by_rule: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for endpoint in raw.and_then(Value::as_array).into_iter().flatten() {
        let Some(table) = endpoint.as_table() else {
            continue;
        };
        let params: Vec<String> = table
            .get("path")
            .and_then(Value::as_str)
            .map(|path| {
                template_names(path)
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let rules: Vec<&str> = match table.get("rules") {
            Some(Value::String(name)) => vec![name.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for rule in rules {
            by_rule
                .entry(rule.to_owned())
                .and_modify(|common| common.retain(|p| params.contains(p)))
                .or_insert_with(|| params.clone());
        }
    }
    by_rule
}

/// Parses the `[[endpoint]]` tables against the already parsed rules.
pub(super) fn parse_endpoints(raw: &Value, rules: &[Rule]) -> Result<Vec<Endpoint>, PolicyError> {
    let list = raw.as_array().ok_or_else(|| {
        PolicyError::Document("`endpoint` must be an array of tables: write `[[endpoint]]`".into())
    })?;
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(list.len());
    for (index, raw) in list.iter().enumerate() {
        let endpoint = parse_endpoint(index, raw, rules)?;
        if endpoints.iter().any(|e| e.path == endpoint.path) {
            return Err(endpoint_error(
                index,
                "path",
                "another endpoint has this path",
            ));
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

fn parse_endpoint(index: usize, raw: &Value, rules: &[Rule]) -> Result<Endpoint, PolicyError> {
    let err = |field: &str, message: String| endpoint_error(index, field, message);
    let table = raw
        .as_table()
        .ok_or_else(|| err("endpoint", "must be a table".into()))?;
    if let Some(unknown) = table
        .keys()
        .find(|k| !ENDPOINT_FIELDS.contains(&k.as_str()))
    {
        return Err(err(
            unknown,
            format!(
                "unknown field; expected one of {}",
                ENDPOINT_FIELDS.join(", ")
            ),
        ));
    }

    let path = table
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| err("path", "is required and must be a string".into()))?;
    if !path.starts_with('/') || path.contains("//") || path.contains('?') {
        return Err(err(
            "path",
            format!("`{path}` must be an absolute path without a query"),
        ));
    }
    // Porter's own routes (and those of its identity and presence features) come first.
    let reserved = [
        "/pusher/",
        "/admin/",
        "/presence/",
        "/metrics",
        "/healthz",
        "/readyz",
    ]
    .into_iter()
    .find(|prefix| path.starts_with(prefix))
    .or((path == "/auth" || path == "/auth/").then_some("/auth"));
    if let Some(reserved) = reserved {
        return Err(err(
            "path",
            format!("`{path}` collides with Porter's own routes under `{reserved}`"),
        ));
    }
    let params: Vec<String> = template_names(path)
        .into_iter()
        .map(str::to_owned)
        .collect();
    for param in &params {
        let valid = param.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && param
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(err(
                "path",
                format!("route parameter `{{{param}}}` must be lowercase letters, digits and `_`"),
            ));
        }
        // Route parameters join the captures, and `{user_id}` in templates is the caller's id.
        if param == "user_id" {
            return Err(err(
                "path",
                "a route parameter may not be named `user_id`: in `data` templates `{user_id}` is the caller's own user id".to_owned(),
            ));
        }
    }

    let (token_query, secret_env) = match table.get("token") {
        None => return Err(err("token", "is required: `{ query = \"token\" }`".into())),
        Some(Value::Table(t)) => {
            if let Some(unknown) = t
                .keys()
                .find(|k| !["query", "secret_env"].contains(&k.as_str()))
            {
                return Err(err(
                    "token",
                    format!("unknown field `{unknown}`; expected query, secret_env"),
                ));
            }
            let query = t
                .get("query")
                .and_then(Value::as_str)
                .filter(|q| !q.is_empty())
                .ok_or_else(|| err("token", "needs `query`, the query parameter".into()))?;
            let secret_env = match t.get("secret_env") {
                None => DEFAULT_SECRET_ENV.to_owned(),
                Some(Value::String(name)) if is_env_name(name) => name.clone(),
                Some(_) => {
                    return Err(err(
                        "token",
                        "`secret_env` must be an environment variable name (A-Z, 0-9, _)".into(),
                    ));
                }
            };
            (query.to_owned(), secret_env)
        }
        Some(_) => {
            return Err(err(
                "token",
                "must be a table: `{ query = \"token\" }`".into(),
            ));
        }
    };

    let names: Vec<String> = match table.get("rules") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err("rules", "every rule must be a name".into()))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(err(
                "rules",
                "is required: a rule name or a non-empty list of them".into(),
            ));
        }
    };
    for name in &names {
        let rule = rules
            .iter()
            .find(|r| &r.name == name)
            .ok_or_else(|| err("rules", format!("no rule is named `{name}`")))?;
        if rule
            .patterns
            .iter()
            .any(|p| !p.as_str().starts_with("private-"))
        {
            return Err(err(
                "rules",
                format!(
                    "rule `{name}` must match only private channels: the endpoint answers one private channel at a time"
                ),
            ));
        }
    }

    let mut messages = BTreeMap::new();
    match table.get("messages") {
        None => {}
        Some(Value::Table(t)) => {
            for (key, value) in t {
                let text = value.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
                    err("messages", format!("`{key}` must be a non-empty string"))
                })?;
                messages.insert(key.clone(), text.to_owned());
            }
        }
        Some(_) => {
            return Err(err(
                "messages",
                "must be a table of reason = \"message\"".into(),
            ));
        }
    }

    Ok(Endpoint {
        path: path.to_owned(),
        params,
        token_query,
        secret_env,
        rules: names,
        messages,
    })
}

/// Route parameters that a pattern also captures must have the same value: they pin the
/// capture, so `private-hotel-{hotel_slug}-…` at `/…/hotel/{hotel_slug}/…` only matches the
/// route's hotel.
pub(super) fn pinned_constraints(
    pattern: &Pattern,
    base: &BTreeMap<String, Vec<String>>,
    params: &BTreeMap<String, String>,
) -> BTreeMap<String, Vec<String>> {
    let mut constraints = base.clone();
    for name in pattern.capture_names() {
        if let Some(value) = params.get(name) {
            let allowed = constraints.entry(name.to_owned()).or_default();
            if allowed.is_empty() || allowed.iter().any(|v| v == value) {
                *allowed = vec![value.clone()];
            } else {
                // The rule's own `where` forbids the route's value: nothing may match.
                allowed.clear();
                allowed.push(String::new());
            }
        }
    }
    constraints
}
