//! The in-memory store of `porter dev` and unit tests: the same semantics as Redis for the
//! operations Porter uses, TTLs included, in one process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::presence;
use crate::ratelimit::gcra;
use crate::retained;
use crate::{
    CacheLookup, Keys, Lookup, PRESENCE_CHANNELS_TTL, PresenceEvent, RateCheck, RateDecision,
    RetainStamp, Revocation, Store, StoreError, revocation_expiry,
};

enum Value {
    Hash(BTreeMap<String, String>),
    Set(BTreeSet<String>),
    Flag,
    Text(String),
    /// A rate-limit bucket's theoretical arrival time, in µs of [`clock_us`].
    Tat(u64),
}

/// Expired entries are swept out once the map holds this many keys, and again each time it has
/// doubled since the last sweep: cache entries and rate-limit buckets of one-off callers do not
/// pile up in a long-running `porter dev`, at an amortized O(1) per write.
const SWEEP_ABOVE: usize = 50_000;

/// Microseconds on a monotonic clock (tokio's, so paused-time tests can advance it).
fn clock_us() -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    Instant::now().duration_since(base).as_micros() as u64 + 1
}

struct Entry {
    value: Value,
    expires: Option<Instant>,
}

#[derive(Default)]
pub struct MemoryStore {
    keys: Keys,
    data: Mutex<HashMap<String, Entry>>,
    /// The map size at which the next sweep of expired entries runs.
    sweep_at: AtomicUsize,
}

impl MemoryStore {
    pub fn new(keys: Keys) -> MemoryStore {
        MemoryStore {
            keys,
            ..MemoryStore::default()
        }
    }

    /// Drops expired entries when the map has grown enough since the last sweep.
    fn sweep_if_due(&self, data: &mut HashMap<String, Entry>) {
        if data.len() < self.sweep_at.load(Ordering::Relaxed).max(SWEEP_ABOVE) {
            return;
        }
        let now = Instant::now();
        data.retain(|_, e| e.expires.is_none_or(|at| at > now));
        self.sweep_at
            .store((data.len() * 2).max(SWEEP_ABOVE), Ordering::Relaxed);
    }

