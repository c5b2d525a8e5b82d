//! The loop of `porter worker --events` (and of `porter dev`): takes publications from an
//! [`EventSource`] while a slot is free, applies each ([`Applier::apply`]) and settles it by
//! the verdict: ack, requeue after a pause (so a store or broker outage does not spin), or
//! dead-letter. On a stop it stops consuming (the source hands back what it buffered), then
//! finishes the publications in hand.

use std::sync::Arc;
use std::time::Duration;

use porter_broker::event_source::{EventDelivery, EventSource};
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use super::marks::CLAIM_TTL;
use super::metrics::Settled;
use super::{Applier, Verdict};

/// How long a publication that could not be applied now waits before it is handed back.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How many times a publication can be handed back while a step is [`Claim::Busy`]: the
/// longest a dead worker's claim holds it, at one return per [`RETRY_PAUSE`].
///
/// [`Claim::Busy`]: super::marks::Claim::Busy
pub const RETURNS_TO_OUTLAST_A_CLAIM: u128 = CLAIM_TTL.as_millis() / RETRY_PAUSE.as_millis();

// A quorum events queue dead-letters a publication returned more than its delivery limit:
// one held up by a dead worker's claim must outlast that claim, with room to spare (twice
// over), before the broker gives up on it.
const _: () = assert!(
    2 * RETURNS_TO_OUTLAST_A_CLAIM < porter_broker::amqp::EVENTS_DELIVERY_LIMIT as u128,
    "the events queue's delivery limit must outlast CLAIM_TTL at RETRY_PAUSE"
);

pub struct EventConsumer {
    applier: Arc<Applier>,
    concurrency: usize,
    retry_pause: Duration,
}

impl EventConsumer {
    pub fn new(applier: Arc<Applier>, concurrency: usize) -> EventConsumer {
        EventConsumer {
            applier,
            concurrency: concurrency.max(1),
            retry_pause: RETRY_PAUSE,
        }
    }

    /// Sets the pause before a requeue (tests shorten it).
    pub fn with_retry_pause(mut self, pause: Duration) -> EventConsumer {
        self.retry_pause = pause;
        self
    }

    /// Runs until the source ends or is asked to stop, then drains.
    pub async fn run(&self, mut source: impl EventSource) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let stopping = source.stopping();
        tokio::pin!(stopping);
        loop {
            let permit = tokio::select! {
                biased;
                () = &mut stopping => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let delivery = tokio::select! {
                biased;
                () = &mut stopping => break,
                delivery = source.next() => match delivery {
                    Some(delivery) => delivery,
                    None => break,
                },
            };
            let (applier, pause) = (self.applier.clone(), self.retry_pause);
            tokio::spawn(async move {
                settle(&applier, delivery, pause).await;
                drop(permit);
            });
        }
        source.stop_consuming().await;
        // Every slot back: the publications in hand are settled.
        let _ = permits.acquire_many(self.concurrency as u32).await;
        info!("events consumer stopped");
    }
}

/// Applies one delivery and settles it.
async fn settle(applier: &Applier, delivery: EventDelivery, pause: Duration) {
    let EventDelivery {
        publication,
        redelivered,
        settle,
    } = delivery;
    let verdict = match &publication {
        Ok(publication) => applier.apply(publication).await,
        Err(reason) => Verdict::DeadLetter(format!("undecodable message: {reason}")),
    };
    let id = publication.as_ref().map(|p| p.id.as_str()).unwrap_or("?");
    let (settled, result) = match verdict {
        Verdict::Applied => (Settled::Applied, settle.ack().await),
        Verdict::Retry(reason) => {
            warn!(publication = id, redelivered, %reason, "publication not applied yet; handing it back");
            tokio::time::sleep(pause).await;
            (Settled::Requeued, settle.requeue().await)
        }
        Verdict::DeadLetter(reason) => {
            error!(publication = id, %reason, "publication dead-lettered");
            (Settled::DeadLettered, settle.dead_letter().await)
        }
    };
    applier.metrics().settled(settled);
    if let Err(error) = result {
        // Unsettled, the broker hands it out again once the channel goes: the marks keep
        // the steps done from being done twice.
        warn!(publication = id, %error, "could not settle a publication");
    }
}
