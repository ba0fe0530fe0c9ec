//! How long an Opus packet plays, from its TOC byte (RFC 6716 §3.1).

/// The packet's duration in nanoseconds, or `None` if it is malformed.
pub fn packet_duration_ns(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame size in units of 0.5 ms, by configuration (SILK, Hybrid, CELT).
    let half_ms: u64 = match config {
        0..=11 => [20, 40, 80, 120][usize::from(config % 4)],
        12..=15 => [20, 40][usize::from(config % 2)],
        _ => [5, 10, 20, 40][usize::from(config % 4)],
    };
    let frames: u64 = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(*packet.get(1)? & 0x3F),
    };
    let total = half_ms * frames;
    // A packet holds at most 120 ms.
    (frames > 0 && total <= 240).then_some(total * 500_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_frame_size_and_count() {
        // Config 31 (CELT 20 ms), one frame: what MediaRecorder's Opus sends.
        assert_eq!(packet_duration_ns(&[0xF8, 0x00]), Some(20_000_000));
        // Config 16 (CELT 2.5 ms), two frames.
        assert_eq!(packet_duration_ns(&[0x81]), Some(5_000_000));
        // Config 3 (SILK 60 ms), code 3 with 2 frames: 120 ms.
        assert_eq!(packet_duration_ns(&[0x1B, 0x02]), Some(120_000_000));
        // Code 3 with 3 × 60 ms is over the 120 ms limit; 0 frames is malformed.
        assert_eq!(packet_duration_ns(&[0x1B, 0x03]), None);
        assert_eq!(packet_duration_ns(&[0x1B, 0x00]), None);
        assert_eq!(packet_duration_ns(&[]), None);
    }
}
