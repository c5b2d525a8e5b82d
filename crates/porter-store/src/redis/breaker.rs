//! Fail fast while Redis (or one shard of a cluster) is known to be down.
//!
//! Without it every store call made while Redis is unreachable waits out the connection's
//! reconnect and the call timeout (about a second each), and a worker that reads the store
//! twice for one channel answers after two: every channel of the default policy took ~2 s to
//! get its `internal_error`. A [`Breaker`] opens on a call that failed because Redis did not
//! answer; while open, calls fail at once with [`StoreError::Unavailable`]. Every
//! [`PROBE_EVERY`] one call is let through as a probe; its success closes the breaker, so
//! Porter is back to normal within about that long after Redis is.
//!
//! A refused command ([`StoreError::Command`]) proves Redis answered: it neither opens nor
//! keeps open the breaker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::StoreError;

/// How long an open breaker fails calls before it lets one through to see whether Redis is
/// back.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// The state of one Redis server or shard, shared by every call that goes to it.
#[derive(Debug)]
pub struct Breaker {
    /// Milliseconds after `epoch` before which calls fail fast; 0 when closed.
    open_until_ms: AtomicU64,
    /// A probe is in flight: other calls keep failing fast until it ends.
    probing: AtomicBool,
    epoch: Instant,
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker {
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }
}

/// What a call may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: call.
    Call,
    /// The breaker is open and this call is its probe: call, and report the result.
    Probe,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        // +1 so that "open until" is never the 0 that means closed.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether a call may go to Redis now; `Err` fails it at once.
    pub fn admit(&self) -> Result<Admission, StoreError> {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Ok(Admission::Call);
        }
        if self.now_ms() >= until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok(Admission::Probe);
        }
        Err(StoreError::Unavailable(
            "redis is not answering (failing fast until a probe succeeds)".to_owned(),
        ))
    }

    /// Records how an admitted call ended.
    pub fn record<T>(&self, admission: Admission, result: &Result<T, StoreError>) {
        let answered = !matches!(
            result,
            Err(StoreError::Unavailable(_) | StoreError::Timeout)
        );
        if answered {
            self.open_until_ms.store(0, Ordering::Release);
        } else {
            let until = self.now_ms() + PROBE_EVERY.as_millis() as u64;
            self.open_until_ms.store(until, Ordering::Release);
        }
        if admission == Admission::Probe {
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Whether calls currently fail fast.
    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Result<(), StoreError> {
        Err(StoreError::Unavailable("refused".into()))
    }

    #[tokio::test]
    async fn a_failure_opens_one_probe_at_a_time_and_a_success_closes() {
        let breaker = Breaker::default();
        assert_eq!(breaker.admit().unwrap(), Admission::Call);
        breaker.record(Admission::Call, &down());
        assert!(breaker.is_open());
        assert!(breaker.admit().is_err(), "open: fails fast");
        tokio::time::sleep(PROBE_EVERY + Duration::from_millis(20)).await;
        let probe = breaker.admit().expect("the window passed: one probe");
        assert_eq!(probe, Admission::Probe);
        assert!(breaker.admit().is_err(), "only one probe at a time");
        breaker.record(probe, &Ok(()));
        assert!(!breaker.is_open());
        assert_eq!(breaker.admit().unwrap(), Admission::Call);
    }

    #[test]
    fn a_refused_command_proves_redis_answered() {
        let breaker = Breaker::default();
        breaker.record::<()>(
            Admission::Call,
            &Err(StoreError::Command("WRONGTYPE".into())),
        );
        assert!(!breaker.is_open());
        breaker.record::<()>(Admission::Call, &Err(StoreError::Timeout));
        assert!(breaker.is_open());
    }
}
