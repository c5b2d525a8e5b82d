//! The Redis store, over a few multiplexed connections to one Redis, or over the redis crate's
//! async cluster client to a Redis Cluster (`REDIS_URL=redis+cluster://…`, see [`url`]).
//!
//! Why not a connection pool: a pooled checkout (deadpool-redis) sends a `PING` to recycle the
//! connection, which doubled the round trips of every call. A multiplexed connection pipelines
//! the commands of every concurrent caller over one socket instead, and
//! [`ConnectionManager`] reconnects it by itself after Redis restarts. The cluster client is
//! multiplexed the same way (one connection per node) and follows redirections, refreshes its
//! slot map and reconnects by itself.
//!
//! Every call is bounded by a timeout, so a Redis that hangs costs a request a fixed delay
//! (and the gateway treats it as a cache miss) instead of hanging it; and once a call found
//! Redis (or a cluster shard) not answering, calls to it fail at once until a probe succeeds
//! ([`breaker`]), so an outage costs requests nothing extra. Connections are opened lazily, so
//! a process starts with Redis down and recovers when it comes up.
//!
//! On a cluster, single-key commands and the scripts (whose keys share a hash tag, see
//! [`Keys`]) go where the client routes them; the batch look-up is split into one pipeline
//! per shard, sent in parallel ([`shards`]).

pub mod breaker;
pub mod shards;
pub mod url;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::{join_all, try_join_all};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr, get_slot};
use redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

use crate::presence::PRESENCE_SCRIPT;
use crate::ratelimit::GCRA_SCRIPT;
use crate::retained::RETAIN_SCRIPT;
use crate::session_index::{INDEX_SCRIPT, now_ms};
use crate::{
    CacheLookup, Keys, Lookup, PRESENCE_CHANNELS_TTL, PresenceEvent, RateCheck, RateDecision,
    RetainStamp, Revocation, Store, StoreError, revocation_expiry,
};
use breaker::Breaker;
use shards::{ShardMap, SharedMap, group_by_shard};
use url::Target;

/// The longest any one store call may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

/// How often at most the cluster's shard map is re-read after it was found stale or missing.
const MAP_RETRY: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
    keys: Keys,
    /// The GCRA script, sent by `EVALSHA` (loaded on first use).
    gcra: Arc<redis::Script>,
    /// The presence-membership script (see `crate::presence`).
    presence: Arc<redis::Script>,
    /// The retain script of published events (see `crate::retained`).
    retain: Arc<redis::Script>,
    /// The session index script (see `crate::session_index`).
    index: Arc<redis::Script>,
}

struct Shared {
    backend: Backend,
    /// The breaker of the single Redis, and on a cluster of the calls no shard is known for.
    breaker: Breaker,
}

enum Backend {
    Single {
        client: redis::Client,
        /// Opened on first use; each multiplexes every caller that lands on it.
        connections: Vec<OnceCell<ConnectionManager>>,
        next: AtomicUsize,
    },
    Cluster {
        client: ClusterClient,
        /// Opened on first use; one multiplexed connection per node inside.
        connection: OnceCell<ClusterConnection>,
        /// Slot → shard, read on first use and again when found stale.
        map: RwLock<Option<SharedMap>>,
        /// Milliseconds after `epoch` of the last attempt to read the map.
        map_tried_ms: AtomicU64,
        epoch: Instant,
    },
}

/// A connection of either kind: the commands that are the same on both go through it. It
/// lives for one call, on the stack: boxing the larger variant would cost an allocation a call.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> StoreError {
        if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout()
            // Not `is_cluster_error`: a `MOVED` or `ASK` is an answer (a slot moved), which
            // the batch look-up handles, not an outage that should open a breaker.
            || matches!(
                error.kind(),
                redis::ErrorKind::ClusterDown
                    | redis::ErrorKind::MasterDown
                    | redis::ErrorKind::TryAgain
                    | redis::ErrorKind::ClusterConnectionNotFound
            )
        {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Command(error.to_string())
        }
    }
}

/// One read of a batch look-up, by key.
enum Read {
    /// `HGET key field`: a cache entry.
    Cached(String, String),
    /// `EXISTS key`: a revocation.
    Revoked(String),
}

