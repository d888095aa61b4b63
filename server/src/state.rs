//! What the server holds between requests: its configuration and limits,
//! the registry and the known survey rounds, a pool of read connections, the writer, the bounded cache
//! of loaded documents, and the exchanges in progress.
//!
//! **Invariant: memory holds only durable document state between requests.**
//! A document is changed in memory while its slot is locked, and the lock is
//! kept until the writer committed those changes; when the commit fails the
//! slot is emptied, so the next request reloads the document from the store.
//!
//! **Invariant: no round plays on a document older than the store.** When
//! other servers write the same database (`Shared::shared_database`), a
//! loaded document remembers the newest change row it reflects, and every
//! time it is handed out under its lock ([`Shared::ensure_loaded`]) it first
//! takes the rows stored since ([`Store::changes_since`]); a row it does not
//! hold whose bytes were compacted away since makes it reload.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sync_core::access::{AuditEvent, DeviceRecord};
use sync_core::automerge::{ActorId, Change, ChangeHash, ReadDoc};
use sync_core::exchange::HubExchange;
use sync_core::ids::{DocumentId, DocumentKind, PeerId, Round};
use sync_core::registry::{PlaceKind, Registry};
use sync_core::store::{Store, StoreError, WriteBatch};
use sync_core::survey::SurveyDocument;
use sync_core::sync::InputLimits;

use crate::writer::Writer;

/// Limits the server enforces, each refused with a clear error.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted, after gzip decompression (bytes).
    pub max_body_bytes: usize,
    /// Most documents in one request, and in one exchange.
    pub max_documents: usize,
    /// Most rounds in one exchange.
    pub max_rounds: u32,
    /// Documents kept loaded at most; the least recently used idle ones are evicted.
    pub max_cached_documents: usize,
    /// A loaded document unused this long is evicted.
    pub document_idle: Duration,
    /// An exchange unused this long is forgotten (its sessions are persisted anyway).
    pub exchange_idle: Duration,
    /// A request body not fully received within this time is refused with
    /// 408, so a client dripping bytes cannot hold a connection and memory.
    pub body_read_timeout: Duration,
    /// What one device's sync messages may cost (see `sync_core::inbound`).
    pub input: InputLimits,
    /// Request headers not fully received within this time close the
    /// connection, so a client dripping headers (or holding an idle
    /// connection, or a TLS handshake) cannot keep a socket.
    pub header_read_timeout: Duration,
    /// Connections open at once, at most; more wait in the listen queue
    /// until one closes, so idle sockets cannot use up file descriptors.
    pub max_connections: usize,
    /// Enrollment attempts one client address may make per minute (a
    /// successful enrollment gives its attempt back); more get 429.
    pub enroll_per_minute_per_address: u32,
    /// Enrollment attempts from all addresses together per minute (a
    /// successful enrollment gives its attempt back); more get 429.
    pub enroll_per_minute: u32,
    /// Write jobs queued for the writer at most; when the queue is full,
    /// requests wait for the writer to take one (back-pressure) rather than
    /// queue without end.
    pub writer_queue: usize,
    /// Sync rounds played at once, at most; more wait their turn (holding
    /// no document), so memory follows this, not the devices connected.
    pub max_concurrent_rounds: usize,
    /// Sync requests admitted at once, at most: reading their body, waiting
    /// for a round or in one. More wait before their body is read, holding
    /// a connection but not their upload in memory; a device has one
    /// request admitted at a time, so stalling the others by dripping
    /// bodies takes this many devices' tokens (each stopped by the body
    /// read timeout).
    pub max_admitted_syncs: usize,
    /// Devices whose exchanges hold documents in memory at once, at most
    /// (see [`crate::leases`]); more wait before their body is read, so
    /// memory follows this, not the devices syncing at once.
    pub max_syncing_devices: usize,
    /// A device between rounds that sends nothing for this long loses its
    /// place among the syncing devices to one that waits.
    pub syncing_idle: Duration,
    /// `GET /v1/repo` sockets one device may have open at once; more get
    /// 429. (An upgraded socket no longer counts among the connections,
    /// so this is what bounds a stolen token's sockets.)
    pub max_sockets_per_device: usize,
    /// How often `GET /v1/repo` pings each socket.
    pub repo_ping: Duration,
    /// An `ephemeral` frame `GET /v1/repo` relays is at most this long; longer ones are dropped.
    pub max_ephemeral_bytes: usize,
    /// `ephemeral` frames one socket may have relayed a second (as many at once); more are dropped.
    pub ephemeral_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_documents: 64,
            max_rounds: sync_core::exchange::MAX_EXCHANGE_ROUNDS,
            max_cached_documents: 128,
            document_idle: Duration::from_secs(120),
            exchange_idle: Duration::from_secs(300),
            body_read_timeout: Duration::from_secs(30),
            input: InputLimits::default(),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            enroll_per_minute_per_address: 10,
            enroll_per_minute: 300,
            writer_queue: crate::writer::DEFAULT_QUEUE,
            max_concurrent_rounds: std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
            max_admitted_syncs: std::thread::available_parallelism().map_or(2, |n| n.get()) * 4,
            max_syncing_devices: std::thread::available_parallelism().map_or(2, |n| n.get()) * 4,
            syncing_idle: Duration::from_secs(2),
            max_sockets_per_device: 4,
            repo_ping: Duration::from_secs(20),
            max_ephemeral_bytes: 4096,
            ephemeral_per_second: 10,
        }
    }
}

