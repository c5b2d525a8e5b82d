//! The worker's Prometheus metrics, in `prometheus-client` types, served by the
//! [`crate::listener`] at `/metrics` in the same text format as the gateway's page
//! (`porter_gateway::metrics`): version 0.0.4, counters registered without `_total` (the
//! encoder appends it), no `# EOF`.
//!
//! [`WorkerMetrics`] is a recorder handed to the parts that see what happens: the runner
//! records each task's outcome, duration and the tasks in flight, the webhook client its calls,
//! the authorizer its store errors. None of them decides anything from it. What the task source
//! keeps itself (connected, tasks dropped unauthenticated) is mirrored from its
//! [`SourceStatus`] when the page is rendered, as the gateway mirrors its pending-task table.
//!
//! Label values are bounded: queues and outcomes are fixed sets, refusal reasons are Porter's
//! stable codes (an application's own reason text counts as `application`), and rules are the
//! worker's policy's rule names (a task naming any other rule counts as `unknown`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use porter_broker::SourceStatus;
use porter_core::reason::Reason;
use porter_core::routing::Queue;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::publish::metrics::PublishMetrics;

/// The `Content-Type` of [`WorkerMetrics::render`]'s page.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the task and webhook duration histograms, in seconds: from a store round
/// trip to past the longest default time limit (4 s).
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The rule label of a task whose rule the worker's policy does not have.
const UNKNOWN_RULE: &str = "unknown";

/// How a task ended, as `porter_worker_tasks_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    Allowed,
    /// The authorizer refused; the reason is counted by `porter_worker_refusals_total`.
    Refused,
    /// Past its deadline before it started: not run.
    Expired,
    /// The authorizer ran past the time limit and was cancelled.
    TimeLimitExceeded,
    /// The body did not decode, or is in an unknown format version.
    Malformed,
    /// Dropped by the source: it did not authenticate under the task keys.
    Unauthenticated,
    /// Delivered too many times: refused without running (see `runner::GIVE_UP_DELIVERY_COUNT`).
    GaveUp,
}

impl TaskOutcome {
    pub const ALL: [TaskOutcome; 7] = [
        TaskOutcome::Allowed,
        TaskOutcome::Refused,
        TaskOutcome::Expired,
        TaskOutcome::TimeLimitExceeded,
        TaskOutcome::Malformed,
        TaskOutcome::Unauthenticated,
        TaskOutcome::GaveUp,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TaskOutcome::Allowed => "allowed",
            TaskOutcome::Refused => "refused",
            TaskOutcome::Expired => "expired",
            TaskOutcome::TimeLimitExceeded => "time_limit_exceeded",
            TaskOutcome::Malformed => "malformed",
            TaskOutcome::Unauthenticated => "unauthenticated",
            TaskOutcome::GaveUp => "gave_up",
        }
    }
}

/// Why a webhook call gave no usable answer, as `porter_worker_webhook_failures_total` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFailure {
    /// No answer within the rule's webhook timeout.
    Timeout,
    /// Connection refused, reset, DNS, TLS: no HTTP answer at all.
    Unreachable,
    /// An HTTP answer other than 2xx.
    Status,
    /// A 2xx answer whose body is not the expected JSON.
    InvalidAnswer,
}

impl WebhookFailure {
    pub fn label(self) -> &'static str {
        match self {
            WebhookFailure::Timeout => "timeout",
            WebhookFailure::Unreachable => "unreachable",
            WebhookFailure::Status => "status",
            WebhookFailure::InvalidAnswer => "invalid_answer",
        }
    }
}

type QueueOutcome = [(&'static str, &'static str); 2];
type OneLabel = [(&'static str, &'static str); 1];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    queue: &'static str,
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

/// The worker's metrics; one per process, shared by the runner, the authorizer and the
/// listener.
pub struct WorkerMetrics {
    /// The mutex serializes scrapes: the mirrored values are set just before encoding.
    registry: Mutex<Registry>,
    tasks: Family<QueueOutcome, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    redelivered: Family<OneLabel, Counter>,
    /// Handles into `task_duration` by rule name, so that an observation allocates nothing.
    rule_durations: HashMap<String, Histogram>,
    unknown_rule_duration: Histogram,
    in_flight: Gauge,
    concurrency_limit: Gauge,
    webhook_duration: Histogram,
    webhook_failures: Family<OneLabel, Counter>,
    store_errors: Counter,
    broker_connected: Gauge,
    /// Applying published events (`porter worker --events`).
    publish: PublishMetrics,
}

impl Default for WorkerMetrics {
    /// Metrics that know no rule names: every duration counts as `unknown`.
    fn default() -> WorkerMetrics {
        WorkerMetrics::new(std::iter::empty::<&str>())
    }
}

