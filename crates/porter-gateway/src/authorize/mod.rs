//! The core of every authorization endpoint: one batch of channels in, one [`Outcome`] per
//! channel out.
//!
//! 1. match each channel against the policy (invalid, public or unmatched names get a reason);
//! 2. one store round trip for every cacheable channel, which also checks the caller's
//!    revocations; hits are signed for this socket;
//! 3. one task per remaining channel, published together ([`fan_out`]), awaited until the
//!    batch deadline; no reply by then is a timeout;
//! 4. sign what was allowed ([`sign`]), audit what was refused, one line per channel.
//!
//! Pusher user authentication goes the same way with one signin task and no cache
//! ([`signin`]).
//!
//! Architecture Invariant: every authorization that carries a token or session checks the
//! revocations in the same store round trip as its cache look-up (`Store::lookup`), and is
//! refused (503) when that round trip fails, never served unchecked (`Authorizer::batch`).

pub mod fan_out;
pub mod outcome;
pub mod sign;
pub mod signin;

use std::collections::HashSet;
use std::time::Duration;

use porter_broker::TaskClient;
use porter_core::cache::{CachedDecision, RuleStamps};
use porter_core::channel::Channel;
use porter_core::policy::{Match, Policy, PrivateData};
use porter_core::reason::Reason;
use porter_core::signing::Signer;
use porter_core::wire::AuthData;
use porter_identity::{Caller, Identity};
use porter_store::{CacheLookup, Store};
use tracing::warn;

use crate::audit::{self, Who};
use crate::error::ApiError;
use crate::metrics::{Metrics, Outcome as Counted};
use crate::protection::in_flight::InFlight;
use fan_out::{FanOut, task_for};
pub use outcome::{Outcome, SignedChannel, Verdict};

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Channels one request may ask for.
    pub max_channels: usize,
    /// Added to the largest `expires` of a batch to form its deadline.
    pub grace: Duration,
    /// How private channels carry their data unless a rule says otherwise.
    pub private_data: PrivateData,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            max_channels: 100,
            grace: Duration::from_millis(250),
            private_data: PrivateData::Events,
        }
    }
}

impl GatewayConfig {
    /// The refusal of a request with more channels than [`GatewayConfig::max_channels`].
    pub fn too_many_channels(&self) -> ApiError {
        ApiError::bad_request(
            "too_many_channels",
            format!("at most {} channels per request", self.max_channels),
        )
    }
}

/// A channel that matched a rule and awaits a decision.
pub struct Prepared<'a> {
    pub channel: Channel<'a>,
    pub matched: Match<'a>,
}

/// What authorizing needs, borrowed from the gateway's state for one request.
pub struct Authorizer<'a> {
    pub signer: &'a Signer,
    pub policy: &'a Policy,
    pub tasks: &'a dyn TaskClient,
    pub store: &'a dyn Store,
    /// The stamps of `policy`'s rules, which cache entries must carry to be served.
    pub stamps: &'a RuleStamps,
    pub config: &'a GatewayConfig,
    pub metrics: &'a Metrics,
    pub in_flight: &'a InFlight,
}

