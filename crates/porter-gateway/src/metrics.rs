//! The gateway's Prometheus metrics, kept in `prometheus-client` types and served at `/metrics`.
//!
//! The exposition is the Prometheus text format, version 0.0.4 (prometheus-client's
//! `prometheus_text` encoder), served as [`CONTENT_TYPE`]. That format, rather than the crate's
//! OpenMetrics encoder, is chosen because it is byte-for-byte the shape the gateway rendered by
//! hand before: counters keep `_total` on their `# HELP`/`# TYPE` lines, there is no `# EOF`
//! terminator and no `_created` series, and histogram `le` bounds are written as Go writes them
//! (`le="1"`, not `le="1.0"`). Dashboards and the old system's scrapers read it unchanged, and the
//! two halves of the page ([`Metrics::render`] and [`Metrics::render_protection`]) can still be
//! concatenated, which an OpenMetrics body (one `# EOF`, at the very end) would not allow.
//!
//! Counters are registered without `_total`; the encoder appends it, so the names on the page are
//! `porter_http_requests_total`, `authorization_errors_total` (the previous system's name, without
//! the `porter_` prefix, kept because its dashboards use it), and so on.
//!
//! Gauges whose values live elsewhere (tasks pending, in flight, the cap) and the late and
//! unauthenticated replies counters (kept by the pending-task table) are set from the render
//! arguments just before encoding, under the registry's lock so that two concurrent scrapes
//! cannot interleave.
//!
//! A family with no series yet (no auth failure so far, say) is left off the page entirely,
//! `# HELP` and `# TYPE` included, which is how prometheus-client encodes an empty family.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Metrics::render`] and [`Metrics::render_protection`] produce:
/// the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the task round-trip histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// How a channel of a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Authorized,
    CacheHit,
    Denied,
    Timeout,
    Invalid,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Authorized,
        Outcome::CacheHit,
        Outcome::Denied,
        Outcome::Timeout,
        Outcome::Invalid,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Authorized => "authorized",
            Outcome::CacheHit => "cache_hit",
            Outcome::Denied => "denied",
            Outcome::Timeout => "timeout",
            Outcome::Invalid => "invalid",
        }
    }
}

/// What the pending-task table counts, mirrored on the page by [`Metrics::render`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplyCounts {
    /// Tasks awaiting a reply now.
    pub pending: usize,
    /// Replies that came with nobody waiting (late or unknown).
    pub late: u64,
    /// Replies dropped because they did not authenticate (`porter_broker::Pending::deliver`).
    pub unauthenticated: u64,
}

/// One label with a value known at compile time (`outcome`, `reason`, `rule`): no allocation
/// to look a series up.
type StaticLabel = [(&'static str, &'static str); 1];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    status: u16,
}

pub struct Metrics {
    /// Everything but the protection layer's metrics; the mutex serializes scrapes.
    main: Mutex<Registry>,
    /// The protection layer's metrics, rendered by [`Metrics::render_protection`].
    protection: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    /// Handles into `requests`, keyed so that a look-up borrows the caller's `&str`: a look-up
    /// in the family itself needs an owned `RequestLabels`, an allocation per request.
    request_handles: RwLock<HashMap<Box<str>, HashMap<u16, Counter>>>,
    /// Handles to the five series of `porter_channels_total`, indexed by `Outcome as usize`,
    /// created up front so every outcome shows from the first scrape and counting one is a
    /// single atomic add.
    channels: [Counter; 5],
    authorization_errors: Counter,
    cache_errors: Counter,
    round_trip: Histogram,
    tasks_pending: Gauge,
    late_replies: Counter,
    unauthenticated_replies: Counter,
    /// Failed authentications by reason code (bad token, missing user, forged webhook, …).
    auth_failures: Family<StaticLabel, Counter>,
    /// Requests refused by the protection layer, by rule (rate limits, in-flight cap, …).
    protection_refusals: Family<StaticLabel, Counter>,
    tasks_in_flight: Gauge,
    tasks_in_flight_cap: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let channel_family = Family::<StaticLabel, Counter>::default();
        let channels =
            Outcome::ALL.map(|o| channel_family.get_or_create_owned(&[("outcome", o.label())]));
        let authorization_errors = Counter::default();
        let cache_errors = Counter::default();
        let round_trip = Histogram::new(BUCKETS);
        let tasks_pending = Gauge::default();
        let late_replies = Counter::default();
        let unauthenticated_replies = Counter::default();

