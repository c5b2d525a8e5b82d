//! Publishing a batch's tasks and awaiting their replies until the batch deadline.
//!
//! Architecture Invariant: the gateway never waits past a batch's deadline (its largest
//! `expires` plus the grace), and each task's deadline is computed once, here, from the same
//! clock reading as the AMQP expiration (`porter_broker::Outgoing`). Every waiter is
//! registered before the publish, so a fast worker cannot reply to nobody.

use std::time::Instant;

use porter_broker::{Outgoing, TaskClient, now_ms};
use porter_core::routing::Route;
use porter_core::wire::{FORMAT_VERSION, Task};
use porter_identity::Identity;
use tracing::warn;

use crate::authorize::Prepared;
use crate::authorize::outcome::Verdict;
use porter_core::reason::Reason;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::protection::in_flight::{self, InFlight};

/// The task of one prepared channel, for this caller; a `dry_run` is decided but not cached.
pub fn task_for(p: &Prepared<'_>, identity: &Identity, dry_run: bool) -> Task {
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
        dry_run,
        coalesce: true,
        kind: porter_core::wire::TaskKind::Channel,
    }
}

/// Why a batch's tasks were not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPublished {
    /// The broker is not connected, or refused the publish.
    Broker,
    /// The in-flight cap is reached.
    Overloaded,
}

impl NotPublished {
    /// The reason each channel of the batch gets when others could still be answered.
    pub fn reason(self) -> Reason {
        match self {
            NotPublished::Broker => Reason::BrokerUnavailable,
            NotPublished::Overloaded => Reason::Overloaded,
        }
    }
}

impl From<NotPublished> for ApiError {
    fn from(error: NotPublished) -> ApiError {
        match error {
            NotPublished::Broker => ApiError::broker_unavailable(),
            NotPublished::Overloaded => in_flight::overloaded(),
        }
    }
}

/// What publishing needs: the transport, the in-flight cap, the grace past the longest
/// `expires`, and the metrics it reports round trips to.
pub struct FanOut<'a> {
    pub tasks: &'a dyn TaskClient,
    pub in_flight: &'a InFlight,
    pub grace: std::time::Duration,
    pub metrics: &'a Metrics,
}

impl FanOut<'_> {
    /// Publishes one task per channel of `jobs` and waits for their verdicts, in order.
    pub async fn run(&self, jobs: &[(&Prepared<'_>, Task)]) -> Result<Vec<Verdict>, NotPublished> {
        let routed: Vec<(Route, &Task)> = jobs
            .iter()
            .map(|(p, task)| (p.matched.rule.route, task))
            .collect();
        self.run_routed(&routed).await
    }

    /// Publishes each task on its route and waits for their verdicts, in order: the one
    /// publishing path for channel tasks ([`FanOut::run`]) and signin tasks alike.
    pub async fn run_routed(&self, jobs: &[(Route, &Task)]) -> Result<Vec<Verdict>, NotPublished> {
        if !self.tasks.is_ready() {
            return Err(NotPublished::Broker);
        }
        // Past the cap nothing is published; the permit is held until the replies are in or
        // the deadline has passed.
        let _permit = self
            .in_flight
            .try_acquire(jobs.len())
            .ok_or(NotPublished::Overloaded)?;
        let longest = jobs
            .iter()
            .map(|(route, _)| route.expires)
            .max()
            .unwrap_or_default();
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + longest + self.grace;
        let now = now_ms();
        let outgoing: Vec<Outgoing<'_>> = jobs
            .iter()
            .map(|&(route, task)| Outgoing {
                task,
                route,
                deadline_ms: now + route.expires.as_millis() as u64,
            })
            .collect();
        let waiters: Vec<_> = jobs
            .iter()
            .map(|(_, task)| self.tasks.pending().register(&task.id))
            .collect();
        if let Err(error) = self.tasks.publish(&outgoing).await {
            warn!(%error, "could not publish tasks");
            return Err(NotPublished::Broker);
        }
        let replies =
            futures_util::future::join_all(waiters.into_iter().map(|w| w.wait_until(deadline)))
                .await;
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                None => Verdict::TimedOut,
                Some(reply) => {
                    self.metrics.round_trip(started.elapsed());
                    match reply.into_result() {
                        Ok(data) => Verdict::Allowed(data),
                        Err(reason) => Verdict::Refused(reason),
                    }
                }
            })
            .collect())
    }
}
