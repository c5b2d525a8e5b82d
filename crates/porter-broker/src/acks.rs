//! Which deliveries of one AMQP channel a worker may acknowledge, and in how few `basic.ack`s.
//!
//! A task is acknowledged only once its reply is published ("ack after reply"), so that a
//! worker that dies leaves every unanswered task to the broker. It may leave a few answered
//! ones too: a reply held for a `multiple` ack (up to the outbox's `ACK_STALL` plus one flush)
//! is redelivered if the worker is killed or the channel is lost meanwhile, so delivery is at
//! least once, bounded by `ACK_STALL`, and finished-but-unacknowledged tasks occupy prefetch
//! briefly. A task abandoned without a reply ([`AckWindow::abandoned`]) leaves the window to be
//! handed back. [`AckWindow`] tracks the
//! deliveries a worker holds, by delivery tag, and turns "these replies are out" into acks:
//!
//! - the replied tasks at the low end of the window (every held tag up to some tag `t` has
//!   replied) go in one `basic.ack` with `multiple` up to `t`;
//! - a replied task above one still running waits for it, since `multiple` would cover the
//!   running one, but only while that lowest task is young: once it has been held for
//!   [`AckWindow::take`]'s `stall`, the replied ones above it are acknowledged one by one, so a
//!   slow webhook at the low end does not hold the rest of the prefetch window.
//!
//! Delivery tags rise with every delivery of a channel, and a worker learns of them in that
//! order, so a `multiple` up to `t` never covers a delivery the window has not seen. Pure
//! bookkeeping: the caller sends the acks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One acknowledgement to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// `basic.ack` of this tag alone.
    One(u64),
    /// `basic.ack` with `multiple`: every held tag up to and including this one.
    UpTo(u64),
}

#[derive(Debug, Clone, Copy)]
struct Held {
    since: Instant,
    replied: bool,
}

/// The unacknowledged deliveries of one channel.
#[derive(Debug, Default)]
pub struct AckWindow {
    held: BTreeMap<u64, Held>,
}

impl AckWindow {
    /// A delivery the worker now holds (handed out, or dropped without a reply).
    pub fn delivered(&mut self, tag: u64, now: Instant) {
        self.held.insert(
            tag,
            Held {
                since: now,
                replied: false,
            },
        );
    }

    /// The delivery's reply is published (or it needs none): it may be acknowledged.
    pub fn replied(&mut self, tag: u64) {
        if let Some(held) = self.held.get_mut(&tag) {
            held.replied = true;
        }
    }

    /// The delivery will never reply (its responder was dropped unanswered, e.g. the handler
    /// panicked): forget it, so it holds neither the window nor the acks above it. Returns
    /// whether it was held; the caller then hands it back (`basic.nack`, requeue) before any
    /// ack that could cover it.
    pub fn abandoned(&mut self, tag: u64) -> bool {
        self.held.remove(&tag).is_some()
    }

    /// Held deliveries, replied or not.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The acks due now, removed from the window: one `multiple` for the replied low end, and
    /// single acks for replied deliveries above a task that has run `stall` or longer (or
    /// above any, with `all`, when the channel is about to close).
    pub fn take(&mut self, now: Instant, stall: Duration, all: bool) -> Vec<Ack> {
        let mut acks = Vec::new();
        let prefix: Vec<u64> = self
            .held
            .iter()
            .take_while(|(_, held)| held.replied)
            .map(|(&tag, _)| tag)
            .collect();
        if let Some(&last) = prefix.last() {
            acks.push(if prefix.len() > 1 {
                Ack::UpTo(last)
            } else {
                Ack::One(last)
            });
            for tag in &prefix {
                self.held.remove(tag);
            }
        }
        let stalled = self
            .held
            .values()
            .next()
            .is_some_and(|lowest| all || now.duration_since(lowest.since) >= stall);
        if stalled {
            let replied: Vec<u64> = self
                .held
                .iter()
                .filter(|(_, held)| held.replied)
                .map(|(&tag, _)| tag)
                .collect();
            for tag in replied {
                self.held.remove(&tag);
                acks.push(Ack::One(tag));
            }
        }
        acks
    }

