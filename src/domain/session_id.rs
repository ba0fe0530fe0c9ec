//! Public session identifiers: 128 random bits as 32 lowercase hex digits.

use std::fmt;

/// A session's public id. Unguessable, so knowing one is not a credential but
/// does not leak others either.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    const LEN: usize = 32;

    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        Self(hex::encode(bytes))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidSessionId> {
        let well_formed = raw.len() == Self::LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidSessionId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a session id")]
pub struct InvalidSessionId;

stored_as_parsed_text!(SessionId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(id.as_str()).unwrap(), id);
        assert_ne!(SessionId::generate(), id);
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            "abc",
            &"A".repeat(32),
            &"g".repeat(32),
            &"0".repeat(33),
            "../../etc/passwd",
        ] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
