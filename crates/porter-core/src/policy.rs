//! Authorization policy: an ordered list of rules, first match wins.
//!
//! A rule matches channel names by [`Pattern`] and decides the route of the task, who may
//! subscribe ([`Allow`]), what data rides along ([`DataSpec`]) and whether the result may be
//! cached ([`CacheSpec`]). Policies are written in TOML (`docs/policy.md`); the built-in
//! [`Policy::default`] reproduces seed 000. Errors name the rule and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use thiserror::Error;
use toml::Value;

use crate::channel::{Channel, ChannelError, ChannelKind};
use crate::pattern::{Constraints, Pattern, PatternError, template_names};
use crate::routing::{Queue, Route};

/// The TOML of the built-in policy (seed 000's catalogue).
pub const DEFAULT_POLICY_TOML: &str = include_str!("default_policy.toml");

/// The longest time limit or expiry a rule may ask for: tasks are worthless after seconds.
pub const MAX_DURATION: Duration = Duration::from_secs(60);

/// A policy file that cannot be used, with the rule and field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("policy is not valid TOML: {0}")]
    Syntax(String),
    #[error("policy has no rules")]
    NoRules,
    #[error("{0}")]
    Document(String),
    #[error("rule {rule}: field `{field}`: {message}")]
    Field {
        rule: String,
        field: String,
        message: String,
    },
}

/// Who may subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// Everybody, authenticated or not.
    Anyone,
    /// Any caller with a user id.
    Authenticated,
    /// The channel's object id equals the caller's user id.
    Owner,
    /// The caller's user id is in the channel's member set.
    Member,
    /// Each named claim of the caller's token equals the named capture (claim → capture),
    /// checked in declaration order: the first mismatch is the refusal (`claim_mismatch:{claim}`).
    Claims(Vec<(String, String)>),
    /// The application decides over HTTP.
    Webhook {
        url: String,
        /// How long the call may take; past it the decision is `authorizer_unavailable`.
        /// Without it the call is bounded only by the rule's time limit (`time limit exceeded`).
        timeout: Option<Duration>,
    },
    AnyOf(Vec<Allow>),
    AllOf(Vec<Allow>),
}

impl Allow {
    /// True when the decision is the same for every caller, so it may be cached for all.
    pub fn is_caller_independent(&self) -> bool {
        match self {
            Allow::Anyone => true,
            Allow::AnyOf(options) => options.contains(&Allow::Anyone),
            Allow::AllOf(all) => all.iter().all(Allow::is_caller_independent),
            _ => false,
        }
    }

    /// Every webhook URL this decision may call.
    pub fn webhook_urls(&self) -> Vec<&str> {
        match self {
            Allow::Webhook { url, .. } => vec![url.as_str()],
            Allow::AnyOf(all) | Allow::AllOf(all) => {
                all.iter().flat_map(Allow::webhook_urls).collect()
            }
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, all: &[Allow]| {
            write!(f, "{name}(")?;
            for (i, a) in all.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{a}")?;
            }
            f.write_str(")")
        };
        match self {
            Allow::Anyone => f.write_str("anyone"),
            Allow::Authenticated => f.write_str("authenticated"),
            Allow::Owner => f.write_str("owner"),
            Allow::Member => f.write_str("member"),
            Allow::Claims(pairs) => {
                f.write_str("claims(")?;
                for (i, (claim, capture)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{claim} = {{{capture}}}")?;
                }
                f.write_str(")")
            }
            Allow::Webhook { url, timeout } => match timeout {
                Some(t) => write!(f, "webhook({url}, timeout {} ms)", t.as_millis()),
                None => write!(f, "webhook({url})"),
            },
            Allow::AnyOf(all) => list(f, "any_of", all),
            Allow::AllOf(all) => list(f, "all_of", all),
        }
    }
}

/// Where presence user info comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserInfoSource {
    /// No user info beyond fixed fields.
    None,
    /// The user hash in the store, else the token's `name`.
    Store,
    /// The caller's token claims (without registered claims such as `exp`).
    Claims,
    /// The webhook authorizer's answer.
    Webhook,
}

/// What rides along with a successful subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSpec {
    /// Retained events of the channel (`ext.pusher:retained:{channel}`).
    pub events: bool,
    /// A `user.online` event with the online status of the object id's user.
    pub online: bool,
    /// Presence user info source.
    pub user_info: UserInfoSource,
    /// Member id template (`guest_{booking_id}`); the caller's user id when absent.
    pub user_id: Option<String>,
    /// Fixed user info fields, templates over captures.
    /// In declaration order, which is the order of the fields in the signed `user_info`.
    pub info: Vec<(String, String)>,
}

