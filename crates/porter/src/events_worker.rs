//! The events side of a worker process: the settings of `porter worker --events` (and of
//! `porter dev`, which always applies published events), and the wiring of the
//! [`EventConsumer`] over an events source, the store, the session exchanges and the
//! upstream servers.
//!
//! Why a flag: forwarding upstream needs the app's Pusher secret, which authorizing workers
//! never hold. A process started with `--events` and `PORTER_UPSTREAM_URL` is the one place
//! besides the gateway that reads `PUSHER_SECRET`; run it as its own deployment so that the
//! authorizing workers stay without it.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use porter_broker::event_source::EventSource;
use porter_broker::session_publish::SessionExchanges;
use porter_core::policy::Policy;
use porter_core::signing::Secret;
use porter_store::Store;
use porter_worker::publish::Applier;
use porter_worker::publish::consumer::EventConsumer;
use porter_worker::publish::metrics::PublishMetrics;
use porter_worker::publish::upstream::{
    AppCredentials, MAX_ATTEMPTS, RetryPolicy, Upstream, parse_bases,
};

use crate::concealed::Concealed;

/// Where published events are forwarded, and how patiently. The secret is [`Concealed`]: a
/// `{:?}` of the settings never shows it.
#[derive(Args, Debug, Clone)]
pub struct EventsArgs {
    /// Upstream Pusher-protocol servers (Pusher, sockudo, soketi) published events are
    /// forwarded to, comma-separated base URLs (`http://127.0.0.1:6001`); none when unset.
    #[arg(long, env = "PORTER_UPSTREAM_URL", value_name = "URLS")]
    pub upstream_url: Option<String>,
    /// The app key upstream requests are signed with (needed with an upstream URL).
    #[arg(long = "upstream-key", env = "PUSHER_KEY")]
    pub key: Option<String>,
    /// The app secret upstream requests are signed with (needed with an upstream URL).
    #[arg(
        long = "upstream-secret",
        env = "PUSHER_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<Concealed>,
    /// Attempts per upstream in all before a publication is dead-lettered: 1 to 11, so that
    /// they end within the step's claim (120 s).
    #[arg(long, env = "PORTER_UPSTREAM_ATTEMPTS", default_value_t = 5)]
    pub upstream_attempts: u32,
    /// The wait before the first retry, doubled on each later one (capped at 5 s), jittered.
    #[arg(long, env = "PORTER_UPSTREAM_BACKOFF_MS", default_value_t = 200)]
    pub upstream_backoff_ms: u64,
    /// Publications applied at once.
    #[arg(long, env = "PORTER_EVENTS_CONCURRENCY", default_value_t = 16)]
    pub events_concurrency: usize,
}

impl EventsArgs {
    /// The upstream servers, or `None` without an upstream URL. An upstream URL without the
    /// app's key and secret is refused at start-up.
    pub fn upstream(&self) -> anyhow::Result<Option<Upstream>> {
        let Some(list) = self
            .upstream_url
            .as_deref()
            .filter(|l| !l.trim().is_empty())
        else {
            return Ok(None);
        };
        let bases = parse_bases(list)?;
        let (Some(key), Some(secret)) = (&self.key, &self.secret) else {
            anyhow::bail!(
                "PORTER_UPSTREAM_URL is set, so PUSHER_KEY and PUSHER_SECRET (or --upstream-key and --upstream-secret) are required to sign the forwarded requests"
            );
        };
        if !(1..=MAX_ATTEMPTS).contains(&self.upstream_attempts) {
            // At most MAX_ATTEMPTS: an upstream's attempts must end within the step's claim.
            anyhow::bail!("PORTER_UPSTREAM_ATTEMPTS must be at least 1 and at most {MAX_ATTEMPTS}");
        }
        let retry = RetryPolicy {
            attempts: self.upstream_attempts,
            backoff: Duration::from_millis(self.upstream_backoff_ms.max(1)),
            ..RetryPolicy::default()
        };
        Ok(Some(Upstream::new(
            bases,
            AppCredentials {
                key: key.clone(),
                secret: Secret::new(secret.expose()),
            },
            retry,
        )?))
    }
}

/// Everything the consumer applies publications with.
pub struct EventParts {
    pub store: Arc<dyn Store>,
    pub policy: Arc<Policy>,
    pub exchanges: Arc<dyn SessionExchanges>,
    pub upstream: Option<Upstream>,
    pub metrics: PublishMetrics,
}

/// Runs the events consumer over `source` until it stops.
pub async fn consume(parts: EventParts, concurrency: usize, source: impl EventSource) {
    if let Some(upstream) = &parts.upstream {
        tracing::info!(
            upstreams = upstream.bases().len(),
            "forwarding published events upstream"
        );
    }
    let applier = Applier::new(
        parts.store,
        parts.policy,
        parts.exchanges,
        parts.upstream,
        parts.metrics,
    );
    EventConsumer::new(Arc::new(applier), concurrency)
        .run(source)
        .await;
}
