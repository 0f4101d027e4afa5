//! Lingering discard: the part of a request body that an answer left unread is read and thrown
//! away, within bounds, so that a client that sends its whole body before reading still gets
//! the answer.
//!
//! A submit over `server.max_body_bytes` is answered 413 as soon as the limit is passed (and a
//! 401 or 404 before any of the body is read). hyper then closed the connection with the rest
//! of the body unread, so the kernel reset it, and a client still writing (Python's `urllib` and
//! `requests`, which send the whole body before they read) got a broken pipe instead of the 413
//! that curl, waiting for `100 Continue`, was shown. Like nginx's lingering close, the relay now
//! keeps reading after it has answered: the answer is written at once, the rest of the body is
//! discarded on a task of its own, and the connection stays usable if the body ends in time.
//! The discard stops, and hyper closes the connection, after [`LINGER_MAX_BYTES`] (or four times
//! `max_body_bytes` if that is more) or [`LINGER_MAX_TIME`].

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use ferrule_policy::Clock;
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};

use crate::state::AppState;

/// Discard at least this much of an unread body before giving up on it.
pub(crate) const LINGER_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Give up on an unread body this long after the answer.
pub(crate) const LINGER_MAX_TIME: Duration = Duration::from_secs(10);

/// Middleware: hands the route a body it shares with this layer and, once the route has
/// answered, discards whatever it left unread (see the module's documentation).
///
/// A client that sent `Expect: 100-continue` and was answered before the route read anything
/// sends no body at all, so nothing is discarded for it.
pub(crate) async fn discard_unread_body(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let waits_for_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, body) = request.into_parts();
    let shared = SharedBody::new(body);
    let response = next
        .run(Request::from_parts(parts, Body::new(shared.clone())))
        .await;
    if let Some((rest, read)) = shared.take_unfinished()
        && (read || !waits_for_continue)
    {
        let max_bytes = LINGER_MAX_BYTES.max(4 * state.config.server.max_body_bytes as u64);
        let clock = state.clock.clone();
        tokio::spawn(async move {
            let stopped = discard(rest, max_bytes, LINGER_MAX_TIME, clock.as_ref()).await;
            if stopped != Discarded::Ended {
                tracing::debug!(
                    reason = stopped.as_str(),
                    "stopped discarding an unread request body; closing the connection"
                );
            }
        });
    }
    response
}

/// How a discard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discarded {
    /// The body ended: the connection can serve the next request.
    Ended,
    /// More than the byte bound arrived.
    TooLarge,
    /// The time bound passed.
    TimedOut,
    /// The client's stream failed (e.g. it disconnected).
    Failed,
}

impl Discarded {
    /// A short stable name, for logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Discarded::Ended => "ended",
            Discarded::TooLarge => "too_large",
            Discarded::TimedOut => "timed_out",
            Discarded::Failed => "failed",
        }
    }
}

/// Reads `body` to its end and drops what it reads, stopping after more than `max_bytes` or
/// `max_time` on `clock`.
pub(crate) async fn discard(
    body: Body,
    max_bytes: u64,
    max_time: Duration,
    clock: &dyn Clock,
) -> Discarded {
    let read = async {
        let mut stream = body.into_data_stream();
        let mut seen = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    seen = seen.saturating_add(chunk.len() as u64);
                    if seen > max_bytes {
                        return Discarded::TooLarge;
                    }
                }
                Err(_) => return Discarded::Failed,
            }
        }
        Discarded::Ended
    };
    tokio::select! {
        stopped = read => stopped,
        () = clock.sleep(max_time) => Discarded::TimedOut,
    }
}

/// A request body shared between the route, which reads what it wants of it, and
/// [`discard_unread_body`], which takes back what is left.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Shared>>);

struct Shared {
    body: Body,
    /// Whether the route polled the body at all.
    read: bool,
    /// Whether the body was read to its end.
    ended: bool,
}

impl SharedBody {
    fn new(body: Body) -> Self {
        SharedBody(Arc::new(Mutex::new(Shared {
            body,
            read: false,
            ended: false,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the route left unread, if anything, and whether it read any of it: the body is
    /// taken out, so a clone the route still holds reads as ended from now on.
    fn take_unfinished(&self) -> Option<(Body, bool)> {
        let mut shared = self.lock();
        if shared.ended || shared.body.is_end_stream() {
            return None;
        }
        shared.ended = true;
        Some((std::mem::take(&mut shared.body), shared.read))
    }
}

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut shared = self.lock();
        if shared.ended {
            return Poll::Ready(None);
        }
        shared.read = true;
        let polled = Pin::new(&mut shared.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            shared.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        shared.ended || shared.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.lock();
        if shared.ended {
            SizeHint::with_exact(0)
        } else {
            shared.body.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use ferrule_policy::ManualClock;

    use super::*;

    fn chunks(n: usize, size: usize) -> Body {
        let chunks = (0..n).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; size])));
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_discard_reads_to_the_end_within_its_byte_bound_and_stops_past_it() {
        let clock = ManualClock::new();
        assert_eq!(
            discard(chunks(4, 1000), 4000, LINGER_MAX_TIME, &clock).await,
            Discarded::Ended
        );
        assert_eq!(
            discard(chunks(5, 1000), 4000, LINGER_MAX_TIME, &clock).await,
            Discarded::TooLarge
        );
    }

    #[tokio::test]
    async fn a_discard_gives_up_when_the_client_goes_quiet_past_its_time_bound() {
        let clock = ManualClock::new();
        let silent =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
        let discarding = tokio::spawn({
            let clock = clock.clone();
            async move { discard(silent, 4000, Duration::from_secs(10), &clock).await }
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(9));
        tokio::task::yield_now().await;
        assert!(!discarding.is_finished());
        clock.advance(Duration::from_secs(1));
        assert_eq!(discarding.await.unwrap(), Discarded::TimedOut);
    }

    #[tokio::test]
    async fn what_the_route_reads_to_the_end_is_not_taken_back() {
        let shared = SharedBody::new(chunks(2, 10));
        let read = Body::new(shared.clone()).collect_bytes().await;
        assert_eq!(read.len(), 20);
        assert!(shared.take_unfinished().is_none());

        let shared = SharedBody::new(chunks(2, 10));
        let (rest, read) = shared.take_unfinished().expect("nothing was read");
        assert!(!read);
        assert!(Body::new(shared).is_end_stream(), "the route's copy ends");
        assert_eq!(rest.collect_bytes().await.len(), 20);
    }

    trait CollectBytes {
        async fn collect_bytes(self) -> Bytes;
    }

    impl CollectBytes for Body {
        async fn collect_bytes(self) -> Bytes {
            axum::body::to_bytes(self, usize::MAX).await.unwrap()
        }
    }
}
