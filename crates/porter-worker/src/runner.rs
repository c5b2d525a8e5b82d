//! The worker loop: bounded concurrency, deadlines, time limits, reply-then-ack, and a
//! graceful drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use porter_broker::{Incoming, TaskSource, now_ms};
use porter_core::reason::Reason;
use porter_core::routing::Route;
use porter_core::wire::Reply;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info_span, warn};

use crate::Authorizer;

/// The time limit when a task carries none: the policy's default route's.
const DEFAULT_TIME_LIMIT: Duration = Route::DEFAULT.time_limit;

#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Tasks run at once.
    pub concurrency: usize,
}

pub struct Worker {
    authorizer: Authorizer,
    config: WorkerConfig,
}

impl Worker {
    pub fn new(authorizer: Authorizer, config: WorkerConfig) -> Worker {
        Worker { authorizer, config }
    }

    /// Runs until the source stops, then waits for the tasks in hand and shuts the source.
    pub async fn run(&self, mut source: impl TaskSource) {
        let limit = self.config.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(limit));
        while let Some(incoming) = source.next().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let authorizer = self.authorizer.clone();
            tokio::spawn(async move {
                handle(&authorizer, incoming).await;
                drop(permit);
            });
        }
        // Every permit back means every task in hand has replied and acked.
        let _ = permits.acquire_many(limit as u32).await;
        source.shutdown().await;
    }
}

/// Runs one task and answers it.
pub async fn handle(authorizer: &Authorizer, incoming: Incoming) {
    let Incoming {
        task,
        correlation_id,
        deadline_ms,
        time_limit,
        responder,
    } = incoming;
    let id = task
        .as_ref()
        .map(|t| t.id.clone())
        .ok()
        .or(correlation_id)
        .unwrap_or_default();
    let channel = task.as_ref().map(|t| t.channel.clone()).unwrap_or_default();
    let span = info_span!("task", task_id = %id, %channel, outcome = tracing::field::Empty);
    async {
        let reply = match task {
            Err(error) => {
                warn!(%error, "malformed task");
                Reply::refused(id.clone(), Reason::Internal)
            }
            Ok(task) if task.v != porter_core::wire::FORMAT_VERSION => {
                warn!(version = task.v, "task in an unknown format version");
                Reply::refused(id.clone(), Reason::Internal)
            }
            Ok(_) if deadline_ms.is_some_and(|deadline| now_ms() > deadline) => {
                Reply::refused(id.clone(), Reason::Expired)
            }
            Ok(task) => {
                let limit = time_limit.unwrap_or(DEFAULT_TIME_LIMIT);
                match tokio::time::timeout(limit, authorizer.authorize(&task)).await {
                    Ok(Ok(data)) => Reply::allowed(id.clone(), data),
                    Ok(Err(reason)) => Reply::refused(id.clone(), reason),
                    Err(_) => Reply::refused(id.clone(), Reason::TimeLimitExceeded),
                }
            }
        };
        let outcome = match &reply.reason {
            None => std::borrow::Cow::Borrowed("authorized"),
            Some(reason) => reason.as_str(),
        };
        tracing::Span::current().record("outcome", &*outcome);
        debug!("task done");
        if let Err(error) = responder.reply_and_ack(&reply).await {
            // Not acked: the broker hands the task to another worker.
            warn!(%error, "could not reply; leaving the task to the broker");
        }
    }
    .instrument(span)
    .await;
}