impl WorkerMetrics {
    /// Metrics whose `rule` label takes the names of `rules` (the worker's policy's).
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a str>) -> WorkerMetrics {
        let histogram = || Histogram::new(BUCKETS);
        let tasks = Family::<QueueOutcome, Counter>::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let redelivered = Family::<OneLabel, Counter>::default();
        let task_duration = Family::<RuleLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(BUCKETS)) as fn() -> Histogram,
        );
        let webhook_failures = Family::<OneLabel, Counter>::default();
        // Every queue and outcome shows from the first scrape, so rates and alerts start at 0.
        for queue in Queue::ALL {
            for outcome in TaskOutcome::ALL {
                let _ = tasks
                    .get_or_create_owned(&[("queue", queue.name()), ("outcome", outcome.label())]);
            }
            let _ = redelivered.get_or_create_owned(&[("queue", queue.name())]);
        }
        let rule_durations = rules
            .into_iter()
            .map(|rule| {
                let series = task_duration
                    .get_or_create(&RuleLabel {
                        rule: rule.to_owned(),
                    })
                    .clone();
                (rule.to_owned(), series)
            })
            .collect();
        let unknown_rule_duration = task_duration
            .get_or_create(&RuleLabel {
                rule: UNKNOWN_RULE.to_owned(),
            })
            .clone();
        let in_flight = Gauge::default();
        let concurrency_limit = Gauge::default();
        let webhook_duration = histogram();
        let store_errors = Counter::default();
        let broker_connected = Gauge::default();

        let mut registry = Registry::default();
        registry.register(
            "porter_worker_tasks",
            "Tasks taken from a queue, by how they ended",
            tasks.clone(),
        );
        registry.register(
            "porter_worker_refusals",
            "Tasks the authorizer refused, by reason code",
            refusals.clone(),
        );
        registry.register(
            "porter_worker_redelivered_tasks",
            "Tasks the broker delivered again after an earlier delivery was not acknowledged",
            redelivered.clone(),
        );
        registry.register(
            "porter_worker_task_duration_seconds",
            "Time the authorizer took on a task, by policy rule",
            task_duration.clone(),
        );
        registry.register(
            "porter_worker_tasks_in_flight",
            "Tasks running now",
            in_flight.clone(),
        );
        registry.register(
            "porter_worker_concurrency_limit",
            "Tasks this worker runs at once at most",
            concurrency_limit.clone(),
        );
        registry.register(
            "porter_worker_webhook_duration_seconds",
            "Time of webhook authorizer calls, answered or not",
            webhook_duration.clone(),
        );
        registry.register(
            "porter_worker_webhook_failures",
            "Webhook authorizer calls without a usable answer, by kind",
            webhook_failures.clone(),
        );
        registry.register(
            "porter_worker_store_errors",
            "Store calls of the authorizer that failed",
            store_errors.clone(),
        );
        registry.register(
            "porter_worker_broker_connected",
            "1 while the worker is connected to the broker",
            broker_connected.clone(),
        );

        let publish = PublishMetrics::default();
        publish.register(&mut registry);

        WorkerMetrics {
            registry: Mutex::new(registry),
            tasks,
            refusals,
            redelivered,
            rule_durations,
            unknown_rule_duration,
            in_flight,
            concurrency_limit,
            webhook_duration,
            webhook_failures,
            store_errors,
            broker_connected,
            publish,
        }
    }

    /// The recorder of applying published events.
    pub fn publish(&self) -> &PublishMetrics {
        &self.publish
    }

    pub fn task(&self, queue: Queue, outcome: TaskOutcome) {
        self.tasks
            .get_or_create(&[("queue", queue.name()), ("outcome", outcome.label())])
            .inc();
    }

    /// Counts a refusal by its stable code; an application's own words count as
    /// `application` and a claim mismatch as `claim_mismatch`, so labels stay few.
    pub fn refusal(&self, queue: Queue, reason: &Reason) {
        let reason = match reason {
            Reason::Application(_) => "application".to_owned(),
            Reason::ClaimMismatch(_) => "claim_mismatch".to_owned(),
            other => other.as_str().into_owned(),
        };
        self.refusals
            .get_or_create(&RefusalLabels {
                queue: queue.name(),
                reason,
            })
            .inc();
    }

    pub fn redelivered(&self, queue: Queue) {
        self.redelivered
            .get_or_create(&[("queue", queue.name())])
            .inc();
    }

    pub fn task_duration(&self, rule: &str, elapsed: Duration) {
        self.rule_durations
            .get(rule)
            .unwrap_or(&self.unknown_rule_duration)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a task as running until the guard drops.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub fn set_concurrency_limit(&self, limit: usize) {
        self.concurrency_limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    pub fn webhook_call(&self, elapsed: Duration, failure: Option<WebhookFailure>) {
        self.webhook_duration.observe(elapsed.as_secs_f64());
        if let Some(failure) = failure {
            self.webhook_failures
                .get_or_create(&[("kind", failure.label())])
                .inc();
        }
    }

    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// The page, with the source's own counts mirrored in (`None`: no source to report, and
    /// the broker counts as not connected).
    pub fn render(&self, source: Option<&SourceStatus>) -> String {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let connected = source.is_some_and(SourceStatus::is_connected);
        self.broker_connected.set(i64::from(connected));
        if let Some(source) = source {
            for queue in Queue::ALL {
                // The source owns this count; the counter only mirrors it for the page.
                self.tasks
                    .get_or_create(&[
                        ("queue", queue.name()),
                        ("outcome", TaskOutcome::Unauthenticated.label()),
                    ])
                    .inner()
                    .store(source.unauthenticated(queue), Ordering::Relaxed);
            }
        }
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; a partial page with a log line beats no page.
        if let Err(error) = prometheus_text::encode(&mut out, &registry) {
            tracing::error!(%error, "encoding the metrics page failed");
        }
        out
    }

    /// Tasks counted with this queue and outcome so far.
    pub fn task_count(&self, queue: Queue, outcome: TaskOutcome) -> u64 {
        self.tasks
            .get_or_create(&[("queue", queue.name()), ("outcome", outcome.label())])
            .get()
    }
}

/// A task counted in `porter_worker_tasks_in_flight` while this lives.
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_line(page: &str, line: &str) -> bool {
        page.lines().any(|l| l == line)
    }

    #[test]
    fn every_metric_keeps_its_name_and_type_from_the_first_scrape() {
        let metrics = WorkerMetrics::new(["open"]);
        metrics.refusal(Queue::Auth, &Reason::Forbidden);
        metrics.webhook_call(Duration::from_millis(3), Some(WebhookFailure::Timeout));
        let page = metrics.render(None);
        for (name, kind) in [
            ("porter_worker_tasks_total", "counter"),
            ("porter_worker_refusals_total", "counter"),
            ("porter_worker_redelivered_tasks_total", "counter"),
            ("porter_worker_task_duration_seconds", "histogram"),
            ("porter_worker_tasks_in_flight", "gauge"),
            ("porter_worker_concurrency_limit", "gauge"),
            ("porter_worker_webhook_duration_seconds", "histogram"),
            ("porter_worker_webhook_failures_total", "counter"),
            ("porter_worker_store_errors_total", "counter"),
            ("porter_worker_broker_connected", "gauge"),
        ] {
            assert!(
                has_line(&page, &format!("# TYPE {name} {kind}")),
                "{name} {kind}:\n{page}"
            );
        }
        for queue in ["auth", "auth/high"] {
            for outcome in TaskOutcome::ALL {
                let line = format!(
                    "porter_worker_tasks_total{{queue=\"{queue}\",outcome=\"{}\"}} 0",
                    outcome.label()
                );
                assert!(has_line(&page, &line), "{line}");
            }
        }
        assert!(has_line(
            &page,
            r#"porter_worker_webhook_failures_total{kind="timeout"} 1"#
        ));
        assert!(!page.contains("# EOF"), "{page}");
    }

    #[test]
    fn labels_stay_few_whatever_the_tasks_say() {
        let metrics = WorkerMetrics::new(["open"]);
        metrics.refusal(Queue::Auth, &Reason::Application("no such seat 1".into()));
        metrics.refusal(Queue::Auth, &Reason::Application("no such seat 2".into()));
        metrics.refusal(Queue::AuthHigh, &Reason::ClaimMismatch("tenant".into()));
        metrics.task_duration("open", Duration::from_millis(1));
        metrics.task_duration("made-up-rule", Duration::from_millis(1));
        let page = metrics.render(None);
        for line in [
            r#"porter_worker_refusals_total{queue="auth",reason="application"} 2"#,
            r#"porter_worker_refusals_total{queue="auth/high",reason="claim_mismatch"} 1"#,
            r#"porter_worker_task_duration_seconds_count{rule="open"} 1"#,
            r#"porter_worker_task_duration_seconds_count{rule="unknown"} 1"#,
        ] {
            assert!(has_line(&page, line), "missing `{line}` in:\n{page}");
        }
        assert!(!page.contains("seat"), "{page}");
        assert!(!page.contains("made-up-rule"), "{page}");
    }

    #[test]
    fn the_sources_counts_and_connection_are_mirrored_and_in_flight_tasks_counted() {
        let metrics = WorkerMetrics::default();
        let source = SourceStatus::default();
        source.set_connected(true);
        source.count_unauthenticated(Queue::AuthHigh);
        source.count_unauthenticated(Queue::AuthHigh);
        let held = metrics.in_flight();
        let page = metrics.render(Some(&source));
        assert!(
            has_line(&page, "porter_worker_broker_connected 1"),
            "{page}"
        );
        assert!(has_line(&page, "porter_worker_tasks_in_flight 1"), "{page}");
        assert!(has_line(
            &page,
            r#"porter_worker_tasks_total{queue="auth/high",outcome="unauthenticated"} 2"#
        ));
        drop(held);
        source.set_connected(false);
        let page = metrics.render(Some(&source));
        assert!(
            has_line(&page, "porter_worker_broker_connected 0"),
            "{page}"
        );
        assert!(has_line(&page, "porter_worker_tasks_in_flight 0"), "{page}");
    }
}
