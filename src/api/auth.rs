//! Who is asking: the bearer secret from `Authorization: Bearer …`, or from
//! `?token=` where a browser cannot set headers (WebSocket, `<audio src>`,
//! sendBeacon). Every check is a constant-time hash comparison.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::api::ApiError;
use crate::db::sessions::SessionRow;
use crate::domain::TokenHash;
use crate::state::AppState;

/// Who may create a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creator {
    /// Presented the API key: the operator's backend, not rate limited.
    KeyHolder,
    /// The server has no API key: anyone, limited per client address.
    Anonymous,
}

/// The secret the request presented, if any. Its `Debug` hides it.
pub struct Credential(Option<String>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Credential(<redacted>)"
        } else {
            "Credential(None)"
        })
    }
}

/// Never rejects: a missing or malformed credential is refused by the check
/// that needs one, so WebSocket upgrades still complete and can say why.
impl<S: Send + Sync> FromRequestParts<S> for Credential {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| bearer_token(value.to_str().ok()?))
            .or_else(|| token_from_query(parts.uri.query()));
        Ok(Self(presented))
    }
}

/// The token of a `Bearer` authorization (the scheme is case-insensitive,
/// RFC 9110 §11.1). Another scheme (`Basic`, say) is not ours: the query may
/// still carry the token.
fn bearer_token(header: &str) -> Option<String> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// `?token=`; an empty one is no token at all.
fn token_from_query(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
        .filter(|token| !token.is_empty())
}

impl Credential {
    pub fn is_admin(&self, state: &AppState) -> bool {
        self.0
            .as_deref()
            .is_some_and(|secret| state.admin_token.matches(secret))
    }

    /// The admin token.
    pub fn authorize_admin(&self, state: &AppState) -> Result<(), ApiError> {
        if self.is_admin(state) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// The session's own token or the admin token.
    pub fn authorize_session(
        &self,
        state: &AppState,
        session: &SessionRow,
    ) -> Result<(), ApiError> {
        let Some(secret) = &self.0 else {
            return Err(ApiError::Unauthorized);
        };
        let owner =
            TokenHash::from_stored(&session.token_hash).is_some_and(|hash| hash.matches(secret));
        if owner || self.is_admin(state) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// Only the session's own token (used where the admin must not act as the recorder).
    pub fn authorize_owner(&self, session: &SessionRow) -> Result<(), ApiError> {
        let Some(secret) = &self.0 else {
            return Err(ApiError::Unauthorized);
        };
        let owner =
            TokenHash::from_stored(&session.token_hash).is_some_and(|hash| hash.matches(secret));
        if owner {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// The API key, when the server has one; anyone otherwise. Tells who
    /// is creating: the key's holder (a trusted backend) or anyone.
    pub fn authorize_create(&self, state: &AppState) -> Result<Creator, ApiError> {
        match (&state.api_key, &self.0) {
            (None, _) => Ok(Creator::Anonymous),
            (Some(key), Some(secret)) if key.matches(secret) => Ok(Creator::KeyHolder),
            (Some(_), _) => Err(ApiError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comes_from_the_query() {
        assert_eq!(
            token_from_query(Some("a=1&token=abc%2Bd")),
            Some("abc+d".into())
        );
        assert_eq!(token_from_query(Some("a=1")), None);
        assert_eq!(token_from_query(Some("token=")), None);
        assert_eq!(token_from_query(None), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_not_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc".into()));
        assert_eq!(bearer_token("bearer abc"), Some("abc".into()));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc".into()));
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
