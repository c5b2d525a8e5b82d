//! Where a key set comes from and how its document is read: a file, or an `http(s)` URL.
//!
//! A JWKS URL must be `https://` (verified with the system-independent webpki roots of
//! rustls): keys fetched over plain HTTP could be swapped by anyone on the path, who could
//! then mint any token. Plain `http://` is accepted only to a loopback host (127.0.0.0/8,
//! `::1`, `localhost`), e.g. a local sidecar; redirects are held to the same rule. The body
//! is read in chunks and refused as soon as it passes [`MAX_JWKS_BYTES`].

use std::path::PathBuf;
use std::time::Duration;

use crate::error::JwksError;

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most redirects followed when fetching a JWKS URL.
const MAX_REDIRECTS: usize = 5;
/// How long one fetch of a JWKS URL may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

impl JwksSource {
    /// `http://…` or `https://…` is a URL, anything else a file path.
    pub fn parse(text: &str) -> JwksSource {
        if text.starts_with("http://") || text.starts_with("https://") {
            JwksSource::Url(text.to_owned())
        } else {
            JwksSource::File(PathBuf::from(text))
        }
    }

    /// Refuses a URL that keys must not be fetched from: anything but `https://`, except
    /// plain `http://` to a loopback host.
    pub fn check(&self) -> Result<(), JwksError> {
        match self {
            JwksSource::File(_) => Ok(()),
            JwksSource::Url(text) => {
                let url =
                    url::Url::parse(text).map_err(|e| JwksError::InvalidUrl(e.to_string()))?;
                if fetch_allowed(&url) {
                    Ok(())
                } else {
                    Err(JwksError::InsecureUrl)
                }
            }
        }
    }
}

/// Whether keys may be fetched from this URL: https, or http to a loopback host.
fn fetch_allowed(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// An error with its causes (reqwest's own text says only which request failed, not why).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// The HTTP client of JWKS fetches: TLS by rustls, and redirects only to allowed URLs (a
/// redirect from https to plain http would undo the point of https).
pub(super) fn http_client() -> Result<reqwest::Client, JwksError> {
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if fetch_allowed(attempt.url()) {
            attempt.follow()
        } else {
            attempt.error("redirected to a URL that is neither https nor loopback")
        }
    });
    reqwest::Client::builder()
        .redirect(redirects)
        .build()
        .map_err(|e| JwksError::HttpClient(e.to_string()))
}

/// Reads the document of a key set. `client` is the HTTP client, or why there is none.
pub(super) async fn read_source(
    source: &JwksSource,
    client: &Result<reqwest::Client, JwksError>,
) -> Result<String, JwksError> {
    match source {
        JwksSource::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::read_to_string(&path).map_err(|e| JwksError::ReadFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            })
            .await
            .map_err(|_| JwksError::ReadCancelled)?
        }
        JwksSource::Url(url) => {
            // Checked at start-up too; again here so no code path fetches over plain
            // http from a remote host.
            source.check()?;
            let client = client.as_ref().map_err(Clone::clone)?;
            let mut response = client
                .get(url)
                .timeout(FETCH_TIMEOUT)
                .send()
                .await
                .map_err(|e| JwksError::Fetch(with_causes(&e)))?;
            if !response.status().is_success() {
                return Err(JwksError::Status(response.status().to_string()));
            }
            let too_large = JwksError::TooLarge {
                limit: MAX_JWKS_BYTES,
            };
            // Refused before reading when the length is announced, and cut off once
            // past the limit when it is not: never buffered whole.
            if response
                .content_length()
                .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
            {
                return Err(too_large);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| JwksError::Body(with_causes(&e)))?
            {
                if body.len() + chunk.len() > MAX_JWKS_BYTES {
                    return Err(too_large);
                }
                body.extend_from_slice(&chunk);
            }
            String::from_utf8(body).map_err(|_| JwksError::NotUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_or_loopback() {
        for good in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://127.3.4.5/jwks",
            "http://[::1]:9/jwks",
            "http://localhost/jwks",
            "http://LOCALHOST:1/jwks",
        ] {
            assert_eq!(JwksSource::parse(good).check(), Ok(()), "{good}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "http://localhost.evil.example/jwks",
            "http://10.0.0.1/jwks",
            "http://[::2]/jwks",
            "http://",
        ] {
            assert!(JwksSource::parse(bad).check().is_err(), "{bad}");
        }
        assert_eq!(JwksSource::parse("/etc/jwks.json").check(), Ok(()));
    }

    async fn fetch_url(url: &str) -> Result<String, JwksError> {
        read_source(&JwksSource::Url(url.to_owned()), &http_client()).await
    }

    async fn fetch_from(port: u16) -> Result<String, JwksError> {
        fetch_url(&format!("http://127.0.0.1:{port}/jwks")).await
    }

    #[tokio::test]
    async fn https_urls_are_fetched_with_tls() {
        // Nothing listens on port 1: the fetch fails connecting, which it only tries when
        // the client speaks TLS (a TLS-less reqwest refuses the scheme up front).
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let error = fetch_url(&format!("https://127.0.0.1:{port}/jwks"))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot fetch"), "{error}");
        assert!(error.to_lowercase().contains("connect"), "{error}");
        assert!(!error.to_lowercase().contains("scheme"), "{error}");
    }

    /// Serves one HTTP response head, then `body` chunks until the client hangs up.
    async fn serve(
        head: &'static str,
        chunk: Option<Vec<u8>>,
    ) -> (u16, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            match chunk {
                // Endless chunked body: stops when the client closes the connection.
                Some(chunk) => {
                    let frame =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    while socket.write_all(&frame).await.is_ok() {}
                }
                // A promised body that never comes: only the announced length can refuse it.
                None => {
                    let _ = socket.read(&mut request).await;
                }
            }
        });
        (port, task)
    }

    #[tokio::test]
    async fn an_announced_oversized_jwks_is_refused_unread() {
        let (port, task) = serve(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n",
            None,
        )
        .await;
        let error = fetch_from(port).await.unwrap_err();
        assert_eq!(
            error,
            JwksError::TooLarge {
                limit: MAX_JWKS_BYTES
            }
        );
        assert!(error.to_string().contains("larger than"), "{error}");
        task.abort();
    }

    #[tokio::test]
    async fn an_endless_jwks_is_cut_off_at_the_limit() {
        let (port, task) = serve(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            Some(vec![b' '; 64 * 1024]),
        )
        .await;
        let error = fetch_from(port).await.unwrap_err();
        assert!(error.to_string().contains("larger than"), "{error}");
        task.abort();
    }

    #[test]
    fn sources() {
        assert_eq!(
            JwksSource::parse("http://127.0.0.1:1/jwks"),
            JwksSource::Url("http://127.0.0.1:1/jwks".into())
        );
        assert_eq!(
            JwksSource::parse("/etc/jwks.json"),
            JwksSource::File("/etc/jwks.json".into())
        );
    }
}
