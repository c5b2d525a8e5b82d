//! A [`Store`] decorator that tells an [`Observer`] about every call before making it: the one
//! seam for counting store round trips or failing chosen calls, so that no wrapper has to
//! restate the whole trait.

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    CacheLookup, Lookup, PresenceEvent, RateCheck, RateDecision, RetainStamp, Revocation, Store,
    StoreError,
};

/// Sees each store call, by method name, before it runs.
pub trait Observer: Send + Sync + 'static {
    /// An error fails the call without running it.
    fn before(&self, call: &'static str) -> Result<(), StoreError>;
}

/// `inner`, with `observer` told of every call.
pub struct Observed<S, O> {
    pub inner: S,
    pub observer: O,
}

impl<S, O> Observed<S, O> {
    pub fn new(inner: S, observer: O) -> Observed<S, O> {
        Observed { inner, observer }
    }
}

#[async_trait]
impl<S: Store, O: Observer> Store for Observed<S, O> {
    async fn cached(&self, lookups: &[CacheLookup<'_>]) -> Result<Vec<Option<String>>, StoreError> {
        self.observer.before("cached")?;
        self.inner.cached(lookups).await
    }
    async fn put_cached(
        &self,
        channel: &str,
        scope: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.observer.before("put_cached")?;
        self.inner.put_cached(channel, scope, data, ttl).await
    }
    async fn drop_cached(&self, channel: &str) -> Result<(), StoreError> {
        self.observer.before("drop_cached")?;
        self.inner.drop_cached(channel).await
    }
    async fn retained_events(&self, channel: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.observer.before("retained_events")?;
        self.inner.retained_events(channel).await
    }
    async fn set_retained_event(
        &self,
        channel: &str,
        event: &str,
        data: &str,
    ) -> Result<(), StoreError> {
        self.observer.before("set_retained_event")?;
        self.inner.set_retained_event(channel, event, data).await
    }
    async fn clear_retained_events(
        &self,
        channel: &str,
        event: Option<&str>,
    ) -> Result<(), StoreError> {
        self.observer.before("clear_retained_events")?;
        self.inner.clear_retained_events(channel, event).await
    }
    async fn retain_event(
        &self,
        channel: &str,
        event: &str,
        data: &str,
        stamp: RetainStamp<'_>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.observer.before("retain_event")?;
        self.inner
            .retain_event(channel, event, data, stamp, ttl)
            .await
    }
    async fn channel_owner(&self, channel: &str) -> Result<Option<String>, StoreError> {
        self.observer.before("channel_owner")?;
        self.inner.channel_owner(channel).await
    }
    async fn set_channel_owner(
        &self,
        channel: &str,
        user_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.observer.before("set_channel_owner")?;
        self.inner.set_channel_owner(channel, user_id).await
    }
    async fn index_session(
        &self,
        user_id: &str,
        session_id: &str,
        until: Duration,
    ) -> Result<(), StoreError> {
        self.observer.before("index_session")?;
        self.inner.index_session(user_id, session_id, until).await
    }
    async fn unindex_session(&self, user_id: &str, session_id: &str) -> Result<(), StoreError> {
        self.observer.before("unindex_session")?;
        self.inner.unindex_session(user_id, session_id).await
    }
    async fn live_sessions(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        self.observer.before("live_sessions")?;
        self.inner.live_sessions(user_id).await
    }
    async fn is_member(&self, channel: &str, user_id: &str) -> Result<bool, StoreError> {
        self.observer.before("is_member")?;
        self.inner.is_member(channel, user_id).await
    }
    async fn add_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError> {
        self.observer.before("add_member")?;
        self.inner.add_member(channel, user_id).await
    }
    async fn remove_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError> {
        self.observer.before("remove_member")?;
        self.inner.remove_member(channel, user_id).await
    }
    async fn user_info(&self, user_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.observer.before("user_info")?;
        self.inner.user_info(user_id).await
    }
    async fn set_user_info(
        &self,
        user_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.observer.before("set_user_info")?;
        self.inner.set_user_info(user_id, fields).await
    }
    async fn replace_user_info(
        &self,
        user_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.observer.before("replace_user_info")?;
        self.inner.replace_user_info(user_id, fields).await
    }
    async fn watchlist(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        self.observer.before("watchlist")?;
        self.inner.watchlist(user_id).await
    }
    async fn replace_watchlist(&self, user_id: &str, watched: &[String]) -> Result<(), StoreError> {
        self.observer.before("replace_watchlist")?;
        self.inner.replace_watchlist(user_id, watched).await
    }
    async fn is_online(&self, user_id: &str) -> Result<bool, StoreError> {
        self.observer.before("is_online")?;
        self.inner.is_online(user_id).await
    }
    async fn set_online(&self, user_id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.observer.before("set_online")?;
        self.inner.set_online(user_id, ttl).await
    }
    async fn update_presence(
        &self,
        user_id: &str,
        channel: &str,
        event: PresenceEvent,
        time_ms: u64,
    ) -> Result<bool, StoreError> {
        self.observer.before("update_presence")?;
        self.inner
            .update_presence(user_id, channel, event, time_ms)
            .await
    }
    async fn rate_limit(&self, checks: &[RateCheck<'_>]) -> Result<RateDecision, StoreError> {
        self.observer.before("rate_limit")?;
        self.inner.rate_limit(checks).await
    }
    async fn first_sighting(&self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.observer.before("first_sighting")?;
        self.inner.first_sighting(id, ttl).await
    }
    async fn sighted(&self, id: &str) -> Result<bool, StoreError> {
        self.observer.before("sighted")?;
        self.inner.sighted(id).await
    }
    async fn forget_sighting(&self, id: &str) -> Result<(), StoreError> {
        self.observer.before("forget_sighting")?;
        self.inner.forget_sighting(id).await
    }
    async fn lookup(
        &self,
        cache: &[CacheLookup<'_>],
        revocations: &[Revocation<'_>],
    ) -> Result<Lookup, StoreError> {
        self.observer.before("lookup")?;
        self.inner.lookup(cache, revocations).await
    }
    async fn revoke(&self, revocation: Revocation<'_>, ttl: Duration) -> Result<(), StoreError> {
        self.observer.before("revoke")?;
        self.inner.revoke(revocation, ttl).await
    }
    async fn create_session(
        &self,
        session_id: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.observer.before("create_session")?;
        self.inner.create_session(session_id, data, ttl).await
    }
    async fn touch_session(
        &self,
        session_id: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.observer.before("touch_session")?;
        self.inner.touch_session(session_id, ttl).await
    }
    async fn cap_session(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.observer.before("cap_session")?;
        self.inner.cap_session(session_id, ttl).await
    }
    async fn forget_session(&self, session_id: &str) -> Result<(), StoreError> {
        self.observer.before("forget_session")?;
        self.inner.forget_session(session_id).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.observer.before("ping")?;
        self.inner.ping().await
    }
}
