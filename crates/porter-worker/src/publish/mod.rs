//! Applying published events: the worker half of `POST /apps/{app_id}/events` and
//! `/batch_events`. The gateway checked each request and queued it whole, as a
//! [`Publication`], on the durable events queue; [`consumer::EventConsumer`] takes them from an
//! [`porter_broker::event_source::EventSource`] and [`Applier::apply`] runs three steps on each:
//!
//! 1. [`retain`]: the latest data of each event name the channel's rule retains, for its TTL,
//!    never overwritten by an older publication; the channel's cached decision dropped;
//! 2. [`sessions`]: the event to every live session exchange of the channel's owner;
//! 3. [`upstream`]: the body as received to each upstream server, signed, with retries.
//!
//! At least once, idempotently: a publication is acknowledged only once every step is done;
//! each step (each session delivery, each upstream) is marked in the store once done
//! ([`marks`]), so a redelivery does only what was not done. A step that cannot run yet (the
//! store or the broker away) hands the publication back; one that never will (a body that
//! does not parse, an upstream that refused it or kept failing) sends it to the dead-letter
//! queue, where the management UI shows it.

pub mod consumer;
pub mod marks;
pub mod metrics;
pub mod retain;
pub mod sessions;
pub mod upstream;

use std::sync::Arc;

use porter_broker::session_publish::SessionExchanges;
use porter_core::policy::Policy;
use porter_core::publish::Publication;
use porter_store::Store;
use tracing::warn;

use marks::{Claim, Mark};
use metrics::PublishMetrics;
use upstream::Upstream;

/// What to do with a publication after [`Applier::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every step is done: acknowledge.
    Applied,
    /// A step could not run now (the reason, for the log): hand it back for another try.
    Retry(String),
    /// It can never be applied in full (the reason): dead-letter it.
    DeadLetter(String),
}

/// Applies publications: the store (retained state, marks, the session index), the session
/// exchanges, and the upstream servers if any.
pub struct Applier {
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    exchanges: Arc<dyn SessionExchanges>,
    upstream: Option<Upstream>,
    metrics: PublishMetrics,
}

impl Applier {
    pub fn new(
        store: Arc<dyn Store>,
        policy: Arc<Policy>,
        exchanges: Arc<dyn SessionExchanges>,
        upstream: Option<Upstream>,
        metrics: PublishMetrics,
    ) -> Applier {
        Applier {
            store,
            policy,
            exchanges,
            upstream,
            metrics,
        }
    }

    pub fn metrics(&self) -> &PublishMetrics {
        &self.metrics
    }

    /// Runs every step not done before; see the module documentation.
    pub async fn apply(&self, publication: &Publication) -> Verdict {
        let events = match publication.events() {
            Ok(events) => events,
            Err(error) => return Verdict::DeadLetter(format!("malformed publication: {error}")),
        };
        let store = self.store.as_ref();

        let mark = Mark::retained(&publication.id);
        match self.claim(&mark).await {
            Err(verdict) => return verdict,
            Ok(false) => {}
            Ok(true) => {
                let done =
                    retain::retain(store, &self.policy, publication, &events, &self.metrics).await;
                if let Err(verdict) = self.finish(&mark, done.map_err(|e| e.to_string())).await {
                    return Verdict::Retry(format!("retained state: {verdict}"));
                }
            }
        }

        if let Err(error) = sessions::fan_out(
            store,
            self.exchanges.as_ref(),
            &self.policy,
            publication,
            &events,
            &self.metrics,
        )
        .await
        {
            return Verdict::Retry(format!("sessions: {error}"));
        }

        let Some(upstream) = &self.upstream else {
            return Verdict::Applied;
        };
        let mut failed = None;
        for base in upstream.bases() {
            let mark = Mark::upstream(&publication.id, base.as_str());
            match self.claim(&mark).await {
                Err(verdict) => return verdict,
                Ok(false) => continue,
                Ok(true) => {}
            }
            let forwarded = upstream.forward(base, publication, &self.metrics).await;
            let failure = forwarded.as_ref().err().map(ToString::to_string);
            if let Err(error) = self
                .finish(&mark, forwarded.map_err(|e| e.to_string()))
                .await
                && failure.is_none()
            {
                return Verdict::Retry(format!("upstream mark: {error}"));
            }
            if let Some(reason) = failure {
                // The other upstreams still get it; the publication is dead-lettered after
                // them, their marks keeping them from a second copy.
                warn!(publication = %publication.id, %reason, "upstream did not take a publication");
                failed = Some(reason);
            }
        }
        match failed {
            None => Verdict::Applied,
            Some(reason) => Verdict::DeadLetter(format!("upstream: {reason}")),
        }
    }

    /// Claims a step: `Ok(true)` to run it, `Ok(false)` when it was done before, or the
    /// verdict when it cannot be run now.
    async fn claim(&self, mark: &Mark) -> Result<bool, Verdict> {
        match mark.claim(self.store.as_ref()).await {
            Ok(Claim::Claimed) => Ok(true),
            Ok(Claim::Done) => {
                self.metrics.step_skipped();
                Ok(false)
            }
            Ok(Claim::Busy) => Err(Verdict::Retry(
                "another delivery of it is being applied".to_owned(),
            )),
            Err(error) => Err(Verdict::Retry(format!("marks: {error}"))),
        }
    }

    /// Marks a claimed step done, or releases it when it failed; the error to report.
    async fn finish(&self, mark: &Mark, outcome: Result<(), String>) -> Result<(), String> {
        let store = self.store.as_ref();
        match outcome {
            Ok(()) => mark.set(store).await.map_err(|e| e.to_string()),
            Err(reason) => {
                if let Err(error) = mark.release(store).await {
                    warn!(%error, "could not release a step's claim; it expires by itself");
                }
                Err(reason)
            }
        }
    }
}
