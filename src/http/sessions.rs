//! Session endpoints: create, read, finish, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, ErrorBody, SessionView};
use crate::api::{BaseUrl, JsonBody, SessionPath};
use crate::api::{Creator, Credential};
use crate::cluster::Notice;
use crate::db::{self, sessions::NewSession, sessions::SessionRow};
use crate::domain::{MimeType, SessionId, SessionState, Token, finish_count};
use crate::server::Peer;
use crate::state::AppState;
use crate::writer::{FinishOutcome, WriteError};

/// Largest `metadata` object, serialized: room for ids and labels, not for
/// payloads (every session row carries it).
const MAX_METADATA_BYTES: usize = 4 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session))
        .routes(routes!(get_session, delete_session))
        .routes(routes!(finish_session))
}

/// Every field is optional; unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    /// An `audio/*` or `video/*` type, or `application/octet-stream` (the default).
    #[schema(example = "audio/webm;codecs=opus")]
    mime_type: Option<String>,
    /// A JSON object of at most 4 KiB.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// A new session: connect to `ws_url + "?token=" + token`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SessionCreated {
    id: String,
    /// Shown once; the server keeps only its hash.
    token: String,
    ws_url: String,
    max_chunk_bytes: u32,
}

impl CreateSession {
    /// The declared type (default `application/octet-stream`) and the
    /// metadata object as stored, or why they are refused.
    fn validate(self) -> Result<(MimeType, String), ApiError> {
        let mime_type = match self.mime_type.as_deref() {
            Some(raw) => MimeType::parse(raw)
                .map_err(|e| ApiError::bad_request("invalid_mime_type", e.to_string()))?,
            None => MimeType::octet_stream(),
        };
        let metadata = match self.metadata {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(object @ Value::Object(_)) => object,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_metadata",
                    "metadata must be a JSON object",
                ));
            }
        };
        let metadata_json = metadata.to_string();
        if metadata_json.len() > MAX_METADATA_BYTES {
            return Err(ApiError::MetadataTooLarge {
                limit: MAX_METADATA_BYTES,
            });
        }
        Ok((mime_type, metadata_json))
    }
}

/// Create a session (a recording).
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions",
    request_body(content = CreateSession, content_type = "application/json"),
    responses(
        (status = 201, body = SessionCreated),
        (status = 400, description = "bad mime_type or metadata", body = ErrorBody),
        (status = 401, description = "the server has an API key and it was not given", body = ErrorBody),
        (status = 413, description = "metadata over 4 KiB or body over 16 KiB", body = ErrorBody),
        (status = 429, description = "too many sessions from this address; see Retry-After", body = ErrorBody),
    ),
    security((), ("api_key" = [])))]
async fn create_session(
    State(state): State<AppState>,
    credential: Credential,
    peer: Peer,
    base: BaseUrl,
    body: JsonBody,
) -> Result<(StatusCode, Json<SessionCreated>), ApiError> {
    if credential.authorize_create(&state)? == Creator::Anonymous
        && let Some(limit) = &state.creation_limit
    {
        limit
            .check(peer.client_key())
            .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    }
    let (mime_type, metadata_json) = body.parse::<CreateSession>()?.validate()?;
    let (id, token) = (SessionId::generate(), Token::generate());
    let new = NewSession {
        id: &id,
        token_hash: &token.hash(),
        mime_type: &mime_type,
        metadata_json: &metadata_json,
    };
    state.db.insert_session(new, db::now_ms()).await?;
    state.metrics.session_created();
    tracing::info!(session = %id, mime_type = %mime_type, "session created");
    let body = SessionCreated {
        id: id.to_string(),
        token: token.expose().to_owned(),
        ws_url: format!("{}/v1/sessions/{id}/ws", base.ws()),
        max_chunk_bytes: state.config.max_chunk_bytes,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Loads a session or answers 404.
pub async fn load_session(state: &AppState, id: &SessionId) -> Result<SessionRow, ApiError> {
    state
        .db
        .find_session(id)
        .await?
        .ok_or(ApiError::NotFound("session"))
}

/// A session and, once ready, its recording.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "The session id (32 hex digits)")),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("session_token" = []), ("admin_token" = [])))]
async fn get_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    credential: Credential,
    base: BaseUrl,
) -> Result<Json<SessionView>, ApiError> {
    let row = load_session(&state, &id).await?;
    credential.authorize_session(&state, &row)?;
    Ok(Json(SessionView::new(&row, &base)))
}

/// How many chunks the recording has (indexes `0..chunks`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct Finish {
    chunks: u64,
}