impl DataSpec {
    /// True when the data does not depend on who asks.
    pub fn is_caller_independent(&self) -> bool {
        matches!(self.user_info, UserInfoSource::None)
            && self
                .user_id
                .as_deref()
                .is_none_or(|t| !template_names(t).contains(&"user_id"))
    }

    /// True when the result carries presence member data.
    pub fn has_member(&self, kind: ChannelKind) -> bool {
        kind.is_presence() || self.user_id.is_some() || !self.info.is_empty()
    }
}

/// For whom a cached result holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// The same for every caller: seed 000's `ANNON` client.
    Anonymous,
    /// Per user id.
    User,
}

impl CacheScope {
    /// The cache hash field for a caller: seed 000's `ANNON`, or `user:{id}`.
    /// `None` when the result is per user and the caller has no user id.
    pub fn field(self, user_id: Option<&str>) -> Option<String> {
        match self {
            CacheScope::Anonymous => Some(crate::wire::ANONYMOUS_SCOPE.to_owned()),
            CacheScope::User => user_id.map(|u| format!("user:{u}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSpec {
    pub scope: CacheScope,
    pub ttl: Duration,
}

/// How a private channel's data reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateData {
    /// In an unsigned `events` field: what sockudo and soketi accept.
    Events,
    /// Signed into `channel_data`, as seed 000 did with the Python SDK.
    Signed,
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub patterns: Vec<Pattern>,
    pub constraints: Constraints,
    pub route: Route,
    pub allow: Allow,
    pub data: DataSpec,
    pub cache: Option<CacheSpec>,
    pub private_data: Option<PrivateData>,
}

/// A rule that matched a channel, with its captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match<'p> {
    pub rule: &'p Rule,
    pub captures: BTreeMap<String, String>,
}

/// Why a channel has no rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MatchError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("no policy rule matches the channel")]
    NoRule,
}

impl MatchError {
    pub fn reason(&self) -> &'static str {
        match self {
            MatchError::Channel(e) => e.reason(),
            MatchError::NoRule => crate::reason::NO_RULE,
        }
    }
}

/// An ordered list of rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Scoped-token endpoints (`[[endpoint]]`); their rules are served only by them.
    endpoints: Vec<crate::endpoint::Endpoint>,
}

impl Default for Policy {
    fn default() -> Policy {
        // The built-in policy is compiled in and covered by tests; failing here is a bug
        // in this crate, not bad input.
        Policy::from_toml(DEFAULT_POLICY_TOML).expect("the built-in policy is valid")
    }
}

impl Policy {
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Finds the first rule whose pattern matches the channel name.
    pub fn match_channel<'p>(&'p self, channel: &Channel<'_>) -> Result<Match<'p>, MatchError> {
        self.rules
            .iter()
            .find_map(|rule| {
                rule.patterns.iter().find_map(|pattern| {
                    pattern
                        .captures(channel.name, &rule.constraints)
                        .map(|captures| Match { rule, captures })
                })
            })
            .ok_or(MatchError::NoRule)
    }

