//! The administration API of channel owners: `GET|PUT|DELETE /admin/channels/{channel}/owner`,
//! behind the admin guard and rate limit of the `/admin` scope like the rest.
//!
//! A rule with `owner = "store"` sends each event published to its channels to the live
//! sessions of the user stored at `owner:{channel}` (docs/publishing.md, "Sessions"); this is
//! how an application sets that user without writing Redis itself. `PUT` takes
//! `{"user_id": "7"}` and replaces the owner; `DELETE` clears it; `GET` answers the owner, or
//! `null` when there is none.
//!
//! The key is the channel's cache name (`-encrypted` dropped), the one the events worker reads,
//! so `private-doc-5` and `private-encrypted-doc-5` share an owner as they share members. The
//! owner only decides where published events go, never whether a subscription is allowed, so
//! no cached result is dropped; the events worker reads the key for every event, so the next
//! event goes to the new owner.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::admin::{channel_of, checked_name, store_failed};
use crate::error::ApiError;
use crate::state::AppState;

/// `PUT`'s body: the owner's user id, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerBody {
    user_id: String,
}

pub async fn get_owner(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = channel_of(&path)?;
    let owner = state
        .store
        .channel_owner(&channel.cache_name())
        .await
        .map_err(store_failed)?;
    Ok(HttpResponse::Ok().json(json!({ "channel": channel.name, "user_id": owner })))
}

pub async fn put_owner(
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = channel_of(&path)?;
    // A JSON object only: serde would also read a struct from an array (`["7"]`).
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(object @ Value::Object(_)) => serde_json::from_value::<OwnerBody>(object).ok(),
        _ => None,
    };
    let Some(body) = body else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be {\"user_id\": \"…\"}, the owner's user id as a string",
        ));
    };
    let user_id = checked_name("user_id", &body.user_id)?;
    state
        .store
        .set_channel_owner(&channel.cache_name(), Some(user_id))
        .await
        .map_err(store_failed)?;
    info!(channel = channel.name, "admin: channel owner set");
    Ok(HttpResponse::Ok().json(json!({ "channel": channel.name, "user_id": user_id })))
}

pub async fn delete_owner(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = channel_of(&path)?;
    state
        .store
        .set_channel_owner(&channel.cache_name(), None)
        .await
        .map_err(store_failed)?;
    info!(channel = channel.name, "admin: channel owner cleared");
    Ok(HttpResponse::Ok().json(json!({ "channel": channel.name, "user_id": null })))
}