/// Every field of [`Limits`] (and of its [`InputLimits`]) as a command-line
/// flag and an environment variable, each defaulting to [`Limits::default`];
/// `thonsync-server --help` lists them under *Limits*. Durations are whole
/// seconds. [`LimitArgs::limits`] builds a `Limits` naming every field, so a
/// new limit does not compile until it has its flag here.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest request body accepted, after gzip decompression (bytes); larger ones get 413 body_too_large.
    #[arg(long, env = "THONSYNC_MAX_BODY_BYTES", value_name = "BYTES", value_parser = positive::<usize>,
        default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most documents in one request, and in one exchange.
    #[arg(long, env = "THONSYNC_MAX_DOCUMENTS", value_name = "N", value_parser = positive::<usize>,
        default_value_t = Limits::default().max_documents)]
    pub max_documents: usize,
    /// Most rounds in one exchange.
    #[arg(long, env = "THONSYNC_MAX_ROUNDS", value_name = "N", value_parser = positive::<u32>,
        default_value_t = Limits::default().max_rounds)]
    pub max_rounds: u32,
    /// Documents kept loaded at most; the least recently used idle ones are evicted.
    #[arg(long, env = "THONSYNC_MAX_CACHED_DOCUMENTS", value_name = "N", value_parser = positive::<usize>,
        default_value_t = Limits::default().max_cached_documents)]
    pub max_cached_documents: usize,
    /// A loaded document unused this long is evicted (seconds).
    #[arg(long, env = "THONSYNC_DOCUMENT_IDLE_SECS", value_name = "SECONDS", value_parser = positive::<u64>,
        default_value_t = Limits::default().document_idle.as_secs())]
    pub document_idle_secs: u64,
    /// An exchange unused this long is forgotten (seconds); its waiting changes are kept as refused uploads.
    #[arg(long, env = "THONSYNC_EXCHANGE_IDLE_SECS", value_name = "SECONDS", value_parser = positive::<u64>,
        default_value_t = Limits::default().exchange_idle.as_secs())]
    pub exchange_idle_secs: u64,
    /// A request body not fully received within this time gets 408 (seconds).
    #[arg(long, env = "THONSYNC_BODY_READ_TIMEOUT_SECS", value_name = "SECONDS", value_parser = positive::<u64>,
        default_value_t = Limits::default().body_read_timeout.as_secs())]
    pub body_read_timeout_secs: u64,
    /// Request headers not fully received within this time close the connection (seconds).
    #[arg(long, env = "THONSYNC_HEADER_READ_TIMEOUT_SECS", value_name = "SECONDS", value_parser = positive::<u64>,
        default_value_t = Limits::default().header_read_timeout.as_secs())]
    pub header_read_timeout_secs: u64,
    /// Connections open at once, at most; more wait in the listen queue.
    #[arg(long, env = "THONSYNC_MAX_CONNECTIONS", value_name = "N", value_parser = positive::<usize>,
        default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Enrollment attempts one client address may make per minute; more get 429.
    #[arg(long, env = "THONSYNC_ENROLL_PER_MINUTE_PER_ADDRESS", value_name = "N", value_parser = positive::<u32>,
        default_value_t = Limits::default().enroll_per_minute_per_address)]
    pub enroll_per_minute_per_address: u32,
    /// Enrollment attempts from all addresses together per minute; more get 429.
    #[arg(long, env = "THONSYNC_ENROLL_PER_MINUTE", value_name = "N", value_parser = positive::<u32>,
        default_value_t = Limits::default().enroll_per_minute)]
    pub enroll_per_minute: u32,
    /// Write jobs queued for the writer at most; when full, requests wait.
    #[arg(long, env = "THONSYNC_WRITER_QUEUE", value_name = "N", value_parser = positive::<usize>,
        default_value_t = Limits::default().writer_queue)]
    pub writer_queue: usize,
    /// Sync rounds played at once, at most (default: twice the processors); more wait their turn.
    #[arg(long, env = "THONSYNC_MAX_CONCURRENT_ROUNDS", value_name = "N", value_parser = positive::<usize>,
        default_value_t = Limits::default().max_concurrent_rounds)]
    pub max_concurrent_rounds: usize,
    /// Sync requests admitted at once, at most (default: four times the
    /// processors); more wait before their body is read.
    #[arg(long, env = "THONSYNC_MAX_ADMITTED_SYNCS", value_name = "N", value_parser = positive::<usize>,
        default_value_t = Limits::default().max_admitted_syncs)]
    pub max_admitted_syncs: usize,
    /// Devices whose exchanges hold documents in memory at once (default:
    /// four times the processors); more wait before their body is read.
    #[arg(long, env = "THONSYNC_MAX_SYNCING_DEVICES", value_name = "N", value_parser = positive::<usize>,
        default_value_t = Limits::default().max_syncing_devices)]
    pub max_syncing_devices: usize,
    /// A syncing device that sends nothing for this long gives its place
    /// to a waiting one (milliseconds).
    #[arg(long, env = "THONSYNC_SYNCING_IDLE_MS", value_name = "MS", value_parser = positive::<u64>,
        default_value_t = Limits::default().syncing_idle.as_millis() as u64)]
    pub syncing_idle_ms: u64,
    /// `GET /v1/repo` sockets one device may have open at once; more get 429.
    #[arg(long, env = "THONSYNC_MAX_SOCKETS_PER_DEVICE", value_name = "N", value_parser = positive::<usize>,
        default_value_t = Limits::default().max_sockets_per_device)]
    pub max_sockets_per_device: usize,
    /// How often `GET /v1/repo` pings each socket (seconds).
    #[arg(long, env = "THONSYNC_REPO_PING_SECS", value_name = "SECS", value_parser = positive::<u64>,
        default_value_t = Limits::default().repo_ping.as_secs())]
    pub repo_ping_secs: u64,
    /// An `ephemeral` frame `GET /v1/repo` relays is at most this long (bytes).
    #[arg(long, env = "THONSYNC_MAX_EPHEMERAL_BYTES", value_name = "BYTES", value_parser = positive::<usize>,
        default_value_t = Limits::default().max_ephemeral_bytes)]
    pub max_ephemeral_bytes: usize,
    /// `ephemeral` frames one `GET /v1/repo` socket may have relayed a second.
    #[arg(long, env = "THONSYNC_EPHEMERAL_PER_SECOND", value_name = "N", value_parser = positive::<u32>,
        default_value_t = Limits::default().ephemeral_per_second)]
    pub ephemeral_per_second: u32,
    /// Change data of one sync message, once inflated, at most (bytes).
    #[arg(long, env = "THONSYNC_MAX_INFLATED_BYTES", value_name = "BYTES", value_parser = positive::<usize>,
        default_value_t = InputLimits::default().max_inflated_bytes)]
    pub max_inflated_bytes: usize,
    /// Changes of one device waiting for a dependency in one document, at most.
    #[arg(long, env = "THONSYNC_MAX_WAITING_PER_DOCUMENT", value_name = "N", value_parser = positive::<usize>,
        default_value_t = InputLimits::default().max_waiting_per_document)]
    pub max_waiting_per_document: usize,
    /// Changes of one device waiting for a dependency over all its documents, at most.
    #[arg(long, env = "THONSYNC_MAX_WAITING_PER_DEVICE", value_name = "N", value_parser = positive::<usize>,
        default_value_t = InputLimits::default().max_waiting_per_device)]
    pub max_waiting_per_device: usize,
    /// Distinct actor ids among the changes one message adds, at most.
    #[arg(long, env = "THONSYNC_MAX_NEW_ACTORS_PER_MESSAGE", value_name = "N", value_parser = positive::<usize>,
        default_value_t = InputLimits::default().max_new_actors_per_message)]
    pub max_new_actors_per_message: usize,
    /// One change, compressed or not and once inflated, at most (bytes).
    #[arg(long, env = "THONSYNC_MAX_CHANGE_BYTES", value_name = "BYTES", value_parser = positive::<usize>,
        default_value_t = InputLimits::default().max_change_bytes)]
    pub max_change_bytes: usize,
    /// A change's commit message, at most (bytes).
    #[arg(long, env = "THONSYNC_MAX_CHANGE_MESSAGE_BYTES", value_name = "BYTES", value_parser = positive::<usize>,
        default_value_t = InputLimits::default().max_change_message_bytes)]
    pub max_change_message_bytes: usize,
    /// A change's extra bytes (reserved by automerge for future fields), at most.
    #[arg(long, env = "THONSYNC_MAX_CHANGE_EXTRA_BYTES", value_name = "BYTES", value_parser = positive::<usize>,
        default_value_t = InputLimits::default().max_change_extra_bytes)]
    pub max_change_extra_bytes: usize,
}

