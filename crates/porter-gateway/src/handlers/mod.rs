//! One file per endpoint group. A handler reads its request, hands the parts of
//! [`crate::state::AppState`] a service needs to that service, and shapes the answer; it
//! never counts, audits or rate-limits by IP itself (`crate::middleware` does).
//!
//! - [`batch_authenticate`]: `GET /pusher/batch-authenticate`, the batch endpoint.
//! - [`pusher_auth`]: `POST /pusher/auth`, pusher-js's single request and the
//!   `pusher-js-auth` plugin's batch.
//! - [`user_auth`]: `POST /pusher/user-auth`, Pusher user authentication (`signin()`).
//! - [`scoped`]: the policy's scoped-token endpoints (`[[endpoint]]`, e.g. guest chat).
//! - [`sessions`]: `POST /auth`, opening a session.
//! - [`revoke`]: `POST /admin/tokens/revoke`.
//! - [`presence`]: `POST /presence/heartbeat` and `POST /pusher/webhook`.
//! - [`publish`]: `POST /apps/{app_id}/events` and `/batch_events`, Pusher's HTTP API.
//! - [`admin`]: members, retained events and decisions under `/admin`.
//! - [`admin_users`]: a user's info and watchlist under `/admin/users`.
//! - [`admin_owners`]: a channel's owner (`owner = "store"` rules) under `/admin/channels`.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.

pub mod admin;
pub mod admin_owners;
pub mod admin_users;
pub mod batch_authenticate;
pub mod health;
pub mod presence;
pub mod publish;
pub mod pusher_auth;
pub mod revoke;
pub mod scoped;
pub mod sessions;
pub mod user_auth;

use porter_core::channel::validate_socket_id;

use crate::error::ApiError;

/// A request's `socket_id`: present and `digits.digits`.
fn checked_socket_id(socket_id: Option<&str>) -> Result<&str, ApiError> {
    let socket_id = socket_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_socket_id", "socket_id is required"))?;
    validate_socket_id(socket_id)
        .map_err(|e| ApiError::bad_request("invalid_socket_id", e.to_string()))?;
    Ok(socket_id)
}