        // Registration order is page order: the order the hand-written page had.
        let mut main = Registry::default();
        main.register(
            "porter_http_requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        main.register("porter_channels", "Channels by outcome", channel_family);
        main.register(
            "authorization_errors",
            "Channels refused or timed out by the authorizers (the previous system's counter)",
            authorization_errors.clone(),
        );
        main.register(
            "porter_cache_errors",
            "Cache look-ups that failed and were treated as misses",
            cache_errors.clone(),
        );
        main.register(
            "porter_task_round_trip_seconds",
            "Time from publishing a task to its reply",
            round_trip.clone(),
        );
        main.register(
            "porter_tasks_pending",
            "Tasks awaiting a reply",
            tasks_pending.clone(),
        );
        main.register(
            "porter_late_replies",
            "Replies that arrived after their deadline",
            late_replies.clone(),
        );
        main.register(
            "porter_unauthenticated_replies",
            "Replies dropped because they did not authenticate (forged, tampered, or unsigned where signatures are required)",
            unauthenticated_replies.clone(),
        );

        let auth_failures = Family::<StaticLabel, Counter>::default();
        let protection_refusals = Family::<StaticLabel, Counter>::default();
        let tasks_in_flight = Gauge::default();
        let tasks_in_flight_cap = Gauge::default();
        let mut protection = Registry::default();
        protection.register(
            "porter_auth_failures",
            "Failed authentications by reason",
            auth_failures.clone(),
        );
        protection.register(
            "porter_protection_refusals",
            "Requests refused by a protection rule",
            protection_refusals.clone(),
        );
        protection.register(
            "porter_tasks_in_flight",
            "Channel tasks this gateway has in flight",
            tasks_in_flight.clone(),
        );
        protection.register(
            "porter_tasks_in_flight_cap",
            "The cap on channel tasks in flight (0: none)",
            tasks_in_flight_cap.clone(),
        );

        Self {
            main: Mutex::new(main),
            protection: Mutex::new(protection),
            requests,
            request_handles: RwLock::default(),
            channels,
            authorization_errors,
            cache_errors,
            round_trip,
            tasks_pending,
            late_replies,
            unauthenticated_replies,
            auth_failures,
            protection_refusals,
            tasks_in_flight,
            tasks_in_flight_cap,
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &str, status: u16) {
        if let Some(counter) = self
            .request_handles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint)
            .and_then(|by_status| by_status.get(&status))
        {
            counter.inc();
            return;
        }
        // First request of this endpoint and status: a racing thread may get here too; both
        // resolve to the family's one series, so neither count is lost.
        let counter = self.requests.get_or_create_owned(&RequestLabels {
            endpoint: endpoint.to_owned(),
            status,
        });
        counter.inc();
        self.request_handles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(endpoint.into())
            .or_default()
            .insert(status, counter);
    }

    pub fn channel(&self, outcome: Outcome) {
        self.channels[outcome as usize].inc();
        if matches!(outcome, Outcome::Denied | Outcome::Timeout) {
            // The previous system's counter: every channel that was not authorized by a task.
            self.authorization_errors.inc();
        }
    }

    pub fn cache_error(&self) {
        self.cache_errors.inc();
    }

    pub fn round_trip(&self, elapsed: Duration) {
        self.round_trip.observe(elapsed.as_secs_f64());
    }

    /// Counts a failed authentication; `reason` is the stable error code.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a request refused by a protection rule.
    pub fn protection_refusal(&self, rule: &'static str) {
        self.protection_refusals
            .get_or_create(&[("rule", rule)])
            .inc();
    }

    pub fn channel_count(&self, outcome: Outcome) -> u64 {
        self.channels[outcome as usize].get()
    }

    /// The main part of `/metrics` (requests, channels, cache, task round trips, tasks pending,
    /// late and unauthenticated replies), in the format named by [`CONTENT_TYPE`].
    pub fn render(&self, replies: ReplyCounts) -> String {
        let registry = self.main.lock().unwrap_or_else(PoisonError::into_inner);
        self.tasks_pending.set(saturating_i64(replies.pending));
        // The pending-task table owns these counts; the counters only mirror them for the page.
        self.late_replies
            .inner()
            .store(replies.late, Ordering::Relaxed);
        self.unauthenticated_replies
            .inner()
            .store(replies.unauthenticated, Ordering::Relaxed);
        encode(&registry)
    }

