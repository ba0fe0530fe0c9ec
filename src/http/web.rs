//! The browser side, embedded in the binary: the client module and the demo page.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::routing::get;

use crate::state::AppState;

const JS: &str = "text/javascript; charset=utf-8";

/// Path, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    ("/assets/demo.js", JS, include_str!("../web/demo.js")),
    (
        "/assets/base.css",
        "text/css; charset=utf-8",
        include_str!("../web/base.css"),
    ),
    (
        "/assets/demo.css",
        "text/css; charset=utf-8",
        include_str!("../web/demo.css"),
    ),
    (
        "/admin",
        "text/html; charset=utf-8",
        include_str!("../web/admin.html"),
    ),
    ("/assets/admin.js", JS, include_str!("../web/admin.js")),
    (
        "/assets/admin.css",
        "text/css; charset=utf-8",
        include_str!("../web/admin.css"),
    ),
    ("/client/spool.js", JS, include_str!("../web/spool.js")),
    (
        "/client/spool-frame.js",
        JS,
        include_str!("../web/spool-frame.js"),
    ),
    (
        "/client/spool-http.js",
        JS,
        include_str!("../web/spool-http.js"),
    ),
    (
        "/client/spool-store.js",
        JS,
        include_str!("../web/spool-store.js"),
    ),
    (
        "/client/spool-uploader.js",
        JS,
        include_str!("../web/spool-uploader.js"),
    ),
    (
        "/client/spool-resume.js",
        JS,
        include_str!("../web/spool-resume.js"),
    ),
    (
        "/client/spool-capture.js",
        JS,
        include_str!("../web/spool-capture.js"),
    ),
    (
        "/client/spool-session.js",
        JS,
        include_str!("../web/spool-session.js"),
    ),
    (
        "/client/spool-connection.js",
        JS,
        include_str!("../web/spool-connection.js"),
    ),
    (
        "/client/spool-outbox.js",
        JS,
        include_str!("../web/spool-outbox.js"),
    ),
];

pub fn router() -> Router<AppState> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            // no-cache: browsers revalidate, so a new server version is picked up at once.
            let headers = [
                (CONTENT_TYPE, content_type),
                (CACHE_CONTROL, "no-cache"),
                (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ];
            router.route(path, get(move || async move { (headers, body) }))
        })
}

/// Path and content type of every embedded file, for the API description.
pub fn pages() -> impl Iterator<Item = (&'static str, &'static str)> {
    ASSETS
        .iter()
        .map(|&(path, content_type, _)| (path, content_type))
}
