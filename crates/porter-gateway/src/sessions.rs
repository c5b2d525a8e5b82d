//! Sessions (seed 001): `POST /auth` `{"email", "token"}` verifies the token as a bearer token
//! would be, checks that its `email` claim is the given email (case-insensitively), and
//! answers `{"sessionId"}`. The session id is then accepted in `X-Session-ID` by every
//! authorization endpoint, with the user id and claims of the token that opened it.
//!
//! - The session lives in Redis (`{prefix}session:{sha256(id)}`) with a sliding TTL: every
//!   use renews it in the same command that reads it (GETEX).
//! - Opening a session declares its fanout exchange `data.<session-id>.published`, whose
//!   lifetime follows the session through a lease queue that every use renews (see
//!   `porter_broker::session`).
//! - The session remembers the token's hash and `jti`: revoking the token ends its sessions.
//! - Session ids are 128-bit random (UUID v4) hex strings and never appear in a log line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use porter_broker::TaskClient;
use porter_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tracing::warn;

use crate::AppState;
use crate::error::ApiError;
use crate::identity::{Credential, Identity, subject};
use crate::revocation::{ensure_not_revoked, store_unavailable};

/// The session store and exchange declarations, with the sliding TTL.
pub struct Sessions {
    store: Arc<dyn Store>,
    exchanges: Arc<dyn TaskClient>,
    ttl: Duration,
    /// When this gateway last renewed each session's exchange lease.
    renewed: Mutex<HashMap<String, Instant>>,
    /// When the renewal table was last swept: at most once per renewal step, so a table
    /// above [`RENEWED_SWEEP_AT`] of live sessions is not walked on every request.
    swept: Mutex<Instant>,
}

/// A lease is renewed at most once per `ttl / RENEWALS_PER_TTL` by one gateway, so a busy
/// session costs the broker a few declarations per TTL, not one per request. To make up for
/// the renewals skipped, the lease lasts that much longer than the session's TTL: the
/// exchange may outlive its session by up to that step, never the other way round.
const RENEWALS_PER_TTL: u32 = 4;
/// Sessions remembered in the renewal table before expired entries are swept out.
const RENEWED_SWEEP_AT: usize = 10_000;

