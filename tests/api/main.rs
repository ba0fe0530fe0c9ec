//! Black-box tests of the real server over real sockets.

mod crash;
mod helpers;
mod upload;
