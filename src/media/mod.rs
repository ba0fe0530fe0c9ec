//! Container knowledge for the finalize job's rewrite (see
//! [`crate::finalize::join`]): WebM so far; Ogg and MP4 are joined as they are.
//!
//! - [`ebml`]: the variable-length integers and element headers of EBML,
//!   the encoding under Matroska/WebM, read incrementally (live WebM has
//!   elements of unknown size, and chunk boundaries fall mid-element) and
//!   written with known sizes.
//! - [`webm_scan`]: a live WebM stream, read in pieces, as headers,
//!   top-level elements, clusters and blocks.
//! - [`opus`]: how long an Opus packet plays.
//! - [`webm_rewrite`]: a live WebM stream (or several, after restarts)
//!   rewritten with Duration, Cues and known sizes, in two streaming passes.

pub mod ebml;
pub mod opus;
pub mod webm_rewrite;
pub mod webm_scan;
