//! Shared harness for the worker's in-process tests: a scripted [`TaskSource`], a
//! [`Responder`] that records what it is asked to do, a store that records its calls, and a
//! [`Gate`] receiver that holds tasks inside the authorizer until the test lets them go.
//!
//! Everything the worker does that a test may want to order — pulling a delivery, calling
//! the store, replying, acking, shutting the source — lands in one [`Journal`], so tests
//! assert on the sequence rather than on timing.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use porter_broker::{BrokerError, DeliveryHistory, Incoming, Responder, TaskSource, now_ms};
use porter_core::channel::Channel;
use porter_core::policy::Policy;
use porter_core::routing::Queue;
use porter_core::wire::{AuthData, FORMAT_VERSION, Reply, Task};
use porter_store::memory::MemoryStore;
use porter_store::observed::{Observed, Observer};
use porter_store::{Keys, StoreError};
use porter_worker::registry::{Context, Receiver, Registry};
use porter_worker::{Authorizer, Worker, WorkerConfig};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};

/// A time limit long enough never to fire in a test that is not about time limits.
pub const NO_TIME_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// One thing the worker did, as seen from outside it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The source handed out the delivery with this tag.
    Pulled(String),
    /// The source said it has stopped.
    SourceEnded,
    /// The authorizer called the store.
    Store(&'static str),
    /// The responder published this reply (its JSON wire form) for a delivery.
    Replied(String, Value),
    /// The responder was told to fail and did, without acking.
    ReplyFailed(String),
    /// The responder acknowledged the delivery.
    Acked(String),
    /// The worker told the source to stop consuming and hand back what it buffered.
    StoppedConsuming,
    /// The worker shut the source down.
    Shutdown,
}

/// The ordered record shared by the source, the responders and the store.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<Step>>>);

impl Journal {
    pub fn push(&self, step: Step) {
        self.0.lock().unwrap().push(step);
    }

    pub fn steps(&self) -> Vec<Step> {
        self.0.lock().unwrap().clone()
    }

    /// The one reply published for a delivery, in wire form.
    pub fn reply(&self, tag: &str) -> Value {
        let replies: Vec<Value> = self
            .steps()
            .into_iter()
            .filter_map(|step| match step {
                Step::Replied(t, wire) if t == tag => Some(wire),
                _ => None,
            })
            .collect();
        assert_eq!(replies.len(), 1, "replies for {tag}: {replies:?}");
        replies.into_iter().next().unwrap()
    }

    /// The steps that concern one delivery, in order.
    pub fn of(&self, tag: &str) -> Vec<Step> {
        self.steps()
            .into_iter()
            .filter(|step| match step {
                Step::Pulled(t) | Step::Replied(t, _) | Step::ReplyFailed(t) | Step::Acked(t) => {
                    t == tag
                }
                _ => false,
            })
            .collect()
    }

    pub fn count(&self, wanted: impl Fn(&Step) -> bool) -> usize {
        self.steps().iter().filter(|step| wanted(step)).count()
    }

    pub fn store_calls(&self) -> usize {
        self.count(|step| matches!(step, Step::Store(_)))
    }

    pub fn pulled(&self) -> usize {
        self.count(|step| matches!(step, Step::Pulled(_)))
    }
}

/// A task as a broker would deliver it, before it is handed out.
pub struct Delivery {
    tag: String,
    task: Result<Task, String>,
    deadline_ms: Option<u64>,
    time_limit: Option<Duration>,
    fail_reply: bool,
    history: DeliveryHistory,
}

impl Delivery {
    /// A well-formed task, tagged with its id, with no deadline and no time limit to speak of.
    pub fn of(task: Task) -> Delivery {
        Delivery {
            tag: task.id.clone(),
            task: Ok(task),
            deadline_ms: None,
            time_limit: Some(NO_TIME_LIMIT),
            fail_reply: false,
            history: DeliveryHistory::default(),
        }
    }

    /// A body that did not decode, known only by its correlation id.
    pub fn malformed(correlation_id: &str, error: &str) -> Delivery {
        Delivery {
            tag: correlation_id.to_owned(),
            task: Err(error.to_owned()),
            deadline_ms: None,
            time_limit: Some(NO_TIME_LIMIT),
            fail_reply: false,
            history: DeliveryHistory::default(),
        }
    }

