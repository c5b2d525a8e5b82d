//! Bounds the time a request's body may take: from the moment its head has arrived, the whole
//! body must arrive within [`EdgeLimits::body_timeout`], else the read fails with
//! [`BodyTimedOut`] and the request is answered 408 `request_timeout`
//! (`crate::http::framework_errors`), audited under the rule `body_timeout`. Without it a
//! client that declares `Content-Length: 100` and sends 13 bytes holds its connection (and
//! the handler's task) until the kernel gives up on it.
//!
//! A request whose body was not read to its end (it timed out, it was over the size limit,
//! the handler did not want it) keeps that body alive inside the response's body
//! ([`HoldingBody`]) until the last byte of the response is written: actix-http closes a
//! connection whose request body is unread and not dropped, but drains a dropped chunked body
//! to its end, as slowly as the client sends it. So this middleware sits outside every
//! middleware that replaces a response's body (`crate::middleware::json_errors`). Requests
//! without a body cost nothing: no timer is armed until a read would wait.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpMessage};
use futures_util::Stream;
use tokio::time::{Duration, Instant, Sleep, sleep_until};

use crate::http::limits::{BodyTimedOut, EdgeLimits};

/// A response body that keeps the unread body of its request alive until it has been sent.
pub struct HoldingBody {
    body: BoxBody,
    _unread: Payload,
}

impl MessageBody for HoldingBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

pub async fn body_timeout(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let limit = request
        .app_data::<EdgeLimits>()
        .copied()
        .unwrap_or_default()
        .body_timeout;
    let payload = request.take_payload();
    let deadline = Instant::now().checked_add(limit);
    let (Some(deadline), false) = (deadline, matches!(payload, Payload::None)) else {
        // No body, or a deadline past the end of time: nothing to bound.
        request.set_payload(payload);
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let unread = Rc::new(Cell::new(None));
    request.set_payload(Payload::Stream {
        payload: Box::pin(Deadlined {
            inner: Some(payload),
            limit,
            deadline,
            sleep: None,
            unread: unread.clone(),
        }),
    });
    let response = next.call(request).await?;
    Ok(match unread.take() {
        Some(unread) => response
            .map_body(|_, body| HoldingBody {
                body: body.boxed(),
                _unread: unread,
            })
            .map_into_right_body(),
        None => response.map_into_left_body(),
    })
}

/// A body stream that fails with [`BodyTimedOut`] once `deadline` has passed while it waits,
/// and hands its body to `unread` if it is given up before the end.
struct Deadlined {
    /// `None` once read to its end, or once handed to `unread`.
    inner: Option<Payload>,
    limit: Duration,
    deadline: Instant,
    /// Armed by the first read that has to wait.
    sleep: Option<Pin<Box<Sleep>>>,
    unread: Rc<Cell<Option<Payload>>>,
}

impl Stream for Deadlined {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // What has arrived is served even past the deadline: only waiting is bounded.
        if let Poll::Ready(item) = Pin::new(inner).poll_next(cx) {
            if item.is_none() {
                this.inner = None;
            }
            return Poll::Ready(item);
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        this.unread.set(this.inner.take());
        Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            BodyTimedOut { after: this.limit },
        )))))
    }
}

impl Drop for Deadlined {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take() {
            self.unread.set(Some(body));
        }
    }
}
