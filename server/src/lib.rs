//! The Thôn Sync server: the HTTP API field devices sync with, and the
//! administrator's API. Only this crate knows HTTP.
//!
//! # Layout
//! - [`state`]: limits, the document cache, exchanges, read connections.
//! - [`database`]: the SQLite file or PostgreSQL database `--db` names.
//! - [`writer`]: the single writer with group commit.
//! - [`sync_api`]: `POST /v1/sync`, one round of a device's exchange.
//! - [`repo`]: `GET /v1/repo`, automerge-repo's WebSocket protocol over the same rounds.
//! - [`registry_api`]: which documents a commune holds.
//! - [`rounds`]: the survey rounds documents may be created for.
//! - [`admin`]: the administrator API under `/v1/admin/`.
//! - [`auth`]: device and administrator tokens, enrollment, device management.
//! - [`devices_api`]: the administrator's device endpoints and the audit log.
//! - [`wire`]: the JSON bodies, [`error`]: the one error shape.
//! - [`transport`]: the accept loop (TLS, header deadline, connection cap),
//!   [`throttle`]: the enrollment throttle.
//! - [`metrics`]: `GET /metrics` (Prometheus text), on its own address.
//!
//! Start a server with [`serve`] (the binary) or [`start`] (a server on its
//! own thread and runtime, for tests and the benchmark), or mount [`app`]
//! on any listener (without the transport's limits, and with every client
//! in one enrollment bucket unless the listener hands in `ConnectInfo`).

pub mod admin;
pub mod auth;
pub mod database;
pub mod devices_api;
pub mod error;
pub mod leases;
pub mod metrics;
pub mod registry_api;
pub mod repo;
pub mod rounds;
pub mod state;
pub mod sync_api;
pub mod throttle;
pub mod transport;
pub mod wire;
pub mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sync_core::automerge::ActorId;
use sync_core::registry::Registry;
use sync_core::store::StoreError;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;

pub use crate::database::Database;
use crate::error::ErrorCode;
use crate::state::{DocCache, Limits, Shared};
pub use crate::transport::{TlsConfig, TlsError};
use crate::writer::{Writer, WriterThread};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or read.
    #[error("database {db}: {source}")]
    Store {
        /// The database.
        db: Database,
        /// What went wrong.
        source: StoreError,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The runtime or a thread could not be started.
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
}

/// How to run a server.
#[derive(Clone, Debug)]
pub struct Config {
    /// The database: a SQLite file (created if missing) or a PostgreSQL database.
    pub db: Database,
    /// The address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Limits enforced on connections, requests and memory.
    pub limits: Limits,
    /// Serve HTTPS with this certificate and key; `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Serve `GET /metrics` (plain HTTP, no token) on this address, apart
    /// from the device API; `None` serves no metrics. Port 0 picks a free port.
    pub metrics_listen: Option<SocketAddr>,
    /// A document id whose handling panics on purpose, so tests can prove a
    /// panic is contained; `None` (always, in the binary) disables it.
    #[doc(hidden)]
    pub fault_document: Option<String>,
}

impl Config {
    /// Defaults for a database (a file path, or a `postgres://` URL) and address.
    pub fn new(db: impl Into<Database>, listen: SocketAddr) -> Self {
        Self {
            db: db.into(),
            listen,
            limits: Limits::default(),
            tls: None,
            metrics_listen: None,
            fault_document: None,
        }
    }
}

/// The state every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Everything behind one `Arc`, cheap to clone into handlers and blocking tasks.
    pub shared: Arc<Shared>,
    /// The storage id `GET /v1/repo` announces in its `peer` frame, stored
    /// as setting [`STORAGE_ID_SETTING`]: one per database, so every server
    /// on it announces the same, before and after restarts.
    pub storage_id: Arc<str>,
    /// Which `/v1/repo` sockets have which document open, for `ephemeral` frames.
    pub relay: Arc<repo::relay::Relay>,
}

/// The setting that holds the database's automerge-repo storage id.
pub const STORAGE_ID_SETTING: &str = "repo_storage_id";

