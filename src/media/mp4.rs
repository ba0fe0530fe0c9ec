//! How long a fragmented MP4 recording plays (MediaRecorder's `audio/mp4`),
//! read as it streams by: the first track's timescale from the `moov`, then
//! each `moof`'s decode time plus its samples' durations. Several recorder
//! streams (each with its own `ftyp`/`moov`) are summed.
//!
//! Only `moov` and `moof` are buffered (small, bounded by [`MAX_BOX`]); the
//! media data is skipped as it passes.

/// The largest `moov` or `moof` read whole.
pub const MAX_BOX: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mp4Error {
    #[error("a box of {size} bytes at byte {at} is malformed")]
    BadBox { at: u64, size: u64 },
    #[error("a {0} box over the {MAX_BOX}-byte limit")]
    TooLarge(String),
    #[error("the stream ends inside a box")]
    Truncated,
    #[error("fragments before any moov, or a moov without a track")]
    NoMovie,
    #[error("a {0} box too short for its fields")]
    Short(&'static str),
}

/// The first track of the current stream's `moov`.
#[derive(Debug, Clone, Copy)]
struct Track {
    id: u32,
    timescale: u32,
    /// `trex`'s default sample duration.
    default_duration: u32,
    /// `mdhd`'s duration: what a non-fragmented file says.
    declared: u64,
}

/// One recorder stream's facts so far.
#[derive(Debug, Default, Clone, Copy)]
struct Stream {
    track: Option<Track>,
    /// End of the latest fragment, in the track's timescale.
    end: u64,
}

impl Stream {
    fn ms(&self) -> u64 {
        match self.track {
            Some(t) if t.timescale > 0 => self.end.max(t.declared) * 1000 / u64::from(t.timescale),
            _ => 0,
        }
    }
}

#[derive(Debug, Default)]
pub struct Mp4Duration {
    buf: Vec<u8>,
    offset: u64,
    /// Bytes of a box being skipped that have not arrived yet.
    skipping: u64,
    /// The last box runs to the end of the stream (size 0).
    to_end: bool,
    stream: Stream,
    /// Milliseconds of earlier recorder streams.
    earlier_ms: u64,
}

impl Mp4Duration {
    /// Takes the next bytes; boxes are read as they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), Mp4Error> {
        if self.to_end {
            return Ok(());
        }
        let skipped = self.skipping.min(bytes.len() as u64);
        self.skipping -= skipped;
        self.offset += skipped;
        bytes = &bytes[skipped as usize..];
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(used) = self.box_at(at)? {
            at += used;
            if self.skipping > 0 || self.to_end {
                break;
            }
        }
        self.buf.drain(..at);
        self.offset += at as u64;
        Ok(())
    }

    /// A new recorder stream begins here: whatever of the last one is left
    /// unread is dropped (a stream cut off mid-box still counts up to there).
    pub fn start_stream(&mut self) {
        self.buf.clear();
        self.skipping = 0;
        self.to_end = false;
        self.end_stream();
    }

    /// The total duration in milliseconds, once the whole stream was pushed.
    pub fn finish(mut self) -> Result<i64, Mp4Error> {
        if !self.buf.is_empty() || self.skipping > 0 {
            return Err(Mp4Error::Truncated);
        }
        if self.stream.track.is_none() && self.earlier_ms == 0 {
            return Err(Mp4Error::NoMovie);
        }
        self.end_stream();
        Ok(self.earlier_ms as i64)
    }

    fn end_stream(&mut self) {
        self.earlier_ms += self.stream.ms();
        self.stream = Stream::default();
    }

    /// Reads the box at `at`: whole if it is a `moov` or `moof`, otherwise
    /// only its header (the rest is skipped). Returns the bytes used.
    fn box_at(&mut self, at: usize) -> Result<Option<usize>, Mp4Error> {
        let available = self.buf.len() - at;
        let Some(BoxHeader {
            len: header,
            size,
            kind,
        }) = box_header(&self.buf[at..], self.offset + at as u64)?
        else {
            return Ok(None);
        };
        let Some(size) = size else {
            self.to_end = true;
            return Ok(Some(available));
        };
        match &kind {
            b"moov" | b"moof" => {
                if size > MAX_BOX {
                    return Err(Mp4Error::TooLarge(String::from_utf8_lossy(&kind).into()));
                }
                let Some(whole) = self.buf.get(at + header..at + size as usize) else {
                    return Ok(None);
                };
                let body = whole.to_vec();
                if &kind == b"moov" {
                    self.on_moov(&body)?;
                } else {
                    self.on_moof(&body)?;
                }
                Ok(Some(size as usize))
            }
            _ => {
                if &kind == b"ftyp" && self.stream.track.is_some() {
                    self.end_stream(); // a new recorder stream without a flag
                }
                let here = (available as u64).min(size);
                self.skipping = size - here;
                Ok(Some(here as usize))
            }
        }
    }

    fn on_moov(&mut self, moov: &[u8]) -> Result<(), Mp4Error> {
        if self.stream.track.is_some() {
            self.end_stream();
        }
        let trak = child(moov, b"trak").ok_or(Mp4Error::NoMovie)?;
        let tkhd = child(trak, b"tkhd").ok_or(Mp4Error::NoMovie)?;
        let id = be_u32(tkhd, if tkhd.first() == Some(&1) { 20 } else { 12 }, "tkhd")?;
        let mdhd = child(trak, b"mdia")
            .and_then(|mdia| child(mdia, b"mdhd"))
            .ok_or(Mp4Error::NoMovie)?;
        let (timescale, declared) = if mdhd.first() == Some(&1) {
            (be_u32(mdhd, 20, "mdhd")?, be_u64(mdhd, 24, "mdhd")?)
        } else {
            (
                be_u32(mdhd, 12, "mdhd")?,
                u64::from(be_u32(mdhd, 16, "mdhd")?),
            )
        };
        let mut default_duration = 0;
        if let Some(mvex) = child(moov, b"mvex") {
            for trex in children(mvex).filter(|(kind, _)| kind == b"trex") {
                if be_u32(trex.1, 4, "trex")? == id {
                    default_duration = be_u32(trex.1, 12, "trex")?;
                }
            }
        }
        self.stream.track = Some(Track {
            id,
            timescale,
            default_duration,
            declared,
        });
        Ok(())
    }

    fn on_moof(&mut self, moof: &[u8]) -> Result<(), Mp4Error> {
        let track = self.stream.track.ok_or(Mp4Error::NoMovie)?;
        for (_, traf) in children(moof).filter(|(kind, _)| kind == b"traf") {
            let tfhd = child(traf, b"tfhd").ok_or(Mp4Error::Short("traf"))?;
            if be_u32(tfhd, 4, "tfhd")? != track.id {
                continue;
            }
            let mut default_duration = track.default_duration;
            let tfhd_flags = be_u32(tfhd, 0, "tfhd")? & 0x00FF_FFFF;
            if tfhd_flags & 0x08 != 0 {
                // Optional fields before it: base data offset (8), sample description index (4).
                let at = 8
                    + if tfhd_flags & 0x01 != 0 { 8 } else { 0 }
                    + if tfhd_flags & 0x02 != 0 { 4 } else { 0 };
                default_duration = be_u32(tfhd, at, "tfhd")?;
            }
            let mut time = match child(traf, b"tfdt") {
                Some(tfdt) if tfdt.first() == Some(&1) => be_u64(tfdt, 4, "tfdt")?,
                Some(tfdt) => u64::from(be_u32(tfdt, 4, "tfdt")?),
                None => self.stream.end,
            };
            for (_, trun) in children(traf).filter(|(kind, _)| kind == b"trun") {
                time += trun_duration(trun, default_duration)?;
            }
            self.stream.end = self.stream.end.max(time);
        }
        Ok(())
    }
}

