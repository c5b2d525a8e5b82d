//! The administration API of a user's sign-in data (Pusher user authentication's
//! `user_data`), behind the admin guard and rate limit of the `/admin` scope like the rest:
//!
//! - `GET|PUT|DELETE /admin/users/{user_id}/info`: the user's info hash (`user:{id}`, the one
//!   presence channels with `user_info = "store"` and `[signin]` read). `PUT` takes a JSON
//!   object and replaces the whole hash; `DELETE` removes it.
//! - `GET|PUT|DELETE /admin/users/{user_id}/watchlist`: the user ids the user watches. `PUT`
//!   takes a JSON array of ids (at most [`MAX_WATCHLIST`], Pusher's limit) and replaces the
//!   set; `DELETE` removes it.
//!
//! Sign-ins are never cached, so the next one reads the change. A presence channel's cached
//! result (`cache = { scope = "user" }` with store user info) keeps the old info until its TTL.

use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};
use tracing::info;

use super::admin::{checked_name, store_failed};
use crate::error::ApiError;
use crate::state::AppState;

/// The most user ids a watchlist may hold: Pusher's limit for user authentication.
pub const MAX_WATCHLIST: usize = 100;

/// The most fields a user's info may have.
const MAX_INFO_FIELDS: usize = 100;

/// A value as the store keeps it: JSON text, except a string that is not itself JSON, which
/// is kept as it is (as hashes written by other tools are). Read back by [`read_value`], each
/// value comes back as it was given.
fn stored_value(value: &Value) -> String {
    match value {
        Value::String(text) if serde_json::from_str::<Value>(text).is_err() => text.clone(),
        other => other.to_string(),
    }
}

/// A stored value: JSON, or else the text as a string (what the worker does too).
fn read_value(raw: String) -> Value {
    serde_json::from_str(&raw).unwrap_or(Value::String(raw))
}

fn user_of(path: &str) -> Result<&str, ApiError> {
    checked_name("user_id", path)
}

pub async fn get_info(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = user_of(&path)?;
    let fields = state.store.user_info(user).await.map_err(store_failed)?;
    let info: Map<String, Value> = fields
        .into_iter()
        .map(|(field, value)| (field, read_value(value)))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "user_id": user, "info": info })))
}

pub async fn put_info(
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = user_of(&path)?;
    let Ok(Value::Object(info)) = serde_json::from_slice::<Value>(&body) else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be the user's info as a JSON object",
        ));
    };
    if info.len() > MAX_INFO_FIELDS {
        return Err(ApiError::bad_request(
            "too_many_fields",
            format!("a user's info has at most {MAX_INFO_FIELDS} fields"),
        ));
    }
    let fields = info
        .iter()
        .map(|(field, value)| {
            Ok((
                checked_name("field", field)?.to_owned(),
                stored_value(value),
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    state
        .store
        .replace_user_info(user, &fields)
        .await
        .map_err(store_failed)?;
    info!(fields = fields.len(), "admin: user info replaced");
    Ok(HttpResponse::Ok().json(json!({ "user_id": user, "info": info })))
}

pub async fn delete_info(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = user_of(&path)?;
    state
        .store
        .replace_user_info(user, &[])
        .await
        .map_err(store_failed)?;
    info!("admin: user info deleted");
    Ok(HttpResponse::Ok().json(json!({ "user_id": user, "info": {} })))
}

pub async fn get_watchlist(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = user_of(&path)?;
    let watchlist = state.store.watchlist(user).await.map_err(store_failed)?;
    Ok(HttpResponse::Ok().json(json!({ "user_id": user, "watchlist": watchlist })))
}

pub async fn put_watchlist(
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = user_of(&path)?;
    let ids: Vec<String> = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request(
            "invalid_body",
            "the body must be the watched user ids as a JSON array of strings",
        )
    })?;
    let mut watchlist = ids
        .iter()
        .map(|id| checked_name("user_id", id).map(str::to_owned))
        .collect::<Result<Vec<_>, ApiError>>()?;
    watchlist.sort();
    watchlist.dedup();
    if watchlist.len() > MAX_WATCHLIST {
        return Err(ApiError::bad_request(
            "watchlist_too_long",
            format!("a watchlist holds at most {MAX_WATCHLIST} user ids"),
        ));
    }
    state
        .store
        .replace_watchlist(user, &watchlist)
        .await
        .map_err(store_failed)?;
    info!(watched = watchlist.len(), "admin: watchlist replaced");
    Ok(HttpResponse::Ok().json(json!({ "user_id": user, "watchlist": watchlist })))
}

pub async fn delete_watchlist(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = user_of(&path)?;
    state
        .store
        .replace_watchlist(user, &[])
        .await
        .map_err(store_failed)?;
    info!("admin: watchlist deleted");
    Ok(HttpResponse::Ok().json(json!({ "user_id": user, "watchlist": [] })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_they_were_given() {
        for value in [
            json!("Ann"),
            json!("3"),
            json!("{\"a\":1}"),
            json!(3),
            json!({"a": [1, "b"]}),
            json!(null),
            json!(true),
        ] {
            assert_eq!(read_value(stored_value(&value)), value, "{value}");
        }
        // A plain string is kept as is, as other tools write hashes.
        assert_eq!(stored_value(&json!("Ann")), "Ann");
    }
}
