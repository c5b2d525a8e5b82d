//! The core of every authorization endpoint: one batch of channels in, one signed answer
//! (or reason) per channel out.
//!
//! 1. match each channel against the policy (invalid, public or unmatched names get a reason);
//! 2. one store round trip for every cacheable channel; hits are signed for this socket;
//! 3. one task per remaining channel, published together, awaited until the batch deadline
//!    (the largest `expires` plus a grace); no reply by then is `timeout`;
//! 4. sign what was allowed.

use std::collections::HashSet;
use std::time::Instant;

use porter_broker::{Outgoing, now_ms};
use porter_core::channel::{Channel, ChannelKind};
use porter_core::policy::{Match, PrivateData};
use porter_core::reason;
use porter_core::wire::{AuthData, Event, FORMAT_VERSION, Task};
use porter_store::CacheLookup;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::warn;

use crate::AppState;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::metrics::Outcome;

/// What the client receives for an authorized channel.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SignedChannel {
    pub auth: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<String>,
    /// Retained events of a private channel, outside the signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
}

/// One channel's answer: signed, or refused with a reason.
pub type ChannelResult = Result<SignedChannel, String>;

/// A channel that matched a rule and awaits a decision.
pub(crate) struct Prepared<'a> {
    pub(crate) index: usize,
    pub(crate) channel: Channel<'a>,
    pub(crate) matched: Match<'a>,
}

