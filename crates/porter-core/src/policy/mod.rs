//! Authorization policy: an ordered list of rules, first match wins.
//!
//! A rule matches channel names by [`Pattern`] and decides the route of the task, who may subscribe
//! ([`Allow`]), what data rides along ([`DataSpec`]) and whether the result may be cached
//! ([`CacheSpec`]). Policies are written in TOML (`docs/policy.md`); the built-in
//! [`Policy::default`] reproduces the catalogue of the system Porter replaces. Errors name the rule
//! and the field.
//!
//! This file holds the [`Policy`] and its matching; the rule types are in `rule.rs`, the
//! errors in `error.rs`, the scoped-token endpoints in `endpoint.rs` (public through the
//! crate's `endpoint` module), webhook URL templates in `webhook_url.rs`, and the TOML reading
//! in `parse.rs` and `fields.rs`. The `[signin]` section (Pusher user authentication) is in
//! `signin.rs`.

use std::collections::BTreeMap;
use std::fmt;

use crate::channel::Channel;
use crate::pattern::Pattern;

pub(crate) mod endpoint;
mod error;
mod fields;
mod parse;
mod publish;
mod rule;
mod signin;
mod webhook_url;

use endpoint::{Endpoint, pinned_constraints};
pub use error::{MatchError, PolicyError};
pub use publish::{DEFAULT_RETAIN_TTL, EventPattern, MAX_RETAIN_TTL, Owner, PublishSpec};
pub use rule::{
    Allow, CacheScope, CacheSpec, DataSpec, MAX_CACHE_TTL, MAX_DURATION, MIN_DURATION, PrivateData,
    Rule, UserInfoSource,
};
pub use signin::Signin;
pub use webhook_url::{RenderError, WebhookUrl, WebhookUrlError};

/// The TOML of the built-in policy (the feature catalogue of the system Porter replaces).
pub const DEFAULT_POLICY_TOML: &str = include_str!("../default_policy.toml");

/// A rule that matched a channel, with its captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match<'p> {
    pub rule: &'p Rule,
    pub captures: BTreeMap<String, String>,
}

/// An ordered list of rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Scoped-token endpoints (`[[endpoint]]`); their rules are served only by them.
    endpoints: Vec<Endpoint>,
    /// Pusher user authentication (`[signin]`); `None` refuses it.
    signin: Option<Signin>,
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
        let (rules, endpoints, signin) = parse::parse_policy(source)?;
        Ok(Policy {
            rules,
            endpoints,
            signin,
        })
    }

    /// Who may sign in with Pusher user authentication, and what rides along; `None` when
    /// the policy has no `[signin]` section (user authentication is refused).
    pub fn signin(&self) -> Option<&Signin> {
        self.signin.as_ref()
    }

    /// The scoped-token endpoints the gateway registers.
    pub fn endpoints(&self) -> &[Endpoint] {
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
        endpoint: &Endpoint,
        channel: &Channel<'_>,
        params: &BTreeMap<String, String>,
    ) -> Result<Match<'p>, MatchError> {
        endpoint
            .rules
            .iter()
            .filter_map(|name| self.rule(name))
            .find_map(|rule| {
                rule.patterns.iter().find_map(|pattern| {
                    let constraints = pinned_constraints(pattern, &rule.constraints, params);
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
        }?;
        let publish = &rule.publish;
        let mut published = Vec::new();
        if !publish.retain.is_empty() {
            let names: Vec<&str> = publish.retain.iter().map(EventPattern::as_str).collect();
            published.push(format!(
                "retains {} for {} s",
                names.join(", "),
                publish.retain_ttl.as_secs()
            ));
        }
        match &publish.owner {
            None => {}
            Some(Owner::Store) => published.push("to the sessions of the stored owner".into()),
            Some(Owner::Template(t)) => published.push(format!("to the sessions of user {t}")),
        }
        if !published.is_empty() {
            write!(f, "\npublished:   {}", published.join("; "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod refused_rules;
#[cfg(test)]
mod tests;