    /// Parses and matches a channel name in one step.
    pub fn match_name<'p>(&'p self, name: &str) -> Result<Match<'p>, MatchError> {
        let channel = Channel::parse(name)?;
        self.match_channel(&channel)
    }

    /// Parses a TOML policy document.
    pub fn from_toml(source: &str) -> Result<Policy, PolicyError> {
        let document: toml::Table = source
            .parse()
            .map_err(|e: toml::de::Error| PolicyError::Syntax(e.message().to_owned()))?;
        for key in document.keys() {
            if key != "rule" && key != "endpoint" {
                return Err(PolicyError::Document(format!(
                    "unknown top-level key `{key}` (expected `[[rule]]` and `[[endpoint]]` tables)"
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
        let route_params = crate::endpoint::route_params_by_rule(document.get("endpoint"));
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
            Some(raw) => crate::endpoint::parse_endpoints(raw, &rules)?,
        };
        Ok(Policy { rules, endpoints })
    }

    /// The scoped-token endpoints the gateway registers.
    pub fn endpoints(&self) -> &[crate::endpoint::Endpoint] {
        &self.endpoints
    }

    /// True when an endpoint lists the rule: the general endpoints must not serve it.
    pub fn is_scoped(&self, rule: &str) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.rules.iter().any(|r| r == rule))
    }

    /// Matches a channel for a scoped endpoint: only the endpoint's rules, in its order, with
    /// every capture that shares a name with a route parameter pinned to the parameter's
    /// value. The captures of the match include the route parameters.
    pub fn match_for_endpoint<'p>(
        &'p self,
        endpoint: &crate::endpoint::Endpoint,
        channel: &Channel<'_>,
        params: &BTreeMap<String, String>,
    ) -> Result<Match<'p>, MatchError> {
        endpoint
            .rules
            .iter()
            .filter_map(|name| self.rule(name))
            .find_map(|rule| {
                rule.patterns.iter().find_map(|pattern| {
                    let constraints =
                        crate::endpoint::pinned_constraints(pattern, &rule.constraints, params);
                    pattern
                        .captures(channel.name, &constraints)
                        .map(|mut captures| {
                            for (name, value) in params {
                                captures
                                    .entry(name.clone())
                                    .or_insert_with(|| value.clone());
                            }
                            Match { rule, captures }
                        })
                })
            })
            .ok_or(MatchError::NoRule)
    }
}

fn field_error(rule: &str, field: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        rule: rule.to_owned(),
        field: field.to_owned(),
        message: message.into(),
    }
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
    if let Some(CacheSpec {
        scope: CacheScope::Anonymous,
        ..
    }) = cache
        && (!allow.is_caller_independent() || !data.is_caller_independent())
    {
        return Err(err(
            "cache",
            "scope `anonymous` shares one result with every caller, so it needs `allow = \"anyone\"` and data that does not depend on the caller; use scope `user`".into(),
        ));
    }

    let private_data = match table.get("private_data") {
        None => None,
        Some(Value::String(s)) if s == "events" => Some(PrivateData::Events),
        Some(Value::String(s)) if s == "signed" => Some(PrivateData::Signed),
        Some(_) => return Err(err("private_data", "must be `events` or `signed`".into())),
    };

    Ok(Rule {
        name,
        patterns,
        constraints,
        route,
        allow,
        data,
        cache,
        private_data,
    })
}

/// Every webhook timeout of a decision.
fn webhook_timeouts(allow: &Allow) -> Vec<Duration> {
    match allow {
        Allow::Webhook {
            timeout: Some(t), ..
        } => vec![*t],
        Allow::AnyOf(all) | Allow::AllOf(all) => all.iter().flat_map(webhook_timeouts).collect(),
        _ => Vec::new(),
    }
}