/// Authorizes a batch. Channels are deduplicated; answers come in first-seen order.
pub async fn authorize(
    state: &AppState,
    identity: &Identity,
    socket_id: &str,
    channels: &[String],
) -> Result<Vec<(String, ChannelResult)>, ApiError> {
    let mut seen = HashSet::with_capacity(channels.len());
    let unique: Vec<&str> = channels
        .iter()
        .map(String::as_str)
        .filter(|c| seen.insert(*c))
        .collect();
    if unique.len() > state.config.max_channels {
        return Err(ApiError::bad_request(
            "too_many_channels",
            format!("at most {} channels per request", state.config.max_channels),
        ));
    }

    let mut results: Vec<Option<ChannelResult>> = vec![None; unique.len()];
    let mut prepared = Vec::with_capacity(unique.len());
    for (index, name) in unique.iter().enumerate() {
        match Channel::parse(name) {
            Err(error) => results[index] = Some(Err(error.reason().to_owned())),
            Ok(channel) => match state.policy.match_channel(&channel) {
                Err(error) => results[index] = Some(Err(error.reason().to_owned())),
                // A rule of a scoped-token endpoint is served only by that endpoint.
                Ok(matched) if state.policy.is_scoped(&matched.rule.name) => {
                    results[index] = Some(Err(reason::NO_RULE.to_owned()))
                }
                Ok(matched) => prepared.push(Prepared {
                    index,
                    channel,
                    matched,
                }),
            },
        }
    }

    // Cache: one round trip for every cacheable channel.
    let scopes: Vec<Option<String>> = prepared
        .iter()
        .map(|p| {
            p.matched
                .rule
                .cache
                .and_then(|spec| spec.scope.field(identity.user_id.as_deref()))
        })
        .collect();
    let cache_names: Vec<_> = prepared.iter().map(|p| p.channel.cache_name()).collect();
    let lookups: Vec<(usize, CacheLookup<'_>)> = scopes
        .iter()
        .enumerate()
        .filter_map(|(i, scope)| {
            scope.as_deref().map(|scope| {
                (
                    i,
                    CacheLookup {
                        channel: &cache_names[i],
                        scope,
                    },
                )
            })
        })
        .collect();
    // The caller's token is checked against the revocations in the same round trip.
    let revocations = identity.revocations();
    let mut hits: Vec<Option<AuthData>> = vec![None; prepared.len()];
    if !lookups.is_empty() || !revocations.is_empty() {
        let keys: Vec<CacheLookup<'_>> = lookups.iter().map(|(_, l)| *l).collect();
        match state.store.lookup(&keys, &revocations).await {
            Ok(found) => {
                crate::revocation::settle(state.store.as_ref(), identity, found.revoked).await?;
                for ((i, _), value) in lookups.iter().zip(found.cached) {
                    hits[*i] = value.and_then(|v| serde_json::from_str(&v).ok());
                }
            }
            Err(error) => {
                state.metrics.cache_error();
                if !revocations.is_empty() {
                    // A token whose revocation cannot be checked is not served.
                    warn!(%error, "store look-up failed; cannot check revocations");
                    return Err(crate::revocation::store_unavailable());
                }
                warn!(%error, "cache look-up failed; treating as misses");
            }
        }
    }

    // Fan out the misses.
    let mut tasks = Vec::new();
    let mut misses = Vec::new();
    for (i, p) in prepared.iter().enumerate() {
        if let Some(data) = hits[i].take() {
            state.metrics.channel(Outcome::CacheHit);
            results[p.index] = Some(sign(state, socket_id, p, data));
        } else {
            tasks.push(task_for(p, identity));
            misses.push(i);
        }
    }
    if !tasks.is_empty() {
        let replies = fan_out(state, &prepared, &misses, &tasks).await;
        match replies {
            Err(error) => {
                // Nothing could be served without the broker: the whole request fails fast.
                if results.iter().all(Option::is_none) {
                    return Err(error);
                }
                for &i in &misses {
                    results[prepared[i].index] = Some(Err(error.code.to_owned()));
                }
            }
            Ok(replies) => {
                for (&i, reply) in misses.iter().zip(replies) {
                    let p = &prepared[i];
                    results[p.index] = Some(finish(state, socket_id, p, reply));
                }
            }
        }
    }

    let mut rules: Vec<&str> = vec!["-"; unique.len()];
    for p in &prepared {
        rules[p.index] = p.matched.rule.name.as_str();
    }
    let who = crate::audit::Who::of(identity, None);
    Ok(unique
        .into_iter()
        .zip(results)
        .zip(rules)
        .map(|((name, result), rule)| {
            let result = result.unwrap_or_else(|| Err(reason::INTERNAL.to_owned()));
            if let Err(why) = &result
                && why != reason::TIMEOUT
            {
                crate::audit::refused(&who, Some(name), rule, why);
            }
            (name.to_owned(), result)
        })
        .collect())
}

pub(crate) fn task_for(p: &Prepared<'_>, identity: &Identity) -> Task {
    Task {
        v: FORMAT_VERSION,
        id: uuid::Uuid::new_v4().to_string(),
        channel: p.channel.name.to_owned(),
        channel_type: p.channel.kind,
        feature: p.channel.feature.to_owned(),
        object_id: p.channel.object_id.map(str::to_owned),
        rule: p.matched.rule.name.clone(),
        captures: p.matched.captures.clone(),
        client_id: identity.client_id.clone(),
        user_id: identity.user_id.clone(),
        claims: identity.claims.clone(),
    }
}

/// A worker's answer for one channel, counted and, when allowed, signed for this socket.
pub(crate) fn finish(
    state: &AppState,
    socket_id: &str,
    p: &Prepared<'_>,
    reply: Option<Result<AuthData, String>>,
) -> ChannelResult {
    match reply {
        None => {
            state.metrics.channel(Outcome::Timeout);
            Err(reason::TIMEOUT.to_owned())
        }
        Some(Err(why)) => {
            state.metrics.channel(Outcome::Denied);
            Err(why)
        }
        Some(Ok(data)) => {
            state.metrics.channel(Outcome::Authorized);
            sign(state, socket_id, p, data)
        }
    }
}

/// Decides one already matched channel through a worker (the scoped endpoints and the admin
/// decision read): the data to sign, the refusal, or `None` when no reply came in time.
pub(crate) async fn decide_one(
    state: &AppState,
    prepared: &Prepared<'_>,
    identity: &Identity,
) -> Result<Option<Result<AuthData, String>>, ApiError> {
    let task = task_for(prepared, identity);
    let mut replies = fan_out(
        state,
        std::slice::from_ref(prepared),
        &[0],
        std::slice::from_ref(&task),
    )
    .await?;
    Ok(replies.pop().flatten())
}

pub(crate) async fn fan_out(
    state: &AppState,
    prepared: &[Prepared<'_>],
    misses: &[usize],
    tasks: &[Task],
) -> Result<Vec<Option<Result<AuthData, String>>>, ApiError> {
    if !state.tasks.is_ready() {
        return Err(ApiError::broker_unavailable());
    }
    // The in-flight cap: past it nothing is published; the permit is held until the replies
    // are in or the deadline has passed.
    let _permit = crate::protection::admit_tasks(state, tasks)?;
    let longest = misses
        .iter()
        .map(|&i| prepared[i].matched.rule.route.expires)
        .max()
        .unwrap_or_default();
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + longest + state.config.grace;
    let now = now_ms();
    let outgoing: Vec<Outgoing<'_>> = misses
        .iter()
        .zip(tasks)
        .map(|(&i, task)| {
            let route = prepared[i].matched.rule.route;
            Outgoing {
                task,
                route,
                deadline_ms: now + route.expires.as_millis() as u64,
            }
        })
        .collect();
    // Register before publishing: a fast worker may reply before `publish` returns.
    let waiters: Vec<_> = tasks
        .iter()
        .map(|t| state.tasks.pending().register(&t.id))
        .collect();
    if let Err(error) = state.tasks.publish(&outgoing).await {
        warn!(%error, "could not publish tasks");
        return Err(ApiError::broker_unavailable());
    }
    let replies =
        futures_util::future::join_all(waiters.into_iter().map(|w| w.wait_until(deadline))).await;
    Ok(replies
        .into_iter()
        .map(|reply| {
            reply.map(|reply| {
                state.metrics.round_trip(started.elapsed());
                reply.into_result()
            })
        })
        .collect())
}

/// The member part of `channel_data`: `{"user_id", "user_info"?}`.
fn member_json(data: &AuthData) -> Option<String> {
    let user_id = data.user_id.as_ref()?;
    let mut member = json!({ "user_id": user_id });
    if let Some(info) = &data.user_info {
        member["user_info"] = info.clone();
    }
    Some(member.to_string())
}

/// Signs an allowed channel for this socket.
pub(crate) fn sign(
    state: &AppState,
    socket_id: &str,
    p: &Prepared<'_>,
    data: AuthData,
) -> ChannelResult {
    let rule = p.matched.rule;
    let (channel_data, events) = if p.channel.kind == ChannelKind::Presence {
        (
            Some(member_json(&data).ok_or_else(|| reason::UNAUTHENTICATED.to_owned())?),
            None,
        )
    } else {
        match rule.private_data.unwrap_or(state.config.private_data) {
            PrivateData::Signed => {
                let signed = member_json(&data).or_else(|| {
                    (!data.events.is_empty()).then(|| json!({ "events": data.events }).to_string())
                });
                (signed, None)
            }
            PrivateData::Events => (None, (!data.events.is_empty()).then_some(data.events)),
        }
    };
    let auth = state
        .signer
        .sign_channel(socket_id, p.channel.name, channel_data.as_deref())
        .map_err(|_| "encryption_not_configured".to_owned())?;
    Ok(SignedChannel {
        auth: auth.auth,
        channel_data: auth.channel_data,
        shared_secret: auth.shared_secret,
        events,
    })
}

/// The batch response body: `{channel: {auth…} | {"reason": …}}`.
pub fn batch_body(results: &[(String, ChannelResult)]) -> Value {
    let mut body = serde_json::Map::with_capacity(results.len());
    for (name, result) in results {
        let value = match result {
            Ok(signed) => serde_json::to_value(signed).unwrap_or(Value::Null),
            Err(reason) => json!({ "reason": reason }),
        };
        body.insert(name.clone(), value);
    }
    Value::Object(body)
}
