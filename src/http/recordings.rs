//! Serving finished recordings, with Range, HEAD and ETag.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ApiError;
use crate::api::SessionPath;
use crate::api::{Credential, ErrorBody};
use crate::domain::{MimeType, SessionState};
use crate::http::range::RangeRequest;
use crate::http::sessions::load_session;
use crate::state::AppState;

/// How long a redirect's presigned URL works: enough to start playing and
/// seek for a while; a player that comes back later asks this server again.
const REDIRECT_VALID_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);

pub fn router() -> OpenApiRouter<AppState> {
    // `get` answers HEAD too; the handler leaves the body out for it.
    OpenApiRouter::new().routes(routes!(download))
}

/// The recording file (HEAD too): Range, ETag (its quoted SHA-256), If-None-Match, If-Range.
/// `?token=` works where headers cannot be set (`<audio src>`).
#[utoipa::path(get, path = "/v1/sessions/{id}/recording", tag = "sessions", params(("id" = String, Path, description = "The session id (32 hex digits)"),
        ("Range" = Option<String>, Header, description = "one range: bytes=a-b, bytes=a- or bytes=-n")),
    responses(
        (status = 200, description = "the whole file", content_type = "audio/*"),
        (status = 206, description = "the requested range, with Content-Range"),
        (status = 304, description = "If-None-Match matched"),
        (status = 307, description = "with --storage-redirect: a presigned URL of the object store"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "not ready yet", body = ErrorBody),
        (status = 410, description = "deleted by --keep-recordings", body = ErrorBody),
        (status = 416, description = "the range is outside the file", body = ErrorBody),
    ),
    security(("session_token" = []), ("admin_token" = [])))]
async fn download(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    credential: Credential,
    method: Method,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let row = load_session(&state, &id).await?;
    credential.authorize_session(&state, &row)?;
    let (Some(sha256), SessionState::Ready) = (row.recording_sha256.as_deref(), row.state) else {
        return Err(ApiError::conflict(
            "not_ready",
            format!("the recording is not ready (the session is {})", row.state),
        ));
    };
    if let Some(expired) = row.recording_expired_at {
        return Err(ApiError::Gone(format!(
            "the recording was deleted at {} by the server's retention policy",
            crate::api::rfc3339(expired)
        )));
    }
    let len = state.recordings.len(id.as_str()).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "session {id} is ready but its recording file is missing"
        ))
    })?;

    let mime = MimeType::parse(&row.mime_type).unwrap_or_else(|_| MimeType::octet_stream());
    let etag = format!("\"{sha256}\"");
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::ETAG, header_value(&etag)?);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    headers.insert(header::CONTENT_TYPE, header_value(&mime.content_type())?);
    let disposition = format!("inline; filename=\"{id}.{}\"", mime.file_extension());
    headers.insert(header::CONTENT_DISPOSITION, header_value(&disposition)?);
    // Uploaded bytes are never a page of this origin: no sniffing them into
    // HTML, and if a browser renders them anyway, no script and no origin.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );

    if if_none_match(&request_headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    // A GET may go straight to the object store. HEAD and conditional
    // requests are answered here, with this server's ETag (the SHA-256) and
    // headers: a presigned URL serves only the method it was signed for.
    if method == Method::GET
        && state.config.storage_redirect
        && let Some(url) = state
            .recordings
            .presigned_url(id.as_str(), REDIRECT_VALID_FOR)
            .await?
    {
        let mut redirect = HeaderMap::new();
        redirect.insert(header::LOCATION, header_value(&url)?);
        redirect.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok((StatusCode::TEMPORARY_REDIRECT, redirect).into_response());
    }
    let range_header = request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    // If-Range with a different validator means: send the whole thing.
    let range_header = range_header.filter(|_| if_range_allows(&request_headers, &etag));
    let (status, start, count) = match RangeRequest::parse(range_header, len) {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial { start, end } => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{end}/{len}"))?,
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { len }),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if method == Method::HEAD {
        return Ok((status, headers).into_response());
    }
    let reader = state
        .recordings
        .read_range(id.as_str(), start, count)
        .await?;
    Ok((
        status,
        headers,
        Body::from_stream(ReaderStream::with_capacity(reader, 64 * 1024)),
    )
        .into_response())
}

fn header_value(value: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(value).map_err(|e| ApiError::Internal(e.into()))
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(
                |tag| matches!(tag.trim().trim_start_matches("W/"), t if t == etag || t == "*"),
            )
        })
}

fn if_range_allows(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag)
}
