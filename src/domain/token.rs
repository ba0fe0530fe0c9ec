//! Bearer secrets: session tokens, the API key and the admin token.
//!
//! Session tokens carry 256 random bits and are stored only as their SHA-256;
//! comparisons run in constant time. `Debug` never prints a secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A freshly minted session token, shown to the client exactly once.
pub struct Token(String);

impl Token {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The SHA-256 of a secret: what is stored and compared. Tokens are random,
/// so a fast hash is enough (no dictionary to attack).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_stored(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Does `presented` hash to this? Constant time in the hash bytes. An
    /// empty presented secret never matches, whatever was stored.
    pub fn matches(&self, presented: &str) -> bool {
        !presented.is_empty() && bool::from(TokenHash::of(presented).0.ct_eq(&self.0))
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

/// A configured secret (API key, admin token): kept only as its hash.
#[derive(Clone)]
pub struct Secret(TokenHash);

impl Secret {
    pub fn new(plain: &str) -> Self {
        Self(TokenHash::of(plain))
    }

    /// A secret known only by its hash (one another node registered).
    pub fn from_hash(hash: TokenHash) -> Self {
        Self(hash)
    }

    pub fn matches(&self, presented: &str) -> bool {
        self.0.matches(presented)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_only_its_hash() {
        let token = Token::generate();
        let hash = token.hash();
        assert!(hash.matches(token.expose()));
        assert!(!hash.matches("nope"));
        assert!(!TokenHash::of("").matches(""), "an empty secret matched");
        assert!(!hash.matches(Token::generate().expose()));
        assert_eq!(token.expose().len(), 43);
    }

    #[test]
    fn stored_hash_round_trips() {
        let hash = Token::generate().hash();
        assert!(TokenHash::from_stored(hash.as_bytes()) == Some(hash));
        assert!(TokenHash::from_stored(b"short").is_none());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let token = Token::generate();
        assert!(
            !format!("{token:?} {:?} {:?}", token.hash(), Secret::new("k"))
                .contains(token.expose())
        );
    }
}
