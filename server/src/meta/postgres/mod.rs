//! The metadata store on PostgreSQL, for several ingest nodes sharing one database.
//!
//! The server asks its [`MetaStore`](crate::meta::MetaStore) synchronously (from blocking threads and, for quick
//! lookups, from async tasks), while the PostgreSQL client is asynchronous. So the client runs
//! on a small runtime of its own, on one thread that does nothing else: a call hands its query
//! to that runtime and waits for the answer. Waiting never needs the caller's runtime, so a
//! call from any thread, async or not, cannot deadlock or panic on nested runtimes.
//!
//! Connections come from a pool ([`deadpool_postgres`]), which replaces a broken one on its
//! next use, so a database restart costs the calls in flight, not the node.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::config::Host;

use super::MetaError;

mod audit;
mod batch;
mod convert;
mod jobs;
mod lease;
mod ops;
mod rings;
mod schema;
mod tls;
mod watch;

pub use audit::PgTrail;
pub use schema::MIGRATIONS;

/// How long one call may take, waiting for a connection included, before it fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach the database.
#[derive(Clone)]
pub struct PgTarget {
    /// A `postgres://` URL or a `key=value` connection string (libpq's forms).
    pub url: String,
    /// The password, when it is not in the URL (from a file or an environment variable).
    pub password: Option<String>,
    /// Most connections this node holds open.
    pub pool_size: usize,
    /// The CA that issued the database server's certificate: with it, connections are TLS
    /// and the certificate is checked; without, the database must be on this machine.
    pub ca: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL [`MetaStore`](crate::meta::MetaStore). Cheap to clone: clones share the pool and the client thread.
#[derive(Clone)]
pub struct PgMeta {
    pool: Pool,
    /// For connections outside the pool: listening for device changes (`watch.rs`), and
    /// holding this node's periodic work (`lease.rs`).
    dial: tls::Dial,
    /// Where it is, for messages (host, port, database; never the password).
    place: String,
    /// The connection holding this node's periodic work (see `lease.rs`).
    leases: Arc<tokio::sync::Mutex<lease::Leases>>,
    io: Arc<IoThread>,
}

impl std::fmt::Debug for PgMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgMeta({})", self.place)
    }
}

impl PgMeta {
    /// Connects, checks the database and brings its schema up to date.
    pub fn open(target: &PgTarget) -> Result<PgMeta, MetaError> {
        let mut config: tokio_postgres::Config = target.url.parse().map_err(|e| {
            MetaError::Db(format!(
                "[meta] url is not a PostgreSQL connection URL or string: {e}"
            ))
        })?;
        if let Some(p) = &target.password {
            config.password(p.as_bytes());
        }
        if config.get_dbname().is_none() {
            return Err(MetaError::Db(
                "[meta] url names no database: give Quire a database of its own \
                 (postgres://USER@HOST/DATABASE)"
                    .into(),
            ));
        }
        let place = describe_place(&config);
        config.application_name("quire");
        config.connect_timeout(Duration::from_secs(10));
        let dial = tls::Dial::new(config, target.ca.as_deref(), &place)?;
        let manager = Manager::from_config(
            dial.config.clone(),
            dial.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(target.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| MetaError::Db(format!("PostgreSQL connection pool: {e}")))?;
        let meta = PgMeta {
            pool,
            dial,
            place,
            leases: Default::default(),
            io: Arc::new(IoThread::start()?),
        };
        meta.with(|mut client| async move { schema::migrate(&mut client).await })?;
        Ok(meta)
    }

    /// Runs `work` on the client's runtime and waits for its answer.
    fn call<T, F, Fut>(&self, work: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, MetaError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let work = work(self.pool.clone());
        let place = self.place.clone();
        self.io.handle.spawn(async move {
            let answer = match tokio::time::timeout(CALL_TIMEOUT, work).await {
                Ok(answer) => answer,
                Err(_) => Err(MetaError::Db(format!(
                    "PostgreSQL at {place} did not answer within {} s",
                    CALL_TIMEOUT.as_secs()
                ))),
            };
            let _ = tx.send(answer);
        });
        rx.recv()
            .map_err(|_| MetaError::Db("the PostgreSQL client thread stopped".into()))?
    }

    /// A pooled connection (inside [`PgMeta::call`]).
    async fn client(pool: &Pool, place: &str) -> Result<Object, MetaError> {
        pool.get().await.map_err(|e| pool_error(place, e))
    }
}

/// The runtime the PostgreSQL client runs on, on a thread of its own; stopped on drop.
struct IoThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IoThread {
    fn start() -> Result<IoThread, MetaError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MetaError::Db(format!("starting the PostgreSQL client: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("quire-postgres".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| MetaError::Db(format!("starting the PostgreSQL client: {e}")))?;
        Ok(IoThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `host:port/database` (or the socket directory), for messages.
fn describe_place(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}:{port}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

fn pool_error(place: &str, e: deadpool_postgres::PoolError) -> MetaError {
    let detail = match &e {
        deadpool_postgres::PoolError::Backend(pg) => schema::describe(pg),
        other => other.to_string(),
    };
    MetaError::Db(format!("cannot reach PostgreSQL at {place}: {detail}"))
}

/// A query failed.
pub(super) fn pg(e: tokio_postgres::Error) -> MetaError {
    MetaError::Db(format!("PostgreSQL: {}", schema::describe(&e)))
}

impl PgMeta {
    /// Device changes from now on, whichever node makes them (see `watch.rs`).
    pub(super) fn watch_devices(
        &self,
    ) -> tokio::sync::mpsc::UnboundedReceiver<crate::meta::DeviceEvent> {
        watch::start(
            &self.io.handle,
            self.pool.clone(),
            self.dial.clone(),
            &watch::DEVICES,
        )
    }

    /// Tenants whose keys another node (or this one) changed, from now on (see `watch.rs`).
    pub(super) fn watch_keys(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        watch::start(
            &self.io.handle,
            self.pool.clone(),
            self.dial.clone(),
            &watch::KEYS,
        )
    }

    /// The version the database's schema is at now.
    pub fn schema_version(&self) -> Result<usize, MetaError> {
        self.with(|c| async move {
            let row = c
                .query_one("SELECT version FROM quire_schema", &[])
                .await
                .map_err(pg)?;
            Ok(row.get::<_, i64>(0) as usize)
        })
    }
}