fn string_list(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Seconds as an integer or float, or a string with `ms` or `s`.
fn parse_duration(value: &Value) -> Result<Duration, String> {
    let seconds = match value {
        Value::Integer(i) => *i as f64,
        Value::Float(f) => *f,
        Value::String(s) => {
            let s = s.trim();
            let parsed = if let Some(ms) = s.strip_suffix("ms") {
                ms.trim().parse::<f64>().map(|v| v / 1000.0)
            } else if let Some(secs) = s.strip_suffix('s') {
                secs.trim().parse::<f64>()
            } else {
                s.parse::<f64>()
            };
            parsed.map_err(|_| {
                format!("`{s}` is not a duration; write seconds (`2`, `0.5`) or `500ms`")
            })?
        }
        _ => return Err("must be seconds (a number) or a string such as `500ms`".into()),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err("must be greater than zero".into());
    }
    let duration = Duration::from_secs_f64(seconds);
    if duration > MAX_DURATION {
        return Err(format!("must be at most {} s", MAX_DURATION.as_secs()));
    }
    Ok(duration)
}

fn parse_allow(value: &Value, captures: &[&str]) -> Result<Allow, String> {
    match value {
        Value::String(s) => match s.as_str() {
            "anyone" => Ok(Allow::Anyone),
            "authenticated" => Ok(Allow::Authenticated),
            "owner" => {
                if captures.contains(&"object_id") {
                    Ok(Allow::Owner)
                } else {
                    Err("`owner` compares the `{object_id}` capture with the user id; the pattern has no `{object_id}`".into())
                }
            }
            "member" => Ok(Allow::Member),
            other => Err(format!(
                "`{other}` is not a mode; use anyone, authenticated, owner, member, or a table: claims, webhook, any_of, all_of"
            )),
        },
        Value::Table(t) if t.len() == 1 => {
            let (key, inner) = t.iter().next().ok_or("empty table")?;
            match key.as_str() {
                "claims" => {
                    let pairs = inner
                        .as_table()
                        .ok_or("`claims` must be a table of claim = \"capture\"")?;
                    if pairs.is_empty() {
                        return Err("`claims` needs at least one claim".into());
                    }
                    let mut out = Vec::with_capacity(pairs.len());
                    for (claim, capture) in pairs {
                        let capture = capture.as_str().ok_or_else(|| {
                            format!("claim `{claim}` must name a capture as a string")
                        })?;
                        if !captures.contains(&capture) {
                            return Err(format!(
                                "claim `{claim}` refers to `{capture}`, which is neither a capture of the pattern nor a route parameter of an endpoint serving the rule"
                            ));
                        }
                        out.push((claim.clone(), capture.to_owned()));
                    }
                    Ok(Allow::Claims(out))
                }
                "webhook" => {
                    let (url, timeout) = match inner {
                        Value::String(url) => (url.clone(), None),
                        Value::Table(t) => {
                            if let Some(unknown) =
                                t.keys().find(|k| !["url", "timeout"].contains(&k.as_str()))
                            {
                                return Err(format!(
                                    "`webhook` has an unknown field `{unknown}`; expected url, timeout"
                                ));
                            }
                            let url = t
                                .get("url")
                                .and_then(Value::as_str)
                                .ok_or("`webhook` needs a `url`")?
                                .to_owned();
                            let timeout = match t.get("timeout") {
                                None => None,
                                Some(v) => Some(
                                    parse_duration(v)
                                        .map_err(|m| format!("webhook timeout {m}"))?,
                                ),
                            };
                            (url, timeout)
                        }
                        _ => {
                            return Err(
                                "`webhook` must be a URL string or `{ url = \"…\", timeout = … }`"
                                    .into(),
                            );
                        }
                    };
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(format!(
                            "webhook url `{url}` must start with http:// or https://"
                        ));
                    }
                    Ok(Allow::Webhook { url, timeout })
                }
                "any_of" | "all_of" => {
                    let list = inner
                        .as_array()
                        .filter(|l| !l.is_empty())
                        .ok_or_else(|| format!("`{key}` must be a non-empty array"))?;
                    let all = list
                        .iter()
                        .map(|v| parse_allow(v, captures))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(if key == "any_of" {
                        Allow::AnyOf(all)
                    } else {
                        Allow::AllOf(all)
                    })
                }
                other => Err(format!(
                    "`{other}` is not a mode; use claims, webhook, any_of or all_of"
                )),
            }
        }
        _ => {
            Err("must be a mode name or a table with one of claims, webhook, any_of, all_of".into())
        }
    }
}

fn parse_data(
    value: &Value,
    is_presence: bool,
    captures: &[&str],
) -> Result<DataSpec, (&'static str, String)> {
    let table = value.as_table().ok_or(("", "must be a table".to_owned()))?;
    const FIELDS: &[&str] = &["events", "online", "user_info", "user_id", "info"];
    if let Some(unknown) = table.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err((
            "",
            format!(
                "unknown field `{unknown}`; expected one of {}",
                FIELDS.join(", ")
            ),
        ));
    }
    let flag = |field: &'static str| match table.get(field) {
        None => Ok(false),
        Some(Value::Boolean(b)) => Ok(*b),
        Some(_) => Err((field, "must be true or false".to_owned())),
    };
    let user_info = match table.get("user_info") {
        None if is_presence => UserInfoSource::Store,
        None => UserInfoSource::None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => UserInfoSource::None,
            "store" => UserInfoSource::Store,
            "claims" => UserInfoSource::Claims,
            "webhook" => UserInfoSource::Webhook,
            other => {
                return Err((
                    "user_info",
                    format!("`{other}` is not a source; use none, store, claims or webhook"),
                ));
            }
        },
        Some(_) => return Err(("user_info", "must be a string".into())),
    };
    // Templates may use captures and the caller's `user_id`.
    let check_template = |field: &'static str, template: &str| {
        for name in template_names(template) {
            if name != "user_id" && !captures.contains(&name) {
                return Err((
                    field,
                    format!("`{{{name}}}` is neither a capture nor `user_id`"),
                ));
            }
        }
        Ok(())
    };
    let user_id = match table.get("user_id") {
        None => None,
        Some(Value::String(t)) => {
            check_template("user_id", t)?;
            Some(t.clone())
        }
        Some(_) => return Err(("user_id", "must be a template string".into())),
    };
    let mut info = Vec::new();
    match table.get("info") {
        None => {}
        Some(Value::Table(t)) => {
            for (key, v) in t {
                let template = v
                    .as_str()
                    .ok_or(("info", format!("`{key}` must be a string")))?;
                check_template("info", template)?;
                info.push((key.clone(), template.to_owned()));
            }
        }
        Some(_) => return Err(("info", "must be a table of field = \"template\"".into())),
    }
    let online = flag("online")?;
    if online && !captures.contains(&"object_id") {
        return Err((
            "online",
            "needs an `{object_id}` capture: it is the user whose status is reported".into(),
        ));
    }
    Ok(DataSpec {
        events: flag("events")?,
        online,
        user_info,
        user_id,
        info,
    })
}

