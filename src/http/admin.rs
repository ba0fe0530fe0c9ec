//! Admin endpoints: list and inspect sessions, finalize one now, totals.
//! Every route needs the admin token (401 otherwise).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    AdminSessionDetail, AdminSessionView, ApiError, BaseUrl, Credential, ErrorBody, SessionPath,
};
use crate::db::admin::ListFilter;
use crate::domain::SessionState;
use crate::finalize::Requested;
use crate::http::load_session;
use crate::state::AppState;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;
/// Metadata keys a filter may name: short, plain, nothing to escape.
const MAX_META_KEY: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(session_detail))
        .routes(routes!(finalize_now))
        .routes(routes!(stats))
}

/// One page of sessions, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SessionList {
    sessions: Vec<AdminSessionView>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// Sessions, newest first, filtered; page with `cursor`. Also `meta.KEY=VALUE`
/// (exact match on a top-level metadata key; several allowed).
#[utoipa::path(get, path = "/v1/admin/sessions", tag = "admin",
    params(
        ("state" = Option<SessionState>, Query, description = "recording, finishing, ready or failed"),
        ("since" = Option<String>, Query, description = "created at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "created at or before (RFC 3339)"),
        ("complete" = Option<bool>, Query, description = "ready sessions whose recording is (not) complete"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses((status = 200, body = SessionList), (status = 400, description = "a bad filter, named in the message", body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
async fn list_sessions(
    State(state): State<AppState>,
    credential: Credential,
    base: BaseUrl,
    RawQuery(query): RawQuery,
) -> Result<Json<SessionList>, ApiError> {
    credential.authorize_admin(&state)?;
    let filter = parse_filter(query.as_deref().unwrap_or(""))?;
    let mut rows = state
        .db
        .list_sessions(&ListFilter {
            limit: filter.limit + 1, // one more says whether a next page exists
            ..filter.clone()
        })
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

/// One session in full: missing ranges, the last client.
#[utoipa::path(get, path = "/v1/admin/sessions/{id}", tag = "admin", params(("id" = String, Path, description = "The session id")),
    responses((status = 200, body = AdminSessionDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
async fn session_detail(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    credential: Credential,
    base: BaseUrl,
) -> Result<Json<AdminSessionDetail>, ApiError> {
    credential.authorize_admin(&state)?;
    let row = load_session(&state, &id).await?;
    let stored = state.db.stored_indexes(row.seq).await?;
    Ok(Json(AdminSessionDetail::new(&row, &base, &stored)))
}

/// Finalizes with what is there: `202` and the session as it is now; it
/// ends `ready` (with `complete`/`missing` saying what was left out) or
/// `failed` if chunk 0 never arrived.
#[utoipa::path(post, path = "/v1/admin/sessions/{id}/finalize", tag = "admin", params(("id" = String, Path, description = "The session id")),
    responses((status = 202, body = AdminSessionView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "ready or failed already", body = ErrorBody)),
    security(("admin_token" = [])))]
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

/// Totals for the admin page and `spool stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Stats {
    sessions: StateCounts,
    /// Chunks received by sessions that are not deleted (joined ones included).
    chunks_stored: i64,
    chunk_bytes_stored: i64,
    /// Bytes of the recordings served now.
    recordings_bytes: i64,
    chunks_per_second_1m: f64,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
struct StateCounts {
    recording: i64,
    finishing: i64,
    ready: i64,
    failed: i64,
}

#[utoipa::path(get, path = "/v1/admin/stats", tag = "admin",
    responses((status = 200, body = Stats), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
async fn stats(
    State(state): State<AppState>,
    credential: Credential,
) -> Result<Json<Stats>, ApiError> {
    credential.authorize_admin(&state)?;
    let mut sessions = StateCounts::default();
    for (session_state, count) in state.db.sessions_by_state().await? {
        match session_state {
            SessionState::Recording => sessions.recording = count,
            SessionState::Finishing => sessions.finishing = count,
            SessionState::Ready => sessions.ready = count,
            SessionState::Failed => sessions.failed = count,
            SessionState::Deleted => {}
        }
    }
    let totals = state.db.totals().await?;
    Ok(Json(Stats {
        sessions,
        chunks_stored: totals.chunks_received,
        chunk_bytes_stored: totals.bytes_received,
        recordings_bytes: totals.recordings_bytes,
        chunks_per_second_1m: state.metrics.chunks_per_second_1m(),
    }))
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
