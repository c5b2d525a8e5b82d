//! The bodies of `POST /apps/{app_id}/events` and `/batch_events` (`porter_core::publish`),
//! read once their signature checks out: an app signs its bodies, it is not trusted to be right.
//!
//! Invariants: reading never panics; an accepted body publishes at least one event and, within
//! Pusher's limits, at most 100 (`/events`) or 10 (`/batch_events`), each with a name of 1 to
//! 200 characters, data of at most 10 KiB and a channel of at most 164 characters; a refusal is
//! one line; and the publication accepted from it reads back the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porter_core::publish::{
    MAX_BATCH_EVENTS, MAX_CHANNELS_PER_EVENT, MAX_DATA_BYTES, MAX_EVENT_NAME_LEN,
    MAX_PUBLISH_CHANNEL_LEN, Publication, PublishKind,
};

fuzz_target!(|data: &[u8]| {
    for (kind, max) in [
        (PublishKind::Events, MAX_CHANNELS_PER_EVENT),
        (PublishKind::BatchEvents, MAX_BATCH_EVENTS),
    ] {
        match Publication::accept("id".into(), "1".into(), kind, data, 0) {
            Ok((publication, count)) => {
                let events = publication.events().expect("an accepted body reads back");
                assert_eq!(events.len(), count);
                assert!((1..=max).contains(&count));
                for event in events {
                    assert!((1..=MAX_EVENT_NAME_LEN).contains(&event.name.chars().count()));
                    assert!(event.data.len() <= MAX_DATA_BYTES);
                    assert!(event.channel.chars().count() <= MAX_PUBLISH_CHANNEL_LEN);
                }
                assert_eq!(publication.body.as_bytes(), data);
            }
            Err(error) => assert!(!error.to_string().contains('\n')),
        }
    }
});
