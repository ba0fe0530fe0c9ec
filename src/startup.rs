//! Building the application and running it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin_token;
use crate::api::BaseUrl;
use crate::cluster::{Cluster, Receivers};
use crate::config::Config;
use crate::connections::ConnectionRegistry;
use crate::db::Database;
use crate::db::postgres::PostgresDatabase;
use crate::db::sqlite::SqliteDatabase;
use crate::domain::Secret;
use crate::finalize::{self, FinalizeRequests, Finalizer};
use crate::limits::{CreationLimit, SocketSlots};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::storage::{LocalRecordings, Recordings, S3Recordings};
use crate::sweep::{self, Retention, Sweeper};
use crate::webhooks::{self, Dispatcher, Events};
use crate::{http, server, writer};

/// A built server: bound, migrated, writer running; not yet serving.
pub struct App {
    listener: TcpListener,
    state: AppState,
    finalizer: Finalizer,
    finalize_requests: FinalizeRequests,
    /// Delivers webhook events, when `--webhook-url` is set.
    dispatcher: Option<Dispatcher>,
    writer_task: JoinHandle<()>,
    /// SQLite's WAL checkpointer, or the PostgreSQL listener for other nodes' notices.
    database_task: JoinHandle<()>,
    writer_stop: CancellationToken,
    /// Held (locked) for as long as the app lives; SQLite only.
    _data_lock: Option<std::fs::File>,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        log_fd_limit(config.max_connections);
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let writer_stop = CancellationToken::new();
        let connections = ConnectionRegistry::default();
        let (finalized, _) = broadcast::channel(1024);
        let opened = open_database(
            &config,
            Receivers {
                connections: connections.clone(),
                finalized: finalized.clone(),
            },
            writer_stop.clone(),
        )
        .await?;
        let Opened {
            db,
            admin_token,
            data_lock,
            cluster,
            task: database_task,
        } = opened;
        let recordings = match &config.storage {
            None => Recordings::Local(LocalRecordings::open(config.recordings_dir()).await?),
            Some(location) => Recordings::S3 {
                objects: S3Recordings::open(location.clone()).await?,
                scratch: LocalRecordings::open(config.scratch_dir()).await?,
            },
        };
        recordings.register(&db.installation_id().await?).await?;
        let metrics = Arc::new(Metrics::default());
        let wakeup = Arc::new(Notify::new());
        let batch_rows = if config.one_chunk_per_commit {
            tracing::warn!(
                "--one-chunk-per-commit: every chunk gets its own fsync (for comparisons only)"
            );
            1
        } else {
            writer::MAX_BATCH_ROWS
        };
        let (writer, writer_task) = writer::spawn(
            db.chunk_writer().await?,
            batch_rows,
            metrics.clone(),
            wakeup.clone(),
            writer_stop.clone(),
        );
        let (finalize_now, finalize_requests) =
            finalize::finalize_now(db.clone(), config.finalize_lease);
        let state = AppState {
            api_key: config.api_key.as_deref().map(Secret::new),
            admin_token,
            db: db.clone(),
            writer: writer.clone(),
            recordings: recordings.clone(),
            sweeper: Sweeper::new(db.clone(), recordings.clone(), writer.clone()).with_retention(
                config.keep_recordings.map(|keep| Retention {
                    keep,
                    metrics: metrics.clone(),
                }),
            ),
            metrics: metrics.clone(),
            socket_slots: SocketSlots::new(config.max_connections),
            creation_limit: CreationLimit::new(config.max_sessions_per_minute).map(Arc::new),
            connections,
            cluster: cluster.clone(),
            finalized: finalized.clone(),
            finalize_now,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            config: Arc::new(config),
        };
        let events = state
            .config
            .webhook_url
            .is_some()
            .then(|| Events::new(BaseUrl::from_config(&state.config)));
        let dispatcher = match (
            &state.config.webhook_url,
            &state.config.webhook_secret,
            &events,
        ) {
            (Some(url), Some(secret), Some(events)) => Some(Dispatcher::new(
                db.clone(),
                url.clone(),
                secret.clone(),
                events,
                metrics.clone(),
            )?),
            _ => None,
        };
        let finalizer = Finalizer {
            db,
            lease: state.config.finalize_lease,
            cluster,
            recordings,
            metrics,
            idle_after: state.config.idle_finalize_after,
            wakeup,
            finalized,
            events,
            writer: state.writer.clone(),
        };
        Ok(Self {
            listener,
            state,
            finalizer,
            finalize_requests,
            dispatcher,
            writer_task,
            database_task,
            writer_stop,
            _data_lock: data_lock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until `shutdown` resolves, then stops in order: no new
    /// connections; requests in progress finish and sockets drain (their
    /// chunks committed and acked) and close with 1001, each for at most
    /// `SHUTDOWN_GRACE` (10 s); a running finalize step completes; the writer
    /// commits what it holds; the database closes.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            finalizer,
            finalize_requests,
            dispatcher,
            writer_task,
            database_task,
            writer_stop,
            _data_lock,
        } = self;
        let data_dir = state.config.data_dir.display().to_string();
        tracing::info!(address = %format!("http://{}", listener.local_addr()?), data_dir, "spool is listening");

        let background_stop = CancellationToken::new();
        let finalize_task = tokio::spawn(finalize::run(
            finalizer,
            finalize_requests,
            background_stop.clone(),
        ));
        let sweep_task = tokio::spawn(sweep::run(state.sweeper.clone(), background_stop.clone()));
        let webhook_task =
            dispatcher.map(|d| tokio::spawn(webhooks::run(d, background_stop.clone())));
        let stopping = state.shutdown.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down");
            stopping.cancel();
        });
        server::serve(
            listener,
            http::router(state.clone()),
            state.shutdown.clone(),
            SHUTDOWN_GRACE,
        )
        .await;

        state.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = state.tasks.len(),
                "sockets still closing after the grace period; stopping without them"
            );
        }
        background_stop.cancel();
        finalize_task.await.context("the finalize job panicked")?;
        sweep_task.await.context("the sweep panicked")?;
        if let Some(task) = webhook_task {
            task.await.context("the webhook dispatcher panicked")?;
        }
        writer_stop.cancel();
        writer_task.await.context("the chunk writer panicked")?;
        database_task
            .await
            .context("the database's background task panicked")?;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// The database as configured, and what comes with it.
