//! The Redis store, over a few multiplexed connections.
//!
//! Why not a connection pool: a pooled checkout (deadpool-redis) sends a `PING` to recycle the
//! connection, which doubled the round trips of every call. A multiplexed connection pipelines
//! the commands of every concurrent caller over one socket instead, and
//! [`ConnectionManager`] reconnects it by itself after Redis restarts.
//!
//! Every call is bounded by a timeout, so a Redis that hangs costs a request a fixed delay
//! (and the gateway treats it as a cache miss) instead of hanging it. Connections are opened
//! lazily, so a process starts with Redis down and recovers when it comes up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::presence::PRESENCE_SCRIPT;
use crate::ratelimit::GCRA_SCRIPT;
use crate::{
    CacheLookup, Keys, Lookup, PRESENCE_CHANNELS_TTL, PresenceEvent, RateCheck, RateDecision,
    Revocation, Store, StoreError, revocation_expiry,
};

/// The longest any one store call may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
    keys: Keys,
    /// The GCRA script, sent by `EVALSHA` (loaded on first use).
    gcra: Arc<redis::Script>,
    /// The presence-membership script (see `crate::presence`).
    presence: Arc<redis::Script>,
}

struct Shared {
    client: redis::Client,
    /// Opened on first use; each multiplexes every caller that lands on it.
    connections: Vec<OnceCell<ConnectionManager>>,
    next: AtomicUsize,
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> StoreError {
        if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Command(error.to_string())
        }
    }
}