impl LimitArgs {
    /// The limits these flags give.
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_documents: self.max_documents,
            max_rounds: self.max_rounds,
            max_cached_documents: self.max_cached_documents,
            document_idle: Duration::from_secs(self.document_idle_secs),
            exchange_idle: Duration::from_secs(self.exchange_idle_secs),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
            input: InputLimits {
                max_inflated_bytes: self.max_inflated_bytes,
                max_waiting_per_document: self.max_waiting_per_document,
                max_waiting_per_device: self.max_waiting_per_device,
                max_new_actors_per_message: self.max_new_actors_per_message,
                max_change_bytes: self.max_change_bytes,
                max_change_message_bytes: self.max_change_message_bytes,
                max_change_extra_bytes: self.max_change_extra_bytes,
            },
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            max_connections: self.max_connections,
            enroll_per_minute_per_address: self.enroll_per_minute_per_address,
            enroll_per_minute: self.enroll_per_minute,
            writer_queue: self.writer_queue,
            max_concurrent_rounds: self.max_concurrent_rounds,
            max_admitted_syncs: self.max_admitted_syncs,
            max_syncing_devices: self.max_syncing_devices,
            syncing_idle: Duration::from_millis(self.syncing_idle_ms),
            max_sockets_per_device: self.max_sockets_per_device,
            repo_ping: Duration::from_secs(self.repo_ping_secs),
            max_ephemeral_bytes: self.max_ephemeral_bytes,
            ephemeral_per_second: self.ephemeral_per_second,
        }
    }
}