struct Opened {
    db: Arc<dyn Database>,
    /// The data directory's, or with PostgreSQL the one all nodes share.
    admin_token: Secret,
    /// SQLite: one server per data directory.
    data_lock: Option<std::fs::File>,
    cluster: Cluster,
    /// SQLite's checkpointer, or PostgreSQL's listener; both stop with the writer.
    task: JoinHandle<()>,
}

/// SQLite in the data directory, or PostgreSQL with `--database-url`.
async fn open_database(
    config: &Config,
    receivers: Receivers,
    stop: CancellationToken,
) -> anyhow::Result<Opened> {
    let Some(url) = &config.database_url else {
        // One server per data directory: a second one would release this
        // one's finalize claims and sweep its temporary files.
        let data_lock = lock_data_dir(&config.data_dir)?;
        let path = config.database_path();
        let db = SqliteDatabase::open(&path).await?;
        let released = db
            .release_all_claims()
            .await
            .context("releasing finalize claims")?;
        if released > 0 {
            tracing::info!(
                sessions = released,
                "resuming finalize of sessions interrupted by the last stop"
            );
        }
        let task = writer::checkpoint::spawn(&path, stop).await?;
        return Ok(Opened {
            db: Arc::new(db),
            admin_token: admin_token::resolve(config.admin_token.as_deref(), &config.data_dir)?,
            data_lock: Some(data_lock),
            cluster: Cluster::single(),
            task,
        });
    };
    // Several nodes may share this database: no data-directory lock and no
    // claims released at start (another node's step may hold them; a dead
    // node's leases run out instead).
    let db = PostgresDatabase::open(url.expose()).await?;
    if config.storage.is_none() {
        tracing::warn!(
            "--database-url without --storage: recordings stay in this node's data directory, \
             where other nodes cannot serve them; use --storage s3://… with several nodes"
        );
    }
    let admin_token =
        admin_token::resolve_shared(config.admin_token.as_deref(), &config.data_dir, &db).await?;
    let (cluster, task) = Cluster::join(db.pool().clone(), receivers, stop).await?;
    Ok(Opened {
        db: Arc::new(db),
        admin_token,
        data_lock: None,
        cluster,
        task,
    })
}

/// How long a stop waits for HTTP requests in progress, then for sockets to
/// close, before going on without them: a stop is bounded whatever clients do.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Raises the open-file limit (every socket is a descriptor) and says what it is.
fn log_fd_limit(max_connections: u32) {
    match server::raise_fd_limit() {
        Ok(limit) if limit < u64::from(max_connections) + 64 => tracing::warn!(
            limit,
            max_connections,
            "the open-file limit is below --max-connections; raise it (ulimit -n) or lower the setting"
        ),
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// Takes an exclusive lock on `<data dir>/spool.lock`, or explains who has it.
pub(crate) fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("spool.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another spool server is using {}; run one server per data directory",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}
