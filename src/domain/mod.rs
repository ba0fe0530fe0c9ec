//! Domain types parsed from untrusted input. Each has a `parse` that returns
//! `Result`, so an invalid value cannot be constructed.

mod chunk_frame;
mod control;
mod mime;
mod session_id;
mod state;
mod token;

pub use chunk_frame::{ChunkFrame, FLAG_NEW_STREAM, FrameError, HEADER_LEN};
pub use control::{ClientMessage, finish_count};
pub use mime::MimeType;
pub use session_id::SessionId;
pub use state::SessionState;
pub use token::{Secret, Token, TokenHash};
