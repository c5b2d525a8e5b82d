//! Porter's worker: takes authorization tasks from a [`porter_broker::TaskSource`], decides
//! them with the policy ([`decision`]), gathers what rides along ([`registry`]), and replies.
//!
//! The [`runner`] enforces the task's deadline (a task that waited too long is answered
//! `expired` without running) and time limit (an authorizer that runs too long is cancelled
//! and answered `time limit exceeded`), acknowledges each task only after its reply is out,
//! and drains what it holds on shutdown: it stops consuming first, so the tasks it has not
//! started go back to the queue at once, then finishes the ones it runs.
//!
//! A signin task (Pusher user authentication) is decided by [`signin`] with the policy's
//! `[signin]` section instead of a channel's rule.
//!
//! [`metrics`] is the recorder the runner, the authorizer and the webhook client write into;
//! [`listener`] serves it with `/healthz` and `/readyz` (`porter worker --http-listen`).
//!
//! [`publish`] applies published events (`porter worker --events`, and `porter dev`): retained
//! state, the owner's session exchanges, and the upstream realtime servers.
//!
//! Architecture Invariant: a worker never sees the socket id or the Pusher secret; it returns
//! data, and the gateway signs.

pub mod authorizer;
pub mod decision;
pub mod listener;
pub mod metrics;
pub mod publish;
pub mod registry;
pub mod runner;
pub mod signin;
pub mod webhook;

pub use authorizer::Authorizer;
pub use metrics::WorkerMetrics;
pub use runner::{Worker, WorkerConfig};