impl Authorizer<'_> {
    fn fan_out(&self) -> FanOut<'_> {
        FanOut {
            tasks: self.tasks,
            in_flight: self.in_flight,
            grace: self.config.grace,
            metrics: self.metrics,
        }
    }

    /// Authorizes a batch. Channels are deduplicated (more than the limit after that is a
    /// 400); answers come in first-seen order.
    pub async fn batch(
        &self,
        caller: &Caller,
        socket_id: &str,
        channels: &[String],
    ) -> Result<Vec<(String, Outcome)>, ApiError> {
        let identity = caller.identity();
        let mut seen = HashSet::with_capacity(channels.len());
        let unique: Vec<&str> = channels
            .iter()
            .map(String::as_str)
            .filter(|c| seen.insert(*c))
            .collect();
        if unique.len() > self.config.max_channels {
            return Err(self.config.too_many_channels());
        }

        let mut results: Vec<Option<Outcome>> = vec![None; unique.len()];
        let mut prepared: Vec<(usize, Prepared<'_>)> = Vec::with_capacity(unique.len());
        for (index, name) in unique.iter().enumerate() {
            match self.prepare(name) {
                Ok(p) => prepared.push((index, p)),
                Err(reason) => results[index] = Some(Outcome::Refused(reason)),
            }
        }

        let mut hits = self.look_up(caller, &prepared).await?;

        // Fan out the misses.
        let mut jobs = Vec::new();
        let mut misses = Vec::new();
        for (i, (index, p)) in prepared.iter().enumerate() {
            if let Some(data) = hits[i].take() {
                self.metrics.channel(Counted::CacheHit);
                results[*index] = Some(self.signed(socket_id, p, data));
            } else {
                jobs.push((p, task_for(p, identity, false)));
                misses.push(*index);
            }
        }
        if !jobs.is_empty() {
            match self.fan_out().run(&jobs).await {
                // Nothing could be served without the broker: the whole request fails fast.
                Err(error) if results.iter().all(Option::is_none) => return Err(error.into()),
                Err(error) => {
                    let reason = error.reason();
                    for &index in &misses {
                        results[index] = Some(Outcome::Refused(reason.clone()));
                    }
                }
                Ok(verdicts) => {
                    for ((p, _), (index, verdict)) in jobs.iter().zip(misses.iter().zip(verdicts)) {
                        results[*index] = Some(self.finish(socket_id, p, verdict));
                    }
                }
            }
        }

        let mut rules: Vec<&str> = vec!["-"; unique.len()];
        for (index, p) in &prepared {
            rules[*index] = p.matched.rule.name.as_str();
        }
        let who = Who::of(identity, None);
        Ok(unique
            .into_iter()
            .zip(results)
            .zip(rules)
            .map(|((name, outcome), rule)| {
                let outcome = outcome.unwrap_or(Outcome::Refused(Reason::Internal));
                audit_refusal(&who, name, rule, &outcome);
                (name.to_owned(), outcome)
            })
            .collect())
    }

    /// Matches a channel name to the rule that decides it. A rule of a scoped-token endpoint
    /// is served only by that endpoint: here it is `no_rule`.
    fn prepare<'n>(&self, name: &'n str) -> Result<Prepared<'n>, Reason>
    where
        Self: 'n,
    {
        let channel = Channel::parse(name).map_err(|e| e.reason())?;
        let matched = self
            .policy
            .match_channel(&channel)
            .map_err(|e| e.reason())?;
        if self.policy.is_scoped(&matched.rule.name) {
            return Err(Reason::NoRule);
        }
        Ok(Prepared { channel, matched })
    }

    /// The cached data of every cacheable channel, in one store round trip that also checks
    /// the caller's revocations (and settles its session with the answer).
    async fn look_up(
        &self,
        caller: &Caller,
        prepared: &[(usize, Prepared<'_>)],
    ) -> Result<Vec<Option<AuthData>>, ApiError> {
        let user = caller.identity().user_id.as_deref();
        let scopes: Vec<Option<String>> = prepared
            .iter()
            .map(|(_, p)| p.matched.rule.cache.and_then(|spec| spec.scope.field(user)))
            .collect();
        let cache_names: Vec<_> = prepared
            .iter()
            .map(|(_, p)| p.channel.cache_name())
            .collect();
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
        let revocations = caller.revocations();
        let mut hits: Vec<Option<AuthData>> = vec![None; prepared.len()];
        if lookups.is_empty() && revocations.is_empty() {
            return Ok(hits);
        }
        let keys: Vec<CacheLookup<'_>> = lookups.iter().map(|(_, l)| *l).collect();
        match self.store.lookup(&keys, &revocations).await {
            Ok(found) => {
                caller.settle(self.store, found.revoked).await?;
                for ((i, _), value) in lookups.iter().zip(found.cached) {
                    let rule = prepared[*i].1.matched.rule;
                    // Only an entry of the rule that matches now is a hit (`porter_core::cache`).
                    hits[*i] = value
                        .zip(self.stamps.get(&rule.name))
                        .and_then(|(entry, stamp)| CachedDecision::data_for(&entry, stamp));
                }
            }
            Err(error) => {
                self.metrics.cache_error();
                if !revocations.is_empty() {
                    // A token whose revocation cannot be checked is not served.
                    warn!(%error, "store look-up failed; cannot check revocations");
                    return Err(ApiError::store_unavailable());
                }
                warn!(%error, "cache look-up failed; treating as misses");
            }
        }
        Ok(hits)
    }

    fn signed(&self, socket_id: &str, p: &Prepared<'_>, data: AuthData) -> Outcome {
        match sign::sign(
            self.signer,
            self.config.private_data,
            socket_id,
            &p.channel,
            p.matched.rule,
            data,
        ) {
            Ok(signed) => Outcome::Signed(signed),
            Err(reason) => Outcome::Refused(reason),
        }
    }

    /// A worker's verdict for one channel, counted and, when allowed, signed for this socket.
    fn finish(&self, socket_id: &str, p: &Prepared<'_>, verdict: Verdict) -> Outcome {
        match verdict {
            Verdict::TimedOut => {
                self.metrics.channel(Counted::Timeout);
                Outcome::TimedOut
            }
            Verdict::Refused(reason) => {
                self.metrics.channel(Counted::Denied);
                Outcome::Refused(reason)
            }
            Verdict::Allowed(data) => {
                self.metrics.channel(Counted::Authorized);
                self.signed(socket_id, p, data)
            }
        }
    }

    /// Decides one already matched channel through a worker, unsigned. A `dry_run` (the
    /// admin API's what-if decision) writes nothing to the cache.
    pub async fn decide(
        &self,
        prepared: &Prepared<'_>,
        identity: &Identity,
        dry_run: bool,
    ) -> Result<Verdict, ApiError> {
        let task = task_for(prepared, identity, dry_run);
        let mut verdicts = self.fan_out().run(&[(prepared, task)]).await?;
        Ok(verdicts.pop().unwrap_or(Verdict::TimedOut))
    }

    /// Decides and signs one already matched channel (the scoped endpoints), auditing a
    /// refusal like the batch does.
    pub async fn one(
        &self,
        prepared: &Prepared<'_>,
        identity: &Identity,
        socket_id: &str,
    ) -> Result<Outcome, ApiError> {
        let verdict = self.decide(prepared, identity, false).await?;
        let outcome = self.finish(socket_id, prepared, verdict);
        audit_refusal(
            &Who::of(identity, None),
            prepared.channel.name,
            &prepared.matched.rule.name,
            &outcome,
        );
        Ok(outcome)
    }
}

/// Logs a refused channel under `porter::audit`; timeouts are not refusals.
fn audit_refusal(who: &Who<'_>, channel: &str, rule: &str, outcome: &Outcome) {
    if let Outcome::Refused(reason) = outcome {
        audit::refused(who, Some(channel), rule, &reason.as_str());
    }
}
