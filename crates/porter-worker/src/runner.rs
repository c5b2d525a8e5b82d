//! The worker loop: bounded concurrency, deadlines, time limits, reply-then-ack, a give-up
//! on tasks delivered too often, and a drain on shutdown that hands back what it has not
//! started.
//!
//! The loop takes a free slot before it asks the source for a task, so that every task it
//! holds is running: a stop then leaves nothing waiting in the loop, and the source hands back
//! whatever the transport had buffered ([`TaskSource::stop_consuming`]) before the drain, not
//! after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use porter_broker::{DeliveryHistory, Incoming, TaskSource, now_ms};
use porter_core::reason::Reason;
use porter_core::routing::Route;
use porter_core::wire::Reply;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::Authorizer;
use crate::metrics::{TaskOutcome, WorkerMetrics};

/// The time limit when a task carries none: the policy's default route's.
const DEFAULT_TIME_LIMIT: Duration = Route::DEFAULT.time_limit;

/// A task the broker says it delivered this many times before without an acknowledgement is
/// refused without running.
///
/// Why: a task whose authorization kills the worker that runs it (a crash, an out-of-memory
/// kill) is never acknowledged, so the broker hands it to the next worker, which it kills
/// too. Only quorum queues count deliveries (`x-delivery-count`), and they drop a message
/// past the queue's `x-delivery-limit` (`porter_broker::amqp::QUORUM_DELIVERY_LIMIT`, above
/// this) without a word; giving up below that limit answers the
/// gateway (`internal_error`, logged with the task id and the count) instead of leaving its
/// channel to time out. Six earlier deliveries leave room for what is not the task's fault:
/// each hand-back of a drain and each lost connection also counts as a delivery, and a node
/// loss on a cluster measured counts of 3-4 on healthy tasks (docs/reliability.md, "Clusters").
/// A poison task circles at most until its `expiration` (seconds) anyway.
pub const GIVE_UP_DELIVERY_COUNT: u64 = 6;

// The worker must give up before the broker drops the task silently.
const _: () = assert!(
    (GIVE_UP_DELIVERY_COUNT as i64) < porter_broker::amqp::QUORUM_DELIVERY_LIMIT,
    "GIVE_UP_DELIVERY_COUNT must stay below the quorum queues' x-delivery-limit"
);

#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Tasks run at once.
    pub concurrency: usize,
}

pub struct Worker {
    authorizer: Authorizer,
    config: WorkerConfig,
    metrics: Arc<WorkerMetrics>,
}

impl Worker {
    pub fn new(authorizer: Authorizer, config: WorkerConfig) -> Worker {
        let metrics = Arc::new(WorkerMetrics::new(authorizer.rule_names()));
        Worker {
            authorizer,
            config,
            metrics,
        }
    }

    /// Records into `metrics` (the listener's) instead of a private set.
    pub fn with_metrics(mut self, metrics: Arc<WorkerMetrics>) -> Worker {
        self.metrics = metrics;
        self
    }

    /// Runs until the source stops; then hands back what the source holds unstarted, waits
    /// for the tasks in hand, and shuts the source.
    pub async fn run(&self, mut source: impl TaskSource) {
        let limit = self.config.concurrency.max(1);
        self.metrics.set_concurrency_limit(limit);
        let permits = Arc::new(Semaphore::new(limit));
        let mut stopping = source.stopping();
        loop {
            // A slot first: a task is taken only when it can start at once.
            let permit = tokio::select! {
                biased;
                () = &mut stopping => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let Some(incoming) = source.next().await else {
                break;
            };
            let authorizer = self.authorizer.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                handle(&authorizer, &metrics, incoming).await;
                drop(permit);
            });
        }
        info!("stopping: handing back the tasks not started, then finishing the tasks in hand");
        source.stop_consuming().await;
        // Every permit back means every task in hand has replied and acked.
        let _ = permits.acquire_many(limit as u32).await;
        source.shutdown().await;
    }
}

/// Runs one task, answers it, and records how it ended.
pub async fn handle(authorizer: &Authorizer, metrics: &WorkerMetrics, incoming: Incoming) {
    let Incoming {
        task,
        correlation_id,
        queue,
        history,
        deadline_ms,
        time_limit,
        responder,
    } = incoming;
    let _in_flight = metrics.in_flight();
    let id = task
        .as_ref()
        .map(|t| t.id.clone())
        .ok()
        .or(correlation_id)
        .unwrap_or_default();
    let channel = task.as_ref().map(|t| t.channel.clone()).unwrap_or_default();
    let span = info_span!(
        "task",
        task_id = %id,
        %channel,
        outcome = tracing::field::Empty,
        reason = tracing::field::Empty
    );
    async {
        if history.redelivered {
            metrics.redelivered(queue);
        }
        let (reply, outcome) = match task {
            Err(error) => {
                warn!(%error, "malformed task");
                (
                    Reply::refused(id.clone(), Reason::Internal),
                    TaskOutcome::Malformed,
                )
            }
            Ok(_) if gives_up(history) => {
                error!(
                    %queue,
                    previous_deliveries = history.previous_deliveries,
                    "task delivered too many times (it may kill the workers that run it); refused without running"
                );
                (
                    Reply::refused(id.clone(), Reason::Internal),
                    TaskOutcome::GaveUp,
                )
            }
            Ok(task) if !task.is_understood() => {
                warn!(version = task.v, kind = ?task.kind, "task in an unknown format version");
                (
                    Reply::refused(id.clone(), Reason::Internal),
                    TaskOutcome::Malformed,
                )
            }
            Ok(_) if deadline_ms.is_some_and(|deadline| now_ms() > deadline) => (
                Reply::refused(id.clone(), Reason::Expired),
                TaskOutcome::Expired,
            ),
            Ok(task) => {
                let limit = time_limit.unwrap_or(DEFAULT_TIME_LIMIT);
                let started = Instant::now();
                let result = tokio::time::timeout(limit, authorizer.authorize(&task)).await;
                metrics.task_duration(&task.rule, started.elapsed());
                match result {
                    Ok(Ok(data)) => (Reply::allowed(id.clone(), data), TaskOutcome::Allowed),
                    Ok(Err(reason)) => {
                        metrics.refusal(queue, &reason);
                        (Reply::refused(id.clone(), reason), TaskOutcome::Refused)
                    }
                    Err(_) => (
                        Reply::refused(id.clone(), Reason::TimeLimitExceeded),
                        TaskOutcome::TimeLimitExceeded,
                    ),
                }
            }
        };
        metrics.task(queue, outcome);
        let span = tracing::Span::current();
        span.record("outcome", outcome.label());
        if let Some(reason) = &reply.reason {
            span.record("reason", &*reason.as_str());
        }
        debug!("task done");
        if let Err(error) = responder.reply_and_ack(&reply).await {
            // Not acked: the broker hands the task to another worker.
            warn!(%error, "could not reply; leaving the task to the broker");
        }
    }
    .instrument(span)
    .await;
}

/// Whether a task has been delivered too often to run ([`GIVE_UP_DELIVERY_COUNT`]).
fn gives_up(history: DeliveryHistory) -> bool {
    history
        .previous_deliveries
        .is_some_and(|count| count >= GIVE_UP_DELIVERY_COUNT)
}
