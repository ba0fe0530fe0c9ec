//! Spool: browser audio recordings that reach the server in real time and
//! survive crashes, reloads and dropped networks.
//!
//! # Layout
//! - [`cli`]: `spool sessions …` and `spool stats`, clients of the admin API;
//!   [`load`]: `spool load`, simulated recorders and the disk's ceiling;
//!   [`client`]: a protocol v1 client (the load tool, benchmarks and tests use it).
//! - [`migrate`]: `spool migrate-to`, a single-node install into PostgreSQL and S3.
//! - [`config`]: settings (flags and `SPOOL_*` variables); [`admin_token`]:
//!   the admin secret, created on first start when none is configured.
//! - [`startup`]: builds the [`App`] and runs it until a shutdown signal;
//!   [`server`]: accepts connections (timeouts, peers, a bounded stop).
//! - [`http`]: the HTTP API, one module per feature; [`ingest`]: the WebSocket
//!   protocol; [`api`]: what both share (credentials, errors, the session JSON);
//!   [`connections`]: the one live socket of each session; [`cluster`]: what
//!   nodes sharing PostgreSQL tell each other (takeovers, deletes, finalizes).
//! - [`writer`]: the one task that writes chunks, committing batches from every
//!   connection in one transaction before anything is acknowledged.
//! - [`finalize`]: the background job that joins a session's chunks into its recording.
//! - [`storage`]: where finished recordings live (a local directory, or S3-compatible object storage).
//! - [`media`]: container parsing and the WebM rewrite (Duration, Cues) used by the join.
//! - [`sweep`]: removes deleted sessions' data and whatever a crash left behind.
//! - [`webhooks`]: signed `session.ready`/`session.failed` events from a durable outbox.
//! - [`db`]: the `Database` interface, on SQLite (the default) or PostgreSQL;
//!   [`domain`]: parsed, validated types.
//! - [`state`]: the `AppState` every handler shares; [`metrics`]: counters for `/metrics`.
//! - [`log_safe`]: escapes client-supplied text before it reaches a log line;
//!   [`limits`]: how many sockets and new sessions clients may take.
//! - [`protocol`]: the wire protocol, as documentation.
//! - `src/web/`: the browser client modules and the demo page, embedded in the
//!   binary and served by `http::web`.
//!
//! A chunk flows: socket → [`ingest`] (parse, check CRC) → [`writer`] (commit) →
//! ack to the socket. A finished session flows: [`finalize`] → [`storage`] →
//! session `ready` → download through [`http`].

pub mod admin_token;
pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod db;
pub mod domain;
pub mod finalize;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod load;
pub mod log_safe;
pub mod media;
pub mod metrics;
pub mod migrate;
pub mod protocol;
pub mod server;
pub mod startup;
pub mod state;
pub mod storage;
pub mod sweep;
pub mod webhooks;
pub mod writer;

pub use config::Config;
pub use startup::App;
