//! The cap on channel tasks in flight.
//!
//! Architecture Invariant: the cap is checked before any task is published, and a
//! [`TaskPermit`] is held for exactly as long as the batch waits for its replies, so the
//! count cannot drift: a refused request publishes nothing and never waits. The one caller is
//! `authorize::fan_out`, so every endpoint that publishes tasks is capped.

use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::http::StatusCode;

use crate::error::{ApiError, Audit};

/// Counts channel tasks in flight against an optional cap.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    cap: Option<usize>,
}

impl InFlight {
    pub fn new(cap: Option<usize>) -> InFlight {
        InFlight {
            count: AtomicUsize::new(0),
            cap: cap.filter(|c| *c > 0),
        }
    }

    /// Channel tasks in flight now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn cap(&self) -> Option<usize> {
        self.cap
    }

    /// Takes `n` slots, or none when that would pass the cap. A batch larger than the cap
    /// is admitted when nothing else is in flight, so a cap below the channel limit never
    /// makes a request impossible.
    pub fn try_acquire(&self, n: usize) -> Option<TaskPermit<'_>> {
        let mut current = self.count.load(Ordering::Relaxed);
        loop {
            if let Some(cap) = self.cap
                && current > 0
                && current + n > cap
            {
                return None;
            }
            match self.count.compare_exchange_weak(
                current,
                current + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(TaskPermit { in_flight: self, n }),
                Err(actual) => current = actual,
            }
        }
    }
}

/// The refusal of a request past the cap: 503 `overloaded` with `Retry-After`.
pub fn overloaded() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many authorizations in flight; retry shortly",
    )
    .with_retry_after(1)
    .audited(Audit::Refused {
        rule: "tasks_in_flight_cap",
    })
}

/// `n` slots of the in-flight count, given back on drop.
#[derive(Debug)]
pub struct TaskPermit<'a> {
    in_flight: &'a InFlight,
    n: usize,
}

impl Drop for TaskPermit<'_> {
    fn drop(&mut self) {
        self.in_flight.count.fetch_sub(self.n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_cap_admits_up_to_the_cap_and_frees_on_drop() {
        let in_flight = InFlight::new(Some(5));
        let a = in_flight.try_acquire(3).expect("3 of 5");
        let b = in_flight.try_acquire(2).expect("5 of 5");
        assert!(in_flight.try_acquire(1).is_none());
        drop(a);
        assert!(in_flight.try_acquire(4).is_none());
        let c = in_flight.try_acquire(3).expect("5 of 5 again");
        drop((b, c));
        assert_eq!(in_flight.count(), 0);
        // Alone, a batch larger than the cap is admitted.
        let big = in_flight.try_acquire(9).expect("alone");
        assert!(in_flight.try_acquire(1).is_none());
        drop(big);
        let unlimited = InFlight::new(None);
        let _many = unlimited.try_acquire(1_000_000).expect("no cap");
    }
}
