//! Container knowledge for the finalize job's rewrite (see
//! [`crate::finalize::join`]): WebM is rewritten; Ogg and MP4 are joined
//! as they are, their duration read; everything else is joined byte for byte.
//!
//! - [`ebml`]: the variable-length integers and element headers of EBML,
//!   the encoding under Matroska/WebM, read incrementally (live WebM has
//!   elements of unknown size, and chunk boundaries fall mid-element) and
//!   written with known sizes.
//! - [`webm_scan`]: a live WebM stream, read in pieces, as headers,
//!   top-level elements, clusters and blocks.
//! - [`opus`]: how long an Opus packet plays; [`ogg`]: how long an Ogg/Opus
//!   recording plays; [`mp4`]: how long a fragmented MP4 recording plays
//!   (both read, not rewritten).
//! - [`webm_rewrite`]: a live WebM stream (or several, after restarts)
//!   rewritten with Duration, Cues and known sizes, in two streaming passes.

pub mod ebml;
pub mod mp4;
pub mod ogg;
pub mod opus;
pub mod webm_rewrite;
pub mod webm_scan;
