//! The refusals actix-http answers before the app runs, turned into the gateway's JSON error
//! shape on their way out.
//!
//! actix-http's HTTP/1 dispatcher answers three kinds of request head itself, with an empty
//! body and `connection: close`, and never hands them to the app: one it cannot parse (400),
//! one with more than 96 headers or over 128 KiB (431), and one not complete within the head
//! timeout (408). Neither actix-http 3 nor actix-web offers a hook for them (actix-http 3.20,
//! `h1/dispatcher.rs` builds them in place), so no middleware can reshape, audit or count them.
//!
//! [`ObservedIo`] wraps a connection's socket. When the dispatcher writes one of exactly those
//! responses, it is the last thing ever written on the connection, so it ends the buffer
//! handed to `poll_write`; [`find_refusal`] recognizes it there, byte for byte, and the
//! wrapper writes the JSON answer instead ([`HeadRefusal::response`]) and tells its
//! [`RefusalObserver`], which audits and counts it. Everything else passes through untouched.
//!
//! Why the match cannot catch the app's own answers: every error response the app sends
//! carries a JSON body (`crate::middleware::json_errors` replaces empty ones), so none has the
//! `content-length: 0` head these refusals have; and the head must end the buffer, where only
//! the dispatcher's final message can be.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A refusal actix-http sends without asking the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRefusal {
    /// A request line or header that does not parse, or an unreadable `Content-Length`.
    Malformed,
    /// More than 96 headers, or a head over 128 KiB (actix-http's fixed limits).
    TooLarge,
    /// The head did not arrive within the head timeout.
    TimedOut,
}

impl HeadRefusal {
    const ALL: [HeadRefusal; 3] = [
        HeadRefusal::Malformed,
        HeadRefusal::TooLarge,
        HeadRefusal::TimedOut,
    ];

    /// The start of the head actix-http writes for this refusal: status line, then the
    /// length header its encoder puts first.
    fn canned_start(self) -> &'static [u8] {
        match self {
            HeadRefusal::Malformed => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            HeadRefusal::TooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
            }
            HeadRefusal::TimedOut => b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            HeadRefusal::Malformed => 400,
            HeadRefusal::TooLarge => 431,
            HeadRefusal::TimedOut => 408,
        }
    }

    /// The stable `error` code of the body (the same codes as the app's own 431 and 408).
    pub fn code(self) -> &'static str {
        match self {
            HeadRefusal::Malformed => "invalid_request",
            HeadRefusal::TooLarge => "headers_too_large",
            HeadRefusal::TimedOut => "request_timeout",
        }
    }

    fn message(self) -> &'static str {
        match self {
            HeadRefusal::Malformed => "the request line or a header could not be parsed",
            HeadRefusal::TooLarge => {
                "the request head is too large (over 96 headers or 128 KiB); send fewer headers"
            }
            HeadRefusal::TimedOut => "the request head did not arrive in time",
        }
    }

    /// The JSON answer that replaces `canned`, the head actix-http wrote: the same status
    /// line and headers (`connection: close`, `date`), plus a content type, the length and
    /// `{"error": code, "message": text}`.
    pub fn response(self, canned: &[u8]) -> Vec<u8> {
        let body = serde_json::json!({ "error": self.code(), "message": self.message() });
        let body = body.to_string();
        let start = self.canned_start();
        let status_line_end = start.len() - b"content-length: 0\r\n".len();
        let mut out = Vec::with_capacity(canned.len() + body.len() + 64);
        out.extend_from_slice(&canned[..status_line_end]);
        out.extend_from_slice(b"content-type: application/json\r\n");
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        out.extend_from_slice(&canned[start.len()..]);
        out.extend_from_slice(body.as_bytes());
        out
    }
}

/// Where in `buf` a refusal of actix-http's starts, if the buffer ends with one: a head
/// beginning with [`HeadRefusal::canned_start`] and ending, with the buffer, at its first
/// blank line.
pub fn find_refusal(buf: &[u8]) -> Option<(usize, HeadRefusal)> {
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    // Such a head is about 120 bytes (status line, length, `connection`, `date`): only the
    // buffer's tail is searched, so a large answer costs nothing more.
    let from = buf.len().saturating_sub(MAX_CANNED_HEAD);
    let tail = &buf[from..];
    HeadRefusal::ALL.into_iter().find_map(|refusal| {
        let start = refusal.canned_start();
        let at = tail.windows(start.len()).rposition(|w| w == start)?;
        // One head only: its blank line is the buffer's end.
        let head = &tail[at..];
        let blank = head.windows(4).position(|w| w == b"\r\n\r\n")?;
        (blank + 4 == head.len()).then_some((from + at, refusal))
    })
}

/// The longest head [`find_refusal`] looks for.
const MAX_CANNED_HEAD: usize = 256;

/// Told of every refusal [`ObservedIo`] rewrote.
pub trait RefusalObserver: Send + Sync {
    fn refused(&self, refusal: HeadRefusal, peer: Option<SocketAddr>);
}

