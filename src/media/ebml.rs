//! EBML primitives (RFC 8794): variable-length integers, element headers,
//! and writers for the few element kinds a WebM rewrite produces.
//!
//! Readers take a byte slice that may end early (a stream read in pieces):
//! they answer [`Parsed::NeedMore`] rather than failing, so a caller can
//! append and retry. Malformed input is an [`EbmlError`], never a panic.

/// An element ID as written (marker bits included), e.g. `0x1A45DFA3`.
pub type ElementId = u32;

pub mod ids {
    //! The WebM element IDs a rewrite reads or writes.
    use super::ElementId;

    pub const EBML: ElementId = 0x1A45_DFA3;
    pub const SEGMENT: ElementId = 0x1853_8067;
    pub const SEEK_HEAD: ElementId = 0x114D_9B74;
    pub const SEEK: ElementId = 0x4DBB;
    pub const SEEK_ID: ElementId = 0x53AB;
    pub const SEEK_POSITION: ElementId = 0x53AC;
    pub const INFO: ElementId = 0x1549_A966;
    pub const TIMECODE_SCALE: ElementId = 0x2A_D7B1;
    pub const DURATION: ElementId = 0x4489;
    pub const MUXING_APP: ElementId = 0x4D80;
    pub const WRITING_APP: ElementId = 0x5741;
    pub const TRACKS: ElementId = 0x1654_AE6B;
    pub const CLUSTER: ElementId = 0x1F43_B675;
    pub const TIMECODE: ElementId = 0xE7;
    pub const SIMPLE_BLOCK: ElementId = 0xA3;
    pub const BLOCK_GROUP: ElementId = 0xA0;
    pub const CUES: ElementId = 0x1C53_BB6B;
    pub const CUE_POINT: ElementId = 0xBB;
    pub const CUE_TIME: ElementId = 0xB3;
    pub const CUE_TRACK_POSITIONS: ElementId = 0xB7;
    pub const CUE_TRACK: ElementId = 0xF7;
    pub const CUE_CLUSTER_POSITION: ElementId = 0xF1;
    pub const VOID: ElementId = 0xEC;
    pub const TAGS: ElementId = 0x1254_C367;
    pub const CHAPTERS: ElementId = 0x1043_A770;
    pub const ATTACHMENTS: ElementId = 0x1941_A469;
    pub const CRC32: ElementId = 0xBF;
    pub const POSITION: ElementId = 0xA7;
    pub const PREV_SIZE: ElementId = 0xAB;
    pub const SILENT_TRACKS: ElementId = 0x5854;
    pub const ENCRYPTED_BLOCK: ElementId = 0xAF;
}

/// A reading that may need more bytes than were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The value and how many bytes it took.
    Done(T, usize),
    /// The input ends before the value does.
    NeedMore,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EbmlError {
    #[error("an EBML number cannot start with a zero byte")]
    ZeroLead,
    #[error("element ID {0:#x} is longer than 4 bytes")]
    IdTooLong(u64),
}

/// An element's data size: known, or unknown (all value bits set), which
/// live streams use for Segment and Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Known(u64),
    Unknown,
}

/// An element header: its ID, its data size, and the header's own length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: ElementId,
    pub size: Size,
    pub len: usize,
}

/// Reads a variable-length integer; returns it with the marker bit kept
/// (`raw`, as IDs are written) and cleared (`value`), and its length.
fn read_vint(input: &[u8]) -> Result<Parsed<(u64, u64)>, EbmlError> {
    let Some(&first) = input.first() else {
        return Ok(Parsed::NeedMore);
    };
    if first == 0 {
        return Err(EbmlError::ZeroLead);
    }
    let len = first.leading_zeros() as usize + 1;
    if input.len() < len {
        return Ok(Parsed::NeedMore);
    }
    let raw = input[..len]
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let value = raw & !(1u64 << (7 * len));
    Ok(Parsed::Done((raw, value), len))
}

/// Reads an element header at the start of `input`.
pub fn read_header(input: &[u8]) -> Result<Parsed<Header>, EbmlError> {
    let (id, id_len) = match read_vint(input)? {
        Parsed::Done((raw, _), len) if len <= 4 => (raw as ElementId, len),
        Parsed::Done((raw, _), _) => return Err(EbmlError::IdTooLong(raw)),
        Parsed::NeedMore => return Ok(Parsed::NeedMore),
    };
    let (size, size_len) = match read_vint(&input[id_len..])? {
        Parsed::Done((_, value), len) => {
            let all_ones = (1u64 << (7 * len)) - 1;
            let size = if value == all_ones {
                Size::Unknown
            } else {
                Size::Known(value)
            };
            (size, len)
        }
        Parsed::NeedMore => return Ok(Parsed::NeedMore),
    };
    let len = id_len + size_len;
    Ok(Parsed::Done(Header { id, size, len }, len))
}