/// Parses a limit: a whole number of at least 1 (no limit of 0 makes sense).
fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    let n: T = s.trim().parse().map_err(|_| format!("{s:?} is not a whole number"))?;
    if n < T::from(1) {
        return Err("a limit must be at least 1".into());
    }
    Ok(n)
}

/// Milliseconds since 1970, the stamp on stored rows.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Opens one more read handle on the database.
pub type OpenReader = Arc<dyn Fn() -> Result<Box<dyn Store>, StoreError> + Send + Sync>;

/// Read connections to the database: SQLite's WAL lets them read while the
/// writer writes; on PostgreSQL each handle shares one connection pool.
pub struct ReaderPool {
    /// Opens more handles when all are busy.
    open: OpenReader,
    /// Idle handles, reused to avoid reopening per request.
    idle: Mutex<Vec<Box<dyn Store>>>,
}

/// Most idle read connections kept open.
const MAX_IDLE_READERS: usize = 4;

impl ReaderPool {
    /// A pool of handles made by `open` (on a database the writer has migrated).
    pub fn new(open: OpenReader) -> Self {
        Self { open, idle: Mutex::new(Vec::new()) }
    }

    /// Runs `f` with a read connection.
    pub fn with<T>(&self, f: impl FnOnce(&dyn Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.idle.lock().expect("reader pool").pop();
        let conn = match conn {
            Some(c) => c,
            None => (self.open)()?,
        };
        let out = f(conn.as_ref());
        let mut idle = self.idle.lock().expect("reader pool");
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

/// Closing a store may block (PostgreSQL's client runs its own runtime to
/// say goodbye), which panics on an async thread: there, the handles are
/// closed on a thread of their own, waited for, so that the database is
/// closed when the pool is gone.
impl Drop for ReaderPool {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        let closed: OpenReader = Arc::new(|| Err(StoreError::Backend("the reader pool is closed".into())));
        let open = std::mem::replace(&mut self.open, closed);
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let closing =
            std::thread::Builder::new().name("thonsync-close".into()).spawn(move || drop((idle, open)));
        if let Ok(thread) = closing {
            let _ = thread.join();
        }
    }
}

/// One cached document: empty until loaded, emptied on eviction or failed commit.
pub struct DocSlot {
    /// The document, if loaded; the lock serialises every change to it.
    pub doc: Mutex<Option<SurveyDocument>>,
    /// When the slot was last handed out, for idle eviction.
    last_used: Mutex<Instant>,
}

impl DocSlot {
    /// Locks the document. A lock poisoned by a panic while the document was
    /// being changed is taken over with the document emptied, so it is
    /// reloaded from the store: memory holds only durable state.
    pub fn lock(&self) -> MutexGuard<'_, Option<SurveyDocument>> {
        match self.doc.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                *g = None;
                self.doc.clear_poison();
                g
            }
        }
    }
}

/// The bounded cache of loaded documents.
pub struct DocCache {
    /// Slots by document; a slot in use is shared by `Arc` and never evicted.
    slots: Mutex<HashMap<DocumentId, Arc<DocSlot>>>,
    /// Most slots kept.
    capacity: usize,
    /// The heads of documents evicted while loaded, so an exchange can tell
    /// a document is in step without loading it again (a few dozen bytes a
    /// document). A loaded, unlocked document is always what the store holds
    /// (a failed commit empties its slot), so these are the stored heads as
    /// long as this server is the store's only writer; a server sharing its
    /// database does not read them ([`Shared::current_heads`]).
    evicted_heads: Mutex<HashMap<DocumentId, Vec<ChangeHash>>>,
}

impl DocCache {
    /// An empty cache holding at most `capacity` documents when idle.
    pub fn new(capacity: usize) -> Self {
        Self { slots: Mutex::new(HashMap::new()), capacity, evicted_heads: Mutex::new(HashMap::new()) }
    }