/// The samples' durations in a `trun`.
fn trun_duration(trun: &[u8], default_duration: u32) -> Result<u64, Mp4Error> {
    let flags = be_u32(trun, 0, "trun")? & 0x00FF_FFFF;
    let count = u64::from(be_u32(trun, 4, "trun")?);
    if flags & 0x100 == 0 {
        return Ok(count * u64::from(default_duration));
    }
    let mut at = 8 + if flags & 0x01 != 0 { 4 } else { 0 } + if flags & 0x04 != 0 { 4 } else { 0 };
    // Per sample: duration, size, flags, composition offset, as present.
    let stride = [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|&&bit| flags & bit != 0)
        .count()
        * 4;
    let mut total = 0;
    for _ in 0..count {
        total += u64::from(be_u32(trun, at, "trun")?);
        at += stride;
    }
    Ok(total)
}

/// A box header.
struct BoxHeader {
    len: usize,
    /// The whole box's size; `None`: it runs to the end of the stream.
    size: Option<u64>,
    kind: [u8; 4],
}

/// The box header at the start of `input` (at stream offset `at`), or
/// `None` until enough bytes are there.
fn box_header(input: &[u8], at: u64) -> Result<Option<BoxHeader>, Mp4Error> {
    if input.len() < 8 {
        return Ok(None);
    }
    let kind: [u8; 4] = input[4..8].try_into().expect("4 bytes");
    let (header, size) = match u32::from_be_bytes(input[..4].try_into().expect("4 bytes")) {
        0 => {
            return Ok(Some(BoxHeader {
                len: 8,
                size: None,
                kind,
            }));
        }
        1 => match input.get(8..16) {
            None => return Ok(None),
            Some(large) => (16, u64::from_be_bytes(large.try_into().expect("8 bytes"))),
        },
        size => (8, u64::from(size)),
    };
    if size < header as u64 || !kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(Mp4Error::BadBox { at, size });
    }
    Ok(Some(BoxHeader {
        len: header,
        size: Some(size),
        kind,
    }))
}

