//! Parsers of a rule's field values: durations, `allow`, `data`, `cache` and `where` lists.
//!
//! Each returns the bare message of what is wrong with the value; [`super::parse`] names the
//! rule and the field around it.

use std::time::Duration;

use toml::Value;

use super::rule::{
    Allow, CacheScope, CacheSpec, DataSpec, MAX_CACHE_TTL, MAX_DURATION, MIN_DURATION,
    UserInfoSource,
};
use super::webhook_url::WebhookUrl;
use crate::pattern::template_names;

/// Every webhook timeout of a decision.
pub(super) fn webhook_timeouts(allow: &Allow) -> Vec<Duration> {
    match allow {
        Allow::Webhook {
            timeout: Some(t), ..
        } => vec![*t],
        Allow::AnyOf(all) | Allow::AllOf(all) => all.iter().flat_map(webhook_timeouts).collect(),
        _ => Vec::new(),
    }
}

pub(super) fn string_list(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Seconds as an integer or float, or a string with `ms` or `s`, from [`MIN_DURATION`] to
/// [`MAX_DURATION`]. Checked as a number before it becomes a `Duration`, so no value (huge,
/// negative, NaN, infinite, a hair above zero) can panic or round to nothing.
pub(super) fn parse_duration(value: &Value) -> Result<Duration, String> {
    let seconds = match value {
        // Exact for every whole number of seconds that can pass the bounds below.
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
    let (min, max) = (MIN_DURATION.as_secs_f64(), MAX_DURATION.as_secs_f64());
    // Written so that NaN fails too.
    if !(seconds >= min && seconds <= max) {
        return Err(format!(
            "must be from {} ms to {} s",
            MIN_DURATION.as_millis(),
            MAX_DURATION.as_secs()
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

pub(super) fn parse_allow(value: &Value, captures: &[&str]) -> Result<Allow, String> {
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
                    let url = WebhookUrl::parse(&url, captures)
                        .map_err(|e| format!("webhook url `{url}` {e}"))?;
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

pub(super) fn parse_data(
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

pub(super) fn parse_cache(value: &Value) -> Result<CacheSpec, String> {
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
            // A scope that is not a string is an error, never the shared default.
            let scope = match t.get("scope") {
                None => CacheScope::Anonymous,
                Some(Value::String(s)) if s == "anonymous" => CacheScope::Anonymous,
                Some(Value::String(s)) if s == "user" => CacheScope::User,
                Some(other) => {
                    return Err(format!("scope `{other}` is not one of anonymous, user"));
                }
            };
            let ttl = match t.get("ttl") {
                None => default_ttl,
                Some(v) => parse_ttl(v)?,
            };
            Ok(CacheSpec { scope, ttl })
        }
        _ => Err(
            "must be false, true, or `{ scope = \"anonymous\" | \"user\", ttl = seconds }`".into(),
        ),
    }
}

/// Whole seconds from 1 to [`MAX_CACHE_TTL`] (cache TTLs run to hours, not task sizes).
fn parse_ttl(value: &Value) -> Result<Duration, String> {
    let seconds = match value {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    };
    match seconds {
        Some(s) if (1..=MAX_CACHE_TTL.as_secs()).contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(format!(
            "ttl must be a whole number of seconds from 1 to {}",
            MAX_CACHE_TTL.as_secs()
        )),
    }
}
