//! The metrics of applying published events, registered into the worker's page by
//! `crate::metrics::WorkerMetrics` (every one is in `docs/metrics.md`). Label values are
//! fixed sets.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type OneLabel = [(&'static str, &'static str); 1];

/// How a publication taken from the events queue was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Every step applied (now or by an earlier delivery): acknowledged.
    Applied,
    /// A step could not run yet (store or broker away): handed back for another try.
    Requeued,
    /// It can never be applied (malformed, refused or kept failing upstream): to the
    /// dead-letter queue.
    DeadLettered,
}

impl Settled {
    pub const ALL: [Settled; 3] = [Settled::Applied, Settled::Requeued, Settled::DeadLettered];

    pub fn label(self) -> &'static str {
        match self {
            Settled::Applied => "applied",
            Settled::Requeued => "requeued",
            Settled::DeadLettered => "dead_lettered",
        }
    }
}

/// One attempt to forward a publication upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAttempt {
    /// A 2xx answer.
    Ok,
    /// A 5xx or 429 answer, or no answer at all: retried while attempts remain.
    Retryable,
    /// A 3xx or another 4xx: not retried.
    Refused,
}

impl UpstreamAttempt {
    pub const ALL: [UpstreamAttempt; 3] = [
        UpstreamAttempt::Ok,
        UpstreamAttempt::Retryable,
        UpstreamAttempt::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpstreamAttempt::Ok => "ok",
            UpstreamAttempt::Retryable => "retryable",
            UpstreamAttempt::Refused => "refused",
        }
    }
}

/// The counters; cheap to clone (the series are shared).
#[derive(Clone, Default)]
pub struct PublishMetrics {
    publications: Family<OneLabel, Counter>,
    upstream: Family<OneLabel, Counter>,
    retained: Family<OneLabel, Counter>,
    sessions: Family<OneLabel, Counter>,
    duplicates: Counter,
}

impl PublishMetrics {
    /// Registers every series, each label value from 0.
    pub fn register(&self, registry: &mut Registry) {
        for settled in Settled::ALL {
            let _ = self
                .publications
                .get_or_create(&[("outcome", settled.label())]);
        }
        for attempt in UpstreamAttempt::ALL {
            let _ = self.upstream.get_or_create(&[("outcome", attempt.label())]);
        }
        for result in ["written", "older"] {
            let _ = self.retained.get_or_create(&[("result", result)]);
        }
        for result in ["delivered", "no_exchange", "routing_key_too_long"] {
            let _ = self.sessions.get_or_create(&[("result", result)]);
        }
        registry.register(
            "porter_worker_publications",
            "Publications taken from the events queue, by how they were settled",
            self.publications.clone(),
        );
        registry.register(
            "porter_worker_upstream_requests",
            "Requests forwarding a publication to an upstream server, by outcome",
            self.upstream.clone(),
        );
        registry.register(
            "porter_worker_retained_events",
            "Published events kept as retained state, or ignored as older than the one held",
            self.retained.clone(),
        );
        registry.register(
            "porter_worker_session_deliveries",
            "Published events sent to a session exchange, or skipped as the exchange is gone or the routing key too long",
            self.sessions.clone(),
        );
        registry.register(
            "porter_worker_publication_steps_skipped",
            "Steps of a redelivered publication skipped because they were applied before",
            self.duplicates.clone(),
        );
    }

    pub fn settled(&self, settled: Settled) {
        self.publications
            .get_or_create(&[("outcome", settled.label())])
            .inc();
    }

    pub fn upstream(&self, attempt: UpstreamAttempt) {
        self.upstream
            .get_or_create(&[("outcome", attempt.label())])
            .inc();
    }

    pub fn retained(&self, written: bool) {
        let result = if written { "written" } else { "older" };
        self.retained.get_or_create(&[("result", result)]).inc();
    }

    pub fn session(&self, delivered: bool) {
        let result = if delivered {
            "delivered"
        } else {
            "no_exchange"
        };
        self.sessions.get_or_create(&[("result", result)]).inc();
    }

    /// An event not sent to one session: its routing key is longer than AMQP allows.
    pub fn session_skipped_key_too_long(&self) {
        self.sessions
            .get_or_create(&[("result", "routing_key_too_long")])
            .inc();
    }

    /// The count of session deliveries with `result` (for tests).
    pub fn session_count(&self, result: &'static str) -> u64 {
        self.sessions.get_or_create(&[("result", result)]).get()
    }

    pub fn step_skipped(&self) {
        self.duplicates.inc();
    }

    /// The count of publications settled so (for tests).
    pub fn settled_count(&self, settled: Settled) -> u64 {
        self.publications
            .get_or_create(&[("outcome", settled.label())])
            .get()
    }
}
