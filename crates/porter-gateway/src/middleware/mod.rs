//! The gateway's cross-cutting work, as middleware, so that no handler has to remember it.
//! `crate::routes::configure` puts them in this order, outermost first:
//!
//! 1. [`track`]: every request counted by endpoint (the matched resource's name) and status;
//! 2. [`audit`]: every error response audited and counted from what its
//!    [`crate::error::ApiError`] says about itself;
//! 3. [`cors`]: CORS headers and preflights;
//! 4. [`body_timeout`]: the deadline of the request body (outside [`json_errors`], which
//!    replaces bodies, since it hands a timed-out body to actix inside the response's);
//! 5. [`json_errors`]: actix's own error responses (extractors, router, body deadline)
//!    replaced by the JSON error shape, inside the audit and CORS so both see the result;
//! 6. [`size_limit`]: header bytes and declared body length;
//!
//! and per route: [`rate_limit`] (the IP charged before an admin token, a scoped token or a
//! `POST /auth` body is looked at) and [`admin`] (the admin token guard of `/admin`).

pub mod admin;
pub mod audit;
pub mod body_timeout;
pub mod cors;
pub mod json_errors;
pub mod rate_limit;
pub mod size_limit;
pub mod track;

use actix_web::dev::ServiceRequest;
use actix_web::web;

use crate::state::AppState;

/// The gateway's state, when the app has one (every app `configure` builds does).
fn state_of(request: &ServiceRequest) -> Option<web::Data<AppState>> {
    request.app_data::<web::Data<AppState>>().cloned()
}
