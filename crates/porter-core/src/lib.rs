//! Porter's pure protocol core.
//!
//! Everything here is deterministic and free of I/O: it knows nothing of tokio, actix,
//! lapin or Redis, so it can be unit-tested, property-tested and fuzzed in isolation.
//!
//! - [`cache`]: what a cached decision records, and when a hit may be served.
//! - [`channel`]: Pusher channel and socket id validation, and the parts of a channel name.
//! - [`endpoint`]: scoped-token endpoints a policy declares (the hotel guest chat).
//! - [`pattern`]: channel name patterns with named captures, and templates.
//! - [`publish`]: events published through Porter's copy of Pusher's HTTP API, and the
//!   message that carries an accepted request to the workers.
//! - [`policy`]: the rules that decide, per channel, who may subscribe, what rides along,
//!   where the task goes and whether the result may be cached.
//! - [`routing`]: queues, time limits and expiry of a task.
//! - [`signing`]: Pusher auth signatures, shared secrets, user auth and webhook checks.
//! - [`task_auth`]: HMAC signatures of tasks and replies under the keys gateways and workers
//!   share, and the rolling-upgrade modes.
//! - [`wire`]: the task and reply messages exchanged between gateway and workers.
//! - [`reason`]: the stable refusal reasons a client can read.

pub mod cache;
pub mod channel;
pub mod endpoint;
pub mod pattern;
pub mod policy;
pub mod publish;
pub mod reason;
pub mod routing;
pub mod signing;
pub mod task_auth;
pub mod wire;