impl Read {
    fn key(&self) -> &str {
        match self {
            Read::Cached(key, _) | Read::Revoked(key) => key,
        }
    }

    fn add_to(&self, pipe: &mut Pipeline) {
        match self {
            Read::Cached(key, field) => pipe.hget(key, field),
            Read::Revoked(key) => pipe.exists(key),
        };
    }
}

impl RedisStore {
    /// Checks the URL; connections are opened lazily, so this succeeds with Redis down.
    /// The error never quotes the URL, which holds the password (see `url_tests`).
    /// On one Redis, `connections` multiplexed connections are used round-robin (one is
    /// enough for tens of thousands of calls a second; two spread the parsing over two
    /// cores); a cluster has one multiplexed connection per node. On a cluster `keys` carry
    /// their hash tags ([`Keys::for_cluster`]).
    pub fn new(url: &str, keys: Keys, connections: usize) -> Result<RedisStore, StoreError> {
        let (backend, keys) = match url::parse(url)? {
            Target::Single(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let backend = Backend::Single {
                    client,
                    connections: (0..connections.max(1)).map(|_| OnceCell::new()).collect(),
                    next: AtomicUsize::new(0),
                };
                (backend, keys)
            }
            Target::Cluster(nodes) => {
                // Few, short retries: a call to a dead master fails within the call timeout
                // (and opens its shard's breaker) instead of retrying for seconds.
                let client = ClusterClientBuilder::new(nodes)
                    .connection_timeout(CALL_TIMEOUT)
                    .response_timeout(CALL_TIMEOUT)
                    .retries(2)
                    .min_retry_wait(20)
                    .max_retry_wait(200)
                    .build()
                    .map_err(|e| {
                        StoreError::Unavailable(format!(
                            "invalid Redis Cluster URL: {}",
                            e.category()
                        ))
                    })?;
                let backend = Backend::Cluster {
                    client,
                    connection: OnceCell::new(),
                    map: RwLock::new(None),
                    map_tried_ms: AtomicU64::new(0),
                    epoch: Instant::now(),
                };
                (backend, keys.for_cluster()?)
            }
        };
        Ok(RedisStore {
            shared: Arc::new(Shared {
                backend,
                breaker: Breaker::default(),
            }),
            keys,
            gcra: Arc::new(redis::Script::new(GCRA_SCRIPT)),
            presence: Arc::new(redis::Script::new(PRESENCE_SCRIPT)),
            retain: Arc::new(redis::Script::new(RETAIN_SCRIPT)),
            index: Arc::new(redis::Script::new(INDEX_SCRIPT)),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.shared.backend, Backend::Cluster { .. })
    }

    /// A connection, opened if it is not yet.
    async fn connection(&self) -> Result<Connection, StoreError> {
        match &self.shared.backend {
            Backend::Single {
                client,
                connections,
                next,
            } => {
                let index = next.fetch_add(1, Ordering::Relaxed) % connections.len();
                let manager = connections[index]
                    .get_or_try_init(|| {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(CALL_TIMEOUT)
                            .set_response_timeout(CALL_TIMEOUT)
                            .set_number_of_retries(1)
                            .set_max_delay(CALL_TIMEOUT.as_millis() as u64);
                        ConnectionManager::new_with_config(client.clone(), config)
                    })
                    .await?;
                Ok(Connection::Single(manager.clone()))
            }
            Backend::Cluster {
                client, connection, ..
            } => {
                let connection = connection
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                Ok(Connection::Cluster(connection.clone()))
            }
        }
    }

    /// The cluster's shard map: `None` on one Redis, or while it cannot be read (then the
    /// store's own breaker stands for every shard).
    async fn shard_map(&self) -> Option<SharedMap> {
        let Backend::Cluster {
            map,
            map_tried_ms,
            epoch,
            ..
        } = &self.shared.backend
        else {
            return None;
        };
        if let Some(current) = map.read().ok().and_then(|m| m.clone()) {
            return Some(current);
        }
        // One reader at a time, and not more often than MAP_RETRY: while the cluster is down
        // the calls must not each wait for a map.
        let now = epoch.elapsed().as_millis() as u64 + 1;
        let tried = map_tried_ms.load(Ordering::Acquire);
        if (tried != 0 && now < tried + MAP_RETRY.as_millis() as u64)
            || map_tried_ms
                .compare_exchange(tried, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return None;
        }
        let read = tokio::time::timeout(CALL_TIMEOUT, async {
            let Ok(Connection::Cluster(mut connection)) = self.connection().await else {
                return None;
            };
            let answer = connection
                .route_command(
                    redis::cmd("CLUSTER").arg("SLOTS"),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                )
                .await
                .ok()?;
            ShardMap::from_cluster_slots(&answer).map(Arc::new)
        })
        .await
        .ok()
        .flatten()?;
        if let Ok(mut slot) = map.write() {
            *slot = Some(read.clone());
        }
        Some(read)
    }

    /// Forgets the shard map (a pipeline met a slot that moved): the next call re-reads it.
    fn forget_shard_map(&self) {
        if let Backend::Cluster { map, .. } = &self.shared.backend
            && let Ok(mut slot) = map.write()
        {
            *slot = None;
        }
    }

    /// Runs `call` through `breaker`, bounded by [`CALL_TIMEOUT`].
    async fn guarded<T, F>(&self, breaker: &Breaker, call: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Connection) -> Result<T, redis::RedisError>,
    {
        let admission = breaker.admit()?;
        let result = tokio::time::timeout(CALL_TIMEOUT, async {
            let mut connection = self.connection().await?;
            Ok(call(&mut connection).await?)
        })
        .await
        .unwrap_or(Err(StoreError::Timeout));
        breaker.record(admission, &result);
        result
    }

    /// Runs one call about `key` (any key it touches: they share a slot), through the breaker
    /// of the shard that serves it.
    async fn run<T, F>(&self, key: &str, call: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Connection) -> Result<T, redis::RedisError>,
    {
        let map = self.shard_map().await;
        let breaker = map
            .as_deref()
            .and_then(|m| m.shard_of(key.as_bytes()).and_then(|s| m.breaker(s)))
            .unwrap_or(&self.shared.breaker);
        self.guarded(breaker, call).await
    }

    /// A batch look-up on a cluster: one pipeline per shard, in parallel. A shard that does
    /// not answer costs only its cache entries (misses), unless it holds a revocation asked
    /// about: then the look-up fails, as a revocation is never assumed absent.
    async fn cluster_lookup(&self, reads: &[Read]) -> Result<Vec<Value>, StoreError> {
        let map = match self.shard_map().await {
            Some(map) => map,
            None => Arc::new(ShardMap::unknown()),
        };
        let keys: Vec<&[u8]> = reads.iter().map(|r| r.key().as_bytes()).collect();
        let groups = group_by_shard(&map, &keys);
        let keys = &keys;
        let answers = join_all(groups.iter().map(|group| {
            let map = &map;
            async move {
                let first = keys[group[0]];
                let breaker = map
                    .shard_of(first)
                    .and_then(|s| map.breaker(s))
                    .unwrap_or(&self.shared.breaker);
                let mut pipe = redis::pipe();
                for &index in group {
                    reads[index].add_to(&mut pipe);
                }
                // To the master of the first key's slot, which serves the whole group.
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(
                    get_slot(first),
                    SlotAddr::Master,
                ));
                self.guarded(breaker, async |c| match c {
                    Connection::Cluster(c) => c.route_pipeline(&pipe, 0, group.len(), route).await,
                    Connection::Single(c) => pipe.query_async(c).await,
                })
                .await
            }
        }))
        .await;
        let mut values = vec![Value::Nil; reads.len()];
        let mut unanswered = None;
        let mut answered = 0;
        for (group, answer) in groups.iter().zip(answers) {
            match answer {
                Ok(answer) if answer.len() == group.len() => {
                    answered += 1;
                    for (&index, value) in group.iter().zip(answer) {
                        values[index] = value;
                    }
                }
                Ok(_) => return Err(StoreError::Command("short pipeline answer".to_owned())),
                // A slot moved between shards (a resharding): re-read the map, and ask key by
                // key this once (the client follows each key's redirection).
                Err(StoreError::Command(_)) => {
                    self.forget_shard_map();
                    return self.key_by_key(reads).await;
                }
                Err(error) => {
                    if group.iter().any(|&i| matches!(reads[i], Read::Revoked(_))) {
                        return Err(error);
                    }
                    unanswered.get_or_insert(error);
                }
            }
        }
        match unanswered {
            // Not one shard answered: the store is down, not a shard.
            Some(error) if answered == 0 => Err(error),
            _ => Ok(values),
        }
    }

