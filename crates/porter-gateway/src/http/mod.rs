//! HTTP plumbing shared by every endpoint, with no state of its own: request size and time
//! limits, actix's own refusals as `ApiError`s (and, below the app, the ones actix-http sends
//! by itself: `head_refusals`), who the peer is (client IP behind trusted
//! proxies, client id, presented credentials), and the one parser of JSON, form and query
//! fields.

pub mod client;
pub mod fields;
pub mod framework_errors;
pub mod head_refusals;
pub mod limits;
