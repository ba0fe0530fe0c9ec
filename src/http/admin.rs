//! Admin endpoints: list and inspect sessions, finalize one now, totals.
//! Every route needs the admin token (401 otherwise).

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::{
    AdminSessionDetail, AdminSessionView, ApiError, BaseUrl, Credential, SessionPath,
};
use crate::db::{self, admin::ListFilter};
use crate::domain::SessionState;
use crate::finalize::Requested;
use crate::http::load_session;
use crate::state::AppState;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;
/// Metadata keys a filter may name: short, plain, nothing to escape.
const MAX_META_KEY: usize = 64;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/sessions", get(list_sessions))
        .route("/v1/admin/sessions/{id}", get(session_detail))
        .route("/v1/admin/sessions/{id}/finalize", post(finalize_now))
        .route("/v1/admin/stats", get(stats))
}

#[derive(Debug, Serialize)]
struct SessionList {
    sessions: Vec<AdminSessionView>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

async fn list_sessions(
    State(state): State<AppState>,
    credential: Credential,
    base: BaseUrl,
    RawQuery(query): RawQuery,
) -> Result<Json<SessionList>, ApiError> {
    credential.authorize_admin(&state)?;
    let filter = parse_filter(query.as_deref().unwrap_or(""))?;
    let mut rows = db::admin::list_sessions(
        &state.pool,
        &ListFilter {
            limit: filter.limit + 1, // one more says whether a next page exists
            ..filter.clone()
        },
    )
    .await?;
    let next_cursor = if rows.len() as i64 > filter.limit {
        rows.truncate(filter.limit as usize);
        rows.last().map(|row| encode_cursor(row.seq))
    } else {
        None
    };
    let sessions = rows
        .iter()
        .map(|row| AdminSessionView::new(row, &base))
        .collect();
    Ok(Json(SessionList {
        sessions,
        next_cursor,
    }))
}

async fn session_detail(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    credential: Credential,
    base: BaseUrl,
) -> Result<Json<AdminSessionDetail>, ApiError> {
    credential.authorize_admin(&state)?;
    let row = load_session(&state, &id).await?;
    let stored = db::admin::stored_indexes(&state.pool, row.seq).await?;
    Ok(Json(AdminSessionDetail::new(&row, &base, &stored)))
}

/// Finalizes with what is there: `202` and the session as it is now; it
/// ends `ready` (with `complete`/`missing` saying what was left out) or
/// `failed` if chunk 0 never arrived.
async fn finalize_now(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    credential: Credential,
    base: BaseUrl,
) -> Result<(StatusCode, Json<AdminSessionView>), ApiError> {
    credential.authorize_admin(&state)?;
    let row = load_session(&state, &id).await?;
    match state.finalize_now.request(row.seq, row.state).await? {
        Requested::Queued | Requested::InProgress => {}
        Requested::Finished => {
            return Err(ApiError::conflict(
                "session_closed",
                format!("the session is {} already", row.state),
            ));
        }
    }
    tracing::info!(session = %id, "finalize requested by an admin");
    let row = load_session(&state, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(AdminSessionView::new(&row, &base)),
    ))
}

async fn stats(
    State(state): State<AppState>,
    credential: Credential,
) -> Result<Json<Value>, ApiError> {
    credential.authorize_admin(&state)?;
    let mut sessions = Map::new();
    for listed in [
        SessionState::Recording,
        SessionState::Finishing,
        SessionState::Ready,
        SessionState::Failed,
    ] {
        sessions.insert(listed.as_str().into(), 0.into());
    }
    for (session_state, count) in db::admin::sessions_by_state(&state.pool).await? {
        sessions.insert(session_state.as_str().into(), count.into());
    }
    let totals = db::admin::totals(&state.pool).await?;
    Ok(Json(serde_json::json!({
        "sessions": sessions,
        "chunks_stored": totals.chunks_received,
        "chunk_bytes_stored": totals.bytes_received,
        "recordings_bytes": totals.recordings_bytes,
        "chunks_per_second_1m": state.metrics.chunks_per_second_1m(),
    })))
}

/// The list's query string; every bad value is a 400 naming its parameter.
fn parse_filter(query: &str) -> Result<ListFilter, ApiError> {
    let mut filter = ListFilter {
        limit: DEFAULT_LIMIT,
        ..ListFilter::default()
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let bad = |why: &str| ApiError::bad_request("invalid_filter", format!("{name}: {why}"));
        match name.as_ref() {
            "state" => {
                filter.state = Some(
                    SessionState::parse(&value)
                        .ok()
                        .filter(|s| *s != SessionState::Deleted)
                        .ok_or_else(|| bad("must be recording, finishing, ready or failed"))?,
                );
            }
            "since" => {
                filter.since_ms =
                    Some(parse_time(&value).ok_or_else(|| bad("must be an RFC 3339 time"))?)
            }
            "until" => {
                filter.until_ms =
                    Some(parse_time(&value).ok_or_else(|| bad("must be an RFC 3339 time"))?)
            }
            "complete" => {
                filter.complete = Some(match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("must be true or false")),
                });
            }
            "limit" => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(&format!("must be a whole number from 1 to {MAX_LIMIT}")))?;
            }
            "cursor" => {
                filter.before_seq = Some(
                    decode_cursor(&value).ok_or_else(|| bad("is not a cursor this server gave"))?,
                )
            }
            "token" => {} // the credential, read elsewhere
            other => match other.strip_prefix("meta.") {
                Some(key) if valid_meta_key(key) => {
                    filter.meta.push((key.to_owned(), value.into_owned()))
                }
                Some(_) => {
                    return Err(bad(&format!(
                        "metadata keys are 1 to {MAX_META_KEY} letters, digits, '_', '-' or '.'"
                    )));
                }
                None => {
                    return Err(bad(
                        "is not a filter (state, since, until, complete, meta.KEY, limit, cursor)",
                    ));
                }
            },
        }
    }
    Ok(filter)
}

fn parse_time(raw: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn valid_meta_key(key: &str) -> bool {
    (1..=MAX_META_KEY).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Opaque to clients: the key of the last session on the page.
fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("before:{seq}"))
}

fn decode_cursor(raw: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    text.strip_prefix("before:")?
        .parse()
        .ok()
        .filter(|seq| *seq > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_bad_values_name_their_parameter() {
        let filter = parse_filter(
            "state=ready&complete=false&meta.call=42&limit=10&since=2026-01-01T00:00:00Z&token=x",
        )
        .unwrap();
        assert_eq!(filter.state, Some(SessionState::Ready));
        assert_eq!(filter.complete, Some(false));
        assert_eq!(filter.meta, vec![("call".to_owned(), "42".to_owned())]);
        assert_eq!(filter.limit, 10);
        assert!(filter.since_ms.is_some());
        for (bad, named) in [
            ("state=deleted", "state"),
            ("limit=501", "limit"),
            ("limit=0", "limit"),
            ("since=yesterday", "since"),
            ("complete=yes", "complete"),
            ("cursor=abc", "cursor"),
            ("meta.=x", "meta."),
            ("meta.a\"b=x", "meta.a\"b"),
            ("color=red", "color"),
        ] {
            let message = parse_filter(bad).unwrap_err().to_string();
            assert!(message.starts_with(named), "{bad}: {message}");
        }
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("bm9wZQ"), None);
    }
}