    /// Removes an idle slot, remembering the heads of its document.
    fn remove_idle(&self, slots: &mut HashMap<DocumentId, Arc<DocSlot>>, id: &DocumentId) {
        let Some(slot) = slots.remove(id) else { return };
        let heads = slot.doc.try_lock().ok().and_then(|d| d.as_ref().map(SurveyDocument::heads));
        let mut evicted = self.evicted_heads.lock().unwrap_or_else(|p| p.into_inner());
        match heads {
            Some(heads) => evicted.insert(id.clone(), heads),
            None => evicted.remove(id),
        };
    }

    /// The heads a document had when it was evicted, if it is not in the cache now.
    pub fn evicted_heads(&self, id: &DocumentId) -> Option<Vec<ChangeHash>> {
        self.evicted_heads.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// The slot of a document, created empty if needed.
    pub fn slot(&self, id: &DocumentId) -> Arc<DocSlot> {
        let mut slots = self.slots.lock().expect("doc cache");
        let slot = slots
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(DocSlot { doc: Mutex::new(None), last_used: Mutex::new(Instant::now()) })
            })
            .clone();
        *slot.last_used.lock().expect("slot") = Instant::now();
        if slots.len() > self.capacity {
            let mut idle: Vec<(Instant, DocumentId)> = slots
                .iter()
                .filter(|(_, s)| Arc::strong_count(s) == 1)
                .map(|(k, s)| (*s.last_used.lock().expect("slot"), k.clone()))
                .collect();
            idle.sort();
            let excess = slots.len() - self.capacity;
            for (_, k) in idle.into_iter().take(excess) {
                self.remove_idle(&mut slots, &k);
            }
        }
        slot
    }

    /// The loaded document, if it is in the cache now (no loading).
    pub fn peek(&self, id: &DocumentId) -> Option<Arc<DocSlot>> {
        self.slots.lock().expect("doc cache").get(id).cloned()
    }

    /// Forgets a document's slot, in use or not (after a panic while it was held).
    pub fn evict(&self, id: &DocumentId) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.evicted_heads.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Drops documents not used for `idle`; returns how many.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let mut slots = self.slots.lock().expect("doc cache");
        let idle: Vec<DocumentId> = slots
            .iter()
            .filter(|(_, s)| Arc::strong_count(s) == 1 && s.last_used.lock().expect("slot").elapsed() >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        for id in &idle {
            self.remove_idle(&mut slots, id);
        }
        idle.len()
    }

    /// Documents in the cache now.
    pub fn len(&self) -> usize {
        self.slots.lock().expect("doc cache").len()
    }

    /// Whether no document is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One exchange in progress: its engine (sessions, rounds, the last answer
/// for a replay) and when it was last used.
#[derive(Default)]
pub struct ExchangeState {
    /// The engine, made at the exchange's first round.
    pub hub: Option<HubExchange>,
    /// The slots of its documents, held so the cache keeps them loaded for
    /// the life of the exchange (no reload between its rounds).
    pub slots: BTreeMap<DocumentId, Arc<DocSlot>>,
    /// When the exchange was last used, for expiry.
    pub last_used: Option<Instant>,
}

/// Change rows a document may have before its next load folds them into a snapshot.
pub const COMPACT_AFTER_ROWS: usize = 16;

/// Key of an exchange: the device and its exchange id.
pub type ExchangeKey = (PeerId, String);

/// Everything a request handler needs, shared by all of them.
pub struct Shared {
    /// Limits enforced on every request.
    pub limits: Limits,
    /// Read connections.
    pub readers: ReaderPool,
    /// The one writer.
    pub writer: Writer,
    /// Loaded documents.
    pub docs: DocCache,
    /// Exchanges in progress.
    pub exchanges: Mutex<HashMap<ExchangeKey, Arc<Mutex<ExchangeState>>>>,
    /// Places, replaced as a whole by the admin API.
    pub registry: RwLock<Registry>,
    /// The survey rounds documents may be created for (setting `rounds`),
    /// opened by the admin API; they only grow.
    pub rounds: RwLock<BTreeSet<Round>>,
    /// The actor of the server's own (administrator) changes, persisted as setting `admin_actor`.
    pub admin_actor: ActorId,
    /// When each device's `last_seen` (and app version) was last written,
    /// so it is written at most once a minute per device.
    pub seen: Mutex<HashMap<String, (i64, Option<String>)>>,
    /// Actor bindings known to be stored (actor → device), so a device's
    /// usual actor costs no write per message.
    pub actor_owners: Mutex<HashMap<String, String>>,
    /// Changes waiting for a dependency, per device, over all its exchanges.
    pub waiting: Mutex<HashMap<PeerId, usize>>,
    /// A turn per device: its sync requests are handled one at a time.
    pub turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Sync requests past authentication: `max_admitted_syncs` permits.
    pub admitted_syncs: Arc<tokio::sync::Semaphore>,
    /// The pool of sync rounds: `max_concurrent_rounds` permits.
    pub rounds_pool: Arc<tokio::sync::Semaphore>,
    /// The devices whose exchanges may hold documents now.
    pub leases: crate::leases::Leases,
    /// A document whose handling panics on purpose: how tests prove that a
    /// panic is contained. Never set by the server binary.
    pub fault_document: Option<String>,
    /// Enrollment attempts per client address and in total.
    pub enroll_throttle: Mutex<crate::throttle::Throttle<std::net::IpAddr>>,
    /// The counters `GET /metrics` exports.
    pub metrics: crate::metrics::Metrics,
    /// Whether other servers may write the same database (PostgreSQL): then
    /// a loaded document catches up with the store before every round.
    pub shared_database: bool,
    /// Per loaded document, the position of the newest change row it
    /// reflects ([`Store::changes_since`]); read and written only under the
    /// document's lock, reset when the document is loaded.
    pub positions: Mutex<HashMap<DocumentId, i64>>,
    /// `GET /v1/repo` sockets open, per device.
    pub sockets: Mutex<HashMap<String, usize>>,
}

