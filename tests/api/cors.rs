//! Cross-origin access for pages on other origins.

use reqwest::Method;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD,
    ORIGIN,
};

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn any_origin_may_preflight_and_call_the_api_by_default() {
    let app = spawn_app().await;
    let preflight = app
        .http
        .request(Method::OPTIONS, app.url("/v1/sessions"))
        .header(ORIGIN, "https://app.example")
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(
        preflight.headers()[ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed = preflight.headers()[ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );

    let module = app
        .http
        .get(app.url("/client/spool.js"))
        .header(ORIGIN, "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(module.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let created = app
        .http
        .post(app.url("/v1/sessions"))
        .header(ORIGIN, "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let exposed = created.headers()[ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("content-range") && exposed.contains("etag"),
        "{exposed}"
    );
}

#[tokio::test]
async fn only_listed_origins_are_allowed_when_a_list_is_set() {
    let app = spawn_app_with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let from = |origin: &'static str| {
        app.http
            .get(app.url("/healthz"))
            .header(ORIGIN, origin)
            .send()
    };
    let listed = from("https://app.example").await.unwrap();
    assert_eq!(
        listed.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let other = from("https://evil.example").await.unwrap();
    assert!(other.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}
