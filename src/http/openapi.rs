//! `GET /v1/openapi.json`: the API description, generated from the handlers'
//! annotations as the routes are registered (so a route cannot be added
//! without appearing here), plus the embedded pages and this document.

use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ResponseBuilder};

use crate::api::ErrorBody;
use crate::state::AppState;

pub const PATH: &str = "/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Spool",
        description = "Browser audio recordings that reach the server in real time and survive crashes, reloads and dropped networks. The chunk protocol runs on the WebSocket; see the project's protocol documentation."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerSchemes)
)]
pub struct ApiDoc;

/// The three secrets, all sent as `Authorization: Bearer …` (or `?token=`
/// where a browser cannot set headers).
struct BearerSchemes;

impl utoipa::Modify for BearerSchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                "session_token",
                "The token returned when the session was created; `?token=` where headers cannot be set.",
            ),
            (
                "admin_token",
                "`--admin-token`, or the one the server wrote to `<data-dir>/admin-token` (with several nodes, the first node's).",
            ),
            (
                "api_key",
                "`--api-key`, when the server has one (otherwise creating is open).",
            ),
        ] {
            let scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(what))
                .build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}

/// Adds plain GET routes (pages, scripts) to the description.
pub fn add_pages<'a>(
    doc: &mut utoipa::openapi::OpenApi,
    pages: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    for (path, content_type) in pages {
        let operation = OperationBuilder::new()
            .tag("pages")
            .summary(Some(format!("Embedded {content_type}")))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("the file")
                    .content(content_type, ContentBuilder::new().build())
                    .build(),
            )
            .build();
        doc.paths
            .add_path_operation(path, vec![HttpMethod::Get], operation);
    }
}

/// Serves `doc` (which is first told about its own route).
pub fn router(mut doc: utoipa::openapi::OpenApi) -> Router<AppState> {
    add_pages(&mut doc, [(PATH, "application/json")]);
    let json: Arc<str> = doc
        .to_pretty_json()
        .expect("the API description serializes")
        .into();
    Router::new().route(
        PATH,
        get(move || {
            let json = json.clone();
            async move { ([(CONTENT_TYPE, "application/json")], json.to_string()) }
        }),
    )
}
