//! Stable, client-readable refusal reasons.
//!
//! These strings are part of the public API: clients match on them, so they never change
//! meaning once shipped. They never carry secrets or say whether an object exists.

/// The channel name is not a valid Pusher channel name.
pub const INVALID_CHANNEL: &str = "invalid_channel";
/// Public channels need no authorization.
pub const PUBLIC_CHANNEL: &str = "public_channel";
/// No policy rule matches the channel.
pub const NO_RULE: &str = "no_rule";
/// The rule needs an authenticated caller and the request had none.
pub const UNAUTHENTICATED: &str = "unauthenticated";
/// The policy refused the caller.
pub const FORBIDDEN: &str = "forbidden";
/// No reply from a worker before the batch deadline.
pub const TIMEOUT: &str = "timeout";
/// The task reached a worker after its deadline and was not run.
pub const EXPIRED: &str = "expired";
/// The authorizer ran past the rule's time limit and was cancelled.
pub const TIME_LIMIT_EXCEEDED: &str = "time limit exceeded";
/// The application's webhook authorizer did not give a usable answer.
pub const AUTHORIZER_UNAVAILABLE: &str = "authorizer_unavailable";
/// The worker failed for a reason of its own (store down, malformed task, ...).
pub const INTERNAL: &str = "internal_error";
/// The gateway could not hand the task to the broker.
pub const BROKER_UNAVAILABLE: &str = "broker_unavailable";
/// The gateway has too many tasks in flight.
pub const OVERLOADED: &str = "overloaded";
/// A `claims` rule refused: the named claim of the token differs from its capture. The full
/// reason is this prefix followed by the claim's name (`claim_mismatch:booking_id`), so a
/// scoped endpoint can say which check failed; it names only a claim of the caller's own token.
pub const CLAIM_MISMATCH_PREFIX: &str = "claim_mismatch:";
