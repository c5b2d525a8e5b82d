//! Prometheus metrics, rendered in the text exposition format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    channels: [AtomicU64; 5],
    authorization_errors: AtomicU64,
    cache_errors: AtomicU64,
    round_trip_buckets: [AtomicU64; BUCKETS.len()],
    round_trip_count: AtomicU64,
    round_trip_sum_micros: AtomicU64,
    /// Failed authentications by reason code (bad token, missing user, forged webhook, …).
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests refused by the protection layer, by rule (rate limits, in-flight cap, …).
    protection_refusals: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn request(&self, endpoint: &str, status: u16) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *requests.entry((endpoint.to_owned(), status)).or_default() += 1;
    }

    pub fn channel(&self, outcome: Outcome) {
        self.channels[outcome as usize].fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::Denied | Outcome::Timeout) {
            // Seed 000's counter: every channel that was not authorized by a task.
            self.authorization_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn cache_error(&self) {
        self.cache_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn round_trip(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.round_trip_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.round_trip_count.fetch_add(1, Ordering::Relaxed);
        self.round_trip_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts a failed authentication; `reason` is the stable error code.
    pub fn auth_failure(&self, reason: &'static str) {
        *self
            .auth_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
    }

    /// Counts a request refused by a protection rule.
    pub fn protection_refusal(&self, rule: &'static str) {
        *self
            .protection_refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(rule)
            .or_default() += 1;
    }

    /// The protection part of `/metrics`: failures, refusals, tasks in flight and their cap
    /// (0 = no cap).
    pub fn render_protection(&self, in_flight: usize, cap: Option<usize>) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("# HELP porter_auth_failures_total Failed authentications by reason.\n# TYPE porter_auth_failures_total counter\n");
        for (reason, count) in self
            .auth_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "porter_auth_failures_total{{reason=\"{reason}\"}} {count}"
            );
        }
        out.push_str("# HELP porter_protection_refusals_total Requests refused by a protection rule.\n# TYPE porter_protection_refusals_total counter\n");
        for (rule, count) in self
            .protection_refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "porter_protection_refusals_total{{rule=\"{rule}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP porter_tasks_in_flight Channel tasks this gateway has in flight.\n# TYPE porter_tasks_in_flight gauge\nporter_tasks_in_flight {in_flight}"
        );
        let _ = writeln!(
            out,
            "# HELP porter_tasks_in_flight_cap The cap on channel tasks in flight (0: none).\n# TYPE porter_tasks_in_flight_cap gauge\nporter_tasks_in_flight_cap {}",
            cap.unwrap_or(0)
        );
        out
    }

    pub fn channel_count(&self, outcome: Outcome) -> u64 {
        self.channels[outcome as usize].load(Ordering::Relaxed)
    }

    /// The Prometheus text format.
    pub fn render(&self, tasks_pending: usize, late_replies: u64) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP porter_http_requests_total HTTP requests by endpoint and status.\n# TYPE porter_http_requests_total counter\n");
        for ((endpoint, status), count) in self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "porter_http_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP porter_channels_total Channels by outcome.\n# TYPE porter_channels_total counter\n");
        for outcome in Outcome::ALL {
            let _ = writeln!(
                out,
                "porter_channels_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                self.channel_count(outcome)
            );
        }
        let _ = writeln!(
            out,
            "# HELP authorization_errors_total Channels refused or timed out by the authorizers (seed 000).\n# TYPE authorization_errors_total counter\nauthorization_errors_total {}",
            self.authorization_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP porter_cache_errors_total Cache look-ups that failed and were treated as misses.\n# TYPE porter_cache_errors_total counter\nporter_cache_errors_total {}",
            self.cache_errors.load(Ordering::Relaxed)
        );
        out.push_str("# HELP porter_task_round_trip_seconds Time from publishing a task to its reply.\n# TYPE porter_task_round_trip_seconds histogram\n");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.round_trip_buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "porter_task_round_trip_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.round_trip_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "porter_task_round_trip_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "porter_task_round_trip_seconds_sum {}",
            self.round_trip_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "porter_task_round_trip_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP porter_tasks_pending Tasks awaiting a reply.\n# TYPE porter_tasks_pending gauge\nporter_tasks_pending {tasks_pending}"
        );
        let _ = writeln!(
            out,
            "# HELP porter_late_replies_total Replies that arrived after their deadline.\n# TYPE porter_late_replies_total counter\nporter_late_replies_total {late_replies}"
        );
        out
    }
}
