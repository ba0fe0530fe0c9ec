//! Client-supplied text on its way into a log line: quoted, with control
//! characters (newlines, ESC, …) and quotes escaped, so a client can forge
//! neither a log line, nor a field within one (`code=1000`), nor a terminal
//! escape sequence; and its length is bounded.

use std::fmt;

/// Characters of client text kept in one log field.
const MAX_CHARS: usize = 300;

/// Displays `text` quoted and escaped (`"a\nb \u{1b}"`), cut to
/// `MAX_CHARS` characters (then `…` follows the closing quote).
pub struct LogSafe<'a>(pub &'a str);

impl fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_CHARS) {
            Some((cut, _)) => write!(f, "{:?}…", &self.0[..cut]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_escapes_and_bounds_length() {
        let forged = "x\nFAKE-LOG-LINE \u{1b}[31m\" code=1000\té";
        let shown = LogSafe(forged).to_string();
        assert_eq!(shown, r#""x\nFAKE-LOG-LINE \u{1b}[31m\" code=1000\té""#);
        assert!(!shown.chars().any(char::is_control));
        let long = "a".repeat(1000);
        assert_eq!(LogSafe(&long).to_string().chars().count(), MAX_CHARS + 3);
    }
}
