//! Step 1 of applying a publication: retained state. For each event whose channel's rule
//! retains its name (`retain`), the store keeps its data as the channel's latest of that name
//! for the rule's `retain_ttl`, unless it holds a newer publication's (ordered by the gateway's
//! `accepted_ms`, see `porter_store::retained`), and the channel's cached decision is dropped
//! so that the next subscriber is decided afresh and receives it.

use porter_core::channel::Channel;
use porter_core::policy::Policy;
use porter_core::publish::{Publication, PublishedEvent};
use porter_store::{RetainStamp, Store, StoreError};
use tracing::debug;

use super::metrics::PublishMetrics;

/// Retains what the policy says to retain of `events` (all of `publication`).
pub(super) async fn retain(
    store: &dyn Store,
    policy: &Policy,
    publication: &Publication,
    events: &[PublishedEvent],
    metrics: &PublishMetrics,
) -> Result<(), StoreError> {
    let stamp = RetainStamp {
        accepted_ms: publication.accepted_ms,
        publication_id: &publication.id,
    };
    for event in events {
        // Public channels and channels no rule serves retain nothing.
        let Ok(channel) = Channel::parse(&event.channel) else {
            continue;
        };
        let Ok(matched) = policy.match_channel(&channel) else {
            continue;
        };
        let spec = &matched.rule.publish;
        if !spec.retains(&event.name) {
            continue;
        }
        let name = channel.cache_name();
        let written = store
            .retain_event(&name, &event.name, &event.data, stamp, spec.retain_ttl)
            .await?;
        metrics.retained(written);
        if written {
            store.drop_cached(&name).await?;
        }
        debug!(channel = %event.channel, event = %event.name, written, "published event retained");
    }
    Ok(())
}
