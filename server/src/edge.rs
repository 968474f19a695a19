//! `quire serve`: the ingest edge. Accepts QUIC connections, authenticates each one, and
//! hands every request stream to its handler in `crate::requests`. Pages go from there into the
//! stages of `quire_pipeline`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quire_pipeline::Pipeline;
use tracing::{debug, error, info, warn};

use crate::config::ServerConfig;
use crate::gate::{self, HELLO_DEADLINE, MAX_PENDING_AUTH, MAX_PENDING_PER_SOURCE};
use crate::identity::{CertResolver, Identity, IdentitySource, TlsReloader};
use crate::meta::MetaStore;
use crate::{keycheck, limits, requests, slots, sweep};
use quire_codecs::wire::{
    CLOSE_AUTH_FAILED, CLOSE_DEVICE_DISABLED, CLOSE_SHUTDOWN, CLOSE_TOO_SLOW,
};
use quire_net::stream::FrameReader;
use quire_net::tls::TlsError;

/// The server failed to start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the audit log {path}: {source}")]
    AuditLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    AuditTrail(String),
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error(transparent)]
    Vault(#[from] quire_pipeline::VaultError),
    #[error(transparent)]
    VaultOpen(#[from] crate::config::VaultOpenError),
    #[error(transparent)]
    Store(#[from] quire_storage::StoreError),
    #[error(transparent)]
    Spool(#[from] quire_pipeline::SpoolError),
    #[error(transparent)]
    Tls(#[from] quire_net::tls::TlsError),
    #[error(transparent)]
    Credential(#[from] quire_net::credential::CredentialError),
    #[error("the keys do not match the data, so the server will not start:\n  {}", .0.join("\n  "))]
    KeysMissing(Vec<String>),
    #[error("bootstrap refused: {0}")]
    Bootstrap(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What every connection handler shares.
pub(crate) struct State {
    pub meta: Arc<dyn MetaStore>,
    /// Records stored pages in shared transactions (group commit).
    pub recorder: crate::meta::PageRecorder,
    pub pipeline: Pipeline,
    /// Pages being stored right now: a second upload of the same page supersedes the first
    /// instead of racing it.
    pub in_flight: slots::PageSlots,
    /// Rate and concurrency limits per device and tenant.
    pub limits: limits::Limits,
    /// Every administrative action and support access, appended.
    pub audit: Arc<crate::audit::AuditLog>,
    /// Retention policy per tenant (absent: keep).
    pub retention: std::collections::HashMap<String, crate::retention::Policy>,
    /// Every authenticated connection's receive window (see [`crate::windows`]).
    pub windows: Arc<crate::windows::Windows>,
    /// Open connections by device, so that disabling a device cuts it off at once.
    pub live: std::sync::Mutex<std::collections::HashMap<String, Vec<quinn::Connection>>>,
    /// The time retention and collection decisions go by.
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The TLS certificate in use, reloadable.
    pub tls: TlsReloader,
    /// Requests running, and whether the server is shutting down.
    pub drain: crate::drain::Drain,
    /// What `/metrics` reports.
    pub metrics: crate::metrics::Metrics,
    /// Keeps a flood of refusals from flooding the log.
    pub refusal_log: crate::ratelog::LogBudget,
    /// Failed authentications not yet written to the audit log.
    pub auth_failures: crate::audit::AuthFailures,
    /// Manifest signing keys already published to the stores.
    pub signing_keys: crate::signing::Published,
    /// The tenants' time-stamp authorities.
    pub(crate) timestamps: crate::timestamps::Timestamper,
    /// The QUIC socket's receive buffer, and where to read what it dropped (for `/metrics`).
    pub udp: quire_net::udp::ReceiveBuffer,
    /// The node's data directory (what a backup copies) and how many backups to keep.
    pub data_dir: std::path::PathBuf,
    pub backup: crate::config::BackupConfig,
}

impl State {
    /// Closes every open connection of `device_id`, telling the scanner why.
    pub(crate) fn disconnect_device(&self, device_id: &str, reason: &str) {
        let conns = self
            .live
            .lock()
            .expect("live lock poisoned")
            .remove(device_id);
        for c in conns.unwrap_or_default() {
            c.close(CLOSE_DEVICE_DISABLED.into(), reason.as_bytes());
        }
    }

    /// Lists `conn` under its device and follows its receive window; returns what its
    /// requests share about its flow.
    fn register(&self, device_id: &str, conn: &quinn::Connection) -> Arc<crate::windows::Flow> {
        {
            let mut live = self.live.lock().expect("live lock poisoned");
            let list = live.entry(device_id.to_string()).or_default();
            list.retain(|c| c.close_reason().is_none());
            list.push(conn.clone());
        }
        self.windows.connected(conn)
    }

    fn unregister(&self, device_id: &str, conn: &quinn::Connection) {
        {
            let mut live = self.live.lock().expect("live lock poisoned");
            if let Some(list) = live.get_mut(device_id) {
                list.retain(|c| c.stable_id() != conn.stable_id());
                if list.is_empty() {
                    live.remove(device_id);
                }
            }
        }
        self.windows.closed(conn);
    }
}

/// A running server.
pub struct Server {
    endpoint: quinn::Endpoint,
    /// The TCP port for networks that drop UDP, and its endpoint.
    tunnels: Option<crate::tunnel::Tunnels>,
    state: Arc<State>,
    /// What credentials written at start pin (see [`Identity::trust_anchor_pem`]).
    trust_anchor_pem: String,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.local_addr())
            .finish()
    }
}

/// The server's QUIC transport settings (the transport bench uses them too).
pub fn transport_config(config: &ServerConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(config.max_streams_per_connection.into());
    t.max_concurrent_uni_streams(0u32.into());
    // Windows sized for a few pages in flight per connection on a fast LAN; these bound
    // the memory a scanner can make the server hold.
    t.stream_receive_window((4u32 * 1024 * 1024).into());
    // Small until the connection authenticates; then re-set as connections come and go and
    // as their links need (see `windows`).
    t.receive_window(quinn::VarInt::from_u64(gate::PRE_AUTH_WINDOW).expect("fits"));
    t.send_window(16 * 1024 * 1024);
    t.initial_rtt(quire_net::INITIAL_RTT);
    // What the server sends in bulk (pages to `quire get` and `deliver`) crosses the same
    // lossy links as what scanners send: the same controller (quinn's Cubic, before, reads
    // every random loss as congestion).
    t.congestion_controller_factory(quire_net::congestion::factory());
    t.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("30 s fits")));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t
}

impl Server {
    /// Opens the stores, loads or creates the TLS identity and the development credentials,
    /// and binds the QUIC endpoint.
    pub async fn start(config: ServerConfig) -> Result<Server, ServeError> {
        Self::start_with_clock(config, Arc::new(crate::clock::SystemClock)).await
    }

    /// Like [`Server::start`], with retention and collection going by `clock`.
    pub async fn start_with_clock(
        config: ServerConfig,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<Server, ServeError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| ServeError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let meta: Arc<dyn MetaStore> = config.meta.open(dir)?;
        let vault = config
            .vault
            .open(dir, &config.store, meta.key_rings(config.vault.kind()))?;
        keycheck::enforce(meta.as_ref(), &vault).map_err(ServeError::KeysMissing)?;
        let stores = open_stores(&config)?;
        let identity_source = IdentitySource::of(&config);
        let identity = Identity::read(&identity_source)?;
        let certs = Arc::new(CertResolver::new(&identity)?);
        let mut server_config = crate::identity::server_config(certs.clone())?;
        server_config.transport_config(Arc::new(transport_config(&config)));
        let tcp_tls = crate::identity::tcp_server_config(certs.clone())?;
        let (endpoint, udp, tunnels) =
            crate::tunnel::bind_both(config.listen, config.tcp, server_config, tcp_tls)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        for w in config
            .meta
            .warnings(config.vault.kind(), config.pipeline.ack)
        {
            warn!("{w}");
        }
        let pipeline = open_pipeline(&config, vault, stores)?;
        pipeline.spawn_delivery();
        let audit =
            crate::audit::AuditLog::open_for(dir, meta.as_ref(), config.audit.checkpoint_records)?;
        let audit = Arc::new(audit);
        let server = Server {
            endpoint,
            tunnels,
            state: Arc::new(State {
                recorder: crate::meta::PageRecorder::start(meta.clone())
                    .map_err(|e| ServeError::Meta(crate::meta::MetaError::Db(e.to_string())))?,
                meta,
                pipeline,
                in_flight: slots::PageSlots::default(),
                live: Default::default(),
                windows: crate::windows::Windows::new(
                    gate::PRE_AUTH_WINDOW,
                    crate::windows::RECEIVE_BUDGET,
                    crate::windows::GROWN_BUDGET,
                ),
                limits: limits::Limits::new(config.limits),
                retention: config.retention.clone(),
                clock,
                tls: TlsReloader {
                    certs,
                    source: identity_source,
                },
                drain: Default::default(),
                metrics: Default::default(),
                refusal_log: Default::default(),
                auth_failures: Default::default(),
                signing_keys: Default::default(),
                timestamps: crate::timestamps::Timestamper::new(config.timestamp_urls.clone())
                    .map_err(|e| ServeError::Bootstrap(format!("time-stamp client: {e}")))?,
                udp,
                data_dir: config.data_dir.clone(),
                backup: config.backup.clone(),
                audit,
            }),
            trust_anchor_pem: identity.trust_anchor_pem().to_string(),
        };
        // A full audit disk does not stop the server: pages still come in (each is not an
        // audited action), but commits and every other audited request are refused until
        // it has room again.
        let started = server.state.audit.record(
            "quire",
            "server",
            "server.start",
            "",
            &format!(
                "version={} config_sha256={}",
                env!("CARGO_PKG_VERSION"),
                config.config_sha256.as_deref().unwrap_or("none")
            ),
            "ok",
        );
        if let Err(e) = started {
            error!(error = %e, "cannot write the audit log: the start is not on the record, and audited requests are refused until it can be written");
        }
        if config.dev_bootstrap {
            crate::bootstrap::dev_credentials(
                server.state.meta.as_ref(),
                server.local_addr(),
                &server.trust_anchor_pem,
                dir,
                &config.dev_tenant,
            )?;
        }
        spawn_background(&server.state, &config);
        if let Some(addr) = config.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            info!(addr = %addr, "metrics, /healthz and /readyz over HTTP");
            tokio::spawn(crate::metrics::http::serve(listener, server.state.clone()));
        }
        info!(addr = %server.local_addr(), tcp = ?server.tcp_addr(), store = server.state.pipeline.store.name(), "quire listening");
        Ok(server)
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("bound endpoint has an address")
    }

    /// The TCP port's address (QUIC over TLS over TCP), if it is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tunnels.as_ref().map(|t| t.addr)
    }

    /// What clients must trust (PEM): `[tls] ca`, or the server's own certificate.
    pub fn trust_anchor_pem(&self) -> &str {
        &self.trust_anchor_pem
    }

    /// Reads the certificate and key again (renewed files) and gives them to every new
    /// handshake; connections already established keep theirs. On error (unreadable file, a
    /// key that does not match the certificate) the certificate in use stays.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.state.tls.reload()
    }

    /// Serves connections until [`Server::shutdown`] or the endpoint closes.
    ///
    /// Connections pass the gate of [`gate`] before they may authenticate: address
    /// validation, a per-source cap, slots sized by memory and a `Hello` deadline. Beyond the
    /// slots, new connections are refused (a cheap CONNECTION_REFUSED, no TLS work), so a
    /// flood of bad or idle handshakes costs a bounded share of the server, and scanners
    /// that are already connected keep theirs.
    pub async fn run(&self) {
        let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_AUTH));
        let sources = gate::SourceSlots::default();
        let tunnelled = async {
            if let Some(t) = &self.tunnels {
                self.accept(&t.endpoint, &pending, &sources).await
            }
        };
        tokio::join!(self.accept(&self.endpoint, &pending, &sources), tunnelled);
    }

    /// Accepts the connections of one endpoint (UDP, or the TCP port's tunnels).
    async fn accept(
        &self,
        endpoint: &quinn::Endpoint,
        pending: &Arc<tokio::sync::Semaphore>,
        sources: &gate::SourceSlots,
    ) {
        while let Some(incoming) = endpoint.accept().await {
            if self.state.drain.is_draining() {
                // CONNECTION_REFUSED: the scanner backs off and tries again (or elsewhere).
                incoming.refuse();
                continue;
            }
            let remote = incoming.remote_address();
            if !incoming.remote_address_validated() && incoming.may_retry() {
                // Stateless: the client proves its address by answering; we hold nothing.
                let _ = incoming.retry();
                continue;
            }
            let Some(source) = sources.take(remote.ip(), MAX_PENDING_PER_SOURCE) else {
                debug!(%remote, "this source has too many handshakes in progress; refused");
                incoming.refuse();
                continue;
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                debug!(%remote, "too many handshakes in progress; refused");
                incoming.refuse();
                continue;
            };
            let state = self.state.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + HELLO_DEADLINE;
                match tokio::time::timeout_at(deadline, incoming).await {
                    Ok(Ok(conn)) => {
                        handle_connection(state, conn, (permit, source), deadline).await
                    }
                    Ok(Err(e)) => debug!(error = %e, "handshake failed"),
                    Err(_) => debug!(%remote, "no handshake within the hello deadline"),
                }
            });
        }
    }

    /// Shuts down gracefully: new connections, jobs and pages are refused at once (scanners
    /// retry), requests already running finish, and the spool delivers what it holds, all
    /// within `timeout`; then the endpoint closes. Pages the spool could not deliver in time
    /// stay in it, sealed, and go out after the next start.
    pub async fn drain(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        self.state.drain.begin();
        info!(
            running = self.state.drain.running(),
            spooled = self.state.pipeline.spool.len(),
            "draining: new jobs and pages are refused; finishing what runs"
        );
        if tokio::time::timeout_at(deadline, self.state.drain.idle())
            .await
            .is_err()
        {
            warn!(
                running = self.state.drain.running(),
                "drain timeout: requests still running are cut off (unacknowledged pages are resent by their scanners)"
            );
        }
        while !self.state.pipeline.spool.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.state.pipeline.spool.len();
        if left > 0 {
            warn!(
                records = left,
                "drain timeout: spooled pages are delivered after the next start"
            );
        }
        self.shutdown().await;
        info!("drained");
    }

    /// Stops accepting, closes connections at once and waits until they are gone.
    pub async fn shutdown(&self) {
        let endpoints =
            std::iter::once(&self.endpoint).chain(self.tunnels.as_ref().map(|t| &t.endpoint));
        for e in endpoints.clone() {
            e.close(CLOSE_SHUTDOWN.into(), b"server shutting down");
        }
        for e in endpoints {
            e.wait_idle().await;
        }
        self.state.pipeline.spool.shutdown();
        if let Err(e) = self.state.auth_failures.flush(&self.state.audit) {
            error!(error = %e, "cannot write failed authentications to the audit log");
        }
        // Sign what this process recorded, so that its last records are not left unprotected.
        let signing = crate::audit::checkpoints::checkpoint_now(&self.state);
        match tokio::time::timeout(Duration::from_secs(5), signing).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot sign the last audit checkpoints at shutdown"),
            Err(_) => warn!("the last audit checkpoints were not stored within 5 s of shutdown"),
        }
    }
}

