//! Step 3 of applying a publication: the realtime server(s). The publication's body is
//! forwarded exactly as received to every base URL of `PORTER_UPSTREAM_URL` (Pusher, sockudo,
//! soketi) as `POST <base>/apps/{app_id}/events` or `/batch_events`, signed as the official
//! server SDKs sign (`auth_key`, `auth_timestamp`, `auth_version`, `body_md5`,
//! `auth_signature`: `porter_core::publish::signed_query`) with the app's key and secret.
//!
//! A 5xx or 429 answer, or none (connection refused, reset, timed out), is retried with
//! exponential backoff and jitter, up to [`RetryPolicy::attempts`]; any other answer that is not
//! a 2xx (another 4xx, a 3xx: redirects are not followed, as the signature is for this server)
//! is final. Either way a publication that was not delivered ends in the dead-letter queue.
//!
//! Only a process that forwards upstream holds the Pusher secret: `porter worker --events`
//! with `PORTER_UPSTREAM_URL` set (docs/publishing.md).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use porter_core::publish::{Publication, signed_query};
use porter_core::signing::Secret;
use reqwest::{StatusCode, Url};
use thiserror::Error;
use tracing::{debug, warn};

use super::marks::CLAIM_TTL;
use super::metrics::{PublishMetrics, UpstreamAttempt};

/// A bad `PORTER_UPSTREAM_URL`, named by its position in the list (a URL may hold
/// credentials, so it is never quoted).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UpstreamUrlError {
    #[error("PORTER_UPSTREAM_URL: entry {0} is empty")]
    Empty(usize),
    #[error("PORTER_UPSTREAM_URL: entry {0} is not a URL")]
    NotAUrl(usize),
    #[error("PORTER_UPSTREAM_URL: entry {0} must be http:// or https://")]
    Scheme(usize),
    #[error("PORTER_UPSTREAM_URL: entry {0} must have no query or fragment")]
    QueryOrFragment(usize),
}

/// Reads a comma-separated list of base URLs.
pub fn parse_bases(list: &str) -> Result<Vec<Url>, UpstreamUrlError> {
    list.split(',')
        .enumerate()
        .map(|(index, entry)| {
            let position = index + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(UpstreamUrlError::Empty(position));
            }
            let url = Url::parse(entry).map_err(|_| UpstreamUrlError::NotAUrl(position))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(UpstreamUrlError::Scheme(position));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(UpstreamUrlError::QueryOrFragment(position));
            }
            Ok(url)
        })
        .collect()
}

/// How long one request upstream may take (the default of [`RetryPolicy::timeout`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait between two attempts (the default of [`RetryPolicy::max_backoff`]).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The most attempts per upstream `PORTER_UPSTREAM_ATTEMPTS` may ask for. One upstream's
/// attempts run under one claim ([`CLAIM_TTL`]); were they to outlast it, a redelivery could
/// claim the step too and forward a second copy.
pub const MAX_ATTEMPTS: u32 = 11;

const _: () = assert!(
    MAX_ATTEMPTS as u128 * (REQUEST_TIMEOUT.as_millis() + MAX_BACKOFF.as_millis())
        < CLAIM_TTL.as_millis(),
    "MAX_ATTEMPTS attempts with their waits must end within CLAIM_TTL"
);

/// How often and how patiently a failing upstream is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least one).
    pub attempts: u32,
    /// The wait before the second attempt; each later one doubles it, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long one request may take.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(200),
            max_backoff: MAX_BACKOFF,
            timeout: REQUEST_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): `backoff · 2^(attempt-1)` capped at
    /// `max_backoff`, then "equal jitter" (a random point in its upper half), so that workers
    /// that failed together do not retry together.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponential = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exponential.min(self.max_backoff);
        capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A uniform number in [0, 1) from the std hasher's random keys: jitter needs no more.
