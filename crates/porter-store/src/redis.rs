//! The Redis store, over a deadpool connection pool.
//!
//! Every call is bounded by a timeout, so a Redis that hangs costs a request a fixed delay
//! (and the gateway treats it as a cache miss) instead of hanging it.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use redis::AsyncCommands;

use crate::{CacheLookup, Keys, Lookup, Revocation, Store, StoreError};

/// The longest any one store call may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    keys: Keys,
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> StoreError {
        StoreError::Command(error.to_string())
    }
}

impl From<deadpool_redis::PoolError> for StoreError {
    fn from(error: deadpool_redis::PoolError) -> StoreError {
        StoreError::Unavailable(error.to_string())
    }
}

impl RedisStore {
    /// Builds a pool; connections are opened lazily, so this succeeds with Redis down.
    pub fn new(url: &str, keys: Keys, max_connections: usize) -> Result<RedisStore, StoreError> {
        let mut config = Config::from_url(url);
        config.pool = Some(PoolConfig {
            max_size: max_connections,
            timeouts: Timeouts {
                wait: Some(CALL_TIMEOUT),
                create: Some(CALL_TIMEOUT),
                recycle: Some(CALL_TIMEOUT),
            },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(RedisStore { pool, keys })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Runs one call with a pooled connection, bounded by [`CALL_TIMEOUT`].
    async fn run<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut deadpool_redis::Connection) -> Result<T, redis::RedisError>,
    {
        tokio::time::timeout(CALL_TIMEOUT, async {
            let mut connection = self.pool.get().await?;
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
        let key = self.keys.online(user_id);
        self.run(async |c| c.exists(&key).await).await
    }

    async fn set_online(&self, user_id: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = self.keys.online(user_id);
        self.run(async |c| c.set_ex::<_, _, ()>(&key, "1", ttl.as_secs().max(1)).await)
            .await
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
        self.run(async |c| c.set_ex::<_, _, ()>(&key, "1", ttl.as_secs().max(1)).await)
            .await
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(async |c| redis::cmd("PING").query_async::<String>(c).await)
            .await
            .map(drop)
    }
}