    /// The protection part of `/metrics`: failures, refusals, tasks in flight and their cap
    /// (0 = no cap). Its text follows [`Metrics::render`]'s on the same page.
    pub fn render_protection(&self, in_flight: usize, cap: Option<usize>) -> String {
        let registry = self
            .protection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.tasks_in_flight.set(saturating_i64(in_flight));
        self.tasks_in_flight_cap
            .set(saturating_i64(cap.unwrap_or(0)));
        encode(&registry)
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail and the crate's metrics only pass writer errors on, so
    // this is unreachable in practice; a partial page with a log line beats a failed scrape.
    if let Err(error) = prometheus_text::encode(&mut out, registry) {
        tracing::error!(%error, "encoding the metrics page failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of a page, for exact-line assertions (a `contains` on the whole page
    /// would let `… 1` match `… 10`).
    fn lines(page: &str) -> Vec<&str> {
        page.lines().collect()
    }

    fn assert_line(page: &str, line: &str) {
        assert!(lines(page).contains(&line), "missing `{line}` in:\n{page}");
    }

    #[test]
    fn content_type_is_prometheus_text() {
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }

    #[test]
    fn a_fresh_page_shows_every_outcome_and_scalar_at_zero() {
        let page = Metrics::default().render(ReplyCounts::default());
        for outcome in Outcome::ALL {
            assert_line(
                &page,
                &format!("porter_channels_total{{outcome=\"{}\"}} 0", outcome.label()),
            );
        }
        assert_line(&page, "porter_channels_total{outcome=\"timeout\"} 0");
        for line in [
            "authorization_errors_total 0",
            "porter_cache_errors_total 0",
            "porter_task_round_trip_seconds_bucket{le=\"+Inf\"} 0",
            "porter_task_round_trip_seconds_count 0",
            "porter_tasks_pending 0",
            "porter_late_replies_total 0",
            "porter_unauthenticated_replies_total 0",
        ] {
            assert_line(&page, line);
        }
        assert!(!page.contains("# EOF"), "{page}");
        assert!(!page.contains("_created"), "{page}");
    }

    #[test]
    fn the_main_page_counts_what_was_observed() {
        let metrics = Metrics::default();
        metrics.request("batch_authenticate", 200);
        metrics.request("batch_authenticate", 200);
        metrics.request("batch_authenticate", 401);
        metrics.request("scoped", 200);
        for outcome in [
            Outcome::Authorized,
            Outcome::Authorized,
            Outcome::CacheHit,
            Outcome::Denied,
            Outcome::Timeout,
            Outcome::Timeout,
            Outcome::Timeout,
        ] {
            metrics.channel(outcome);
        }
        metrics.cache_error();
        metrics.round_trip(Duration::from_micros(300));
        metrics.round_trip(Duration::from_millis(3));
        metrics.round_trip(Duration::from_secs(7));

        let page = metrics.render(ReplyCounts {
            pending: 12,
            late: 4,
            unauthenticated: 3,
        });
        for line in [
            "porter_http_requests_total{endpoint=\"batch_authenticate\",status=\"200\"} 2",
            "porter_http_requests_total{endpoint=\"batch_authenticate\",status=\"401\"} 1",
            "porter_http_requests_total{endpoint=\"scoped\",status=\"200\"} 1",
            "porter_channels_total{outcome=\"authorized\"} 2",
            "porter_channels_total{outcome=\"cache_hit\"} 1",
            "porter_channels_total{outcome=\"denied\"} 1",
            "porter_channels_total{outcome=\"timeout\"} 3",
            "porter_channels_total{outcome=\"invalid\"} 0",
            // Denied and timed-out channels, nothing else.
            "authorization_errors_total 4",
            "porter_cache_errors_total 1",
            "porter_tasks_pending 12",
            "porter_late_replies_total 4",
            "porter_unauthenticated_replies_total 3",
        ] {
            assert_line(&page, line);
        }
        assert_eq!(metrics.channel_count(Outcome::Timeout), 3);
        assert_eq!(metrics.channel_count(Outcome::Invalid), 0);

        // Cumulative buckets at the same bounds, written as before (`1`, not `1.0`); the 7 s
        // observation lands only in `+Inf`.
        let expected_buckets = [
            ("0.0005", 1),
            ("0.001", 1),
            ("0.002", 1),
            ("0.005", 2),
            ("0.01", 2),
            ("0.025", 2),
            ("0.05", 2),
            ("0.1", 2),
            ("0.25", 2),
            ("0.5", 2),
            ("1", 2),
            ("5", 2),
            ("+Inf", 3),
        ];
        let rendered_buckets: Vec<&str> = lines(&page)
            .into_iter()
            .filter(|l| l.starts_with("porter_task_round_trip_seconds_bucket"))
            .collect();
        let expected: Vec<String> = expected_buckets
            .iter()
            .map(|(le, n)| format!("porter_task_round_trip_seconds_bucket{{le=\"{le}\"}} {n}"))
            .collect();
        assert_eq!(rendered_buckets, expected, "{page}");
        assert_line(&page, "porter_task_round_trip_seconds_count 3");
        let sum: f64 = lines(&page)
            .into_iter()
            .find_map(|l| l.strip_prefix("porter_task_round_trip_seconds_sum "))
            .expect("a _sum line")
            .parse()
            .expect("a number");
        assert!((sum - 7.0033).abs() < 1e-9, "sum {sum}");
    }

    #[test]
    fn every_metric_keeps_its_name_and_type() {
        let metrics = Metrics::default();
        // Families render only once they have a series.
        metrics.request("auth", 200);
        metrics.auth_failure("invalid_token");
        metrics.protection_refusal("rate_limit_ip");
        let page = metrics.render(ReplyCounts::default()) + &metrics.render_protection(0, None);
        for (name, kind) in [
            ("porter_http_requests_total", "counter"),
            ("porter_channels_total", "counter"),
            ("authorization_errors_total", "counter"),
            ("porter_cache_errors_total", "counter"),
            ("porter_task_round_trip_seconds", "histogram"),
            ("porter_tasks_pending", "gauge"),
            ("porter_late_replies_total", "counter"),
            ("porter_unauthenticated_replies_total", "counter"),
            ("porter_auth_failures_total", "counter"),
            ("porter_protection_refusals_total", "counter"),
            ("porter_tasks_in_flight", "gauge"),
            ("porter_tasks_in_flight_cap", "gauge"),
        ] {
            assert_line(&page, &format!("# TYPE {name} {kind}"));
            assert_eq!(
                page.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name} described once:\n{page}"
            );
        }
    }

    #[test]
    fn the_protection_page_counts_failures_refusals_and_in_flight_tasks() {
        let metrics = Metrics::default();
        metrics.auth_failure("invalid_token");
        metrics.auth_failure("invalid_token");
        metrics.auth_failure("token_revoked");
        metrics.protection_refusal("rate_limit_user");
        metrics.protection_refusal("tasks_in_flight_cap");
        metrics.protection_refusal("tasks_in_flight_cap");

        let page = metrics.render_protection(7, Some(64));
        for line in [
            "porter_auth_failures_total{reason=\"invalid_token\"} 2",
            "porter_auth_failures_total{reason=\"token_revoked\"} 1",
            "porter_protection_refusals_total{rule=\"rate_limit_user\"} 1",
            "porter_protection_refusals_total{rule=\"tasks_in_flight_cap\"} 2",
            "porter_tasks_in_flight 7",
            "porter_tasks_in_flight_cap 64",
        ] {
            assert_line(&page, line);
        }

        let uncapped = metrics.render_protection(0, None);
        assert_line(&uncapped, "porter_tasks_in_flight 0");
        assert_line(&uncapped, "porter_tasks_in_flight_cap 0");
    }

    #[test]
    fn a_label_value_is_escaped() {
        let metrics = Metrics::default();
        metrics.request("odd\"name", 404);
        assert_line(
            &metrics.render(ReplyCounts::default()),
            "porter_http_requests_total{endpoint=\"odd\\\"name\",status=\"404\"} 1",
        );
    }
}
