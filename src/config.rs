//! Settings: every one is a command-line flag and a `SPOOL_*` environment variable.
//!
//! Doc comments on the fields are also the `--help` text, so URLs and
//! `<data-dir>` stay bare.
#![allow(rustdoc::bare_urls, rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::storage::S3Location;

#[derive(Debug, Parser)]
#[command(
    name = "spool",
    version,
    about = "Spool: browser audio recordings that arrive in real time and survive crashes, reloads and dropped networks."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (what `spool` with no subcommand does).
    Serve,
    /// List, inspect, finalize or delete sessions on a running server.
    Sessions {
        #[command(subcommand)]
        action: SessionsCommand,
    },
    /// Totals of a running server: sessions by state, chunks, bytes, throughput.
    Stats {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Load a running server with simulated recorders (or measure the disk's ceiling).
    Load(crate::load::LoadArgs),
    /// Copy a stopped single-node install (SQLite, <data-dir>/recordings) into PostgreSQL and
    /// S3-compatible storage, checking every recording's and chunk's SHA-256; run it again to
    /// resume.
    MigrateTo(crate::migrate::MigrateArgs),
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Sessions, newest first.
    List {
        /// Only sessions in this state: recording, finishing, ready or failed.
        #[arg(long)]
        state: Option<String>,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One session in full: counters, missing ranges, the last client, the recording.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Finalize a session now with what it has.
    Finalize {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a session: its chunks, recording and row.
    Delete {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// How the CLI reaches a running server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server's base URL (plain HTTP: reach a remote one through an SSH tunnel).
    #[arg(long, env = "SPOOL_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The admin token. Unset: read from <data-dir>/admin-token, as a local server writes it
    /// (with several nodes, only the first node's data directory has it).
    #[arg(long, env = "SPOOL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The local server's data directory, where its admin-token file is.
    #[arg(long, env = "SPOOL_DATA_DIR", default_value = "./spool-data")]
    pub data_dir: PathBuf,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on. Use 0.0.0.0:8080 to accept connections from other machines.
    #[arg(long, env = "SPOOL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the database (spool.db) and the finished recordings; created if missing.
    #[arg(long, env = "SPOOL_DATA_DIR", default_value = "./spool-data")]
    pub data_dir: PathBuf,

    /// Secret required (as `Authorization: Bearer …`) to create sessions. Unset: anyone may create one.
    #[arg(long, env = "SPOOL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Secret for the admin endpoints and for reading or deleting any session. Unset: the server
    /// creates one on first start in <data-dir>/admin-token (mode 0600) and logs that path.
    #[arg(long, env = "SPOOL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest chunk payload accepted, in bytes (a bigger chunk closes the socket with 4413).
    #[arg(long, env = "SPOOL_MAX_CHUNK_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(1..=64 * 1024 * 1024))]
    pub max_chunk_bytes: u32,

    /// A session with no chunk, finish or connection for this long is finalized with what it has
    /// (e.g. "30m", "90s").
    #[arg(long, env = "SPOOL_IDLE_FINALIZE_AFTER", default_value = "30m", value_parser = parse_duration)]
    pub idle_finalize_after: Duration,

    /// A WebSocket that sends nothing (not even a ping) for this long is closed with 4408.
    #[arg(long, env = "SPOOL_SOCKET_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub socket_idle_timeout: Duration,

    /// Most chunks one connection may send per second, averaged (bursts of twice that pass);
    /// over it the socket closes with 4429 and the client backs off. 0 turns the limit off.
    #[arg(long, env = "SPOOL_MAX_CHUNKS_PER_SECOND", default_value_t = 1000)]
    pub max_chunks_per_second: u32,

    /// Most WebSocket connections open at once; one more is accepted only to be told to retry
    /// later (close 4429). Each idle connection costs tens of KiB and a file descriptor.
    #[arg(long, env = "SPOOL_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// How far behind the database's commits may fall before load is shed: at this writer lag
    /// new WebSocket connections are told to come back later, and at one and a half times it
    /// open connections are closed a few at a time (both 4429 with `retry_after_ms`; clients
    /// resend what was not acknowledged). 0 turns shedding off, so chunks queue instead.
    #[arg(long, env = "SPOOL_MAX_WRITER_LAG", default_value = "100ms", value_parser = parse_duration_or_zero)]
    pub max_writer_lag: Duration,

    /// Sessions one client address (an IPv6 /64) may create per minute without the API key
    /// (bursts of that many pass); over it: 429 with Retry-After. Requests carrying the API key
    /// are not limited. 0 turns the limit off (e.g. behind a proxy that hides client addresses).
    #[arg(long, env = "SPOOL_MAX_SESSIONS_PER_MINUTE", default_value_t = 60)]
    pub max_sessions_per_minute: u32,

    /// Commit every chunk in its own transaction instead of grouping them (slower: one fsync per
    /// chunk). Only for comparing against a server without group commit; never in production.
    #[arg(long, hide = true)]
    pub one_chunk_per_commit: bool,

    /// Delete recordings this long after they became ready (e.g. "30days", "12h"); the session
    /// stays, marked expired, and downloads answer 410. Unset: keep recordings forever.
    #[arg(long, env = "SPOOL_KEEP_RECORDINGS", value_parser = parse_duration)]
    pub keep_recordings: Option<Duration>,

    /// Where to POST signed `session.ready` / `session.failed` events (needs --webhook-secret).
    #[arg(long, env = "SPOOL_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// The HMAC-SHA256 key for the `Spool-Signature` header of webhook deliveries.
    #[arg(long, env = "SPOOL_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Web origins whose pages may call this server (CORS), comma-separated, e.g.
    /// "https://app.example.com,https://admin.example.com"; "*" allows any. Credentials are
    /// bearer tokens, never cookies, so allowing other origins grants no ambient access.
    #[arg(long, env = "SPOOL_ALLOWED_ORIGINS", default_value = "*", value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origins: Vec<String>,

    /// Where finished recordings go: s3://bucket/prefix for S3-compatible object storage,
    /// configured by the standard AWS_* variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP). Unset: <data-dir>/recordings.
    #[arg(long, env = "SPOOL_STORAGE", value_parser = parse_storage)]
    pub storage: Option<S3Location>,

    /// Answer recording downloads with a redirect to a short-lived presigned URL of the object
    /// store, so the bytes never pass through this server (needs --storage s3://…).
    #[arg(long, env = "SPOOL_STORAGE_REDIRECT")]
    pub storage_redirect: bool,

    /// PostgreSQL to keep sessions and chunks in, e.g. postgres://spool:…@db.internal/spool, so
    /// several nodes can share them (each node then needs --storage s3://…). Unset: SQLite in
    /// <data-dir>/spool.db.
    #[arg(long, env = "SPOOL_DATABASE_URL", hide_env_values = true, value_parser = parse_database_url)]
    pub database_url: Option<DatabaseUrl>,

    /// How long a finalize step's claim on a session holds without renewal (a running step
    /// renews it every third of this). Another node takes over a session whose step died once it
    /// runs out.
    #[arg(long, env = "SPOOL_FINALIZE_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub finalize_lease: Duration,

    /// Base URL clients reach this server at (e.g. https://rec.example.com), used for the
    /// `ws_url` and recording URLs handed out. Unset: taken from each request's Host header.
    #[arg(long, env = "SPOOL_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl Config {
    /// Defaults for everything, with the data in `data_dir` and port 0: what tests start from.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Cli::parse_from(["spool", "--listen", "127.0.0.1:0"]).config;
        config.data_dir = data_dir.into();
        config
    }

    /// Checks what clap cannot: secrets that would open a door. Messages name
    /// the setting, never the value (it may be logged).
    pub fn validate(&self) -> anyhow::Result<()> {
        for (flag, secret) in [
            ("--api-key (SPOOL_API_KEY)", &self.api_key),
            ("--admin-token (SPOOL_ADMIN_TOKEN)", &self.admin_token),
            (
                "--webhook-secret (SPOOL_WEBHOOK_SECRET)",
                &self.webhook_secret,
            ),
        ] {
            if let Some(secret) = secret {
                check_secret(secret).map_err(|problem| anyhow::anyhow!("{flag} {problem}"))?;
            }
        }
        anyhow::ensure!(
            !self.storage_redirect || self.storage.is_some(),
            "--storage-redirect needs --storage s3://…: a local recordings directory has no URL to redirect to"
        );
        if let Some(url) = &self.webhook_url {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| anyhow::anyhow!("--webhook-url {url:?} is not a URL: {e}"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https"),
                "--webhook-url must be an http:// or https:// URL"
            );
            anyhow::ensure!(
                self.webhook_secret.is_some(),
                "--webhook-url needs --webhook-secret (SPOOL_WEBHOOK_SECRET): deliveries are signed"
            );
        }
        Ok(())
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("spool.db")
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.data_dir.join("recordings")
    }

    /// Local scratch files of the finalize job when recordings go to object storage.
    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("scratch")
    }
}

/// A PostgreSQL URL. Its `Debug` hides the password, so settings can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        parse_database_url(raw)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match reqwest::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("…"));
                write!(f, "{:?}", url.as_str())
            }
            _ => write!(f, "{:?}", self.0),
        }
    }
}

