//! Porter's worker: takes authorization tasks from a [`porter_broker::TaskSource`], decides
//! them with the policy ([`decision`]), gathers what rides along ([`registry`]), and replies.
//!
//! The [`runner`] enforces the task's deadline (a task that waited too long is answered
//! `expired` without running) and time limit (an authorizer that runs too long is cancelled
//! and answered `time limit exceeded`), acknowledges each task only after its reply is out,
//! and drains what it holds on shutdown.
//!
//! Architecture Invariant: a worker never sees the socket id or the Pusher secret; it returns
//! data, and the gateway signs.

pub mod authorizer;
pub mod decision;
pub mod registry;
pub mod runner;
pub mod webhook;

pub use authorizer::Authorizer;
pub use runner::{Worker, WorkerConfig};