    /// Delivered before: the `redelivered` flag, and the quorum queue's count of earlier
    /// deliveries when `previous` is set.
    pub fn redelivered(mut self, previous: Option<u64>) -> Delivery {
        self.history = DeliveryHistory {
            redelivered: true,
            previous_deliveries: previous,
        };
        self
    }

    /// A deadline that passed a second ago (deadlines are wall-clock unix milliseconds).
    pub fn past_deadline(mut self) -> Delivery {
        self.deadline_ms = Some(now_ms() - 1_000);
        self
    }

    /// A deadline an hour away.
    pub fn future_deadline(mut self) -> Delivery {
        self.deadline_ms = Some(now_ms() + 3_600_000);
        self
    }

    pub fn time_limit(mut self, limit: Duration) -> Delivery {
        self.time_limit = Some(limit);
        self
    }

    /// The responder fails to publish this delivery's reply.
    pub fn failing_reply(mut self) -> Delivery {
        self.fail_reply = true;
        self
    }
}

/// Hands out its deliveries in order, then reports that it has stopped; or, held open with a
/// [`StopSwitch`], waits like a broker with an empty queue until the switch is thrown.
pub struct ScriptedSource {
    deliveries: VecDeque<Delivery>,
    journal: Journal,
    stop: Option<watch::Receiver<bool>>,
}

impl ScriptedSource {
    pub fn new(deliveries: impl IntoIterator<Item = Delivery>, journal: &Journal) -> Self {
        ScriptedSource {
            deliveries: deliveries.into_iter().collect(),
            journal: journal.clone(),
            stop: None,
        }
    }

    /// A source that ends only when `switch` is thrown, as a signal stops a real one.
    pub fn held_open(
        deliveries: impl IntoIterator<Item = Delivery>,
        journal: &Journal,
        switch: &StopSwitch,
    ) -> Self {
        ScriptedSource {
            stop: Some(switch.0.subscribe()),
            ..ScriptedSource::new(deliveries, journal)
        }
    }
}

/// Stops a [`ScriptedSource::held_open`] source.
pub struct StopSwitch(watch::Sender<bool>);

impl StopSwitch {
    pub fn new() -> StopSwitch {
        StopSwitch(watch::channel(false).0)
    }

    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[async_trait]
impl TaskSource for ScriptedSource {
    async fn next(&mut self) -> Option<Incoming> {
        if self.stop.as_ref().is_some_and(|stop| *stop.borrow()) {
            self.journal.push(Step::SourceEnded);
            return None;
        }
        let Some(delivery) = self.deliveries.pop_front() else {
            if let Some(stop) = &self.stop {
                stopped(stop.clone()).await;
            }
            self.journal.push(Step::SourceEnded);
            return None;
        };
        self.journal.push(Step::Pulled(delivery.tag.clone()));
        Some(Incoming {
            task: delivery.task,
            correlation_id: Some(delivery.tag.clone()),
            queue: Queue::Auth,
            history: delivery.history,
            deadline_ms: delivery.deadline_ms,
            time_limit: delivery.time_limit,
            responder: Box::new(RecordingResponder {
                tag: delivery.tag,
                fail: delivery.fail_reply,
                journal: self.journal.clone(),
            }),
        })
    }

    fn stopping(&self) -> BoxFuture<'static, ()> {
        match &self.stop {
            Some(stop) => Box::pin(stopped(stop.clone())),
            None => Box::pin(std::future::pending()),
        }
    }

    async fn stop_consuming(&mut self) {
        self.journal.push(Step::StoppedConsuming);
    }

    async fn shutdown(&mut self) {
        self.journal.push(Step::Shutdown);
    }
}

/// Records the reply, then the ack, as a broker connection would perform them.
struct RecordingResponder {
    tag: String,
    fail: bool,
    journal: Journal,
}

#[async_trait]
impl Responder for RecordingResponder {
    async fn reply_and_ack(self: Box<Self>, reply: &Reply) -> Result<(), BrokerError> {
        if self.fail {
            self.journal.push(Step::ReplyFailed(self.tag));
            return Err(BrokerError::Closed);
        }
        let wire = serde_json::to_value(reply).expect("a reply serializes");
        self.journal.push(Step::Replied(self.tag.clone(), wire));
        self.journal.push(Step::Acked(self.tag));
        Ok(())
    }
}

/// Writes every store call the authorizer makes into the journal.
pub struct StoreCalls(Journal);