    fn data(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Each operation leaves the map consistent before it can panic.
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live<'a>(data: &'a mut HashMap<String, Entry>, key: &str) -> Option<&'a mut Entry> {
        let expired = data
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|at| at <= Instant::now()));
        if expired {
            data.remove(key);
        }
        data.get_mut(key)
    }

    fn hash_get(&self, key: &str, field: &str) -> Option<String> {
        match Self::live(&mut self.data(), key).map(|e| &e.value) {
            Some(Value::Hash(h)) => h.get(field).cloned(),
            _ => None,
        }
    }

    fn hash_all(&self, key: &str) -> Vec<(String, String)> {
        match Self::live(&mut self.data(), key).map(|e| &e.value) {
            Some(Value::Hash(h)) => h.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => Vec::new(),
        }
    }

    fn hash_set(&self, key: String, fields: &[(&str, &str)], ttl: Option<Duration>) {
        let mut data = self.data();
        self.sweep_if_due(&mut data);
        let existing = Self::live(&mut data, &key).is_some();
        let entry = if existing {
            data.get_mut(&key)
        } else {
            data.insert(
                key.clone(),
                Entry {
                    value: Value::Hash(BTreeMap::new()),
                    expires: None,
                },
            );
            data.get_mut(&key)
        };
        if let Some(entry) = entry {
            if !matches!(entry.value, Value::Hash(_)) {
                entry.value = Value::Hash(BTreeMap::new());
            }
            if let Value::Hash(h) = &mut entry.value {
                for (field, value) in fields {
                    h.insert((*field).to_owned(), (*value).to_owned());
                }
            }
            if let Some(ttl) = ttl {
                entry.expires = Some(Instant::now() + ttl);
            }
        }
    }

    fn delete(&self, key: &str) {
        self.data().remove(key);
    }

    /// Takes a hash out of the map (empty when absent), to be put back by [`Self::put_hash`].
    fn take_hash(data: &mut HashMap<String, Entry>, key: &str) -> BTreeMap<String, String> {
        match Self::live(data, key).map(|e| &mut e.value) {
            Some(Value::Hash(h)) => std::mem::take(h),
            _ => BTreeMap::new(),
        }
    }

    /// Puts a hash back with an expiry; an empty hash does not exist, as in Redis.
    fn put_hash(
        data: &mut HashMap<String, Entry>,
        key: String,
        hash: BTreeMap<String, String>,
        expires: Option<Instant>,
    ) {
        if hash.is_empty() {
            data.remove(&key);
        } else {
            data.insert(
                key,
                Entry {
                    value: Value::Hash(hash),
                    expires,
                },
            );
        }
    }

    /// The expiry an entry has now, to keep it when it is put back.
    fn expiry_of(data: &HashMap<String, Entry>, key: &str) -> Option<Instant> {
        data.get(key).and_then(|e| e.expires)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn cached(&self, lookups: &[CacheLookup<'_>]) -> Result<Vec<Option<String>>, StoreError> {
        Ok(lookups
            .iter()
            .map(|l| self.hash_get(&self.keys.channel_data(l.channel), l.scope))
            .collect())
    }

    async fn put_cached(
        &self,
        channel: &str,
        scope: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.hash_set(self.keys.channel_data(channel), &[(scope, data)], Some(ttl));
        Ok(())
    }

    async fn drop_cached(&self, channel: &str) -> Result<(), StoreError> {
        self.delete(&self.keys.channel_data(channel));
        Ok(())
    }

    async fn retained_events(&self, channel: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.hash_all(&self.keys.retained(channel)))
    }

    async fn set_retained_event(
        &self,
        channel: &str,
        event: &str,
        data: &str,
    ) -> Result<(), StoreError> {
        self.hash_set(self.keys.retained(channel), &[(event, data)], None);
        Ok(())
    }

    async fn clear_retained_events(
        &self,
        channel: &str,
        event: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut data = self.data();
        for key in [
            self.keys.retained(channel),
            self.keys.retained_stamps(channel),
        ] {
            match event {
                None => {
                    data.remove(&key);
                }
                Some(event) => {
                    if let Some(Entry {
                        value: Value::Hash(h),
                        ..
                    }) = Self::live(&mut data, &key)
                    {
                        h.remove(event);
                    }
                }
            }
        }
        Ok(())
    }

    async fn retain_event(
        &self,
        channel: &str,
        event: &str,
        value: &str,
        stamp: RetainStamp<'_>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (retained_key, stamps_key) = (
            self.keys.retained(channel),
            self.keys.retained_stamps(channel),
        );
        let mut data = self.data();
        self.sweep_if_due(&mut data);
        let (previous_retained, previous_stamps) = (
            Self::expiry_of(&data, &retained_key),
            Self::expiry_of(&data, &stamps_key),
        );
        let mut retained_hash = Self::take_hash(&mut data, &retained_key);
        let mut stamps = Self::take_hash(&mut data, &stamps_key);
        // Stamps count on the store's monotonic clock, in ms, as Redis's on its own.
        let now_ms = clock_us() / 1000;
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let outcome = retained::apply(
            &mut retained_hash,
            &mut stamps,
            event,
            value,
            stamp,
            ttl_ms,
            now_ms,
        );
        let (retained_expires, stamps_expires) = if outcome.written {
            let at = Some(Instant::now() + Duration::from_millis(outcome.expires_ms - now_ms));
            (at, at)
        } else {
            (previous_retained, previous_stamps)
        };
        Self::put_hash(&mut data, retained_key, retained_hash, retained_expires);
        Self::put_hash(&mut data, stamps_key, stamps, stamps_expires);
        Ok(outcome.written)
    }

    async fn channel_owner(&self, channel: &str) -> Result<Option<String>, StoreError> {
        Ok(
            match Self::live(&mut self.data(), &self.keys.owner(channel)).map(|e| &e.value) {
                Some(Value::Text(user)) => Some(user.clone()),
                _ => None,
            },
        )
    }

    async fn set_channel_owner(
        &self,
        channel: &str,
        user_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = self.keys.owner(channel);
        let mut data = self.data();
        match user_id {
            Some(user) => {
                data.insert(
                    key,
                    Entry {
                        value: Value::Text(user.to_owned()),
                        expires: None,
                    },
                );
            }
            None => {
                data.remove(&key);
            }
        }
        Ok(())
    }

    async fn is_member(&self, channel: &str, user_id: &str) -> Result<bool, StoreError> {
        let key = self.keys.members(channel);
        Ok(matches!(
            Self::live(&mut self.data(), &key).map(|e| &e.value),
            Some(Value::Set(s)) if s.contains(user_id)
        ))
    }

    async fn add_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError> {
        let mut data = self.data();
        let entry = data.entry(self.keys.members(channel)).or_insert(Entry {
            value: Value::Set(BTreeSet::new()),
            expires: None,
        });
        if let Value::Set(s) = &mut entry.value {
            s.insert(user_id.to_owned());
        } else {
            entry.value = Value::Set(BTreeSet::from([user_id.to_owned()]));
        }
        Ok(())
    }

    async fn remove_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError> {
        if let Some(Entry {
            value: Value::Set(s),
            ..
        }) = self.data().get_mut(&self.keys.members(channel))
        {
            s.remove(user_id);
        }
        Ok(())
    }

    async fn user_info(&self, user_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.hash_all(&self.keys.user(user_id)))
    }

    async fn set_user_info(
        &self,
        user_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), StoreError> {
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.hash_set(self.keys.user(user_id), &fields, None);
        Ok(())
    }

    async fn replace_user_info(
        &self,
        user_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), StoreError> {
        let hash: BTreeMap<String, String> = fields.iter().cloned().collect();
        let key = self.keys.user(user_id);
        let mut data = self.data();
        if hash.is_empty() {
            data.remove(&key);
        } else {
            data.insert(
                key,
                Entry {
                    value: Value::Hash(hash),
                    expires: None,
                },
            );
        }
        Ok(())
    }

    async fn watchlist(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let key = self.keys.watchlist(user_id);
        Ok(match Self::live(&mut self.data(), &key).map(|e| &e.value) {
            Some(Value::Set(s)) => s.iter().cloned().collect(),
            _ => Vec::new(),
        })
    }

    async fn replace_watchlist(&self, user_id: &str, watched: &[String]) -> Result<(), StoreError> {
        let key = self.keys.watchlist(user_id);
        let mut data = self.data();
        if watched.is_empty() {
            data.remove(&key);
        } else {
            data.insert(
                key,
                Entry {
                    value: Value::Set(watched.iter().cloned().collect()),
                    expires: None,
                },
            );
        }
        Ok(())
    }

    async fn is_online(&self, user_id: &str) -> Result<bool, StoreError> {
        let mut data = self.data();
        let heartbeat = Self::live(&mut data, &self.keys.online(user_id)).is_some();
        let in_channel = matches!(
            Self::live(&mut data, &self.keys.presence_channels(user_id)).map(|e| &e.value),
            Some(Value::Hash(h)) if !h.is_empty()
        );
        Ok(heartbeat || in_channel)
    }

    async fn set_online(&self, user_id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.data().insert(
            self.keys.online(user_id),
            Entry {
                value: Value::Flag,
                expires: Some(Instant::now() + ttl),
            },
        );
        Ok(())
    }

    async fn update_presence(
        &self,
        user_id: &str,
        channel: &str,
        event: PresenceEvent,
        time_ms: u64,
    ) -> Result<bool, StoreError> {
        let (joined_key, left_key) = (
            self.keys.presence_channels(user_id),
            self.keys.presence_left(user_id),
        );
        let mut data = self.data();
        let mut take = |key: &str| match Self::live(&mut data, key).map(|e| &mut e.value) {
            Some(Value::Hash(h)) => std::mem::take(h),
            _ => Default::default(),
        };
        let (mut joined, mut left) = (take(&joined_key), take(&left_key));
        let update = presence::apply(&mut joined, &mut left, channel, event, time_ms);
        let now = Instant::now();
        // As in Redis, an empty hash does not exist.
        let mut put = |key: String, hash: BTreeMap<String, String>, ttl: Option<Duration>| {
            if hash.is_empty() {
                data.remove(&key);
            } else {
                data.insert(
                    key,
                    Entry {
                        value: Value::Hash(hash),
                        expires: ttl.map(|ttl| now + ttl),
                    },
                );
            }
        };
        put(
            joined_key,
            joined,
            update.joined_expires_in_ms.map(Duration::from_millis),
        );
        put(left_key, left, Some(PRESENCE_CHANNELS_TTL));
        Ok(update.applied)
    }

    async fn rate_limit(&self, checks: &[RateCheck<'_>]) -> Result<RateDecision, StoreError> {
        let mut data = self.data();
        self.sweep_if_due(&mut data);
        let now = clock_us();
        let mut charged = Vec::with_capacity(checks.len());
        for (index, check) in checks.iter().enumerate() {
            let key = self.keys.rate_limit(check.bucket);
            let tat = match Self::live(&mut data, &key).map(|e| &e.value) {
                Some(Value::Tat(tat)) => Some(*tat),
                _ => None,
            };
            match gcra(now, tat, check.quota) {
                Ok(new_tat) => charged.push((key, new_tat)),
                Err(retry_us) => {
                    return Ok(RateDecision::Limited {
                        bucket: index,
                        retry_after: Duration::from_micros(retry_us),
                    });
                }
            }
        }
        let instant = Instant::now();
        for (key, tat) in charged {
            data.insert(
                key,
                Entry {
                    value: Value::Tat(tat),
                    expires: Some(instant + Duration::from_micros(tat.saturating_sub(now))),
                },
            );
        }
        Ok(RateDecision::Allowed)
    }

    async fn first_sighting(&self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.keys.seen(id);
        let mut data = self.data();
        if Self::live(&mut data, &key).is_some() {
            return Ok(false);
        }
        data.insert(
            key,
            Entry {
                value: Value::Flag,
                expires: Some(Instant::now() + ttl),
            },
        );
        Ok(true)
    }

    async fn sighted(&self, id: &str) -> Result<bool, StoreError> {
        Ok(Self::live(&mut self.data(), &self.keys.seen(id)).is_some())
    }

    async fn forget_sighting(&self, id: &str) -> Result<(), StoreError> {
        self.data().remove(&self.keys.seen(id));
        Ok(())
    }

    async fn lookup(
        &self,
        cache: &[CacheLookup<'_>],
        revocations: &[Revocation<'_>],
    ) -> Result<Lookup, StoreError> {
        let cached = self.cached(cache).await?;
        let mut data = self.data();
        let revoked = revocations
            .iter()
            .any(|r| Self::live(&mut data, &self.keys.revocation(*r)).is_some());
        Ok(Lookup { cached, revoked })
    }

    async fn revoke(&self, revocation: Revocation<'_>, ttl: Duration) -> Result<(), StoreError> {
        // `revocation_expiry` keeps `Instant + ttl` from overflowing, and Redis the same TTL.
        let expires = revocation_expiry(ttl).map(|ttl| Instant::now() + ttl);
        self.data().insert(
            self.keys.revocation(revocation),
            Entry {
                value: Value::Flag,
                expires,
            },
        );
        Ok(())
    }

    async fn create_session(
        &self,
        session_id: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.data().insert(
            self.keys.session(session_id),
            Entry {
                value: Value::Text(data.to_owned()),
                expires: Some(Instant::now() + ttl),
            },
        );
        Ok(())
    }

    async fn touch_session(
        &self,
        session_id: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let mut data = self.data();
        match Self::live(&mut data, &self.keys.session(session_id)) {
            Some(entry) => match &entry.value {
                Value::Text(text) => {
                    let text = text.clone();
                    entry.expires = Some(Instant::now() + ttl);
                    Ok(Some(text))
                }
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }

    async fn cap_session(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut data = self.data();
        if let Some(entry) = Self::live(&mut data, &self.keys.session(session_id)) {
            let cap = Instant::now() + ttl;
            if entry.expires.is_none_or(|at| at > cap) {
                entry.expires = Some(cap);
            }
        }
        Ok(())
    }

    async fn forget_session(&self, session_id: &str) -> Result<(), StoreError> {
        self.data().remove(&self.keys.session(session_id));
        Ok(())
    }

    async fn index_session(
        &self,
        user_id: &str,
        session_id: &str,
        until: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.user_sessions(user_id);
        let mut data = self.data();
        let now_ms = clock_us() / 1000;
        let mut index = Self::take_hash(&mut data, &key);
        index.retain(|_, end| end.parse::<u64>().is_ok_and(|end| end > now_ms));
        index.insert(
            session_id.to_owned(),
            (now_ms + until.as_millis().max(1) as u64).to_string(),
        );
        let last = index
            .values()
            .filter_map(|end| end.parse::<u64>().ok())
            .max()
            .unwrap_or(now_ms);
        let expires = Instant::now() + Duration::from_millis(last.saturating_sub(now_ms));
        Self::put_hash(&mut data, key, index, Some(expires));
        Ok(())
    }

    async fn unindex_session(&self, user_id: &str, session_id: &str) -> Result<(), StoreError> {
        if let Some(Entry {
            value: Value::Hash(index),
            ..
        }) = Self::live(&mut self.data(), &self.keys.user_sessions(user_id))
        {
            index.remove(session_id);
        }
        Ok(())
    }

    async fn live_sessions(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let key = self.keys.user_sessions(user_id);
        let mut data = self.data();
        let now_ms = clock_us() / 1000;
        let expires = Self::expiry_of(&data, &key);
        let mut index = Self::take_hash(&mut data, &key);
        index.retain(|id, end| {
            end.parse::<u64>().is_ok_and(|end| end > now_ms)
                && Self::live(&mut data, &self.keys.session(id)).is_some()
        });
        let live = index.keys().cloned().collect();
        Self::put_hash(&mut data, key, index, expires);
        Ok(live)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
