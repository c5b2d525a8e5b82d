//! The load generator's HTTP/1.1 client: one keep-alive TCP connection per closed loop.
//!
//! Hand-written rather than a client library so that what is measured is the gateway: no
//! connection pool, no extra buffering or header parsing beyond what a response needs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a connection needs to build and send requests.
pub struct Ctx {
    /// `host:port` to connect to.
    pub addr: String,
    pub host: String,
    /// Path prefix of the gateway, without a trailing `/`.
    pub base: String,
    /// The whole `Authorization` header line, or empty.
    pub auth: String,
    pub app_id: String,
}

/// One request with the bench's fixed headers; a non-empty `form` becomes a url-encoded body.
pub fn http_request(ctx: &Ctx, method: &str, path: &str, form: &str) -> Vec<u8> {
    let (base, host, auth, len) = (&ctx.base, &ctx.host, &ctx.auth, form.len());
    let head =
        format!("{method} {base}{path} HTTP/1.1\r\nHost: {host}\r\n{auth}X-Client-ID: bench\r\n");
    let body = if form.is_empty() {
        String::new()
    } else {
        format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n")
    };
    format!("{head}{body}\r\n{form}").into_bytes()
}

/// One keep-alive connection; reconnects lazily after an error.
pub struct Conn {
    pub ctx: Arc<Ctx>,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Conn { ctx, stream: None }
    }

    pub async fn connect(&mut self) -> Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.ctx.addr)
                .await
                .with_context(|| format!("connecting to {}", self.ctx.addr))?;
            stream.set_nodelay(true).context("setting TCP_NODELAY")?;
            self.stream = Some(BufReader::new(stream));
        }
        self.stream.as_mut().context("no connection")
    }

    pub async fn send(&mut self, req: &[u8]) -> Result<Response> {
        let exchange = async {
            let stream = self.connect().await?;
            stream
                .get_mut()
                .write_all(req)
                .await
                .context("writing the request")?;
            read_response(stream).await
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        let result = result.unwrap_or_else(|_| Err(anyhow::anyhow!("request timed out")));
        if result.as_ref().map_or(true, |r| r.close) {
            self.stream = None;
        }
        result
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Reads one CRLF-terminated line into `buf` and returns it trimmed; EOF is an error.
async fn next_line<'a, R: AsyncBufRead + Unpin>(r: &mut R, buf: &'a mut String) -> Result<&'a str> {
    buf.clear();
    if r.read_line(buf).await.context("reading from the server")? == 0 {
        bail!("connection closed by the server");
    }
    Ok(buf.trim_end())
}

/// Reads one response: sized, chunked, or up to EOF.
pub async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Response> {
    let mut buf = String::new();
    let line = next_line(r, &mut buf).await?;
    let mut close = line.starts_with("HTTP/1.0");
    let status = line
        .split_whitespace()
        .nth(1)
        .context("malformed status line")?;
    let status: u16 = status
        .parse()
        .with_context(|| format!("bad status {status:?}"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let line = next_line(r, &mut buf).await?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').context("malformed header")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let line = next_line(r, &mut buf).await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .with_context(|| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                while !next_line(r, &mut buf).await?.is_empty() {} // trailers
                break;
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            r.read_exact(&mut body[start..])
                .await
                .context("reading a chunk")?;
            ensure!(body.ends_with(b"\r\n"), "chunk not followed by CRLF");
            body.truncate(start + size);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body).await.context("reading the body")?;
    } else if status >= 200 && status != 204 && status != 304 {
        r.read_to_end(&mut body).await.context("reading the body")?;
        close = true;
    }
    Ok(Response {
        status,
        body,
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_chunked_then_sized_responses() {
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            4\r\n{\"a\"\r\n7;x=1\r\n:{\"b\":1\r\n1\r\n}\r\n0\r\n\r\n\
            HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\nConnection: close\r\n\r\n{}";
        let mut r = wire;
        let first = read_response(&mut r).await.expect("first response");
        assert_eq!((first.status, first.close), (200, false));
        assert_eq!(first.body, b"{\"a\":{\"b\":1}");
        let second = read_response(&mut r).await.expect("second response");
        assert_eq!(
            (second.status, second.body.as_slice(), second.close),
            (403, &b"{}"[..], true)
        );
    }
}