    /// Each read on its own, in parallel: the slow but always-routable form of a look-up.
    async fn key_by_key(&self, reads: &[Read]) -> Result<Vec<Value>, StoreError> {
        try_join_all(reads.iter().map(|read| async move {
            let mut pipe = redis::pipe();
            read.add_to(&mut pipe);
            let mut answer: Vec<Value> = self
                .run(read.key(), async |c| pipe.query_async(c).await)
                .await?;
            answer
                .pop()
                .ok_or_else(|| StoreError::Command("empty answer".to_owned()))
        }))
        .await
    }

    fn cache_reads(&self, lookups: &[CacheLookup<'_>]) -> Vec<Read> {
        lookups
            .iter()
            .map(|l| Read::Cached(self.keys.channel_data(l.channel), l.scope.to_owned()))
            .collect()
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn cached(&self, lookups: &[CacheLookup<'_>]) -> Result<Vec<Option<String>>, StoreError> {
        if lookups.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_cluster() {
            let values = self.cluster_lookup(&self.cache_reads(lookups)).await?;
            return values
                .iter()
                .map(|v| Ok(redis::from_redis_value::<Option<String>>(v)?))
                .collect();
        }
        let mut pipe = redis::pipe();
        for lookup in lookups {
            pipe.hget(self.keys.channel_data(lookup.channel), lookup.scope);
        }
        self.run("", async |c| pipe.query_async(c).await).await
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
        self.run(&key, async |c| pipe.query_async(c).await).await
    }

    async fn drop_cached(&self, channel: &str) -> Result<(), StoreError> {
        let key = self.keys.channel_data(channel);
        self.run(&key, async |c| c.del::<_, ()>(&key).await).await
    }

    async fn retained_events(&self, channel: &str) -> Result<Vec<(String, String)>, StoreError> {
        let key = self.keys.retained(channel);
        let mut events: Vec<(String, String)> =
            self.run(&key, async |c| c.hgetall(&key).await).await?;
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
        self.run(&key, async |c| {
            c.hset::<_, _, _, ()>(&key, event, data).await
        })
        .await
    }

    async fn clear_retained_events(
        &self,
        channel: &str,
        event: Option<&str>,
    ) -> Result<(), StoreError> {
        // The stamps go too (one slot on a cluster: see `Keys::retained`), so a cleared
        // event is not held against an older publication.
        let keys = [
            self.keys.retained(channel),
            self.keys.retained_stamps(channel),
        ];
        let mut pipe = redis::pipe();
        pipe.atomic();
        match event {
            Some(event) => {
                pipe.hdel(&keys[0], event).ignore();
                pipe.hdel(&keys[1], event).ignore();
            }
            None => {
                pipe.del(&keys).ignore();
            }
        }
        self.run(&keys[0], async |c| pipe.query_async(c).await)
            .await
    }

    async fn retain_event(
        &self,
        channel: &str,
        event: &str,
        data: &str,
        stamp: RetainStamp<'_>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.keys.retained(channel);
        let mut invocation = self.retain.prepare_invoke();
        invocation
            .key(&key)
            .key(self.keys.retained_stamps(channel))
            .arg(event)
            .arg(data)
            .arg(stamp.accepted_ms)
            .arg(stamp.publication_id)
            .arg(ttl.as_millis().max(1) as u64);
        let written: u8 = self
            .run(&key, async |c| invocation.invoke_async(c).await)
            .await?;
        Ok(written == 1)
    }

    async fn channel_owner(&self, channel: &str) -> Result<Option<String>, StoreError> {
        let key = self.keys.owner(channel);
        self.run(&key, async |c| c.get(&key).await).await
    }

    async fn set_channel_owner(
        &self,
        channel: &str,
        user_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = self.keys.owner(channel);
        match user_id {
            Some(user) => {
                self.run(&key, async |c| c.set::<_, _, ()>(&key, user).await)
                    .await
            }
            None => self.run(&key, async |c| c.del::<_, ()>(&key).await).await,
        }
    }

    async fn is_member(&self, channel: &str, user_id: &str) -> Result<bool, StoreError> {
        let key = self.keys.members(channel);
        self.run(&key, async |c| c.sismember(&key, user_id).await)
            .await
    }

    async fn add_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError> {
        let key = self.keys.members(channel);
        self.run(&key, async |c| c.sadd::<_, _, ()>(&key, user_id).await)
            .await
    }

    async fn remove_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError> {
        let key = self.keys.members(channel);
        self.run(&key, async |c| c.srem::<_, _, ()>(&key, user_id).await)
            .await
    }

    async fn user_info(&self, user_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let key = self.keys.user(user_id);
        let mut fields: Vec<(String, String)> =
            self.run(&key, async |c| c.hgetall(&key).await).await?;
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
        self.run(&key, async |c| {
            c.hset_multiple::<_, _, _, ()>(&key, fields).await
        })
        .await
    }

    async fn replace_user_info(
        &self,
        user_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), StoreError> {
        let key = self.keys.user(user_id);
        // One key, so one slot: DEL and HSET in one MULTI, never a half-replaced hash.
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        if !fields.is_empty() {
            pipe.hset_multiple(&key, fields).ignore();
        }
        self.run(&key, async |c| pipe.query_async(c).await).await
    }

    async fn watchlist(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let key = self.keys.watchlist(user_id);
        let mut watched: Vec<String> = self.run(&key, async |c| c.smembers(&key).await).await?;
        watched.sort();
        Ok(watched)
    }

    async fn replace_watchlist(&self, user_id: &str, watched: &[String]) -> Result<(), StoreError> {
        let key = self.keys.watchlist(user_id);
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        if !watched.is_empty() {
            pipe.sadd(&key, watched).ignore();
        }
        self.run(&key, async |c| pipe.query_async(c).await).await
    }

    async fn is_online(&self, user_id: &str) -> Result<bool, StoreError> {
        // An empty hash does not exist in Redis, so one EXISTS over both keys answers
        // "heartbeating or in any presence channel".
        let keys = [
            self.keys.online(user_id),
            self.keys.presence_channels(user_id),
        ];
        let live: u32 = self.run(&keys[0], async |c| c.exists(&keys).await).await?;
        Ok(live > 0)
    }

    async fn set_online(&self, user_id: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = self.keys.online(user_id);
        self.run(&key, async |c| {
            c.set_ex::<_, _, ()>(&key, "1", ttl.as_secs().max(1)).await
        })
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
        let key = self.keys.presence_channels(user_id);
        let applied: u8 = self
            .run(&key, async |c| invocation.invoke_async(c).await)
            .await?;
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
        let key = self.keys.rate_limit(checks[0].bucket);
        let (index, retry_us): (usize, u64) = self
            .run(&key, async |c| invocation.invoke_async(c).await)
            .await?;
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
            .run(&key, async |c| {
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
        self.run(&key, async |c| c.exists(&key).await).await
    }

    async fn forget_sighting(&self, id: &str) -> Result<(), StoreError> {
        let key = self.keys.seen(id);
        self.run(&key, async |c| c.del(&key).await).await
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
        if self.is_cluster() {
            // One EXISTS per revocation: its keys hash to different slots.
            let mut reads = self.cache_reads(cache);
            reads.extend(
                revocations
                    .iter()
                    .map(|r| Read::Revoked(self.keys.revocation(*r))),
            );
            let values = self.cluster_lookup(&reads).await?;
            let (cached, revoked) = values.split_at(cache.len());
            let mut any_revoked = false;
            for value in revoked {
                any_revoked |= redis::from_redis_value::<u64>(value)? > 0;
            }
            return Ok(Lookup {
                cached: cached
                    .iter()
                    .map(redis::from_redis_value::<Option<String>>)
                    .collect::<Result<Vec<_>, _>>()?,
                revoked: any_revoked,
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
        let mut values: Vec<redis::Value> =
            self.run("", async |c| pipe.query_async(c).await).await?;
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
                self.run(&key, async |c| {
                    c.set_ex::<_, _, ()>(&key, "1", ttl.as_secs()).await
                })
                .await
            }
            None => {
                self.run(&key, async |c| c.set::<_, _, ()>(&key, "1").await)
                    .await
            }
        }
    }

    async fn create_session(
        &self,
        session_id: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.session(session_id);
        self.run(&key, async |c| {
            c.set_ex::<_, _, ()>(&key, data, ttl.as_secs().max(1)).await
        })
        .await
    }

    async fn touch_session(
        &self,
        session_id: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys.session(session_id);
        // GETEX reads and renews in one atomic command (Redis ≥ 6.2).
        self.run(&key, async |c| {
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
        self.run(&key, async |c| {
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
        self.run(&key, async |c| c.del::<_, i64>(&key).await)
            .await
            .map(drop)
    }

    async fn index_session(
        &self,
        user_id: &str,
        session_id: &str,
        until: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.user_sessions(user_id);
        let now = now_ms();
        let mut invocation = self.index.prepare_invoke();
        invocation
            .key(&key)
            .arg(session_id)
            .arg(now + until.as_millis().max(1) as u64)
            .arg(now);
        self.run(&key, async |c| invocation.invoke_async::<u8>(c).await)
            .await
            .map(drop)
    }

    async fn unindex_session(&self, user_id: &str, session_id: &str) -> Result<(), StoreError> {
        let key = self.keys.user_sessions(user_id);
        self.run(&key, async |c| c.zrem::<_, _, ()>(&key, session_id).await)
            .await
    }

    async fn live_sessions(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let key = self.keys.user_sessions(user_id);
        let now = now_ms();
        let indexed: Vec<String> = self
            .run(&key, async |c| {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .query_async(c)
                    .await
            })
            .await?;
        // A session's key lives in its own slot: one EXISTS each (a user has few sessions).
        let mut live = Vec::with_capacity(indexed.len());
        let mut ended = Vec::new();
        for id in indexed {
            let session = self.keys.session(&id);
            let exists: bool = self
                .run(&session, async |c| c.exists(&session).await)
                .await?;
            if exists {
                live.push(id);
            } else {
                ended.push(id);
            }
        }
        if !ended.is_empty() {
            self.run(&key, async |c| c.zrem::<_, _, ()>(&key, &ended).await)
                .await?;
        }
        Ok(live)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // On a cluster to one node, not to all: a replica that is down does not make the
        // store unready.
        self.guarded(&self.shared.breaker, async |c| match c {
            Connection::Cluster(c) => c
                .route_command(
                    &redis::cmd("PING"),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                )
                .await
                .map(drop),
            Connection::Single(c) => redis::cmd("PING").query_async::<String>(c).await.map(drop),
        })
        .await
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

#[cfg(test)]
mod outage_tests {
    //! A Redis that accepts connections and never answers (hung, or a black hole): the first
    //! call waits out the call timeout, the next ones fail at once (the breaker), instead of
    //! each waiting a timeout of its own.

    use super::*;

    #[tokio::test]
    async fn a_redis_that_hangs_costs_one_timeout_then_calls_fail_fast() {
        // The kernel completes the handshake from the backlog; nothing ever reads or answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
        let port = listener.local_addr().expect("its address").port();
        let store = RedisStore::new(&format!("redis://127.0.0.1:{port}/"), Keys::default(), 1)
            .expect("a well-formed URL");
        let first = store.retained_events("private-a@1").await;
        assert!(
            matches!(first, Err(StoreError::Timeout | StoreError::Unavailable(_))),
            "{first:?}"
        );
        for _ in 0..3 {
            match store.retained_events("private-a@1").await {
                Err(StoreError::Unavailable(text)) => {
                    assert!(text.contains("failing fast"), "{text}")
                }
                other => panic!("expected a fast failure, got {other:?}"),
            }
        }
        drop(listener);
    }
}
