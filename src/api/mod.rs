//! The API's shared vocabulary, below both [`crate::http`] (the routes) and
//! [`crate::ingest`] (the WebSocket): who is asking, where clients reach this
//! server, the one error type, request extractors, the session JSON and
//! the server's WebSocket messages.

mod auth;
mod error;
mod extract;
mod message;
mod view;

pub use auth::{Creator, Credential};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use extract::{BaseUrl, JsonBody, SessionPath};
pub use message::ServerMessage;
pub use view::{
    AdminSessionDetail, AdminSessionView, ClientView, RecordingView, SessionView, rfc3339,
};
