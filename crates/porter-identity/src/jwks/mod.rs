//! Verification keys from a JSON Web Key Set (RFC 7517), read from a file or an `http(s)` URL.
//!
//! The set is cached. A token whose `kid` is not in the cache triggers a refresh, but at most
//! one such refresh per configured interval, so a flood of tokens with made-up `kid`s cannot
//! turn the gateway into a load generator against the identity provider. The whole set is
//! also re-read once it is older than its maximum age, so that removed keys stop verifying.
//!
//! Every key remembers its family (RSA, EC, Ed, HMAC) and, when the JWK says so, its one
//! algorithm: a key is only ever used with an algorithm of its own family, which is what rules
//! out algorithm confusion (an RSA public key used as an HMAC secret). See `keys.rs`.
//!
//! A JWKS URL must be `https://` (plain `http://` only to a loopback host), redirects are held
//! to the same rule, and the body is refused as soon as it passes [`MAX_JWKS_BYTES`]. See
//! `fetch.rs`.
//!
//! This module is the cache and its refresh rules; `fetch.rs` reads documents and `keys.rs`
//! parses them and picks keys. The two never use each other.

mod fetch;
mod keys;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::JwksError;
pub use fetch::{JwksSource, MAX_JWKS_BYTES};
pub use keys::Family;
use keys::{Found, KeySet, parse_key_set};

/// Why no key was found for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no key with this `kid` for this algorithm")]
    UnknownKey,
    #[error("the token has no `kid` and several keys could verify it")]
    AmbiguousKey,
    #[error("the key set could not be loaded")]
    Unavailable,
}

/// When the key set was last read, for spacing the reads out.
#[derive(Default)]
struct RefreshState {
    /// The last read caused by an unknown `kid`.
    last_on_demand: Option<Instant>,
    /// The last read of any kind, successful or not.
    last_attempt: Option<Instant>,
}

/// Before the first successful read, reads are retried at least this often.
const FIRST_LOAD_RETRY: Duration = Duration::from_secs(5);

/// A cached, refreshable key set.
pub struct Jwks {
    source: JwksSource,
    /// The HTTP client, or why there is none (every fetch then fails with that).
    client: Result<reqwest::Client, JwksError>,
    /// Least time between two refreshes caused by unknown `kid`s.
    refresh_interval: Duration,
    /// Age after which the set is read again on its next use.
    max_age: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// Serializes refreshes, and remembers when they happened.
    refresh: tokio::sync::Mutex<RefreshState>,
    fetches: AtomicU64,
}