/// What a session remembers of the token that opened it.
#[derive(Debug, Serialize, Deserialize)]
struct SessionRecord {
    user_id: String,
    #[serde(default)]
    claims: Map<String, Value>,
    credential: Credential,
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, exchanges: Arc<dyn TaskClient>, ttl: Duration) -> Sessions {
        Sessions {
            store,
            exchanges,
            ttl: ttl.max(Duration::from_secs(1)),
            renewed: Mutex::new(HashMap::new()),
            swept: Mutex::new(Instant::now()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The least time between two lease renewals of one session by this gateway.
    fn renew_every(&self) -> Duration {
        self.ttl / RENEWALS_PER_TTL
    }

    /// How long a lease lasts: the session TTL plus the renewal step.
    pub fn lease(&self) -> Duration {
        self.ttl + self.renew_every()
    }

    /// Whether this use of the session should renew its lease; records the renewal.
    fn renewal_due(&self, id: &str) -> bool {
        self.renewal_due_at(id, Instant::now())
    }

    fn renewal_due_at(&self, id: &str, now: Instant) -> bool {
        let step = self.renew_every();
        let mut renewed = self.renewed.lock().unwrap_or_else(PoisonError::into_inner);
        if renewed.len() >= RENEWED_SWEEP_AT {
            // Always taken after `renewed`, so the two locks cannot deadlock.
            let mut swept = self.swept.lock().unwrap_or_else(PoisonError::into_inner);
            if now.saturating_duration_since(*swept) >= step {
                renewed.retain(|_, at| now.saturating_duration_since(*at) < step);
                *swept = now;
            }
        }
        match renewed.get(id) {
            Some(at) if now.duration_since(*at) < step => false,
            _ => {
                renewed.insert(id.to_owned(), now);
                true
            }
        }
    }

    /// The refusal of an unknown, expired or malformed session id. It says nothing about which.
    pub fn invalid() -> ApiError {
        ApiError::unauthorized(
            "invalid_session",
            "the session does not exist or has expired; open a new one with POST /auth",
        )
    }

    /// A session id as [`Sessions::open`] makes them: 32 lowercase hex digits.
    fn well_formed(id: &str) -> bool {
        id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// Opens a session: declares its exchange, then stores it. Returns the session id.
    pub async fn open(
        &self,
        user_id: String,
        claims: Map<String, Value>,
        credential: Credential,
    ) -> Result<String, ApiError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        if let Err(error) = self.exchanges.open_session(&id, self.lease()).await {
            warn!(error = %redact(&error.to_string(), &id), "could not declare a session exchange");
            return Err(ApiError::broker_unavailable());
        }
        let record = SessionRecord {
            user_id,
            claims,
            credential,
        };
        let data = serde_json::to_string(&record).map_err(|_| store_unavailable())?;
        if let Err(error) = self.store.create_session(&id, &data, self.ttl).await {
            warn!(%error, "could not store a session");
            return Err(store_unavailable());
        }
        Ok(id)
    }

    /// The identity of a session, its TTL renewed; its exchange lease is renewed in the
    /// background, off the request's path.
    pub async fn resume(&self, id: &str) -> Result<Identity, ApiError> {
        if !Self::well_formed(id) {
            return Err(Self::invalid());
        }
        let data = match self.store.touch_session(id, self.ttl).await {
            Ok(Some(data)) => data,
            Ok(None) => return Err(Self::invalid()),
            Err(error) => {
                warn!(%error, "could not read a session");
                return Err(store_unavailable());
            }
        };
        let record: SessionRecord = serde_json::from_str(&data).map_err(|_| Self::invalid())?;
        if self.renewal_due(id) {
            let exchanges = self.exchanges.clone();
            let (id, lease) = (id.to_owned(), self.lease());
            tokio::spawn(async move {
                if let Err(error) = exchanges.renew_session(&id, lease).await {
                    warn!(error = %redact(&error.to_string(), &id), "could not renew a session exchange");
                }
            });
        }
        Ok(Identity {
            user_id: Some(record.user_id),
            client_id: None,
            claims: record.claims,
            credential: Some(record.credential),
        })
    }
}

/// Broker errors name the exchange, which contains the session id: keep it out of logs.
fn redact(text: &str, session_id: &str) -> String {
    text.replace(session_id, "<session>")
}

#[derive(Deserialize)]
struct AuthBody {
    email: Option<String>,
    token: Option<String>,
}

/// `POST /auth`.
pub async fn create(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Rate limited by IP and client id before any token is looked at: this endpoint is
    // where someone guessing tokens or emails would knock.
    let anonymous = crate::identity::Identity::default();
    let result = match crate::protection::check_rate(&state, &request, &anonymous).await {
        Ok(()) => create_inner(&body, &state).await,
        Err(error) => Err(error),
    };
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.status,
    };
    state.metrics.request("session", status.as_u16());
    result
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::unauthorized("unauthorized", message)
}

async fn create_inner(body: &[u8], state: &AppState) -> Result<HttpResponse, ApiError> {
    let sessions = state.identity.sessions().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "sessions_disabled",
            "sessions are not enabled on this gateway",
        )
    })?;
    let body: AuthBody = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request("invalid_body", "send JSON {\"email\": …, \"token\": …}")
    })?;
    let email = body.email.as_deref().map(str::trim).unwrap_or_default();
    let token = body.token.as_deref().map(str::trim).unwrap_or_default();
    if email.is_empty() || token.is_empty() {
        return Err(ApiError::bad_request(
            "missing_parameters",
            "both `email` and `token` are required",
        ));
    }
    let claims = state.identity.verify(token).await.map_err(|error| {
        if error.status == StatusCode::UNAUTHORIZED {
            unauthorized(error.message)
        } else {
            error
        }
    })?;
    let user_id = subject(&claims).map_err(|error| unauthorized(error.message))?;
    let matches = claims
        .get("email")
        .and_then(Value::as_str)
        .is_some_and(|claimed| claimed.trim().eq_ignore_ascii_case(email));
    if !matches {
        return Err(unauthorized("the email does not match the token"));
    }
    let credential = Credential::of(token, &claims);
    let identity = Identity {
        credential: Some(credential),
        ..Identity::default()
    };
    ensure_not_revoked(state.store.as_ref(), &identity).await?;
    let credential = identity.credential.unwrap_or_default();
    let id = sessions.open(user_id, claims, credential).await?;
    Ok(HttpResponse::Ok().json(json!({ "sessionId": id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_ids_reach_the_store() {
        let id = uuid::Uuid::new_v4().simple().to_string();
        assert!(Sessions::well_formed(&id));
        assert!(!Sessions::well_formed(&id.to_uppercase()));
        assert!(!Sessions::well_formed("abc"));
        assert!(!Sessions::well_formed(&format!("{id}0")));
        assert!(!Sessions::well_formed("zz345678901234567890123456789012"));
    }

    #[test]
    fn leases_are_renewed_once_per_step_and_outlast_the_session() {
        let (client, _source) = porter_broker::local::channel(Default::default());
        let sessions = Sessions::new(
            Arc::new(porter_store::memory::MemoryStore::default()),
            Arc::new(client),
            Duration::from_secs(3600),
        );
        assert_eq!(sessions.lease(), Duration::from_secs(4500));
        assert!(sessions.renewal_due("a"));
        assert!(!sessions.renewal_due("a"), "renewed a moment ago");
        assert!(sessions.renewal_due("b"), "each session has its own step");
    }

    #[test]
    fn the_renewal_table_is_swept_at_most_once_per_step() {
        let (client, _source) = porter_broker::local::channel(Default::default());
        let sessions = Sessions::new(
            Arc::new(porter_store::memory::MemoryStore::default()),
            Arc::new(client),
            Duration::from_secs(400),
        );
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let len = || sessions.renewed.lock().unwrap().len();
        for i in 0..RENEWED_SWEEP_AT {
            assert!(sessions.renewal_due_at(&format!("a{i}"), at(0)));
        }
        // 90 s later (step = 100 s) nothing is due for a sweep yet: all of it stays.
        for i in 0..RENEWED_SWEEP_AT {
            sessions.renewal_due_at(&format!("b{i}"), at(90));
        }
        assert_eq!(len(), 2 * RENEWED_SWEEP_AT);
        // A step after the last sweep: the a's (100 s old) go, the b's (10 s old) stay.
        sessions.renewal_due_at("x", at(100));
        assert_eq!(len(), RENEWED_SWEEP_AT + 1);
        // At 195 s the b's are stale, but the last sweep was 95 s ago: no sweep, no walk.
        sessions.renewal_due_at("y", at(195));
        assert_eq!(len(), RENEWED_SWEEP_AT + 2);
        // At 200 s a sweep is due again: only y (5 s old) and the new z stay.
        sessions.renewal_due_at("z", at(200));
        assert_eq!(len(), 2);
    }

    #[tokio::test]
    async fn sessions_round_trip_through_the_store() {
        let (client, _source) = porter_broker::local::channel(Default::default());
        let sessions = Sessions::new(
            Arc::new(porter_store::memory::MemoryStore::default()),
            Arc::new(client),
            Duration::from_secs(60),
        );
        let mut claims = Map::new();
        claims.insert("team".into(), Value::from("blue"));
        let credential = Credential {
            token_sha256: "ab".repeat(32),
            jti: Some("j".into()),
        };
        let id = sessions
            .open("42".into(), claims, credential.clone())
            .await
            .unwrap();
        let identity = sessions.resume(&id).await.unwrap();
        assert_eq!(identity.user_id.as_deref(), Some("42"));
        assert_eq!(identity.claims["team"], "blue");
        assert_eq!(identity.credential, Some(credential));
        let other = uuid::Uuid::new_v4().simple().to_string();
        assert_eq!(
            sessions.resume(&other).await.unwrap_err().code,
            "invalid_session"
        );
    }

    #[test]
    fn redaction_removes_the_session_id() {
        let text = "NOT_FOUND - no exchange 'data.0123.published'";
        assert_eq!(
            redact(text, "0123"),
            "NOT_FOUND - no exchange 'data.<session>.published'"
        );
    }
}