impl Shared {
    /// Records that a device made a request: `last_seen` and the app version,
    /// written at most once a minute per device (or when the version changes).
    pub fn note_seen(&self, device: &DeviceRecord, version: Option<String>, now: i64) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let (last_at, last_version) = match seen.get(&device.id) {
                Some((at, v)) => (Some(*at), v.clone()),
                None => (device.last_seen, device.app_version.clone()),
            };
            let stale = last_at.map(|at| now - at >= crate::auth::SEEN_EVERY_MS).unwrap_or(true);
            let new_version = version.is_some() && version != last_version;
            if !stale && !new_version {
                return;
            }
            seen.insert(device.id.clone(), (now, version.clone().or(last_version)));
        }
        let id = device.id.clone();
        let written = self.writer.run(move |s| {
            if let Some(mut d) = s.device(&id)? {
                d.last_seen = Some(now);
                if version.is_some() {
                    d.app_version = version;
                }
                s.put_device(&d)?;
            }
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(device = %device.id, error = %e, "could not record last_seen");
        }
    }

    /// Appends audit events; a failure is logged, the request goes on.
    pub fn audit(&self, events: Vec<AuditEvent>) {
        if events.is_empty() {
            return;
        }
        let written = self.writer.run(move |s| {
            for e in &events {
                s.append_audit(e)?;
            }
            Ok(())
        });
        if let Err(e) = written {
            tracing::error!(error = %e, "could not write the audit log");
        }
    }

    /// [`Shared::audit`] of one event from async code.
    pub async fn audit_async(self: &Arc<Self>, event: AuditEvent) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.audit(vec![event])).await;
    }

    /// The device a stored binding gives `actor`, from the cache or the
    /// store. Only bound actors are cached (an unbound one stays unbound:
    /// bindings are written only for device actors, with their changes).
    pub fn actor_owner(&self, actor: &str) -> Result<Option<String>, StoreError> {
        if let Some(owner) = self.actor_owners.lock().unwrap_or_else(|p| p.into_inner()).get(actor) {
            return Ok(Some(owner.clone()));
        }
        let owner = self.readers.with(|s| s.actor_owner(actor))?;
        if let Some(owner) = &owner {
            self.actor_owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(actor.to_owned(), owner.clone());
        }
        Ok(owner)
    }

    /// Remembers bindings that a commit just stored.
    pub fn note_bindings(&self, bindings: &[(String, String)]) {
        let mut owners = self.actor_owners.lock().unwrap_or_else(|p| p.into_inner());
        for (actor, device) in bindings {
            owners.entry(actor.clone()).or_insert_with(|| device.clone());
        }
    }

    /// Waits for `device`'s turn: its sync requests run one at a time, so
    /// however many connections one token opens, it holds one worker.
    pub async fn device_turn(&self, device: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = self
            .turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(device.to_owned())
            .or_default()
            .clone();
        turn.lock_owned().await
    }

    /// Changes `device` has waiting for a dependency in all its exchanges.
    pub fn waiting_of(&self, device: &PeerId) -> usize {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).get(device).copied().unwrap_or(0)
    }

    /// Adjusts `device`'s waiting count by what one session now holds
    /// compared with before.
    pub fn note_waiting(&self, device: &PeerId, before: usize, after: usize) {
        if before == after {
            return;
        }
        let mut all = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let n = all.entry(device.clone()).or_default();
        *n = (*n + after).saturating_sub(before);
        if *n == 0 {
            all.remove(device);
        }
    }

    /// Forgets one exchange (after a panic in it) and ends it.
    pub fn forget_exchange(&self, key: &ExchangeKey) {
        let removed = self.exchanges.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        if let Some(exchange) = removed {
            let state = std::mem::take(&mut *exchange.lock().unwrap_or_else(|p| p.into_inner()));
            self.end_exchanges(vec![(key.clone(), state)]);
        }
    }

    /// Ends exchanges: the changes still waiting in their sessions are kept
    /// as refused uploads (`waiting_expired`), never dropped.
    pub fn end_exchanges(&self, ended: Vec<(ExchangeKey, ExchangeState)>) {
        let now = now_ms();
        let mut batch = WriteBatch::default();
        for ((device, _), state) in ended {
            if let Some(mut hub) = state.hub {
                self.note_waiting(&device, hub.waiting(), 0);
                batch.extend(hub.end(now));
            }
        }
        if batch.is_empty() {
            return;
        }
        let kept = batch.refused.len();
        match self.writer.commit(batch, now) {
            Ok(_) => {
                tracing::info!(kept, "changes that waited for a dependency were kept as refused uploads")
            }
            Err(e) => tracing::error!(kept, error = %e, "could not keep waiting changes of ended exchanges"),
        }
    }

    /// Whether a document may be created on this server: its place is in the
    /// registry with the matching kind, and its round is a known one.
    pub fn in_registry(&self, id: &DocumentId) -> bool {
        let want = match id.kind {
            DocumentKind::Village => PlaceKind::Village,
            DocumentKind::Commune => PlaceKind::Commune,
        };
        let place_known =
            self.registry.read().expect("registry").get(id.place.as_str()).map(|p| p.kind) == Some(want);
        place_known && self.rounds.read().unwrap_or_else(|p| p.into_inner()).contains(&id.round)
    }

    /// Folds a document's change rows into one snapshot, so the next load
    /// reads one `save()` instead of applying every change again (several
    /// times faster for a surveyed village). History is kept: a snapshot
    /// holds every change. A failure only costs speed, so it is logged.
    fn compact(&self, doc: &SurveyDocument) {
        let am = doc.automerge();
        if !am.get_missing_deps(&[]).is_empty() {
            return; // a snapshot would carry changes still waiting for a dependency
        }
        let snapshot = am.save();
        let covered: Vec<String> = am.get_changes_meta(&[]).iter().map(|m| m.hash.to_string()).collect();
        let id = doc.id().clone();
        if let Err(e) = self.writer.run(move |s| s.compact(&id, &snapshot, &covered)) {
            tracing::warn!(document = %doc.id(), error = %e, "could not write a snapshot");
        }
    }

    /// Loads the document into a locked slot if needed, and (on a shared
    /// database) brings a loaded one up to what the store holds. Returns
    /// whether it was created fresh (its genesis is not stored yet), or
    /// `None` when the document is neither stored nor in the registry.
    pub fn ensure_loaded(
        &self,
        id: &DocumentId,
        slot: &mut MutexGuard<'_, Option<SurveyDocument>>,
    ) -> Result<Option<bool>, StoreError> {
        if let Some(doc) = slot.as_mut() {
            if !self.shared_database || self.catch_up(id, doc)? {
                return Ok(Some(false));
            }
            **slot = None; // compacted since by another server: read it again
        }
        let stored = self.readers.with(|s| s.load_document(id))?;
        match stored {
            Some(stored) => {
                let mut doc = SurveyDocument::load(
                    id.clone(),
                    self.admin_actor.clone(),
                    stored.snapshot.as_deref(),
                    stored.changes.iter().map(Vec::as_slice),
                )
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if self.shared_database {
                    self.positions.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), 0);
                    if !self.catch_up(id, &mut doc)? {
                        return Err(StoreError::Backend(format!(
                            "{id} was compacted again while it was being loaded; try again"
                        )));
                    }
                }
                if stored.changes.len() >= COMPACT_AFTER_ROWS {
                    self.compact(&doc);
                }
                **slot = Some(doc);
                Ok(Some(false))
            }
            None if self.in_registry(id) => {
                if self.shared_database {
                    self.positions.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), 0);
                }
                **slot = Some(SurveyDocument::create(id.clone(), self.admin_actor.clone()));
                Ok(Some(true))
            }
            None => Ok(None),
        }
    }

    /// Applies to a loaded document (locked by the caller) the change rows
    /// stored since the newest one it reflects, by this server or another
    /// on the same database. Returns `false` when it cannot: a row it does
    /// not hold was folded into a snapshot since, or a row needs one not
    /// yet visible; the caller then drops the document and loads it again.
    fn catch_up(&self, id: &DocumentId, doc: &mut SurveyDocument) -> Result<bool, StoreError> {
        let after = self.positions.lock().unwrap_or_else(|p| p.into_inner()).get(id).copied().unwrap_or(0);
        let rows = self.readers.with(|s| s.changes_since(id, after))?;
        let Some(newest) = rows.last().map(|r| r.position) else { return Ok(true) };
        let mut missing = Vec::new();
        for row in rows {
            let hash: ChangeHash = row
                .hash
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("change hash {:?} of {id}", row.hash)))?;
            if doc.automerge().get_change_meta_by_hash(&hash).is_some() {
                continue;
            }
            let Some(bytes) = row.bytes else { return Ok(false) };
            missing
                .push(Change::try_from(&bytes[..]).map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))?);
        }
        if !missing.is_empty() {
            tracing::debug!(document = %id, changes = missing.len(), "caught up with changes stored by another server");
            doc.automerge_mut()
                .apply_changes(missing)
                .map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))?;
            if !doc.automerge().get_missing_deps(&[]).is_empty() {
                return Ok(false); // the caller drops the document and loads it whole
            }
        }
        self.positions.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), newest);
        Ok(true)
    }

    /// A document's heads if it is loaded and not being changed right now
    /// (caught up with the store first on a shared database), or, on a
    /// database this server alone writes, the heads it had when it was
    /// evicted; `None` when they are not at hand (the document is then
    /// played as usual).
    pub fn current_heads(&self, id: &DocumentId) -> Option<Vec<ChangeHash>> {
        let Some(slot) = self.docs.peek(id) else {
            return if self.shared_database { None } else { self.docs.evicted_heads(id) };
        };
        let mut guard = slot.doc.try_lock().ok()?;
        let doc = guard.as_mut()?;
        if self.shared_database && !matches!(self.catch_up(id, doc), Ok(true)) {
            *guard = None; // the next round loads it again
            return None;
        }
        guard.as_ref().map(SurveyDocument::heads)
    }

    /// The exchange for a key, created if new; forgets idle ones when there are many.
    pub fn exchange(&self, key: ExchangeKey) -> Arc<Mutex<ExchangeState>> {
        let mut all = self.exchanges.lock().expect("exchanges");
        let mut ended = Vec::new();
        if all.len() > 4096 {
            let idle = self.limits.exchange_idle / 10;
            ended = take_idle(&mut all, idle, false);
        }
        let exchange = all.entry(key).or_default().clone();
        drop(all);
        self.end_exchanges(ended);
        exchange
    }

    /// Lets go of the documents of exchanges unused for `idle` (a device
    /// between rounds answers within seconds; one that is done never says
    /// so), so the cache may evict them; the exchange itself lives on.
    pub fn unpin_idle(&self, idle: Duration) {
        let all = self.exchanges.lock().expect("exchanges");
        for e in all.values() {
            if let Ok(mut e) = e.try_lock() {
                if e.last_used.is_some_and(|t| t.elapsed() >= idle) {
                    e.slots.clear();
                }
            }
        }
    }

    /// Lets go of the documents of `devices`' exchanges (their leases ended).
    pub fn unpin_devices(&self, devices: &[String]) {
        let all = self.exchanges.lock().unwrap_or_else(|p| p.into_inner());
        for ((device, _), e) in all.iter() {
            if devices.iter().any(|d| d == device.as_str()) {
                if let Ok(mut e) = e.try_lock() {
                    e.slots.clear();
                }
            }
        }
    }

    /// Forgets exchanges unused for the idle limit; returns how many.
    pub fn expire_exchanges(&self) -> usize {
        let ended =
            take_idle(&mut self.exchanges.lock().expect("exchanges"), self.limits.exchange_idle, true);
        let n = ended.len();
        self.end_exchanges(ended);
        n
    }
}

