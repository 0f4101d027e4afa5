//! The request body of a proxied call: kept in memory to be sent again, or streamed once.

use axum::body::{Body, Bytes};
use futures_util::{StreamExt, TryStreamExt};

/// A request body as the attempts see it.
pub(super) enum RequestBody {
    /// Whole, at most `max_retry_body` bytes: every attempt sends it.
    Kept(Bytes),
    /// Larger than `max_retry_body`: the first attempt streams it, and there is no second.
    Once(Option<reqwest::Body>),
}

impl RequestBody {
    /// Reads `body` until it ends or passes `max` bytes. An error reading it is the caller's
    /// (the connection broke): `Err` with its text.
    pub(super) async fn read(body: Body, max: usize) -> Result<Self, String> {
        let mut stream = body.into_data_stream();
        let mut kept: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            len = len.saturating_add(chunk.len());
            kept.push(chunk);
            if len > max {
                let read = futures_util::stream::iter(kept.into_iter().map(Ok::<_, axum::Error>));
                let rest = read.chain(stream).map_err(std::io::Error::other);
                return Ok(RequestBody::Once(Some(reqwest::Body::wrap_stream(rest))));
            }
        }
        let bytes = match kept.len() {
            0 => Bytes::new(),
            1 => kept.pop().unwrap_or_default(),
            _ => {
                let mut whole = Vec::with_capacity(len);
                for chunk in kept {
                    whole.extend_from_slice(&chunk);
                }
                Bytes::from(whole)
            }
        };
        Ok(RequestBody::Kept(bytes))
    }

    /// The body for the next attempt, or `None` when a streamed body was sent already.
    pub(super) fn for_attempt(&mut self) -> Option<reqwest::Body> {
        match self {
            RequestBody::Kept(bytes) => Some(reqwest::Body::from(bytes.clone())),
            RequestBody::Once(body) => body.take(),
        }
    }

    /// Whether the body can be sent again.
    pub(super) fn replayable(&self) -> bool {
        matches!(self, RequestBody::Kept(_))
    }
}