/// Declare the chunk count, as the WebSocket `finish` does (works from sendBeacon, any content type).
#[utoipa::path(post, path = "/v1/sessions/{id}/finish", tag = "sessions", params(("id" = String, Path, description = "The session id (32 hex digits)")),
    request_body(content = Finish, content_type = "application/json"),
    responses((status = 202, body = SessionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "another count was declared, or the session is closed", body = ErrorBody)),
    security(("session_token" = [])))]
async fn finish_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    credential: Credential,
    base: BaseUrl,
    body: JsonBody,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    let row = load_session(&state, &id).await?;
    credential.authorize_owner(&row)?;
    let body: Finish = body.parse()?;
    let chunks =
        finish_count(body.chunks).map_err(|m| ApiError::bad_request("invalid_chunk_count", m))?;
    match state.writer.finish(row.seq, chunks).await {
        Ok(FinishOutcome::Accepted { .. }) => {}
        Ok(refused) => return Err(finish_refusal(refused)),
        Err(WriteError::Stopped) => return Err(ApiError::Unavailable),
        Err(WriteError::Storage(e)) => return Err(ApiError::Internal(anyhow::anyhow!("{e:#}"))),
    }
    let row = load_session(&state, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(SessionView::new(&row, &base))))
}

fn finish_refusal(outcome: FinishOutcome) -> ApiError {
    match outcome {
        FinishOutcome::CountMismatch { expected } => ApiError::conflict(
            "chunk_count_mismatch",
            format!("finish already declared {expected} chunks"),
        ),
        FinishOutcome::BelowReceived { max_index } => ApiError::bad_request(
            "invalid_chunk_count",
            format!("chunk {max_index} was already received"),
        ),
        FinishOutcome::NotAccepting {
            state: SessionState::Deleted,
        } => ApiError::NotFound("session"),
        FinishOutcome::NotAccepting { state } => ApiError::conflict(
            "session_closed",
            format!("the session is {}", state.as_str()),
        ),
        FinishOutcome::UnknownSession | FinishOutcome::Accepted { .. } => {
            ApiError::NotFound("session")
        }
    }
}

/// Marks the session deleted (one commit: from then on it is gone for every
/// API, socket and finalize step), then removes its data in a task of its
/// own, so a client that hangs up cannot stop it half way; a crash leaves the
/// mark, and the sweep finishes the job.
/// Delete the session: its chunks, recording and row.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "The session id (32 hex digits)")),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("session_token" = []), ("admin_token" = [])))]
async fn delete_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    credential: Credential,
) -> Result<StatusCode, ApiError> {
    let row = load_session(&state, &id).await?;
    credential.authorize_session(&state, &row)?;
    if !state.db.mark_deleted(row.seq, db::now_ms()).await? {
        return Err(ApiError::NotFound("session"));
    }
    state.connections.evict(row.seq);
    state.cluster.send(Notice::Deleted(row.seq));
    tracing::info!(session = %id, "session deleted");
    let sweeper = state.sweeper.clone();
    let purge = state.tasks.spawn(async move {
        let purged = sweeper.purge(row.seq, id.as_str()).await;
        if let Err(e) = &purged {
            tracing::warn!(session = %id, error = %format!("{e:#}"), "removing a deleted session's data failed; the sweep retries");
        }
    });
    // Waiting only so the 204 usually means "gone from disk"; the task
    // carries on if this request is dropped.
    let _ = purge.await;
    Ok(StatusCode::NO_CONTENT)
}
