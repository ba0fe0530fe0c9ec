//! The binary chunk frame of protocol v1 (big-endian):
//! version u8 = 1 · flags u8 · index u32 · CRC-32C of payload u32 · payload.

use bytes::Bytes;

pub const HEADER_LEN: usize = 10;
const VERSION: u8 = 1;
/// Flag bit 0: this chunk starts a new recorder stream (carries a container header).
pub const FLAG_NEW_STREAM: u8 = 0b0000_0001;

/// A parsed, checksum-verified chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFrame {
    pub index: u32,
    pub flags: u8,
    pub crc32c: u32,
    pub payload: Bytes,
}

/// Why a frame was refused. `TooLarge` has its own close code (4413); the
/// rest are malformed frames (4400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is {0} bytes, shorter than the 10-byte header")]
    Short(usize),
    #[error("unsupported frame version {0} (expected 1)")]
    Version(u8),
    #[error("unknown flag bits {0:#04x}")]
    Flags(u8),
    #[error("chunk payload is empty")]
    EmptyPayload,
    #[error("chunk 0 must have the new-stream flag set")]
    FirstChunkWithoutNewStream,
    #[error("chunk payload is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("CRC-32C mismatch: header says {declared:#010x}, payload has {actual:#010x}")]
    Checksum { declared: u32, actual: u32 },
}

impl ChunkFrame {
    pub fn parse(frame: Bytes, max_payload: usize) -> Result<Self, FrameError> {
        if frame.len() < HEADER_LEN {
            return Err(FrameError::Short(frame.len()));
        }
        let (version, flags) = (frame[0], frame[1]);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        if flags & !FLAG_NEW_STREAM != 0 {
            return Err(FrameError::Flags(flags));
        }
        let index = u32::from_be_bytes(frame[2..6].try_into().expect("4 bytes"));
        let declared = u32::from_be_bytes(frame[6..10].try_into().expect("4 bytes"));
        let payload = frame.slice(HEADER_LEN..);
        if payload.is_empty() {
            return Err(FrameError::EmptyPayload);
        }
        if payload.len() > max_payload {
            return Err(FrameError::TooLarge {
                size: payload.len(),
                limit: max_payload,
            });
        }
        if index == 0 && flags & FLAG_NEW_STREAM == 0 {
            return Err(FrameError::FirstChunkWithoutNewStream);
        }
        let actual = crc32c::crc32c(&payload);
        if actual != declared {
            return Err(FrameError::Checksum { declared, actual });
        }
        Ok(Self {
            index,
            flags,
            crc32c: declared,
            payload,
        })
    }

    /// Builds a frame; the inverse of `parse`, used by tests and tools.
    pub fn encode(index: u32, new_stream: bool, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
        frame.push(VERSION);
        frame.push(if new_stream { FLAG_NEW_STREAM } else { 0 });
        frame.extend_from_slice(&index.to_be_bytes());
        frame.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(frame: Vec<u8>) -> Result<ChunkFrame, FrameError> {
        ChunkFrame::parse(Bytes::from(frame), 16)
    }

    #[test]
    fn round_trips() {
        let chunk = parse(ChunkFrame::encode(7, false, b"hello")).unwrap();
        assert_eq!(
            (chunk.index, chunk.flags, &chunk.payload[..]),
            (7, 0, &b"hello"[..])
        );
        assert_eq!(chunk.crc32c, crc32c::crc32c(b"hello"));
    }

    #[test]
    fn crc_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn refuses_each_malformation() {
        assert_eq!(parse(vec![1, 0, 0]), Err(FrameError::Short(3)));
        let mut v2 = ChunkFrame::encode(1, false, b"x");
        v2[0] = 2;
        assert_eq!(parse(v2), Err(FrameError::Version(2)));
        let mut flags = ChunkFrame::encode(1, false, b"x");
        flags[1] = 0b10;
        assert_eq!(parse(flags), Err(FrameError::Flags(2)));
        assert_eq!(
            parse(ChunkFrame::encode(1, false, b"")),
            Err(FrameError::EmptyPayload)
        );
        assert_eq!(
            parse(ChunkFrame::encode(0, false, b"x")),
            Err(FrameError::FirstChunkWithoutNewStream)
        );
        assert!(matches!(
            parse(ChunkFrame::encode(1, false, &[0; 17])),
            Err(FrameError::TooLarge { size: 17, .. })
        ));
        let mut corrupt = ChunkFrame::encode(1, false, b"abc");
        corrupt[12] ^= 1;
        assert!(matches!(parse(corrupt), Err(FrameError::Checksum { .. })));
    }
}