impl RedisStore {
    /// Checks the URL; connections are opened lazily, so this succeeds with Redis down.
    /// The error never quotes the URL, which holds the password (see `url_tests`).
    /// `connections` multiplexed connections are used round-robin (one is enough for
    /// tens of thousands of calls a second; two spread the parsing over two cores).
    pub fn new(url: &str, keys: Keys, connections: usize) -> Result<RedisStore, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(RedisStore {
            shared: Arc::new(Shared {
                client,
                connections: (0..connections.max(1)).map(|_| OnceCell::new()).collect(),
                next: AtomicUsize::new(0),
            }),
            keys,
            gcra: Arc::new(redis::Script::new(GCRA_SCRIPT)),
            presence: Arc::new(redis::Script::new(PRESENCE_SCRIPT)),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// One of the multiplexed connections, opened if it is not yet.
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let shared = &self.shared;
        let index = shared.next.fetch_add(1, Ordering::Relaxed) % shared.connections.len();
        let manager = shared.connections[index]
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(CALL_TIMEOUT)
                    .set_response_timeout(CALL_TIMEOUT)
                    .set_number_of_retries(1)
                    .set_max_delay(CALL_TIMEOUT.as_millis() as u64);
                ConnectionManager::new_with_config(shared.client.clone(), config)
            })
            .await?;
        Ok(manager.clone())
    }

    /// Runs one call on a multiplexed connection, bounded by [`CALL_TIMEOUT`].
    async fn run<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut ConnectionManager) -> Result<T, redis::RedisError>,
    {
        tokio::time::timeout(CALL_TIMEOUT, async {
            let mut connection = self.connection().await?;
            Ok(call(&mut connection).await?)
        })
        .await
        .map_err(|_| StoreError::Timeout)?
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn cached(&self, lookups: &[CacheLookup<'_>]) -> Result<Vec<Option<String>>, StoreError> {
        if lookups.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for lookup in lookups {
            pipe.hget(self.keys.channel_data(lookup.channel), lookup.scope);
        }
        self.run(async |c| pipe.query_async(c).await).await
    }

    async fn put_cached(
        &self,
        channel: &str,
        scope: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.channel_data(channel);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, scope, data)
            .ignore()
            .expire(&key, ttl.as_secs().max(1) as i64)
            .ignore();
        self.run(async |c| pipe.query_async(c).await).await
    }

    async fn drop_cached(&self, channel: &str) -> Result<(), StoreError> {
        let key = self.keys.channel_data(channel);
        self.run(async |c| c.del::<_, ()>(&key).await).await
    }

    async fn retained_events(&self, channel: &str) -> Result<Vec<(String, String)>, StoreError> {
        let key = self.keys.retained(channel);
        let mut events: Vec<(String, String)> = self.run(async |c| c.hgetall(&key).await).await?;
        events.sort();
        Ok(events)
    }

    async fn set_retained_event(
        &self,
        channel: &str,
        event: &str,
        data: &str,
    ) -> Result<(), StoreError> {
        let key = self.keys.retained(channel);
        self.run(async |c| c.hset::<_, _, _, ()>(&key, event, data).await)
            .await
    }

    async fn clear_retained_events(
        &self,
        channel: &str,
        event: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = self.keys.retained(channel);
        match event {
            Some(event) => {
                self.run(async |c| c.hdel::<_, _, ()>(&key, event).await)
                    .await
            }
            None => self.run(async |c| c.del::<_, ()>(&key).await).await,
        }
    }

    async fn is_member(&self, channel: &str, user_id: &str) -> Result<bool, StoreError> {
        let key = self.keys.members(channel);
        self.run(async |c| c.sismember(&key, user_id).await).await
    }

    async fn add_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError> {
        let key = self.keys.members(channel);
        self.run(async |c| c.sadd::<_, _, ()>(&key, user_id).await)
            .await
    }

    async fn remove_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError> {
        let key = self.keys.members(channel);
        self.run(async |c| c.srem::<_, _, ()>(&key, user_id).await)
            .await
    }

    async fn user_info(&self, user_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let key = self.keys.user(user_id);
        let mut fields: Vec<(String, String)> = self.run(async |c| c.hgetall(&key).await).await?;
        fields.sort();
        Ok(fields)
    }

    async fn set_user_info(
        &self,
        user_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), StoreError> {
        if fields.is_empty() {
            return Ok(());
        }
        let key = self.keys.user(user_id);
        self.run(async |c| c.hset_multiple::<_, _, _, ()>(&key, fields).await)
            .await
    }

    async fn is_online(&self, user_id: &str) -> Result<bool, StoreError> {
        // An empty hash does not exist in Redis, so one EXISTS over both keys answers
        // "heartbeating or in any presence channel".
        let keys = [
            self.keys.online(user_id),
            self.keys.presence_channels(user_id),
        ];
        let live: u32 = self.run(async |c| c.exists(&keys).await).await?;
        Ok(live > 0)
    }

    async fn set_online(&self, user_id: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = self.keys.online(user_id);
        self.run(async |c| c.set_ex::<_, _, ()>(&key, "1", ttl.as_secs().max(1)).await)
            .await
    }

    async fn update_presence(
        &self,
        user_id: &str,
        channel: &str,
        event: PresenceEvent,
        time_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.presence.prepare_invoke();
        invocation
            .key(self.keys.presence_channels(user_id))
            .key(self.keys.presence_left(user_id))
            .arg(channel)
            .arg(match event {
                PresenceEvent::Joined => "join",
                PresenceEvent::Left => "leave",
            })
            .arg(time_ms)
            .arg(PRESENCE_CHANNELS_TTL.as_millis() as u64);
        let applied: u8 = self.run(async |c| invocation.invoke_async(c).await).await?;
        Ok(applied == 1)
    }

    async fn rate_limit(&self, checks: &[RateCheck<'_>]) -> Result<RateDecision, StoreError> {
        if checks.is_empty() {
            return Ok(RateDecision::Allowed);
        }
        let mut invocation = self.gcra.prepare_invoke();
        for check in checks {
            invocation
                .key(self.keys.rate_limit(check.bucket))
                .arg(check.quota.interval_us())
                .arg(check.quota.tolerance_us());
        }
        let (index, retry_us): (usize, u64) =
            self.run(async |c| invocation.invoke_async(c).await).await?;
        Ok(match index {
            0 => RateDecision::Allowed,
            i => RateDecision::Limited {
                bucket: i - 1,
                retry_after: Duration::from_micros(retry_us),
            },
        })
    }

    async fn first_sighting(&self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.keys.seen(id);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let set: Option<String> = self
            .run(async |c| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg("1")
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn sighted(&self, id: &str) -> Result<bool, StoreError> {
        let key = self.keys.seen(id);
        self.run(async |c| c.exists(&key).await).await
    }

    async fn lookup(
        &self,
        cache: &[CacheLookup<'_>],
        revocations: &[Revocation<'_>],
    ) -> Result<Lookup, StoreError> {
        if revocations.is_empty() {
            return Ok(Lookup {
                cached: self.cached(cache).await?,
                revoked: false,
            });
        }
        let mut pipe = redis::pipe();
        for lookup in cache {
            pipe.hget(self.keys.channel_data(lookup.channel), lookup.scope);
        }
        let revocation_keys: Vec<String> = revocations
            .iter()
            .map(|r| self.keys.revocation(*r))
            .collect();
        pipe.exists(revocation_keys);
        let mut values: Vec<redis::Value> = self.run(async |c| pipe.query_async(c).await).await?;
        let revoked_count: u64 = match values.pop() {
            Some(value) => redis::from_redis_value(&value)?,
            None => return Err(StoreError::Command("empty pipeline answer".to_owned())),
        };
        let cached = values
            .iter()
            .map(redis::from_redis_value::<Option<String>>)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Lookup {
            cached,
            revoked: revoked_count > 0,
        })
    }

    async fn revoke(&self, revocation: Revocation<'_>, ttl: Duration) -> Result<(), StoreError> {
        let key = self.keys.revocation(revocation);
        match revocation_expiry(ttl) {
            Some(ttl) => {
                self.run(async |c| c.set_ex::<_, _, ()>(&key, "1", ttl.as_secs()).await)
                    .await
            }
            None => self.run(async |c| c.set::<_, _, ()>(&key, "1").await).await,
        }
    }

    async fn create_session(
        &self,
        session_id: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.session(session_id);
        self.run(async |c| c.set_ex::<_, _, ()>(&key, data, ttl.as_secs().max(1)).await)
            .await
    }

    async fn touch_session(
        &self,
        session_id: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys.session(session_id);
        // GETEX reads and renews in one atomic command (Redis ≥ 6.2).
        self.run(async |c| {
            redis::cmd("GETEX")
                .arg(&key)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .query_async(c)
                .await
        })
        .await
    }

    async fn cap_session(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = self.keys.session(session_id);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        // `LT` (Redis ≥ 7.0) only ever shortens; on a missing key PEXPIRE does nothing.
        self.run(async |c| {
            redis::cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl_ms)
                .arg("LT")
                .query_async::<i64>(c)
                .await
        })
        .await
        .map(drop)
    }

    async fn forget_session(&self, session_id: &str) -> Result<(), StoreError> {
        let key = self.keys.session(session_id);
        self.run(async |c| c.del::<_, i64>(&key).await)
            .await
            .map(drop)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(async |c| redis::cmd("PING").query_async::<String>(c).await)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod url_tests {
    //! The Redis URL holds the password: neither a refused URL nor a failing connection may
    //! put it into a `StoreError`, whose text ends up in logs.

    use super::*;

    const PASSWORD: &str = "REDISPW";

    #[test]
    fn a_refused_url_is_not_quoted() {
        for url in [
            "redis://:REDISPW@127.0.0.1:1/x,redis://:OTHERPW@h:2",
            "redis://:REDISPW@[::1",
            "redis://u:REDISPW@h:notaport/",
            "rediss://u:REDISPW@h/",
            "u:REDISPW@h",
        ] {
            let Err(error) = RedisStore::new(url, Keys::default(), 1) else {
                panic!("{url} was accepted");
            };
            let text = format!("{error} {error:?}");
            assert!(!text.contains(PASSWORD), "{url}: {text}");
            assert!(!text.contains("OTHERPW"), "{url}: {text}");
        }
    }

    #[tokio::test]
    async fn a_failing_connection_does_not_name_the_password() {
        // Port 1 refuses: every call fails the way a Redis that is down does.
        let store = RedisStore::new("redis://:REDISPW@127.0.0.1:1/", Keys::default(), 1)
            .expect("a well-formed URL is accepted with Redis down");
        let error = store.ping().await.expect_err("nothing listens on port 1");
        let text = format!("{error} {error:?}");
        assert!(!text.contains(PASSWORD), "{text}");
    }
}