/// Authenticates a connection on its first stream, then serves its request streams.
async fn handle_connection(
    state: Arc<State>,
    conn: quinn::Connection,
    pending: (tokio::sync::OwnedSemaphorePermit, gate::SourceSlot),
    deadline: tokio::time::Instant,
) {
    let remote = conn.remote_address();
    state.metrics.authenticating(1);
    let began = std::time::Instant::now();
    let outcome =
        tokio::time::timeout_at(deadline, crate::hello::authenticate(&state, &conn)).await;
    state.metrics.authenticating(-1);
    if let Ok(Ok(Some(_))) = &outcome {
        state.metrics.stage("authenticate", began.elapsed());
    }
    let (outcome, close_code) = match outcome {
        Ok(outcome) => (outcome, CLOSE_AUTH_FAILED),
        Err(_) => (
            Err(format!(
                "no hello within {} s of connecting; connect again",
                HELLO_DEADLINE.as_secs()
            )),
            CLOSE_TOO_SLOW,
        ),
    };
    drop(pending);
    let principal = match outcome {
        Ok(Some(p)) => p,
        Ok(None) => {
            // An enrollment: the new credential is sent; this connection has no other use.
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.close(CLOSE_SHUTDOWN.into(), b"enrolled");
            return;
        }
        Err(reason) => {
            state.metrics.auth_failed();
            state.auth_failures.note(remote.ip(), &reason);
            warn!(%remote, %reason, "connection refused");
            // Give the client a moment to read the error frame before the close arrives.
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.close(close_code.into(), reason.as_bytes());
            return;
        }
    };
    debug!(%remote, device = %principal.device_id, tenant = %principal.tenant, "authenticated");
    let principal = Arc::new(principal);
    let open_jobs = Arc::new(requests::OpenJobs::default());
    let flow = state.register(&principal.device_id, &conn);
    state.metrics.connection(1);
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                debug!(%remote, error = %e, "connection ended");
                state.unregister(&principal.device_id, &conn);
                state.metrics.connection(-1);
                return;
            }
        };
        let (state, principal, open) = (state.clone(), principal.clone(), open_jobs.clone());
        let flow = flow.clone();
        tokio::spawn(async move {
            let reader = FrameReader::requests(recv).counting(flow.consumed.clone());
            requests::handle_stream(state, (principal, open, flow), send, reader).await;
        });
    }
}