/// A connection's socket whose actix-http refusals go out as JSON (see the module doc).
pub struct ObservedIo<T> {
    io: T,
    peer: Option<SocketAddr>,
    observer: Arc<dyn RefusalObserver>,
    /// The JSON answer still to be written, and how much of it has been.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<T> ObservedIo<T> {
    pub fn new(io: T, peer: Option<SocketAddr>, observer: Arc<dyn RefusalObserver>) -> Self {
        ObservedIo {
            io,
            peer,
            observer,
            replacement: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> ObservedIo<T> {
    /// Writes what is left of the replacement; ready once all of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ObservedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ObservedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        match find_refusal(buf) {
            // What precedes the refusal (an earlier pipelined answer) goes out as it is.
            Some((at, _)) if at > 0 => Pin::new(&mut this.io).poll_write(cx, &buf[..at]),
            Some((_, refusal)) => {
                this.observer.refused(refusal, this.peer);
                this.replacement = Some((refusal.response(buf), 0));
                // The dispatcher's bytes count as written; the replacement drains here, or
                // in the flush and shutdown that follow.
                match this.poll_replacement(cx) {
                    Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                    _ => Poll::Ready(Ok(buf.len())),
                }
            }
            None => Pin::new(&mut this.io).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const DATE: &[u8] = b"date: Tue, 01 Dec 2026 12:00:00 GMT\r\n\r\n";

    fn canned(refusal: HeadRefusal) -> Vec<u8> {
        [refusal.canned_start(), b"connection: close\r\n", DATE].concat()
    }

    #[test]
    fn each_refusal_is_found_at_the_end_of_the_buffer() {
        for refusal in HeadRefusal::ALL {
            assert_eq!(find_refusal(&canned(refusal)), Some((0, refusal)));
            // After an earlier pipelined answer.
            let earlier = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
            let buf = [earlier.as_slice(), &canned(refusal)].concat();
            assert_eq!(find_refusal(&buf), Some((earlier.len(), refusal)));
        }
    }

    #[test]
    fn the_apps_own_answers_are_left_alone() {
        for buf in [
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 46\r\ncontent-type: application/json\r\n\r\n{\"error\":\"invalid_body\"}".as_slice(),
            b"HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n",
            // The canned head followed by more: not the dispatcher's last message.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            b"",
        ] {
            assert_eq!(find_refusal(buf), None, "{}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn the_replacement_keeps_the_status_and_headers_and_carries_the_json_error() {
        for refusal in HeadRefusal::ALL {
            let out = String::from_utf8(refusal.response(&canned(refusal))).unwrap();
            let (head, body) = out.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {} ", refusal.status())),
                "{out}"
            );
            assert!(head.contains("\r\nconnection: close\r\n"), "{out}");
            assert!(head.contains("\r\ndate: "), "{out}");
            assert!(
                head.contains("\r\ncontent-type: application/json\r\n"),
                "{out}"
            );
            assert!(
                head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
                "{out}"
            );
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["error"], refusal.code());
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    #[derive(Default)]
    struct Seen(Mutex<Vec<(HeadRefusal, Option<SocketAddr>)>>);

    impl RefusalObserver for Seen {
        fn refused(&self, refusal: HeadRefusal, peer: Option<SocketAddr>) {
            self.0.lock().unwrap().push((refusal, peer));
        }
    }

    /// Writes `writes` through an `ObservedIo` over a small in-memory pipe (so writes are
    /// partial), shuts it down, and returns what the far end read and what was observed.
    async fn through(writes: &[&[u8]]) -> (Vec<u8>, Vec<(HeadRefusal, Option<SocketAddr>)>) {
        let (near, mut far) = tokio::io::duplex(16);
        let seen = Arc::new(Seen::default());
        let peer = Some(SocketAddr::from(([127, 0, 0, 1], 4000)));
        let mut io = ObservedIo::new(near, peer, seen.clone());
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            far.read_to_end(&mut out).await.unwrap();
            out
        });
        for write in writes {
            io.write_all(write).await.unwrap();
        }
        io.shutdown().await.unwrap();
        drop(io);
        let out = reader.await.unwrap();
        let seen = std::mem::take(&mut *seen.0.lock().unwrap());
        (out, seen)
    }

    #[tokio::test]
    async fn a_refusal_goes_out_as_json_and_is_observed_once() {
        let earlier = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec();
        let refusal = canned(HeadRefusal::TooLarge);
        let (out, seen) = through(&[&[earlier.as_slice(), &refusal].concat()]).await;
        let expected = [earlier, HeadRefusal::TooLarge.response(&refusal)].concat();
        assert_eq!(String::from_utf8(out), String::from_utf8(expected));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, HeadRefusal::TooLarge);
        assert_eq!(seen[0].1.map(|p| p.port()), Some(4000));
    }

    #[tokio::test]
    async fn other_bytes_pass_through_unchanged() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let (out, seen) = through(&[answer, answer]).await;
        assert_eq!(out, [answer.as_slice(), answer].concat());
        assert!(seen.is_empty());
    }
}