/// The child boxes of a container's body (a malformed one ends the list).
fn children(body: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = box_header(&body[at..], 0).ok()??;
        let end = at.checked_add(usize::try_from(header.size?).ok()?)?;
        let inner = body.get(at + header.len..end)?;
        at = end;
        Some((header.kind, inner))
    })
}

fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(body)
        .find(|(k, _)| k == kind)
        .map(|(_, inner)| inner)
}

fn be_u32(data: &[u8], at: usize, kind: &'static str) -> Result<u32, Mp4Error> {
    let bytes = data.get(at..at + 4).ok_or(Mp4Error::Short(kind))?;
    Ok(u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
}

fn be_u64(data: &[u8], at: usize, kind: &'static str) -> Result<u64, Mp4Error> {
    let bytes = data.get(at..at + 8).ok_or(Mp4Error::Short(kind))?;
    Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn full(version_flags: u32, fields: &[u32]) -> Vec<u8> {
        let mut out = version_flags.to_be_bytes().to_vec();
        for field in fields {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out
    }

    /// ftyp + moov for track 1 at 48 kHz (trex default 960), as MediaRecorder writes one.
    fn init() -> Vec<u8> {
        let tkhd = mp4_box(b"tkhd", &full(0, &[0, 0, 1, 0, 0]));
        let mdhd = mp4_box(b"mdhd", &full(0, &[0, 0, 48_000, 0, 0]));
        let trak = mp4_box(b"trak", &[tkhd, mp4_box(b"mdia", &mdhd)].concat());
        let trex = mp4_box(b"trex", &full(0, &[1, 1, 960, 0, 0]));
        let moov = mp4_box(b"moov", &[trak, mp4_box(b"mvex", &trex)].concat());
        [mp4_box(b"ftyp", b"isom\0\0\0\0"), moov].concat()
    }

    /// A fragment at `time` with `durations` (or `count` samples of the default).
    fn fragment(time: u32, durations: &[u32], count: u32) -> Vec<u8> {
        let tfhd = mp4_box(b"tfhd", &full(0x02_0000, &[1]));
        let tfdt = mp4_box(b"tfdt", &full(0, &[time]));
        let trun = if durations.is_empty() {
            mp4_box(b"trun", &full(0x01, &[count, 0]))
        } else {
            let mut fields = vec![durations.len() as u32, 0];
            for d in durations {
                fields.extend([*d, 100]); // duration, size
            }
            mp4_box(b"trun", &full(0x301, &fields))
        };
        let moof = mp4_box(b"moof", &mp4_box(b"traf", &[tfhd, tfdt, trun].concat()));
        [moof, mp4_box(b"mdat", &[7; 500])].concat()
    }

    #[test]
    fn sums_fragments_and_streams_however_cut() {
        let first = [
            init(),
            fragment(0, &[960; 50], 0),
            fragment(48_000, &[], 50),
        ]
        .concat();
        let second = [init(), fragment(0, &[960, 960, 480], 0)].concat();
        let whole = [first.clone(), second.clone()].concat();
        for cut in (1..whole.len()).step_by(7) {
            let mut duration = Mp4Duration::default();
            duration.push(&whole[..cut]).unwrap();
            duration.push(&whole[cut..]).unwrap();
            assert_eq!(duration.finish(), Ok(2_050), "cut at {cut}");
        }
        // With a flagged restart, a first stream cut off mid-box counts to its last fragment.
        let mut duration = Mp4Duration::default();
        duration.push(&first[..first.len() - 100]).unwrap();
        duration.start_stream();
        duration.push(&second).unwrap();
        assert_eq!(duration.finish(), Ok(2_050));
    }

    #[test]
    fn refuses_what_is_not_fragmented_mp4() {
        let mut text = Mp4Duration::default();
        assert!(matches!(
            text.push(b"\0\0\0\x02not a box"),
            Err(Mp4Error::BadBox { .. })
        ));
        let mut orphan = Mp4Duration::default();
        assert_eq!(orphan.push(&fragment(0, &[960], 0)), Err(Mp4Error::NoMovie));
        let mut cut = Mp4Duration::default();
        cut.push(&init()[..30]).unwrap();
        assert_eq!(cut.finish(), Err(Mp4Error::Truncated));
        let mut huge = Mp4Duration::default();
        assert_eq!(
            huge.push(&[&0x0200_0000u32.to_be_bytes()[..], b"moof"].concat()),
            Err(Mp4Error::TooLarge("moof".into()))
        );
    }
}
