//! Client-supplied text on its way into a log line: control characters
//! (newlines, ESC, …) are escaped so a client cannot forge log lines or send
//! terminal escape sequences, and the length is bounded.

use std::fmt;

/// Characters of client text kept in one log field.
const MAX_CHARS: usize = 300;

/// Displays `text` with control characters escaped (`\n`, `\u{1b}`) and
/// cut to [`MAX_CHARS`] characters.
pub struct LogSafe<'a>(pub &'a str);

impl fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX_CHARS {
                return f.write_str("…");
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters_and_bounds_length() {
        let forged = "x\nFAKE-LOG-LINE \u{1b}[31m\r\té";
        let shown = LogSafe(forged).to_string();
        assert_eq!(shown, "x\\nFAKE-LOG-LINE \\u{1b}[31m\\r\\té");
        assert!(!shown.chars().any(char::is_control));
        let long = "a".repeat(1000);
        assert_eq!(LogSafe(&long).to_string().chars().count(), MAX_CHARS + 1);
    }
}
