//! Where a task goes and how long it may live: queue, time limit and expiry.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The two task queues of the system Porter replaces: presence and stream channels go to the
/// high-priority one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Queue {
    #[serde(rename = "auth")]
    Auth,
    #[serde(rename = "auth/high")]
    AuthHigh,
}

impl Queue {
    pub const ALL: [Queue; 2] = [Queue::Auth, Queue::AuthHigh];

    /// The queue's base name, before any deployment prefix.
    pub fn name(self) -> &'static str {
        match self {
            Queue::Auth => "auth",
            Queue::AuthHigh => "auth/high",
        }
    }

    pub fn parse(name: &str) -> Option<Queue> {
        match name {
            "auth" => Some(Queue::Auth),
            "auth/high" => Some(Queue::AuthHigh),
            _ => None,
        }
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a task for one channel is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub queue: Queue,
    /// How long the authorizer may run once a worker has started it.
    pub time_limit: Duration,
    /// How long the task may wait for a worker before it is worthless.
    pub expires: Duration,
}

impl Route {
    /// The replaced system's routing for everything that is not presence or `private-stream`.
    pub const DEFAULT: Route = Route {
        queue: Queue::Auth,
        time_limit: Duration::from_secs(2),
        expires: Duration::from_secs(2),
    };
    /// The replaced system's routing for presence channels and `private-stream`.
    pub const HIGH: Route = Route {
        queue: Queue::AuthHigh,
        time_limit: Duration::from_secs(4),
        expires: Duration::from_secs(4),
    };
}
