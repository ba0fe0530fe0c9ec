//! Request extractors that turn hostile input into typed values or an `ApiError`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::HOST;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::api::ApiError;
use crate::domain::SessionId;
use crate::state::AppState;

/// Largest JSON body accepted (session metadata included).
pub const MAX_JSON_BYTES: usize = 16 * 1024;
/// How long a client may take to send a JSON body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A JSON body, read (bounded) but not yet parsed, so handlers check
/// credentials first and answer 401 before judging the body. Any
/// `Content-Type` is accepted (sendBeacon sends text/plain).
pub struct JsonBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let read = axum::body::to_bytes(req.into_body(), MAX_JSON_BYTES);
        let bytes = tokio::time::timeout(BODY_TIMEOUT, read)
            .await
            .map_err(|_| ApiError::RequestTimeout)?
            .map_err(|_| ApiError::PayloadTooLarge {
                limit: MAX_JSON_BYTES,
            })?;
        Ok(Self(bytes))
    }
}

impl JsonBody {
    /// Parses the body; empty means `{}`. Malformed JSON gets the usual error body.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_json(&self.0)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))
}

/// The `{id}` path segment as a session id. A malformed id names no session.
pub struct SessionPath(pub SessionId);

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("session"))?;
        SessionId::parse(&raw)
            .map(Self)
            .map_err(|_| ApiError::NotFound("session"))
    }
}

/// The URL clients reach this server at: `--public-url`, else the request's Host.
#[derive(Debug, Clone)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// For work done outside a request (webhooks): `--public-url`, else the
    /// listening address.
    pub fn from_config(config: &crate::config::Config) -> Self {
        match &config.public_url {
            Some(public) => Self(public.trim_end_matches('/').to_owned()),
            None => Self(format!("http://{}", config.listen)),
        }
    }

    pub fn http(&self) -> &str {
        &self.0
    }

    pub fn ws(&self) -> String {
        if let Some(rest) = self.0.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", self.0.trim_start_matches("http://"))
        }
    }
}

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(public) = &state.config.public_url {
            return Ok(Self(public.trim_end_matches('/').to_owned()));
        }
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| state.config.listen.to_string());
        Ok(Self(format!("http://{host}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_is_an_empty_object() {
        let value: serde_json::Value = parse_json(&Bytes::from_static(b"  ")).unwrap();
        assert_eq!(value, serde_json::json!({}));
        assert!(parse_json::<serde_json::Value>(&Bytes::from_static(b"{oops")).is_err());
    }

    #[test]
    fn ws_url_follows_the_scheme() {
        assert_eq!(
            BaseUrl("https://rec.example.com".into()).ws(),
            "wss://rec.example.com"
        );
        assert_eq!(
            BaseUrl("http://127.0.0.1:8080".into()).ws(),
            "ws://127.0.0.1:8080"
        );
    }
}