/// The default store, and each tenant's own route and replicas.
struct Stores {
    store: quire_storage::Store,
    routes: std::collections::HashMap<String, quire_storage::Store>,
    replicas: std::collections::HashMap<String, Vec<quire_storage::Store>>,
}

/// Opens the stores (before the port is bound, so a store that cannot be opened stops the
/// start before any scanner can connect).
fn open_stores(config: &ServerConfig) -> Result<Stores, ServeError> {
    let store = config.store.open()?;
    if config.store == crate::config::StoreKind::Memory {
        warn!("[store] kind = \"memory\": objects live in this process only and are gone when it stops (for measurements, never for data)");
    }
    let mut routes = std::collections::HashMap::new();
    for (tenant, kind) in &config.routes {
        routes.insert(tenant.clone(), kind.open()?);
    }
    let mut replicas = std::collections::HashMap::new();
    for (tenant, kinds) in &config.replicas {
        let stores = kinds
            .iter()
            .map(|k| k.open())
            .collect::<Result<Vec<_>, _>>()?;
        replicas.insert(tenant.clone(), stores);
    }
    Ok(Stores {
        store,
        routes,
        replicas,
    })
}

/// Opens the spool and joins it, the stores and the vault into the pipeline.
fn open_pipeline(
    config: &ServerConfig,
    vault: quire_pipeline::vault::Keyring,
    Stores {
        store,
        routes,
        replicas,
    }: Stores,
) -> Result<Pipeline, ServeError> {
    let dir = &config.data_dir;
    let key_dir = config.key_dir();
    if !quire_pipeline::spool::keydir::is_ram_backed(&key_dir) {
        warn!(
            key_dir = %key_dir.display(),
            "spool keys are on persistent storage: delivered spool records are only as \
             erased as that storage lets deleted files be (see docs/SECURITY.md)"
        );
    } else if config.pipeline.ack == quire_pipeline::AckMode::Spooled {
        warn!(
            key_dir = %key_dir.display(),
            "ack = \"spooled\" with spool keys in RAM: acknowledged pages survive a crash \
             of quire, not a reboot before they reach the store (see README)"
        );
    }
    let spool = quire_pipeline::Spool::open(&dir.join("spool"), &key_dir, config.spool.clone())?;
    Ok(Pipeline::new(
        store,
        Arc::new(vault),
        Arc::new(spool),
        config.pipeline.clone(),
    )
    .with_routes(routes)
    .with_replicas(replicas))
}

/// Starts the server's periodic work: audit flushes and checkpoints, tenants' share
/// exchange, receive-window tuning, retention cut-offs, key watching, backups, the sweep.
fn spawn_background(state: &Arc<State>, config: &ServerConfig) {
    let flushed = state.clone();
    crate::audit::spawn_auth_failure_flush(move || flushed.auth_failures.flush(&flushed.audit));
    crate::audit::checkpoints::spawn(state.clone(), config.audit.checkpoint_interval);
    crate::limits::shares::spawn_exchange(state.clone());
    crate::windows::Windows::spawn_tuner(&state.windows);
    crate::cutoff::spawn(state);
    crate::keywatch::spawn(state);
    crate::backup::schedule(state);
    sweep::spawn(state.clone(), config.sweep_interval, config.uncommitted_ttl);
}