/// Removes the exchanges unused for `idle` (one never used counts as idle
/// unless `keep_unused`) and hands back their state; one in use stays.
fn take_idle(
    all: &mut HashMap<ExchangeKey, Arc<Mutex<ExchangeState>>>,
    idle: Duration,
    keep_unused: bool,
) -> Vec<(ExchangeKey, ExchangeState)> {
    let expired: Vec<ExchangeKey> = all
        .iter()
        .filter(|(_, e)| match e.try_lock() {
            Ok(e) => e.last_used.map(|t| t.elapsed() >= idle).unwrap_or(!keep_unused),
            Err(_) => false,
        })
        .map(|(k, _)| k.clone())
        .collect();
    expired
        .into_iter()
        .filter_map(|k| {
            let e = all.remove(&k)?;
            let state = std::mem::take(&mut *e.lock().unwrap_or_else(|p| p.into_inner()));
            Some((k, state))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn no_flags_give_the_default_limits() {
        let parsed = Cli::try_parse_from(["thonsync-server"]).expect("no flags parse");
        assert_eq!(format!("{:?}", parsed.limits.limits()), format!("{:?}", Limits::default()));
    }

    #[test]
    fn a_flag_sets_its_limit_and_zero_is_refused() {
        let parsed =
            Cli::try_parse_from(["thonsync-server", "--max-body-bytes", "64", "--max-change-bytes", "512"])
                .expect("flags parse");
        let limits = parsed.limits.limits();
        assert_eq!((limits.max_body_bytes, limits.input.max_change_bytes), (64, 512));
        assert!(Cli::try_parse_from(["thonsync-server", "--writer-queue", "0"]).is_err());
    }
}