/// Reads an unsigned integer element's data (0 to 8 bytes, big-endian).
pub fn read_uint(data: &[u8]) -> Option<u64> {
    (data.len() <= 8).then(|| data.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Appends an element ID as written (its marker bits are part of it).
pub fn write_id(out: &mut Vec<u8>, id: ElementId) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends a known data size in the fewest bytes (never the all-ones
/// pattern, which would mean "unknown").
pub fn write_size(out: &mut Vec<u8>, size: u64) {
    let len = (1..=8)
        .find(|&len| size < (1u64 << (7 * len)) - 1)
        .expect("sizes below 2^56 - 1 fit in 8 bytes");
    write_size_as(out, size, len);
}

/// Appends a data size in exactly `len` bytes (to reserve room).
pub fn write_size_as(out: &mut Vec<u8>, size: u64, len: usize) {
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

/// Appends a whole element with the given data.
pub fn write_element(out: &mut Vec<u8>, id: ElementId, data: &[u8]) {
    write_id(out, id);
    write_size(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Appends an unsigned integer element in the fewest bytes (at least one).
pub fn write_uint(out: &mut Vec<u8>, id: ElementId, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    write_element(out, id, &bytes[skip..]);
}

/// Appends an 8-byte float element.
pub fn write_float(out: &mut Vec<u8>, id: ElementId, value: f64) {
    write_element(out, id, &value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> Header {
        match read_header(bytes).unwrap() {
            Parsed::Done(header, len) => {
                assert_eq!(len, header.len);
                header
            }
            Parsed::NeedMore => panic!("needed more than {bytes:02x?}"),
        }
    }

    #[test]
    fn reads_known_and_unknown_sizes() {
        // EBML header, 4-byte ID, size 0x23 in one byte.
        assert_eq!(
            header(&[0x1A, 0x45, 0xDF, 0xA3, 0xA3]),
            Header {
                id: ids::EBML,
                size: Size::Known(0x23),
                len: 5
            }
        );
        // Segment of unknown size, as MediaRecorder writes it (8-byte all ones).
        let segment = [
            0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        assert_eq!(header(&segment).size, Size::Unknown);
        // A one-byte unknown size too.
        assert_eq!(header(&[0x1F, 0x43, 0xB6, 0x75, 0xFF]).size, Size::Unknown);
        // Two-byte size 0x1234.
        assert_eq!(header(&[0xA3, 0x52, 0x34]).size, Size::Known(0x1234));
    }

    #[test]
    fn asks_for_more_rather_than_failing() {
        for cut in [0, 1, 3, 4, 6] {
            let segment = [
                0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            ];
            assert_eq!(
                read_header(&segment[..cut]),
                Ok(Parsed::NeedMore),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn refuses_malformed_numbers() {
        assert_eq!(read_header(&[0x00, 0x81]), Err(EbmlError::ZeroLead));
        assert!(matches!(
            read_header(&[0x08, 1, 2, 3, 4, 0x81]),
            Err(EbmlError::IdTooLong(_))
        ));
    }

    #[test]
    fn writes_what_it_reads() {
        for size in [
            0u64,
            1,
            126,
            127,
            128,
            16_382,
            16_383,
            1 << 20,
            (1 << 56) - 2,
        ] {
            let mut out = Vec::new();
            write_id(&mut out, ids::CLUSTER);
            write_size(&mut out, size);
            let read = header(&out);
            assert_eq!(read.id, ids::CLUSTER);
            assert_eq!(read.size, Size::Known(size), "size {size}");
        }
        let mut reserved = Vec::new();
        write_id(&mut reserved, ids::SEGMENT);
        write_size_as(&mut reserved, 5, 8);
        assert_eq!(reserved.len(), 12);
        assert_eq!(header(&reserved).size, Size::Known(5));
    }

    #[test]
    fn writes_minimal_integers_and_floats() {
        let mut out = Vec::new();
        write_uint(&mut out, ids::TIMECODE_SCALE, 1_000_000);
        assert_eq!(out, [0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40]);
        let mut zero = Vec::new();
        write_uint(&mut zero, ids::TIMECODE, 0);
        assert_eq!(zero, [0xE7, 0x81, 0x00]);
        let mut duration = Vec::new();
        write_float(&mut duration, ids::DURATION, 2500.0);
        assert_eq!(&duration[..3], [0x44, 0x89, 0x88]);
        assert_eq!(
            f64::from_be_bytes(duration[3..].try_into().unwrap()),
            2500.0
        );
        assert_eq!(read_uint(&[0x0F, 0x42, 0x40]), Some(1_000_000));
        assert_eq!(read_uint(&[0; 9]), None);
    }
}
