//! `porter-bench --scenario floor`: the transport floor.
//!
//! A bare publish → consume → reply loop over RabbitMQ through Porter's own transport
//! (`porter-broker`), with workers that answer every task at once without looking at it. No
//! HTTP, no policy, no Redis, no signing: the ceiling that `miss10` is measured against. Both
//! sides run in this process, the workers on their own connections as separate worker
//! processes would be, and `--reply-mode` compares the exclusive reply queue with direct
//! reply-to.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use porter_broker::amqp::{AmqpClient, AmqpConfig, AmqpSource, ReplyMode};
use porter_broker::{Outgoing, TaskClient, TaskSource, now_ms};
use porter_core::channel::ChannelKind;
use porter_core::routing::{Queue, Route};
use porter_core::wire::{AuthData, FORMAT_VERSION, Reply, Task};
use tokio_util::sync::CancellationToken;

/// Worker connections answering tasks.
const WORKERS: usize = 2;

/// One closed loop's latencies (µs) and failures.
pub struct LoopResult {
    pub latencies_us: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
}

/// Runs `in_flight` closed loops for `warmup + duration` and returns what was measured.
pub async fn run(
    amqp_url: &str,
    queue_prefix: &str,
    reply_mode: ReplyMode,
    in_flight: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Vec<LoopResult>> {
    let stop = CancellationToken::new();
    let config = AmqpConfig {
        url: amqp_url.to_owned(),
        queue_prefix: queue_prefix.to_owned(),
        reply_mode,
        // The floor measures the bare transport: unsigned, as a deployment without task keys.
        task_auth: porter_core::task_auth::TaskAuth::off(),
        queue_type: Default::default(),
    };
    for _ in 0..WORKERS {
        let source = AmqpSource::new(config.clone(), vec![Queue::Auth], 256, stop.clone());
        tokio::spawn(echo(source));
    }
    let client = AmqpClient::start(config, stop.clone());
    ensure!(
        client.wait_ready(Duration::from_secs(10)).await,
        "cannot connect to RabbitMQ at the given --amqp-url"
    );
    // Let the workers' consumers come up before the first task.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let measure_from = Instant::now() + warmup;
    let until = measure_from + duration;
    let loops: Vec<_> = (0..in_flight.max(1))
        .map(|_| tokio::spawn(closed_loop(client.clone(), measure_from, until)))
        .collect();
    let mut results = Vec::with_capacity(loops.len());
    for handle in loops {
        results.push(handle.await?);
    }
    stop.cancel();
    Ok(results)
}

/// Answers every task with an empty allow, then acks it.
async fn echo(mut source: AmqpSource) {
    while let Some(incoming) = source.next().await {
        let id = match &incoming.task {
            Ok(task) => task.id.clone(),
            Err(_) => incoming.correlation_id.clone().unwrap_or_default(),
        };
        tokio::spawn(async move {
            let reply = Reply::allowed(id, AuthData::default());
            let _ = incoming.responder.reply_and_ack(&reply).await;
        });
    }
    source.shutdown().await;
}

async fn closed_loop(client: AmqpClient, measure_from: Instant, until: Instant) -> LoopResult {
    let mut result = LoopResult {
        latencies_us: Vec::new(),
        errors: BTreeMap::new(),
    };
    let route = Route::DEFAULT;
    loop {
        let started = Instant::now();
        if started >= until {
            return result;
        }
        let task = Task {
            v: FORMAT_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            channel: "private-floor@1".to_owned(),
            channel_type: ChannelKind::Private,
            feature: "floor".to_owned(),
            object_id: Some("1".to_owned()),
            rule: "floor".to_owned(),
            captures: BTreeMap::new(),
            client_id: None,
            user_id: None,
            claims: serde_json::Map::new(),
            dry_run: false,
            coalesce: false,
            kind: porter_core::wire::TaskKind::Channel,
        };
        let waiter = client.pending().register(&task.id);
        let outgoing = Outgoing {
            task: &task,
            route,
            deadline_ms: now_ms() + route.expires.as_millis() as u64,
        };
        let outcome = match client.publish(&[outgoing]).await {
            Err(_) => Err("publish"),
            Ok(()) => {
                let deadline = tokio::time::Instant::now() + route.expires;
                match waiter.wait_until(deadline).await {
                    Some(reply) if reply.ok => Ok(()),
                    Some(_) => Err("refused"),
                    None => Err("timeout"),
                }
            }
        };
        if started < measure_from {
            continue;
        }
        match outcome {
            Ok(()) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                result.latencies_us.push(micros);
            }
            Err(kind) => {
                *result.errors.entry(kind.to_owned()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
