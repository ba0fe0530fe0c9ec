//! Container knowledge for the finalize job's rewrite (see
//! [`crate::finalize::join`]): WebM is rewritten; Ogg is joined as it is,
//! its duration read; everything else is joined byte for byte.
//!
//! - [`ebml`]: the variable-length integers and element headers of EBML,
//!   the encoding under Matroska/WebM, read incrementally (live WebM has
//!   elements of unknown size, and chunk boundaries fall mid-element) and
//!   written with known sizes.
//! - [`webm_scan`]: a live WebM stream, read in pieces, as headers,
//!   top-level elements, clusters and blocks.
//! - [`opus`]: how long an Opus packet plays; [`ogg`]: how long an Ogg/Opus
//!   recording plays (read, not rewritten).
//! - [`webm_rewrite`]: a live WebM stream (or several, after restarts)
//!   rewritten with Duration, Cues and known sizes, in two streaming passes.

pub mod ebml;
pub mod ogg;
pub mod opus;
pub mod webm_rewrite;
pub mod webm_scan;