impl Jwks {
    pub fn new(source: JwksSource, refresh_interval: Duration, max_age: Duration) -> Jwks {
        Jwks {
            source,
            client: fetch::http_client(),
            refresh_interval,
            max_age,
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many times the set has been read (successfully or not).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the set now (at start-up) and returns how many keys it has; on failure the old
    /// keys stay.
    pub async fn load(&self) -> Result<usize, JwksError> {
        let mut state = self.refresh.lock().await;
        self.reload(&mut state).await
    }

    /// Least time between two reads after a failed one, so that an unreachable source does
    /// not make every request wait for a fetch.
    fn retry_spacing(&self, set: &KeySet) -> Duration {
        if set.loaded_at.is_none() {
            self.refresh_interval.min(FIRST_LOAD_RETRY)
        } else {
            self.refresh_interval
        }
    }

    /// Reads the set and replaces the cache; the caller holds the refresh lock.
    async fn reload(&self, state: &mut RefreshState) -> Result<usize, JwksError> {
        state.last_attempt = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let text = fetch::read_source(&self.source, &self.client).await?;
        let keys = parse_key_set(&text)?;
        let count = keys.len();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(KeySet {
            keys,
            loaded_at: Some(Instant::now()),
        });
        debug!(keys = count, "JWKS loaded");
        Ok(count)
    }

    /// The key that verifies a token with this `kid` and algorithm.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<DecodingKey, KeyError> {
        let mut set = self.current();
        let stale = set.loaded_at.is_none_or(|at| at.elapsed() >= self.max_age);
        if stale {
            let mut state = self.refresh.lock().await;
            // Another request may have refreshed while this one waited for the lock.
            set = self.current();
            let still_stale = set.loaded_at.is_none_or(|at| at.elapsed() >= self.max_age);
            let tried_recently = state
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.retry_spacing(&set));
            if still_stale && !tried_recently {
                if let Err(error) = self.reload(&mut state).await {
                    warn!(%error, "JWKS refresh failed; keeping the cached keys");
                }
                set = self.current();
            }
        }
        match set.find(kid, algorithm) {
            Found::Key(key) => return Ok(key),
            Found::Ambiguous => return Err(KeyError::AmbiguousKey),
            Found::Missing if kid.is_none() => {
                return Err(if set.loaded_at.is_none() {
                    KeyError::Unavailable
                } else {
                    KeyError::UnknownKey
                });
            }
            Found::Missing => {}
        }

        // An unknown `kid`: the provider may have rotated its keys.
        let mut state = self.refresh.lock().await;
        let latest = self.current();
        if !Arc::ptr_eq(&latest, &set) {
            // Refreshed by someone else meanwhile: look again without fetching.
            return match latest.find(kid, algorithm) {
                Found::Key(key) => Ok(key),
                _ => Err(KeyError::UnknownKey),
            };
        }
        let never_loaded = latest.loaded_at.is_none();
        let allowed = if never_loaded {
            state
                .last_attempt
                .is_none_or(|at| at.elapsed() >= self.retry_spacing(&latest))
        } else {
            state
                .last_on_demand
                .is_none_or(|at| at.elapsed() >= self.refresh_interval)
        };
        if !allowed {
            debug!("unknown kid; JWKS refresh skipped (read recently)");
            return Err(if never_loaded {
                KeyError::Unavailable
            } else {
                KeyError::UnknownKey
            });
        }
        if !never_loaded {
            state.last_on_demand = Some(Instant::now());
        }
        if let Err(error) = self.reload(&mut state).await {
            warn!(%error, "JWKS refresh failed; keeping the cached keys");
            if latest.loaded_at.is_none() {
                return Err(KeyError::Unavailable);
            }
        }
        match self.current().find(kid, algorithm) {
            Found::Key(key) => Ok(key),
            _ => Err(KeyError::UnknownKey),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const RSA_A: &str = include_str!("../../testdata/rsa-a.jwk.json");
    const EC_A: &str = include_str!("../../testdata/ec-a.jwk.json");

    fn set(keys: &[&str]) -> String {
        format!("{{\"keys\": [{}]}}", keys.join(","))
    }

    #[tokio::test]
    async fn an_unknown_kid_refreshes_at_most_once_per_interval() {
        let path = std::env::temp_dir().join(format!("porter-jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, set(&[EC_A])).unwrap();
        let jwks = Jwks::new(
            JwksSource::File(path.clone()),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        jwks.load().await.unwrap();
        assert_eq!(jwks.fetches(), 1);
        // Rotation: the new key appears; the unknown kid triggers one refresh.
        std::fs::write(&path, set(&[EC_A, RSA_A])).unwrap();
        assert!(jwks.key_for(Some("rsa-a"), Algorithm::RS256).await.is_ok());
        assert_eq!(jwks.fetches(), 2);
        // Another unknown kid within the interval: no new fetch.
        assert_eq!(
            jwks.key_for(Some("nope"), Algorithm::RS256).await.err(),
            Some(KeyError::UnknownKey)
        );
        assert_eq!(jwks.fetches(), 2);
        // Known keys never fetch.
        assert!(jwks.key_for(Some("ec-a"), Algorithm::ES256).await.is_ok());
        assert_eq!(jwks.fetches(), 2);
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn a_missing_source_is_unavailable() {
        let jwks = Jwks::new(
            JwksSource::File(PathBuf::from("/nonexistent/porter-jwks.json")),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        assert!(matches!(jwks.load().await, Err(JwksError::ReadFile { .. })));
        assert_eq!(jwks.fetches(), 1);
        for kid in [None, Some("k")] {
            assert_eq!(
                jwks.key_for(kid, Algorithm::RS256).await.err(),
                Some(KeyError::Unavailable)
            );
        }
        // Failed reads are spaced out: requests do not each wait for the source.
        assert_eq!(jwks.fetches(), 1);
    }

    #[tokio::test]
    async fn a_remote_http_url_is_never_fetched() {
        let jwks = Jwks::new(
            JwksSource::Url("http://jwks.invalid/keys".into()),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        let error = jwks.load().await.unwrap_err();
        assert_eq!(error, JwksError::InsecureUrl);
        assert!(error.to_string().contains("https"), "{error}");
    }
}
