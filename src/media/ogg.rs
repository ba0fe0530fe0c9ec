//! How long an Ogg/Opus recording plays, read as it streams by: the last
//! granule position of each logical stream minus its pre-skip (RFC 7845),
//! summed over chained streams (a recorder restart starts a new one).

use std::collections::HashMap;

/// Opus granule positions count 48 kHz samples.
const OPUS_RATE: u64 = 48_000;
/// Fixed part of a page header; the segment table follows.
const HEADER: usize = 27;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OggError {
    #[error("not an Ogg page at byte {0}")]
    NotAPage(u64),
    #[error("the stream ends inside a page")]
    Truncated,
    #[error("a stream without an OpusHead")]
    NotOpus,
}

/// One logical stream's facts.
#[derive(Debug, Default, Clone, Copy)]
struct Logical {
    pre_skip: Option<u64>,
    last_granule: Option<u64>,
}

#[derive(Debug, Default)]
pub struct OggDuration {
    buf: Vec<u8>,
    offset: u64,
    streams: HashMap<u32, Logical>,
    /// Samples of earlier recorder streams (before a flagged restart).
    earlier_samples: u64,
}

impl OggDuration {
    /// Takes the next bytes; pages are read as they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), OggError> {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(len) = self.page_at(at)? {
            at += len;
        }
        self.buf.drain(..at);
        self.offset += at as u64;
        Ok(())
    }

    /// Reads the page at `at` if it is all there; returns its length.
    fn page_at(&mut self, at: usize) -> Result<Option<usize>, OggError> {
        let page = &self.buf[at..];
        let magic = page.len().min(4);
        if page[..magic] != b"OggS"[..magic] || page.get(4).is_some_and(|&v| v != 0) {
            return Err(OggError::NotAPage(self.offset + at as u64));
        }
        if page.len() < HEADER {
            return Ok(None);
        }
        let segments = usize::from(page[26]);
        let Some(table) = page.get(HEADER..HEADER + segments) else {
            return Ok(None);
        };
        let body_len: usize = table.iter().map(|&b| usize::from(b)).sum();
        let len = HEADER + segments + body_len;
        let Some(body) = page.get(HEADER + segments..len) else {
            return Ok(None);
        };
        let granule = i64::from_le_bytes(page[6..14].try_into().expect("8 bytes"));
        let serial = u32::from_le_bytes(page[14..18].try_into().expect("4 bytes"));
        let beginning = page[5] & 0x02 != 0;
        let stream = self.streams.entry(serial).or_default();
        if beginning && body.starts_with(b"OpusHead") && body.len() >= 12 {
            stream.pre_skip = Some(u64::from(u16::from_le_bytes([body[10], body[11]])));
        }
        if granule >= 0 {
            stream.last_granule = Some(granule as u64);
        }
        Ok(Some(len))
    }

    /// A new recorder stream begins here: a page the last one left
    /// unfinished is dropped, and its logical streams are counted as they
    /// stand (so a new recorder reusing a serial number is not mistaken for
    /// the old one).
    pub fn start_stream(&mut self) -> Result<(), OggError> {
        self.buf.clear();
        self.earlier_samples += self.samples()?;
        self.streams.clear();
        Ok(())
    }

    /// The total duration in milliseconds, once the whole stream was pushed.
    pub fn finish(self) -> Result<i64, OggError> {
        if !self.buf.is_empty() {
            return Err(OggError::Truncated);
        }
        let samples = self.earlier_samples + self.samples()?;
        Ok((samples * 1000 / OPUS_RATE) as i64)
    }

    fn samples(&self) -> Result<u64, OggError> {
        let mut samples = 0;
        for stream in self.streams.values() {
            let pre_skip = stream.pre_skip.ok_or(OggError::NotOpus)?;
            samples += stream.last_granule.unwrap_or(0).saturating_sub(pre_skip);
        }
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(header_type: u8, granule: i64, serial: u32, body: &[u8]) -> Vec<u8> {
        let mut out = b"OggS".to_vec();
        out.push(0);
        out.push(header_type);
        out.extend_from_slice(&granule.to_le_bytes());
        out.extend_from_slice(&serial.to_le_bytes());
        out.extend_from_slice(&[0; 8]); // sequence and CRC: not checked here
        let mut table = vec![255u8; body.len() / 255];
        table.push((body.len() % 255) as u8);
        out.push(table.len() as u8);
        out.extend_from_slice(&table);
        out.extend_from_slice(body);
        out
    }

    fn opus_head(pre_skip: u16) -> Vec<u8> {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 1]);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head
    }

    #[test]
    fn sums_chained_streams_minus_pre_skip_however_cut() {
        let mut stream = Vec::new();
        stream.extend(page(0x02, 0, 1, &opus_head(312)));
        stream.extend(page(0x00, 48_312, 1, &[0; 300]));
        stream.extend(page(0x04, 96_312, 1, &[0; 10]));
        stream.extend(page(0x02, 0, 2, &opus_head(312)));
        stream.extend(page(0x04, 24_312, 2, &[0; 10]));
        for cut in 1..stream.len() {
            let mut duration = OggDuration::default();
            duration.push(&stream[..cut]).unwrap();
            duration.push(&stream[cut..]).unwrap();
            assert_eq!(duration.finish(), Ok(2_500), "cut at {cut}");
        }
        // A flagged restart after a cut-off page; the new recorder reuses serial 1.
        let mut duration = OggDuration::default();
        duration.push(&stream[..stream.len() - 5]).unwrap();
        duration.start_stream().unwrap();
        duration.push(&page(0x02, 0, 1, &opus_head(312))).unwrap();
        duration.push(&page(0x04, 48_312, 1, &[0; 10])).unwrap();
        assert_eq!(duration.finish(), Ok(3_000));
    }

    #[test]
    fn refuses_what_is_not_ogg_opus() {
        let mut garbage = OggDuration::default();
        assert_eq!(
            garbage.push(b"not an ogg page at all, no"),
            Err(OggError::NotAPage(0))
        );
        let mut vorbis = OggDuration::default();
        vorbis.push(&page(0x02, 0, 1, b"\x01vorbis")).unwrap();
        assert_eq!(vorbis.finish(), Err(OggError::NotOpus));
        let mut cut = OggDuration::default();
        cut.push(&page(0x02, 0, 1, &opus_head(0))[..20]).unwrap();
        assert_eq!(cut.finish(), Err(OggError::Truncated));
    }
}
