//! Domain types parsed from untrusted input. Each has a `parse` that returns
//! `Result`, so an invalid value cannot be constructed.

/// Stores a type as its text and reads it back through its `parse`, like
/// any other input, in either database: a stored value this version does
/// not know is a decoding error, never a silent default.
macro_rules! stored_as_parsed_text {
    ($type:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $type
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $type
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<DB>>::decode(value)?;
                Ok(Self::parse(text)?)
            }
        }
    };
}

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
