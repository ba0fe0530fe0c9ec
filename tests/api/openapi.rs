//! `GET /v1/openapi.json` describes every route the server has: each one it
//! lists is answered by a real route (not the 404 fallback), and every API
//! route is in it, with its security and schemas.

use serde_json::Value;

use crate::helpers::spawn_app;

const API_ROUTES: [(&str, &str); 14] = [
    ("post", "/v1/sessions"),
    ("get", "/v1/sessions/{id}"),
    ("delete", "/v1/sessions/{id}"),
    ("post", "/v1/sessions/{id}/finish"),
    ("get", "/v1/sessions/{id}/recording"),
    ("get", "/v1/sessions/{id}/ws"),
    ("get", "/v1/admin/sessions"),
    ("get", "/v1/admin/sessions/{id}"),
    ("post", "/v1/admin/sessions/{id}/finalize"),
    ("get", "/v1/admin/stats"),
    ("get", "/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/admin"),
];

#[tokio::test]
async fn the_openapi_document_lists_every_route_of_the_router() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in API_ROUTES {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let admin = &paths["/v1/admin/stats"]["get"];
    assert_eq!(admin["security"], serde_json::json!([{"admin_token": []}]));
    assert!(doc["components"]["schemas"]["AdminSessionDetail"].is_object());

    // Everything documented is served by a route of its own.
    let session = app.create_session().await;
    for (path, item) in paths {
        for method in ["get", "post", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let url = app.url(&path.replace("{id}", &session.id));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = app.http.request(method.clone(), &url).send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            let fallback = status == 405 || (status == 404 && body.contains("no such route"));
            assert!(
                !fallback,
                "{method} {path} is documented but not routed ({status} {body})"
            );
        }
    }
}