pub(crate) fn parse_database_url(raw: &str) -> Result<DatabaseUrl, String> {
    let raw = raw.trim();
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Ok(DatabaseUrl(raw.to_owned()))
    } else {
        Err("expected postgres://user:password@host:port/database (unset for SQLite in the data directory)".into())
    }
}

/// A duration where "0" means "off".
fn parse_duration_or_zero(raw: &str) -> Result<Duration, String> {
    if raw.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(raw.trim()).map_err(|e| format!("{e} (examples: 30m, 90s, 1h)"))
}

fn parse_lease(raw: &str) -> Result<Duration, String> {
    let lease = parse_duration(raw)?;
    if lease < Duration::from_secs(1) {
        return Err("a lease under a second would be lost between renewals".into());
    }
    Ok(lease)
}

fn parse_origin(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(raw.to_owned());
    }
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"));
    let host_ok = rest.is_some_and(|host| {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    });
    if host_ok {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "{raw:?} is not an origin like https://app.example.com (no path, no trailing slash) or *"
        ))
    }
}

/// An empty or blank secret would let an empty `?token=` in.
fn check_secret(secret: &str) -> Result<(), &'static str> {
    if secret.trim().is_empty() {
        Err("is empty or blank: set a real secret (e.g. `openssl rand -hex 32`) or leave it unset")
    } else if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("contains whitespace or control characters, which a bearer token cannot carry")
    } else {
        Ok(())
    }
}