fn jitter() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(porter_broker::now_ms());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The HTTP client for the upstream servers could not be built (no TLS backend, say): a
/// start-up error, never a silent fallback to a client without timeout that follows redirects.
#[derive(Debug, Error)]
#[error("cannot build the HTTP client for the upstream servers: {0}")]
pub struct UpstreamClientError(#[source] reqwest::Error);

/// Why a publication did not reach an upstream server.
#[derive(Debug, Error)]
pub enum UpstreamError {
    /// A 3xx, or a 4xx other than 429: the server will not take it, however often it is sent.
    #[error("the upstream server refused the publication with status {0}")]
    Refused(StatusCode),
    /// Every attempt failed with a 5xx, a 429 or no answer.
    #[error("the upstream server failed {attempts} attempts, the last with {last}")]
    Exhausted { attempts: u32, last: String },
}

/// The app credentials requests are signed with.
#[derive(Clone)]
pub struct AppCredentials {
    pub key: String,
    pub secret: Secret,
}

/// The upstream servers and how to reach them.
pub struct Upstream {
    bases: Vec<Url>,
    credentials: AppCredentials,
    retry: RetryPolicy,
    client: reqwest::Client,
}

impl Upstream {
    pub fn new(
        bases: Vec<Url>,
        credentials: AppCredentials,
        retry: RetryPolicy,
    ) -> Result<Upstream, UpstreamClientError> {
        let client = reqwest::Client::builder()
            .timeout(retry.timeout)
            // A forwarded publish is never redirected elsewhere with its signature.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(UpstreamClientError)?;
        Ok(Upstream {
            bases,
            credentials,
            retry: RetryPolicy {
                attempts: retry.attempts.max(1),
                ..retry
            },
            client,
        })
    }

    pub fn bases(&self) -> &[Url] {
        &self.bases
    }

    /// The request path for a publication under `base`, as signed.
    fn path(base: &Url, publication: &Publication) -> String {
        format!(
            "{}/apps/{}/{}",
            base.path().trim_end_matches('/'),
            publication.app_id,
            publication.kind.path_suffix()
        )
    }

    /// Forwards a publication to one base URL, retrying what may succeed later.
    pub async fn forward(
        &self,
        base: &Url,
        publication: &Publication,
        metrics: &PublishMetrics,
    ) -> Result<(), UpstreamError> {
        let path = Self::path(base, publication);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let timestamp = porter_broker::now_ms() / 1000;
            let query = signed_query(
                &self.credentials.key,
                &self.credentials.secret,
                "POST",
                &path,
                publication.body.as_bytes(),
                timestamp,
            );
            let mut url = base.clone();
            url.set_path(&path);
            url.set_query(Some(&query));
            let answer = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(publication.body.clone())
                .send()
                .await;
            let failure = match answer {
                Ok(response) if response.status().is_success() => {
                    metrics.upstream(UpstreamAttempt::Ok);
                    debug!(publication = %publication.id, attempt, "forwarded upstream");
                    return Ok(());
                }
                // Only a 5xx or a 429 may go better later; a 3xx or another 4xx will not.
                Ok(response)
                    if !response.status().is_server_error()
                        && response.status() != StatusCode::TOO_MANY_REQUESTS =>
                {
                    metrics.upstream(UpstreamAttempt::Refused);
                    return Err(UpstreamError::Refused(response.status()));
                }
                Ok(response) => format!("status {}", response.status().as_u16()),
                // Without the URL: it carries the signature (and perhaps credentials).
                Err(error) => describe(&error).to_owned(),
            };
            metrics.upstream(UpstreamAttempt::Retryable);
            if attempt >= self.retry.attempts {
                return Err(UpstreamError::Exhausted {
                    attempts: attempt,
                    last: failure,
                });
            }
            let wait = self.retry.delay(attempt, jitter());
            warn!(publication = %publication.id, attempt, failure, wait_ms = wait.as_millis() as u64, "upstream failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// What kind of transport failure a request met, in words that quote nothing of it.
fn describe(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_lists_are_checked_entry_by_entry() {
        let bases = parse_bases("http://127.0.0.1:6001, https://api.pusherapp.com/x/").unwrap();
        assert_eq!(bases.len(), 2);
        assert_eq!(bases[1].path(), "/x/");
        assert_eq!(parse_bases("http://a,"), Err(UpstreamUrlError::Empty(2)));
        assert_eq!(parse_bases("nope"), Err(UpstreamUrlError::NotAUrl(1)));
        assert_eq!(parse_bases("ftp://h/"), Err(UpstreamUrlError::Scheme(1)));
        assert_eq!(
            parse_bases("http://h/?a=1"),
            Err(UpstreamUrlError::QueryOrFragment(1))
        );
        // A URL with credentials is named by position only.
        let error = parse_bases("http://h,ftp://u:SECRETPW@h")
            .unwrap_err()
            .to_string();
        assert!(
            !error.contains("SECRETPW") && error.contains("entry 2"),
            "{error}"
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
        let policy = RetryPolicy {
            attempts: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(policy.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(policy.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(policy.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(policy.delay(5, 1.0), Duration::from_millis(1000));
        assert_eq!(policy.delay(40, 1.0), Duration::from_millis(1000));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn the_signed_path_keeps_the_base_path() {
        let publication = Publication {
            v: porter_core::publish::PUBLICATION_VERSION,
            id: "p".into(),
            app_id: "123".into(),
            kind: porter_core::publish::PublishKind::BatchEvents,
            body: "{}".into(),
            accepted_ms: 1,
        };
        let base = Url::parse("http://h:1/prefix/").unwrap();
        assert_eq!(
            Upstream::path(&base, &publication),
            "/prefix/apps/123/batch_events"
        );
        let base = Url::parse("http://h:1").unwrap();
        assert_eq!(
            Upstream::path(&base, &publication),
            "/apps/123/batch_events"
        );
    }
}
