//! WebM rewrite throughput and memory: a synthetic live WebM (unknown-size
//! Segment and Clusters of 1 s, 20 ms Opus packets of 160 bytes, as
//! MediaRecorder writes at ~64 kb/s) of 1 h and of 10 h, fed to the rewriter
//! in 64 KiB pieces, against plain joining (hashing) of the same bytes in
//! the same run: both hash what they read (and the rewrite what it writes),
//! as the join does; disk writes are left out. Peak RSS is the process's
//! high-water mark after each size.
//!
//! `cargo bench --bench rewrite` — or `cargo bench --bench rewrite -- HOURS…`.

use std::time::Instant;

use sha2::{Digest, Sha256};
use spool::media::ebml::{self, ids};
use spool::media::webm_rewrite::Rewriter;

const PIECE: usize = 64 * 1024;

fn main() {
    let hours: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let hours = if hours.is_empty() { vec![1, 10] } else { hours };
    println!("| length | source | plain join | rewrite | rewrite / plain | peak RSS after |");
    println!("|---|---|---|---|---|---|");
    // A first, short pass warms the caches and the CPU for both paths.
    for_each_piece(600, |piece| {
        std::hint::black_box(piece);
    });
    for h in hours {
        let seconds = h * 3600;
        // The source is generated as it is consumed (never held whole), so
        // the peak RSS is the rewriter's own.
        let (plain_before, total) = plain_join(seconds);

        // As the WebM join does: hash the source and the output too.
        let started = Instant::now();
        let mut rewriter = Rewriter::default();
        let (mut source_hash, mut output_hash) = (Sha256::new(), Sha256::new());
        let mut body = Vec::new();
        let mut written = 0usize;
        for_each_piece(seconds, |piece| {
            source_hash.update(piece);
            rewriter
                .push(piece, &mut body)
                .expect("the synthetic stream rewrites");
            output_hash.update(&body);
            written += body.len();
            body.clear(); // as the join writes it to its scratch file
        });
        std::hint::black_box((source_hash.finalize(), output_hash.finalize()));
        let layout = rewriter
            .finish(&mut body)
            .expect("the synthetic stream rewrites");
        written += body.len() + layout.head.len() + layout.tail.len();
        let rewrite = started.elapsed().as_secs_f64();
        // Timed on both sides of the rewrite; the faster is quoted.
        let plain = plain_before.min(plain_join(seconds).0);
        assert!(written > total / 2);
        let mb = total as f64 / 1e6;
        println!(
            "| {h} h ({} ms) | {mb:.0} MB | {:.0} MB/s | {:.0} MB/s | {:.2} | {} MiB |",
            layout.duration_ms,
            mb / plain,
            mb / rewrite,
            plain / rewrite,
            peak_rss_kib() / 1024
        );
    }
}

/// Seconds to hash the stream as the plain join does, and its length.
fn plain_join(seconds: u64) -> (f64, usize) {
    let started = Instant::now();
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    for_each_piece(seconds, |piece| {
        hasher.update(piece);
        total += piece.len();
    });
    std::hint::black_box(hasher.finalize());
    (started.elapsed().as_secs_f64(), total)
}

/// Calls `each` with a live WebM of `seconds` in pieces of [`PIECE`] bytes:
/// clusters of 1 s, a 20 ms Opus packet each 20 ms.
fn for_each_piece(seconds: u64, mut each: impl FnMut(&[u8])) {
    let mut out = Vec::with_capacity(2 * PIECE);
    ebml::write_element(
        &mut out,
        ids::EBML,
        &[0x42, 0x82, 0x84, b'w', b'e', b'b', b'm'],
    );
    ebml::write_id(&mut out, ids::SEGMENT);
    out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    let mut info = Vec::new();
    ebml::write_uint(&mut info, ids::TIMECODE_SCALE, 1_000_000);
    ebml::write_element(&mut out, ids::INFO, &info);
    ebml::write_element(&mut out, ids::TRACKS, &[0xAE, 0x83, 0xD7, 0x81, 0x01]);
    let packet: Vec<u8> = std::iter::once(0xF8)
        .chain((1..160).map(|i| i as u8))
        .collect();
    let mut blocks = Vec::new();
    for frame in 0..50i16 {
        let mut block = vec![0x81];
        block.extend_from_slice(&(frame * 20).to_be_bytes());
        block.push(0x80);
        block.extend_from_slice(&packet);
        ebml::write_element(&mut blocks, ids::SIMPLE_BLOCK, &block);
    }
    for second in 0..seconds {
        ebml::write_id(&mut out, ids::CLUSTER);
        out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        ebml::write_uint(&mut out, ids::TIMECODE, second * 1000);
        out.extend_from_slice(&blocks);
        if out.len() >= PIECE {
            each(&out[..PIECE]);
            out.drain(..PIECE);
        }
    }
    each(&out);
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
