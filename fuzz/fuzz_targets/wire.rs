//! The task and reply messages (`porter_core::wire::Task` and `Reply`) as the AMQP consumers
//! decode them: `serde_json::from_slice` of a delivery's body (`porter_broker::amqp::source`
//! for tasks, `porter_broker::amqp::client` for replies). Anyone who can publish to the queues
//! can send these bytes.
//!
//! Invariants: decoding never panics; a decoded message serializes, and what it serializes to
//! decodes again to a message with the same id, channel and verdict; a reply's verdict
//! (`into_result`) follows its `ok`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porter_core::wire::{Reply, Task};

fuzz_target!(|data: &[u8]| {
    if let Ok(task) = serde_json::from_slice::<Task>(data) {
        let json = serde_json::to_vec(&task).expect("a decoded task serializes");
        let again: Task = serde_json::from_slice(&json).expect("a serialized task decodes");
        assert_eq!(
            (&again.id, &again.channel, &again.rule, again.channel_type),
            (&task.id, &task.channel, &task.rule, task.channel_type)
        );
        assert_eq!(again.captures, task.captures);
        assert_eq!(
            (&again.user_id, &again.client_id),
            (&task.user_id, &task.client_id)
        );
    }
    if let Ok(reply) = serde_json::from_slice::<Reply>(data) {
        let json = serde_json::to_vec(&reply).expect("a decoded reply serializes");
        let again: Reply = serde_json::from_slice(&json).expect("a serialized reply decodes");
        assert_eq!(
            (&again.id, again.ok, &again.reason),
            (&reply.id, reply.ok, &reply.reason)
        );
        assert_eq!(
            again.data.as_ref().map(|d| &d.user_id),
            reply.data.as_ref().map(|d| &d.user_id)
        );
        let ok = reply.ok;
        assert_eq!(reply.into_result().is_ok(), ok);
    }
});
