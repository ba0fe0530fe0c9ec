//! Black-box tests of the real server over real sockets.

mod admin;
mod browser;
mod cleanup;
mod cli;
mod cors;
mod crash;
mod helpers;
mod http_api;
mod limits;
mod load;
mod media;
mod nodes;
mod openapi;
mod protocol_errors;
mod range;
mod retention;
mod security;
mod soak;
mod storage;
mod upgrade;
mod upload;
mod webhooks;