fn parse_cache(value: &Value) -> Result<CacheSpec, String> {
    let default_ttl = Duration::from_secs(60);
    match value {
        Value::Boolean(true) => Ok(CacheSpec {
            scope: CacheScope::Anonymous,
            ttl: default_ttl,
        }),
        Value::Table(t) => {
            if let Some(unknown) = t.keys().find(|k| !["scope", "ttl"].contains(&k.as_str())) {
                return Err(format!("unknown field `{unknown}`; expected scope, ttl"));
            }
            let scope = match t.get("scope").and_then(Value::as_str) {
                None | Some("anonymous") => CacheScope::Anonymous,
                Some("user") => CacheScope::User,
                Some(other) => {
                    return Err(format!("scope `{other}` is not one of anonymous, user"));
                }
            };
            let ttl = match t.get("ttl") {
                None => default_ttl,
                Some(v) => {
                    let ttl = parse_duration_any(v)?;
                    if ttl < Duration::from_secs(1) {
                        return Err("ttl must be at least 1 s".into());
                    }
                    ttl
                }
            };
            Ok(CacheSpec { scope, ttl })
        }
        _ => Err(
            "must be false, true, or `{ scope = \"anonymous\" | \"user\", ttl = seconds }`".into(),
        ),
    }
}

/// Like [`parse_duration`] but without the task-sized upper bound (cache TTLs run to hours).
fn parse_duration_any(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Integer(i) if *i > 0 => Ok(Duration::from_secs(*i as u64)),
        _ => Err("must be a whole number of seconds greater than zero".into()),
    }
}

impl fmt::Display for Match<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = self.rule;
        writeln!(f, "rule:        {}", rule.name)?;
        let patterns: Vec<&str> = rule.patterns.iter().map(Pattern::as_str).collect();
        writeln!(f, "pattern:     {}", patterns.join(" | "))?;
        if self.captures.is_empty() {
            writeln!(f, "captures:    (none)")?;
        } else {
            let captures: Vec<String> = self
                .captures
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            writeln!(f, "captures:    {}", captures.join(", "))?;
        }
        writeln!(f, "queue:       {}", rule.route.queue)?;
        writeln!(f, "time_limit:  {} ms", rule.route.time_limit.as_millis())?;
        writeln!(f, "expires:     {} ms", rule.route.expires.as_millis())?;
        writeln!(f, "allow:       {}", rule.allow)?;
        let mut data = Vec::new();
        if rule.data.events {
            data.push("retained events".to_owned());
        }
        if rule.data.online {
            data.push("online status".to_owned());
        }
        match rule.data.user_info {
            UserInfoSource::None => {}
            UserInfoSource::Store => data.push("user info from store".into()),
            UserInfoSource::Claims => data.push("user info from claims".into()),
            UserInfoSource::Webhook => data.push("user info from webhook".into()),
        }
        if let Some(t) = &rule.data.user_id {
            data.push(format!("user_id = {t}"));
        }
        for (k, v) in &rule.data.info {
            data.push(format!("info.{k} = {v}"));
        }
        writeln!(
            f,
            "data:        {}",
            if data.is_empty() {
                "(none)".into()
            } else {
                data.join(", ")
            }
        )?;
        match rule.cache {
            None => write!(f, "cache:       no"),
            Some(CacheSpec { scope, ttl }) => write!(
                f,
                "cache:       {} for {} s",
                match scope {
                    CacheScope::Anonymous => "shared (ANNON)",
                    CacheScope::User => "per user",
                },
                ttl.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests;
