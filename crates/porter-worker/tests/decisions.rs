//! Decisions through the real `Authorizer`, run by the worker: a smoke test of the allow modes
//! (anyone, owner, member, claims) and the refusal of a task whose rule the worker's policy
//! does not match. Reasons are checked in the reply's wire form, as the gateway reads them.

mod support;

use std::sync::Arc;

use porter_core::policy::Policy;
use porter_core::wire::Task;
use porter_store::Store;
use porter_worker::registry::Registry;
use serde_json::Value;
use support::{
    Delivery, Journal, RecordedStore, ScriptedSource, gateway_task, policy, recorded_store,
    within_an_hour, worker,
};

const POLICY: &str = r#"
[[rule]]
name = "lobby"
pattern = "private-lobby@{object_id}"
allow = "anyone"

[[rule]]
name = "inbox"
pattern = "private-inbox@{object_id}"
allow = "owner"

[[rule]]
name = "team"
pattern = "private-team@{object_id}"
allow = "member"

[[rule]]
name = "booking"
pattern = "private-booking-{booking_id}"
allow = { claims = { booking_id = "booking_id" } }
"#;

/// A worker with [`POLICY`] over a journaled memory store.
struct Harness {
    policy: Arc<Policy>,
    journal: Journal,
    store: Arc<RecordedStore>,
}

impl Harness {
    fn new() -> Harness {
        let journal = Journal::default();
        Harness {
            policy: policy(POLICY),
            store: recorded_store(&journal),
            journal,
        }
    }

    fn task(&self, id: &str, channel: &str, user: Option<&str>) -> Task {
        gateway_task(&self.policy, id, channel, user)
    }

    /// Runs the tasks through one worker until the source ends.
    async fn decide(&self, tasks: Vec<Task>) {
        let source = ScriptedSource::new(tasks.into_iter().map(Delivery::of), &self.journal);
        let worker = worker(&self.policy, self.store.clone(), Registry::builtin(), 4);
        within_an_hour(worker.run(source)).await;
    }

    fn allowed(&self, id: &str) -> bool {
        let reply = self.journal.reply(id);
        assert_eq!(reply["id"], id);
        reply["ok"] == true
    }

    /// The refusal reason, on the wire.
    fn reason(&self, id: &str) -> Value {
        let reply = self.journal.reply(id);
        assert_eq!(reply["ok"], false, "{id}: {reply}");
        reply["reason"].clone()
    }
}

fn with_claim(mut task: Task, claim: &str, value: &str) -> Task {
    task.claims.insert(claim.to_owned(), Value::from(value));
    task
}

#[tokio::test(start_paused = true)]
async fn anyone_and_owner_rules_decide_by_the_caller() {
    let h = Harness::new();
    h.decide(vec![
        h.task("lobby-guest", "private-lobby@1", None),
        h.task("own-inbox", "private-inbox@alice", Some("alice")),
        h.task("other-inbox", "private-inbox@alice", Some("mallory")),
        h.task("anonymous-inbox", "private-inbox@alice", None),
    ])
    .await;

    assert!(h.allowed("lobby-guest"));
    assert!(h.allowed("own-inbox"));
    assert_eq!(h.reason("other-inbox"), "forbidden");
    assert_eq!(h.reason("anonymous-inbox"), "unauthenticated");
}

#[tokio::test(start_paused = true)]
async fn member_rule_follows_the_store() {
    let h = Harness::new();
    h.store
        .inner
        .add_member("private-team@7", "alice")
        .await
        .unwrap();
    h.decide(vec![
        h.task("member", "private-team@7", Some("alice")),
        h.task("outsider", "private-team@7", Some("mallory")),
        h.task("other-team", "private-team@8", Some("alice")),
    ])
    .await;

    assert!(h.allowed("member"));
    assert_eq!(h.reason("outsider"), "forbidden");
    assert_eq!(h.reason("other-team"), "forbidden");
}

#[tokio::test(start_paused = true)]
async fn claims_rule_compares_the_token_with_the_channel() {
    let h = Harness::new();
    let channel = "private-booking-BK-1";
    h.decide(vec![
        with_claim(h.task("guest", channel, None), "booking_id", "BK-1"),
        with_claim(h.task("other-guest", channel, None), "booking_id", "BK-2"),
        h.task("no-token", channel, None),
    ])
    .await;

    assert!(h.allowed("guest"));
    assert_eq!(h.reason("other-guest"), "claim_mismatch:booking_id");
    assert_eq!(h.reason("no-token"), "unauthenticated");
}

#[tokio::test(start_paused = true)]
async fn a_rule_the_workers_policy_does_not_match_is_refused_no_rule() {
    let h = Harness::new();
    h.store
        .inner
        .add_member("private-team@7", "alice")
        .await
        .unwrap();
    // A gateway on another policy matched `private-team@7` to a rule of its own; this
    // worker's policy says `team`, which would allow alice.
    let mut foreign = h.task("foreign", "private-team@7", Some("alice"));
    foreign.rule = "lobby".to_owned();
    h.decide(vec![
        foreign,
        h.task("agreed", "private-team@7", Some("alice")),
    ])
    .await;

    assert_eq!(h.reason("foreign"), "no_rule");
    assert!(h.allowed("agreed"));
    // Only the agreed task reached the member check.
    assert_eq!(h.journal.store_calls(), 1, "{:?}", h.journal.steps());
}