/// The database's automerge-repo storage id: the stored one, else a new
/// random (version 4) UUID, as automerge-repo makes its own, stored and
/// read back. (Two servers making it at the same moment on an empty shared
/// database may each keep their own until the next start; clients then
/// keep a sync state under each, which costs a fuller first sync, nothing
/// worse.)
fn storage_id(store: &mut dyn sync_core::store::Store) -> Result<String, StoreError> {
    if let Some(id) = store.setting(STORAGE_ID_SETTING)? {
        return Ok(id);
    }
    let mut b: [u8; 16] = rand::random();
    (b[6], b[8]) = ((b[6] & 0x0f) | 0x40, (b[8] & 0x3f) | 0x80); // RFC 4122 version 4
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let id = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
    store.put_setting(STORAGE_ID_SETTING, &id)?;
    Ok(store.setting(STORAGE_ID_SETTING)?.unwrap_or(id))
}

/// Opens the store, loads the registry (the bundled Bắc Kạn sample into an
/// empty store), the known survey rounds and the administrator actor, and
/// starts the writer.
pub fn open_state(config: &Config) -> Result<(AppState, WriterThread), StartError> {
    let store_err = |source| StartError::Store { db: config.db.clone(), source };
    let mut store = config.db.open_writer().map_err(store_err)?;
    let mut places = store.places().map_err(store_err)?;
    if places.is_empty() {
        let sample = Registry::sample_bac_kan();
        places = sample.places().cloned().collect();
        store.put_places(&places).map_err(store_err)?;
        tracing::info!(places = places.len(), "empty registry: loaded the Bắc Kạn sample");
    }
    let registry =
        Registry::new(places).map_err(|e| store_err(StoreError::Corrupt(format!("stored registry: {e}"))))?;
    let rounds = rounds::known_rounds(store.as_ref()).map_err(store_err)?;
    let admin_actor = match store.setting("admin_actor").map_err(store_err)? {
        Some(hex) => ActorId::try_from(hex.as_str())
            .map_err(|e| store_err(StoreError::Corrupt(format!("admin_actor {hex:?}: {e}"))))?,
        None => {
            let actor = ActorId::from(rand::random::<[u8; 16]>());
            store.put_setting("admin_actor", &actor.to_hex_string()).map_err(store_err)?;
            actor
        }
    };
    let storage_id = storage_id(store.as_mut()).map_err(store_err)?;
    // The administrator's actor belongs to no device: a device uploading
    // changes under it is refused like any actor of another device.
    store.bind_actor(&admin_actor.to_hex_string(), ADMIN_ACTOR_OWNER, state::now_ms()).map_err(store_err)?;
    let readers = config.db.readers().map_err(store_err)?;
    let (writer, thread) = Writer::start(store, config.limits.writer_queue);
    let shared = Shared {
        readers,
        writer,
        docs: DocCache::new(config.limits.max_cached_documents),
        exchanges: Mutex::new(Default::default()),
        registry: RwLock::new(registry),
        rounds: RwLock::new(rounds),
        admin_actor,
        limits: config.limits.clone(),
        seen: Mutex::new(Default::default()),
        actor_owners: Mutex::new(Default::default()),
        waiting: Mutex::new(Default::default()),
        turns: Mutex::new(Default::default()),
        admitted_syncs: Arc::new(tokio::sync::Semaphore::new(config.limits.max_admitted_syncs.max(1))),
        rounds_pool: Arc::new(tokio::sync::Semaphore::new(config.limits.max_concurrent_rounds.max(1))),
        leases: leases::Leases::new(config.limits.max_syncing_devices, config.limits.syncing_idle),
        fault_document: config.fault_document.clone(),
        enroll_throttle: Mutex::new(throttle::Throttle::new(
            config.limits.enroll_per_minute_per_address,
            config.limits.enroll_per_minute,
        )),
        metrics: metrics::Metrics::new(),
        shared_database: matches!(config.db, Database::Postgres(_)),
        positions: Mutex::new(Default::default()),
        sockets: Mutex::new(Default::default()),
    };
    Ok((
        AppState { shared: Arc::new(shared), storage_id: storage_id.into(), relay: Default::default() },
        thread,
    ))
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The owner the administrator's actor is bound to (not a device id: those start with `dev-`).
pub const ADMIN_ACTOR_OWNER: &str = "admin";

/// Reads the whole request body before the handler runs, within the size
/// limit (after gzip) and the read deadline: 413 or 408 in the error shape.
async fn read_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limits = &state.shared.limits;
    let sync = req.uri().path() == "/v1/sync";
    let count = |code: ErrorCode| {
        if sync {
            state.shared.metrics.refused(&code);
        }
    };
    let too_large = || {
        count(ErrorCode::BodyTooLarge);
        error::ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "the request body is over {} bytes; split the documents across rounds or requests",
                limits.max_body_bytes
            ),
        )
        .into_response()
    };
    // A body announced as too large is refused before any of it is read, so
    // the client gets the answer instead of a connection closed mid-upload.
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > limits.max_body_bytes) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let read =
        tokio::time::timeout(limits.body_read_timeout, axum::body::to_bytes(body, limits.max_body_bytes));
    match read.await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(e)) => {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if over_limit {
                too_large()
            } else {
                error::ApiError::new(ErrorCode::BadBody, format!("the request body could not be read: {e}"))
                    .into_response()
            }
        }
        Err(_) => {
            count(ErrorCode::RequestTimeout);
            error::ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s; send it again",
                    limits.body_read_timeout.as_secs_f64()
                ),
            )
            .into_response()
        }
    }
}

