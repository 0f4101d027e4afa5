//! The dashboard's static files, embedded in the binary: the stylesheet and a pinned htmx
//! (2.0.11, BSD-2-Clause, `assets/htmx-LICENSE`). Each is served with a strong ETag (its
//! SHA-256) and a year's cache lifetime; pages link them as `?v=<etag>`, so a new build's
//! files are fetched at once.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 2] = [
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/htmx-2.0.11.min.js"),
    },
    Asset {
        name: "ferrule.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/ferrule.css"),
    },
];

/// Each asset's ETag (the first 16 hex digits of its SHA-256), in [`ASSETS`]' order.
fn etags() -> &'static [String; 2] {
    static ETAGS: OnceLock<[String; 2]> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS.map(|a| {
            let digest = Sha256::digest(a.body);
            digest[..8].iter().map(|b| format!("{b:02x}")).collect()
        })
    })
}

fn find(name: &str) -> Option<(usize, &'static Asset)> {
    ASSETS.iter().enumerate().find(|(_, a)| a.name == name)
}

/// The URL a page links `name` by, versioned by its ETag.
pub(crate) fn url(name: &str) -> String {
    match find(name) {
        Some((i, _)) => format!("/ui/assets/{name}?v={}", etags()[i]),
        None => format!("/ui/assets/{name}"),
    }
}

/// `GET /ui/assets/{name}`: an embedded file (no sign-in needed: nothing in them is secret),
/// 304 when the browser's `If-None-Match` names its ETag.
pub(crate) async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some((i, asset)) = find(&name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let etag = format!("\"{}\"", etags()[i]);
    let cache = [
        (header::ETAG, etag.clone()),
        (
            header::CACHE_CONTROL,
            "public, max-age=31536000, immutable".to_owned(),
        ),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let mut response = (cache, asset.body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    response
}