impl Observer for StoreCalls {
    fn before(&self, call: &'static str) -> Result<(), StoreError> {
        self.0.push(Step::Store(call));
        Ok(())
    }
}

pub type RecordedStore = Observed<MemoryStore, StoreCalls>;

/// A memory store whose calls are journaled; seed it through `.inner` to keep the seeding
/// out of the journal.
pub fn recorded_store(journal: &Journal) -> Arc<RecordedStore> {
    Arc::new(Observed::new(
        MemoryStore::new(Keys::new("worker-test:")),
        StoreCalls(journal.clone()),
    ))
}

pub fn policy(toml: &str) -> Arc<Policy> {
    Arc::new(Policy::from_toml(toml).expect("the test policy parses"))
}

pub fn worker(
    policy: &Arc<Policy>,
    store: Arc<RecordedStore>,
    registry: Registry,
    concurrency: usize,
) -> Worker {
    Worker::new(
        Authorizer::new(policy.clone(), store, registry),
        WorkerConfig { concurrency },
    )
}

/// The task a gateway with the same policy would send for `channel` on behalf of `user`.
pub fn gateway_task(policy: &Policy, id: &str, channel: &str, user: Option<&str>) -> Task {
    let matched = policy.match_name(channel).expect("the channel has a rule");
    let parsed = Channel::parse(channel).expect("the channel parses");
    Task {
        v: FORMAT_VERSION,
        id: id.to_owned(),
        channel: channel.to_owned(),
        channel_type: parsed.kind,
        feature: parsed.feature.to_owned(),
        object_id: parsed.object_id.map(str::to_owned),
        rule: matched.rule.name.clone(),
        captures: matched.captures,
        client_id: None,
        user_id: user.map(str::to_owned),
        claims: serde_json::Map::new(),
        dry_run: false,
        coalesce: false,
        kind: porter_core::wire::TaskKind::Channel,
    }
}

/// Fails the test instead of hanging it when the worker never gets there. Under paused time
/// the clock jumps straight to the hour once nothing else can run, so this costs nothing.
pub async fn within_an_hour<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(3600), future)
        .await
        .expect("the worker got stuck")
}

/// Lets every task that can make progress do so. Under paused time the sleep ends only once
/// the runtime has nothing else to run, so this is a barrier, not a guess at a duration.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A receiver that holds each task inside the authorizer until the test opens the gate,
/// counting how many are inside at once.
#[derive(Clone)]
pub struct Gate(Arc<GateState>);

struct GateState {
    permits: Semaphore,
    inside: AtomicUsize,
    most_inside: AtomicUsize,
    entered: AtomicUsize,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate(Arc::new(GateState {
            permits: Semaphore::new(0),
            inside: AtomicUsize::new(0),
            most_inside: AtomicUsize::new(0),
            entered: AtomicUsize::new(0),
        }))
    }

    /// Lets `n` more tasks through.
    pub fn open(&self, n: usize) {
        self.0.permits.add_permits(n);
    }

    /// Tasks held right now (a cancelled task leaves too).
    pub fn inside(&self) -> usize {
        self.0.inside.load(Ordering::SeqCst)
    }

    pub fn most_inside(&self) -> usize {
        self.0.most_inside.load(Ordering::SeqCst)
    }

    pub fn entered(&self) -> usize {
        self.0.entered.load(Ordering::SeqCst)
    }

    /// The built-in receivers plus this gate, for every channel.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::builtin();
        registry.register(None, None, Arc::new(self.clone()));
        registry
    }
}

/// Counts a task out of the gate however it leaves: let through or cancelled.
struct Inside<'a>(&'a AtomicUsize);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Receiver for Gate {
    fn name(&self) -> &'static str {
        "test_gate"
    }

    async fn receive(&self, _cx: &Context<'_>, _out: &mut AuthData) -> Result<(), StoreError> {
        let state = &self.0;
        state.entered.fetch_add(1, Ordering::SeqCst);
        let now = state.inside.fetch_add(1, Ordering::SeqCst) + 1;
        state.most_inside.fetch_max(now, Ordering::SeqCst);
        let _inside = Inside(&state.inside);
        // Each permit lets exactly one task through.
        state
            .permits
            .acquire()
            .await
            .expect("the gate is never closed for good")
            .forget();
        Ok(())
    }
}