/// Gives every error response the one error shape: rejections of axum's
/// extractors (a path or query that does not parse, a wrong method) come as
/// plain text, and become `{"error": {...}}` here with their text as message.
async fn error_shape(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).chars().take(300).collect::<String>();
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    let message = if message.trim().is_empty() { status.to_string() } else { message };
    // The status was already decided; only the body takes the error shape.
    error::ApiError::new(code, message).with_status(status).into_response()
}

/// A panic outside the blocking workers: 500 in the error shape; the server goes on.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    tracing::error!(panic = %what, "a request handler panicked");
    error::ApiError::internal("the server failed on this request; nothing of it was kept").into_response()
}

/// The router: device API (device token), enrollment, admin API
/// (administrator token); bodies read within limits; gzip both ways.
pub fn app(state: AppState) -> Router {
    let limit = state.shared.limits.max_body_bytes;
    // A sync request is admitted (its device's turn, a place among the
    // admitted) before its body is read, so waiting devices hold no upload.
    let sync = Router::new()
        .route("/v1/sync", post(sync_api::sync))
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), sync_api::admit))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_device));
    let device = Router::new()
        .route("/v1/registry/communes", get(registry_api::communes))
        .route("/v1/registry/communes/{commune}", get(registry_api::commune_documents))
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_device));
    let admin = Router::new()
        .route("/v1/admin/devices", get(devices_api::list).post(devices_api::add))
        .route("/v1/admin/devices/{id}/revoke", post(devices_api::revoke))
        .route("/v1/admin/devices/{id}/rotate", post(devices_api::rotate))
        .route("/v1/admin/audit", get(devices_api::audit))
        .route("/v1/admin/actors", get(devices_api::actors))
        .route("/v1/admin/registry", get(admin::get_registry).put(admin::put_registry))
        .route("/v1/admin/rounds", get(rounds::list).post(rounds::open))
        .route("/v1/admin/documents", get(admin::list_documents))
        .route("/v1/admin/documents/{id}", get(admin::get_document))
        .route("/v1/admin/documents/{id}/edits", post(admin::post_edits))
        .route("/v1/admin/changes", get(admin::list_changes))
        .route("/v1/admin/peers", get(admin::list_peers))
        .route("/v1/admin/refused", get(admin::list_refused))
        .route("/v1/admin/refused/{id}", get(admin::get_refused))
        .route("/v1/admin/store", get(admin::store_figures))
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin));
    let open = Router::new()
        .route("/v1/enroll", post(auth::enroll_endpoint))
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::throttle_enroll))
        .route("/v1/health", get(health))
        // automerge-repo's WebSocket protocol; it authenticates at the upgrade itself
        // (a header, or `?token=` for browsers).
        .route("/v1/repo", get(repo::connect));
    open.merge(sync)
        .merge(device)
        .merge(admin)
        .fallback(|| async {
            error::ApiError::new(ErrorCode::NotFound, "no such endpoint; see docs/protocol.md")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::map_response(error_shape))
        .layer(CompressionLayer::new())
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// Evicts idle documents and forgets idle exchanges until the state is dropped.
fn spawn_sweeper(state: &AppState) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(&state.shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { break };
            shared.unpin_idle(Duration::from_secs(10));
            let idle = shared.leases.expire_idle();
            shared.unpin_devices(&idle);
            let docs = shared.docs.evict_idle(shared.limits.document_idle);
            shared.enroll_throttle.lock().expect("throttle").forget_full(std::time::Instant::now());
            // Ending an exchange may write its waiting changes: not on an async thread.
            let exchanges = tokio::task::spawn_blocking(move || shared.expire_exchanges()).await.unwrap_or(0);
            if docs + exchanges > 0 {
                tracing::debug!(docs, exchanges, "evicted idle state");
            }
        }
    })
}