    /// When [`AckWindow::take`] would next have something to do without another reply: when
    /// the lowest task stalls, if replied deliveries wait above it.
    pub fn next_stall(&self, stall: Duration) -> Option<Instant> {
        let lowest = self.held.values().next()?;
        self.held
            .values()
            .any(|held| held.replied)
            .then(|| lowest.since + stall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_millis(10);

    fn window(tags: std::ops::RangeInclusive<u64>, now: Instant) -> AckWindow {
        let mut window = AckWindow::default();
        for tag in tags {
            window.delivered(tag, now);
        }
        window
    }

    #[test]
    fn replied_tasks_at_the_low_end_go_in_one_multiple_ack() {
        let now = Instant::now();
        let mut window = window(1..=5, now);
        for tag in [3, 1, 2] {
            window.replied(tag);
        }
        assert_eq!(window.take(now, STALL, false), [Ack::UpTo(3)]);
        assert_eq!(window.len(), 2);
        window.replied(4);
        assert_eq!(window.take(now, STALL, false), [Ack::One(4)]);
        assert_eq!(window.take(now, STALL, false), []);
        window.replied(5);
        assert_eq!(window.take(now, STALL, false), [Ack::One(5)]);
        assert!(window.is_empty());
    }

    #[test]
    fn nothing_is_acked_before_its_reply() {
        let now = Instant::now();
        let mut window = window(1..=3, now);
        assert_eq!(window.take(now + STALL * 10, STALL, false), []);
        // A tag the window never held (acked elsewhere) changes nothing.
        window.replied(9);
        assert_eq!(window.take(now, STALL, true), []);
        window.replied(2);
        // Above a running task, and all: 2 alone, never a multiple over 1.
        assert_eq!(window.take(now, STALL, true), [Ack::One(2)]);
        assert_eq!(window.len(), 2);
    }

    #[test]
    fn replies_above_a_young_task_wait_for_it_then_go_in_one_ack() {
        let now = Instant::now();
        let mut window = window(1..=4, now);
        for tag in [2, 3, 4] {
            window.replied(tag);
        }
        assert_eq!(window.take(now, STALL, false), []);
        assert_eq!(window.next_stall(STALL), Some(now + STALL));
        window.replied(1);
        assert_eq!(window.take(now, STALL, false), [Ack::UpTo(4)]);
        assert_eq!(window.next_stall(STALL), None);
    }

    #[test]
    fn a_stalled_lowest_task_does_not_hold_the_others() {
        let now = Instant::now();
        let mut window = window(1..=4, now);
        window.delivered(5, now + STALL);
        for tag in [2, 4, 5] {
            window.replied(tag);
        }
        assert_eq!(
            window.take(now + STALL, STALL, false),
            [Ack::One(2), Ack::One(4), Ack::One(5)]
        );
        // 1 (the slow one) and 3 are still held, nothing waits above them.
        assert_eq!(window.len(), 2);
        assert_eq!(window.next_stall(STALL), None);
        window.replied(1);
        assert_eq!(window.take(now + STALL, STALL, false), [Ack::One(1)]);
    }

    #[test]
    fn an_abandoned_task_leaves_the_window_and_stops_holding_the_acks_above_it() {
        let now = Instant::now();
        let mut window = window(1..=3, now);
        window.replied(2);
        window.replied(3);
        assert_eq!(window.take(now, STALL, false), []);
        assert!(window.abandoned(1));
        // Gone: no ack covers it (the caller nacks it), and the rest goes in one multiple.
        assert_eq!(window.take(now, STALL, false), [Ack::UpTo(3)]);
        assert!(window.is_empty());
        // A tag no longer held (acked, or abandoned already) is not nacked twice.
        assert!(!window.abandoned(1));
        assert!(!window.abandoned(3));
    }
}