pub(crate) fn parse_storage(raw: &str) -> Result<S3Location, String> {
    S3Location::parse(raw).map_err(|problem| {
        format!("{problem}; leave it unset to keep recordings in <data-dir>/recordings")
    })
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    let duration = parse_duration_or_zero(raw)?;
    if duration.is_zero() {
        Err("must be more than zero".into())
    } else {
        Ok(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_readme() {
        let config = Cli::parse_from(["spool"]).config;
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("./spool-data"));
        assert_eq!(config.max_chunk_bytes, 1024 * 1024);
        assert_eq!(config.idle_finalize_after, Duration::from_secs(30 * 60));
        assert_eq!(config.max_writer_lag, Duration::from_millis(100));
        assert!(config.api_key.is_none() && config.admin_token.is_none());
        assert_eq!(config.max_connections, 10_000);
        assert_eq!(config.max_sessions_per_minute, 60);
        assert_eq!(config.allowed_origins, ["*"]);
        let listed = Cli::parse_from([
            "spool",
            "--allowed-origins",
            "https://a.example,http://b.example:8080",
        ])
        .config;
        assert_eq!(
            listed.allowed_origins,
            ["https://a.example", "http://b.example:8080"]
        );
    }

    #[test]
    fn refuses_blank_secrets_without_echoing_them() {
        for blank in ["", "   ", "s3cr3t with-space", "s3cr3t\twith-tab"] {
            let config = Cli::parse_from(["spool", "--admin-token", blank]).config;
            let error = config.validate().unwrap_err().to_string();
            assert!(error.starts_with("--admin-token"), "{error}");
            assert!(blank.trim().is_empty() || !error.contains(blank), "{error}");
            let config = Cli::parse_from(["spool", "--api-key", blank]).config;
            assert!(config.validate().is_err());
        }
        let config =
            Cli::parse_from(["spool", "--api-key", "k3y", "--admin-token", "t0ken"]).config;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn webhooks_need_a_secret_and_a_web_url() {
        let parse = |args: &[&str]| {
            Cli::parse_from([&["spool"], args].concat())
                .config
                .validate()
        };
        assert!(parse(&["--webhook-url", "https://hooks.example/x"]).is_err());
        assert!(parse(&["--webhook-url", "ftp://x", "--webhook-secret", "s"]).is_err());
        assert!(
            parse(&[
                "--webhook-url",
                "https://hooks.example/x",
                "--webhook-secret",
                " "
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--webhook-url",
                "http://127.0.0.1:9/x",
                "--webhook-secret",
                "s"
            ])
            .is_ok()
        );
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Cli::try_parse_from(["spool", "--idle-finalize-after", "soon"]).is_err());
        assert!(Cli::try_parse_from(["spool", "--socket-idle-timeout", "0s"]).is_err());
        assert!(Cli::try_parse_from(["spool", "--max-chunk-bytes", "0"]).is_err());
        assert!(Cli::try_parse_from(["spool", "--max-connections", "0"]).is_err());
        assert!(Cli::try_parse_from(["spool", "--allowed-origins", "https://a.example/"]).is_err());
        assert!(Cli::try_parse_from(["spool", "--allowed-origins", "a.example"]).is_err());
    }
}