/// Binds, logs `listening on http://ADDR` (or `https://`), and serves until `shutdown`
/// resolves; in-flight requests finish and the writer drains before it returns.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listener = bind(config.listen).await?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    serve_on(config, listener, metrics, shutdown).await
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

/// Serves `GET /metrics` on its own listener, plain HTTP, until aborted.
fn spawn_metrics(state: &AppState, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    let router = metrics::router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    })
}

async fn serve_on(
    config: Config,
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let addr = listener.local_addr().map_err(StartError::Runtime)?;
    // Opening reads and writes the store, which may block (PostgreSQL's
    // client must not run on the async threads).
    let opening = config.clone();
    let (state, writer) = tokio::task::spawn_blocking(move || open_state(&opening))
        .await
        .map_err(|e| StartError::Runtime(std::io::Error::other(e)))??;
    let sweeper = spawn_sweeper(&state);
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tracing::info!(db = %config.db, "listening on {scheme}://{addr}");
    let metrics = match metrics_listener {
        Some(l) => {
            let at = l.local_addr().map_err(StartError::Runtime)?;
            tracing::info!("metrics on http://{at}/metrics");
            Some(spawn_metrics(&state, l))
        }
        None => None,
    };
    transport::serve(listener, app(state.clone()), config.tls.clone(), &config.limits, shutdown).await;
    sweeper.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    drop(state);
    // Every request is answered; wait for the writer to finish and close the database.
    writer.join();
    tracing::info!("stopped");
    Ok(())
}

/// A server running on its own thread and runtime.
pub struct ServerHandle {
    /// The address actually bound.
    pub addr: SocketAddr,
    /// The metrics address actually bound, with `Config::metrics_listen`.
    pub metrics_addr: Option<SocketAddr>,
    /// Whether it serves HTTPS.
    tls: bool,
    /// Fires the graceful shutdown.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The thread running the runtime; joined by [`ServerHandle::stop`].
    thread: Option<std::thread::JoinHandle<Result<(), StartError>>>,
}

impl ServerHandle {
    /// `http://ADDR`, or `https://ADDR` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Shuts down gracefully and waits until the database is closed.
    pub fn stop(mut self) -> Result<(), StartError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StartError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(StartError::Runtime(std::io::Error::other("server thread panicked")))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The server's runtime. Its blocking threads, where every sync round is
/// played, are bounded by the pool of rounds (plus a few for the audit log
/// and the sweeper): many devices, or a hostile one with many connections,
/// cannot make the server start a thread (and a malloc arena) each.
pub fn runtime(limits: &Limits, worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    cap_malloc_arenas();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    builder
        .max_blocking_threads(limits.max_concurrent_rounds.max(1) + 4)
        .enable_all()
        .thread_name("thonsync-server")
        .build()
}

/// Caps glibc's malloc at one arena per processor, before the runtime
/// starts its threads, unless `MALLOC_ARENA_MAX` is set. By default glibc
/// gives each of up to eight times the processors' threads an arena of its
/// own that keeps what it freed: with a round's documents built on one
/// blocking thread and dropped on another, the server's resident memory
/// was about twice its live heap (119 MiB for 50 devices syncing 1,050
/// documents; 50 MiB capped).
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let processors = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX
        // bounds the arenas made from now on and never frees memory in use.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, i32::try_from(processors).unwrap_or(i32::MAX));
        }
    }
}

/// Starts a server on its own thread; returns once it listens (port 0 picks a free port).
pub fn start(config: Config) -> Result<ServerHandle, StartError> {
    let runtime = runtime(&config.limits, Some(2)).map_err(StartError::Runtime)?;
    let listener = runtime.block_on(bind(config.listen))?;
    let addr = listener.local_addr().map_err(StartError::Runtime)?;
    let metrics = match config.metrics_listen {
        Some(at) => Some(runtime.block_on(bind(at))?),
        None => None,
    };
    let metrics_addr = match &metrics {
        Some(l) => Some(l.local_addr().map_err(StartError::Runtime)?),
        None => None,
    };
    // Open the store here so that a bad database fails `start`, not the thread.
    drop(config.db.open_writer().map_err(|source| StartError::Store { db: config.db.clone(), source })?);
    let tls = config.tls.is_some();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("thonsync-server".into())
        .spawn(move || {
            runtime.block_on(serve_on(config, listener, metrics, async move {
                let _ = rx.await;
            }))
        })
        .map_err(StartError::Runtime)?;
    Ok(ServerHandle { addr, metrics_addr, tls, stop: Some(tx), thread: Some(thread) })
}
