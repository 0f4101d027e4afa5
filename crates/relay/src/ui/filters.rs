//! The message filters the Messages and Dead letters pages share (status, destination, time
//! range, idempotency key, ordering key, payload text, error text), read from a page's query
//! and turned into the store's [`Filter`] by the API's own checks ([`Search`]).

use std::time::Duration;

use ferrule_store::Filter;
use serde::Deserialize;

use super::UiError;
use crate::api::messages::{destination_filter, parse_statuses};
use crate::api::search::Search;
use crate::state::AppState;

/// The filter form as a page's query string gives it (every field optional; empty is none).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct FilterForm {
    pub(crate) status: String,
    pub(crate) destination: String,
    /// `1h`, `24h`, `7d`, or empty for `since`/`until` (or any time).
    pub(crate) range: String,
    pub(crate) since: String,
    pub(crate) until: String,
    pub(crate) idempotency_key: String,
    pub(crate) ordering_key: String,
    pub(crate) payload_contains: String,
    pub(crate) error_contains: String,
    pub(crate) cursor: String,
}

/// The time ranges offered, with their lengths.
pub(crate) const RANGES: [(&str, &str); 4] = [
    ("", "any time (or since/until)"),
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
];

fn range_length(range: &str) -> Option<Duration> {
    match range {
        "1h" => Some(Duration::from_secs(3600)),
        "24h" => Some(Duration::from_secs(86_400)),
        "7d" => Some(Duration::from_secs(7 * 86_400)),
        _ => None,
    }
}

/// A time as a form gives it: RFC 3339, or a `datetime-local` value (`2026-12-07T14:05`,
/// read as UTC).
fn time_field(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if crate::time::parse_rfc3339(text).is_some() {
        return Some(text.to_owned());
    }
    let with_seconds = if text.len() == 16 {
        format!("{text}:00Z")
    } else {
        format!("{text}Z")
    };
    Some(with_seconds)
}

fn opt(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

impl FilterForm {
    /// The store filter these fields ask for, on top of `base` (a status for dead letters);
    /// with notes to show (a payload search without a range is bounded to the last 24 h).
    pub(crate) async fn filter(
        &self,
        state: &AppState,
        mut filter: Filter,
        with_status: bool,
    ) -> Result<(Filter, Vec<String>), UiError> {
        let mut notes = Vec::new();
        if with_status && !self.status.is_empty() {
            filter.statuses = parse_statuses(&self.status)?;
        }
        filter.destination = destination_filter(state, opt(&self.destination)).await?;
        filter.error_contains = opt(&self.error_contains);
        let (mut since, mut until) = (time_field(&self.since), time_field(&self.until));
        let now = state.clock.system_now();
        let mut length = range_length(&self.range);
        if length.is_none()
            && opt(&self.payload_contains).is_some()
            && (since.is_none() || until.is_none())
        {
            length = Some(Duration::from_secs(86_400));
            notes.push(
                "The payload text search reads every payload in its time range, so it is \
                 bounded: without a range it looks at the last 24 hours."
                    .to_owned(),
            );
        }
        if let Some(length) = length {
            since = Some(crate::time::rfc3339(now - length));
            until = Some(crate::time::rfc3339(now + Duration::from_secs(60)));
        }
        let narrowed = Search {
            since,
            until,
            idempotency_key: opt(&self.idempotency_key),
            ordering_key: opt(&self.ordering_key),
            payload_contains: opt(&self.payload_contains),
        }
        .apply(&mut filter, now)?;
        if let Some(start) = narrowed {
            notes.push(format!(
                "The payload text search covers at most 7 days: it started at {}, 7 days \
                 before the range's end.",
                crate::time::rfc3339(start)
            ));
        }
        Ok((filter, notes))
    }

    /// The fields that are set, without the cursor: for links to other pages of a listing
    /// and for the hidden fields of a bulk action's confirmation.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("status", &self.status),
            ("destination", &self.destination),
            ("range", &self.range),
            ("since", &self.since),
            ("until", &self.until),
            ("idempotency_key", &self.idempotency_key),
            ("ordering_key", &self.ordering_key),
            ("payload_contains", &self.payload_contains),
            ("error_contains", &self.error_contains),
        ]
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k, v.clone()))
        .collect()
    }

    /// The query string of [`pairs`](Self::pairs), `a=1&b=2`.
    pub(crate) fn query(&self) -> String {
        self.pairs()
            .iter()
            .map(|(k, v)| format!("{k}={}", super::enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The filter in words, for the audit log's detail.
    pub(crate) fn detail(&self) -> serde_json::Value {
        let pairs = self.pairs();
        let fields: Vec<(&str, Option<&str>)> =
            pairs.iter().map(|(k, v)| (*k, Some(v.as_str()))).collect();
        crate::audit::filter_detail(&fields)
    }
}
