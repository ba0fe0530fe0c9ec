//! The `Range` header, for a single byte range (RFC 9110 §14).

/// What to serve for a `Range` header against a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve everything with 200 (also for multiple ranges,
    /// which servers may ignore).
    Full,
    /// Serve `start..=end` with 206.
    Partial { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

impl RangeRequest {
    pub fn parse(header: Option<&str>, len: u64) -> Self {
        // The unit is case-insensitive (RFC 9110 §14.1).
        let Some(spec) = header
            .and_then(|h| h.trim().split_once('='))
            .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
            .map(|(_, spec)| spec)
        else {
            return Self::Full;
        };
        if spec.contains(',') {
            return Self::Full;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return Self::Full;
        };
        let (first, last) = (first.trim(), last.trim());
        // Digits only: `u64::from_str` would also take a sign ("+1"). A
        // position too large for u64 is past any end, so it saturates.
        let parse = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
        };
        match (first.is_empty(), last.is_empty()) {
            // bytes=-N: the last N bytes.
            (true, false) => match parse(last) {
                Some(0) => Self::Unsatisfiable,
                Some(n) if len > 0 => Self::Partial {
                    start: len.saturating_sub(n),
                    end: len - 1,
                },
                Some(_) => Self::Unsatisfiable,
                None => Self::Full,
            },
            // bytes=A- : from A to the end.
            (false, true) => match parse(first) {
                Some(start) if start < len => Self::Partial {
                    start,
                    end: len - 1,
                },
                Some(_) => Self::Unsatisfiable,
                None => Self::Full,
            },
            // bytes=A-B
            (false, false) => match (parse(first), parse(last)) {
                (Some(start), Some(end)) if start > end => Self::Full,
                (Some(start), Some(_)) if start >= len => Self::Unsatisfiable,
                (Some(start), Some(end)) => Self::Partial {
                    start,
                    end: end.min(len - 1),
                },
                _ => Self::Full,
            },
            (true, true) => Self::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{self, *};

    fn parse(h: &str, len: u64) -> RangeRequest {
        RangeRequest::parse(Some(h), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-99", 1000), Partial { start: 0, end: 99 });
        assert_eq!(
            parse("bytes=500-", 1000),
            Partial {
                start: 500,
                end: 999
            }
        );
        assert_eq!(
            parse("bytes=-100", 1000),
            Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(parse("bytes=-5000", 1000), Partial { start: 0, end: 999 });
        assert_eq!(
            parse("bytes=990-5000", 1000),
            Partial {
                start: 990,
                end: 999
            }
        );
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse("bytes=1000-1001", 1000), Unsatisfiable);
        assert_eq!(parse("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse("bytes=5-1", 1000), Full);
        assert_eq!(parse("bytes=0-1,5-6", 1000), Full);
        assert_eq!(parse("items=0-1", 1000), Full);
        assert_eq!(parse("bytes=x-y", 1000), Full);
        assert_eq!(parse("bytes=+1-+2", 1000), Full);
        assert_eq!(parse("bytes=-+5", 1000), Full);
        assert_eq!(parse("bytes=+5-", 1000), Full);
        assert_eq!(parse("Bytes=0-9", 1000), Partial { start: 0, end: 9 });
        assert_eq!(
            parse("bytes=10-99999999999999999999999", 1000),
            Partial {
                start: 10,
                end: 999
            }
        );
        assert_eq!(parse("bytes=99999999999999999999999-", 1000), Unsatisfiable);
        assert_eq!(RangeRequest::parse(None, 1000), Full);
    }
}
