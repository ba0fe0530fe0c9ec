//! The media type a client declares for its chunks, which is also the
//! `Content-Type` its recording is served with: only audio, video and
//! `application/octet-stream` are accepted, so an upload can never be served
//! as a page (`text/html`, `image/svg+xml`, …) that runs script on this origin.

use std::fmt;

/// A syntactically valid audio or video media type (`type/subtype` plus
/// optional parameters), or `application/octet-stream`; safe to echo in a
/// `Content-Type` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeType(String);

impl MimeType {
    const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, InvalidMimeType> {
        let raw = raw.trim();
        let essence = raw.split(';').next().unwrap_or_default().trim();
        let (kind, subtype) = essence.split_once('/').ok_or(InvalidMimeType)?;
        let printable = raw.bytes().all(|b| (0x20..0x7f).contains(&b));
        let media = kind.eq_ignore_ascii_case("audio")
            || kind.eq_ignore_ascii_case("video")
            || essence.eq_ignore_ascii_case("application/octet-stream");
        if raw.len() <= Self::MAX_LEN && printable && media && is_token(kind) && is_token(subtype) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidMimeType)
        }
    }

    /// Used when the client declares none.
    pub fn octet_stream() -> Self {
        Self("application/octet-stream".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `audio/webm;codecs=opus` → `audio/webm`, lowercased.
    pub fn essence(&self) -> String {
        self.0
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// What to serve as `Content-Type`: the type as declared when every
    /// parameter is a plain `name=value` of tokens, else the essence alone.
    /// A browser reads a comma in the parameters as a second, competing type
    /// (`audio/webm;a=,text/html`), so the client's text goes out only when
    /// it cannot be read that way.
    pub fn content_type(&self) -> String {
        let mut parts = self.0.split(';');
        let essence = parts.next().unwrap_or_default().trim();
        let plain = parts.all(|param| {
            param
                .trim()
                .split_once('=')
                .is_some_and(|(name, value)| is_token(name.trim()) && is_token(value.trim()))
        });
        if plain {
            self.0.clone()
        } else {
            essence.to_ascii_lowercase()
        }
    }

    /// A file extension for downloads.
    pub fn file_extension(&self) -> &'static str {
        match self.essence().as_str() {
            "audio/webm" | "video/webm" => "webm",
            "audio/ogg" | "video/ogg" | "application/ogg" => "ogg",
            "audio/mp4" | "audio/x-m4a" => "m4a",
            "video/mp4" => "mp4",
            "audio/mpeg" => "mp3",
            "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
            _ => "bin",
        }
    }
}

/// An RFC 9110 token, restricted further to what media types use.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

impl fmt::Display for MimeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "mime_type must be an audio or video type like \"audio/webm;codecs=opus\", or \"application/octet-stream\" (printable ASCII, at most 255 characters)"
)]
pub struct InvalidMimeType;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_recorder_types() {
        for ok in [
            "audio/webm;codecs=opus",
            "audio/ogg; codecs=opus",
            "audio/mp4",
            "application/octet-stream",
            "video/webm;codecs=vp8,opus",
            "Audio/MP4",
        ] {
            assert_eq!(MimeType::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(
            MimeType::parse("Audio/WebM;codecs=opus")
                .unwrap()
                .file_extension(),
            "webm"
        );
    }

    #[test]
    fn serves_plain_parameters_and_drops_the_rest() {
        let served = |raw: &str| MimeType::parse(raw).unwrap().content_type();
        assert_eq!(served("audio/webm;codecs=opus"), "audio/webm;codecs=opus");
        assert_eq!(served("audio/ogg; codecs=opus"), "audio/ogg; codecs=opus");
        assert_eq!(served("audio/webm;a=,text/html"), "audio/webm");
        assert_eq!(served("Video/WebM;codecs=vp8,opus"), "video/webm");
        assert_eq!(served("audio/mp4;codecs=\"mp4a.40.2\""), "audio/mp4");
    }

    #[test]
    fn rejects_header_injection_and_junk() {
        for bad in [
            "",
            "audio",
            "/webm",
            "audio/",
            "audio/webm\r\nX-Evil: 1",
            "aud io/webm",
            &"a/".repeat(200),
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "application/javascript",
            "application/octet-streamx",
        ] {
            assert!(MimeType::parse(bad).is_err(), "{bad:?}");
        }
    }
}
