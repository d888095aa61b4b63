//! Storage: the [`Store`] trait every backend implements, and the SQLite
//! backend that is the embedded default.
//!
//! **Invariant: the trait names no backend type.** The PostgreSQL backend
//! (crate `store-postgres`, kept out of this crate because its client brings
//! a runtime) implements it as is, and both backends pass [`conformance`].
//!
//! **Invariant: a committed [`WriteBatch`] is durable and atomic.** Callers
//! acknowledge a peer's changes only after `commit` returns, and a batch is
//! all or nothing; `commit_all` writes several batches in one transaction
//! (all of them or none) and reports each its own [`CommitSummary`].
//!
//! **Invariant: a unit of work is all or nothing, and isolated.**
//! [`Store::unit_of_work`] runs every read and write of a multi-step write
//! (enrolling a device, revoking it) in one transaction: an error or a panic
//! inside leaves nothing, and two units of work on one database (two
//! processes, or two handles) never interleave: one sees the other's
//! committed result.
//!
//! **Invariant: every change is stored once, keyed by (document, hash).**
//! A repeated upload inserts nothing; compaction keeps the key row (so a
//! change compacted into a snapshot is still known) and drops only its bytes.

pub mod columns;
pub mod conformance;
pub mod export;
pub mod sqlite;

use serde::{Deserialize, Serialize};

use crate::access::{AuditEvent, CredentialKind, DeviceRecord};
use crate::ids::{DocumentId, PeerId};
use crate::registry::Place;
use crate::sync::{ChangeRecord, RefusalCode};

pub use sqlite::SqliteStore;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend reported an error.
    #[error("storage: {0}")]
    Backend(String),
    /// The database was written by a newer version of Thôn Sync.
    #[error(
        "the database has schema version {found}, newer than this program's {supported}; upgrade Thôn Sync"
    )]
    TooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// Something stored cannot be read back.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// No such record.
    #[error("{0} not found")]
    NotFound(String),
    /// An import was given a store that already holds data.
    #[error("{0} is not empty: import only into a new database")]
    NotEmpty(String),
    /// A unit of work kept conflicting with concurrent writers and was given
    /// up after its retries; nothing of it was written.
    #[error("storage: a concurrent write kept conflicting; nothing was written, try again ({0})")]
    Conflict(String),
}

/// Input that was refused, kept for an administrator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRefusedUpload {
    /// Who sent it (device or peer id), when known.
    pub source: Option<String>,
    /// The document it was for, when known.
    pub document: Option<String>,
    /// Why it was refused.
    pub code: RefusalCode,
    /// For a person.
    pub reason: String,
    /// The bytes, exactly as received.
    pub bytes: Vec<u8>,
    /// When, ms since 1970.
    pub received_at: i64,
}

/// A refused upload as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedUpload {
    /// Its id in the store.
    pub id: i64,
    /// What was refused.
    #[serde(flatten)]
    pub upload: NewRefusedUpload,
}

/// Everything one step of work must store, committed atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// New changes (duplicates are ignored).
    pub changes: Vec<ChangeRecord>,
    /// Persisted sync sessions: (peer, document, state bytes).
    pub sync_states: Vec<(PeerId, DocumentId, Vec<u8>)>,
    /// Refused uploads to keep.
    pub refused: Vec<NewRefusedUpload>,
    /// Actor bindings (actor hex, device) of the changes in this batch; an
    /// actor already bound keeps its first device.
    pub actor_bindings: Vec<(String, String)>,
}

impl WriteBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.sync_states.is_empty()
            && self.refused.is_empty()
            && self.actor_bindings.is_empty()
    }
    /// Appends another batch.
    pub fn extend(&mut self, other: WriteBatch) {
        self.changes.extend(other.changes);
        self.sync_states.extend(other.sync_states);
        self.refused.extend(other.refused);
        self.actor_bindings.extend(other.actor_bindings);
    }
}

/// A document as stored: an optional compacted snapshot plus change rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredDocument {
    /// `Automerge::save()` output covering the compacted changes.
    pub snapshot: Option<Vec<u8>>,
    /// Changes not in the snapshot, in insertion order.
    pub changes: Vec<Vec<u8>>,
}

/// What one commit wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitSummary {
    /// Changes newly stored (duplicates not counted).
    pub new_changes: usize,
    /// Ids given to the refused uploads, first one (they are consecutive).
    pub first_refused_id: Option<i64>,
}

/// A peer seen by this replica, from its sync sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSummary {
    /// The peer.
    pub peer: String,
    /// Documents it has synced.
    pub documents: u64,
    /// Last time a session was persisted, ms since 1970.
    pub last_sync: i64,
}

/// Metadata about one stored change (no bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMeta {
    /// Document.
    pub document: String,
    /// Hash, hex.
    pub hash: String,
    /// Actor, hex.
    pub actor: String,
    /// Author's sequence number.
    pub seq: u64,
    /// Author's timestamp.
    pub time: i64,
    /// When this replica stored it.
    pub stored_at: i64,
}

/// The storage a replica needs: documents and their changes, per-peer sync
/// state, refused uploads, places, and small settings.
pub trait Store: Send {
    /// Runs `work` as one unit: every read and write it makes through the
    /// store it is given happens in one transaction, committed when `work`
    /// returns `Ok`, rolled back when it returns an error (which is
    /// returned) or panics (the panic goes on). Concurrent units of work on
    /// the same database are isolated: a backend either makes them wait for
    /// each other or runs `work` again (a bounded number of times, then
    /// [`StoreError::Conflict`]) when the database refused one, so `work`
    /// must keep no state across runs but what it sets afresh each time.
    /// A unit of work inside another one is part of it.
    fn unit_of_work(
        &mut self,
        work: &mut dyn FnMut(&mut dyn Store) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Writes several batches in one transaction, atomically and durably (all
    /// of them or none); `now` stamps the rows. Returns one summary per batch,
    /// in order, each counting only what that batch newly stored: a change
    /// already stored, or stored by an earlier batch of the same call, is not
    /// counted again, and each batch's refused uploads get their own ids.
    fn commit_all(&mut self, batches: &[&WriteBatch], now: i64) -> Result<Vec<CommitSummary>, StoreError>;
    /// Writes one batch atomically and durably; `now` stamps the rows.
    fn commit(&mut self, batch: &WriteBatch, now: i64) -> Result<CommitSummary, StoreError> {
        let mut summaries = self.commit_all(&[batch], now)?;
        match (summaries.pop(), summaries.is_empty()) {
            (Some(summary), true) => Ok(summary),
            _ => Err(StoreError::Backend("the store did not return one summary for one batch".into())),
        }
    }
    /// Rolls back a transaction a panic left open half-way through a write,
    /// so the store is usable again; returns whether there was one. A
    /// backend whose transactions roll back when unwound has nothing to do.
    fn recover(&mut self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// A document's stored form, or `None` if nothing is stored for it.
    fn load_document(&self, id: &DocumentId) -> Result<Option<StoredDocument>, StoreError>;
    /// Every document with at least one stored change.
    fn document_ids(&self) -> Result<Vec<DocumentId>, StoreError>;
    /// Whether a change is stored (also when compacted).
    fn has_change(&self, id: &DocumentId, hash: &str) -> Result<bool, StoreError>;
    /// Metadata of every change of a document (or all documents), oldest stored first.
    fn change_meta(&self, id: Option<&DocumentId>) -> Result<Vec<ChangeMeta>, StoreError>;
    /// Replaces the document's snapshot and drops the bytes of the changes it covers.
    fn compact(&mut self, id: &DocumentId, snapshot: &[u8], covered: &[String]) -> Result<(), StoreError>;
    /// The persisted sync session of a peer for a document.
    fn sync_state(&self, peer: &PeerId, id: &DocumentId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Peers with persisted sessions.
    fn peers(&self) -> Result<Vec<PeerSummary>, StoreError>;
    /// Refused uploads, newest first.
    fn refused(&self) -> Result<Vec<RefusedUpload>, StoreError>;
    /// One refused upload.
    fn refused_by_id(&self, id: i64) -> Result<Option<RefusedUpload>, StoreError>;
    /// Replaces the place registry.
    fn put_places(&mut self, places: &[Place]) -> Result<(), StoreError>;
    /// The place registry (empty if never loaded).
    fn places(&self) -> Result<Vec<Place>, StoreError>;
    /// Sets a small setting.
    fn put_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Reads a small setting.
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Bytes used by the store, if known.
    fn size_bytes(&self) -> Result<Option<u64>, StoreError>;

    /// Adds or updates a device record.
    fn put_device(&mut self, device: &DeviceRecord) -> Result<(), StoreError>;
    /// One device.
    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// Every device, by id.
    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;
    /// Sets a device's credential of one kind (replacing the previous one),
    /// stored as `hash`, valid until `expires_at` if given.
    fn set_credential(
        &mut self,
        device: &str,
        kind: CredentialKind,
        hash: &str,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError>;
    /// Removes a device's credential of one kind.
    fn remove_credential(&mut self, device: &str, kind: CredentialKind) -> Result<(), StoreError>;
    /// The device holding a credential with this hash, if it has not expired at `now`.
    fn device_for_credential(
        &self,
        kind: CredentialKind,
        hash: &str,
        now: i64,
    ) -> Result<Option<DeviceRecord>, StoreError>;
    /// Binds an actor id to the device that first used it. Returns the other
    /// device if the actor is already bound elsewhere (and binds nothing).
    fn bind_actor(&mut self, actor: &str, device: &str, now: i64) -> Result<Option<String>, StoreError>;
    /// The device an actor is bound to, if any.
    fn actor_owner(&self, actor: &str) -> Result<Option<String>, StoreError>;
    /// Every (actor, device) binding.
    fn actor_devices(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Appends to the audit log.
    fn append_audit(&mut self, event: &AuditEvent) -> Result<(), StoreError>;
    /// The newest `limit` audit events, newest first.
    fn audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    /// Every row, ordered as [`export`] says.
    fn export(&self) -> Result<export::Export, StoreError>;
    /// Writes every row of an export into this store, which must hold
    /// nothing ([`StoreError::NotEmpty`] otherwise), in one transaction,
    /// keeping ids and receipt times; ids given later follow the imported ones.
    fn import(&mut self, rows: &export::Export) -> Result<(), StoreError>;
    /// Stores an administrator token's hash under a name.
    fn put_admin_token(&mut self, name: &str, hash: &str, now: i64) -> Result<(), StoreError>;
    /// The administrator a token hash belongs to.
    fn admin_for_token(&self, hash: &str) -> Result<Option<String>, StoreError>;
    /// A document's change rows stored after position `after`, in position
    /// order: how a replica sharing the database with other writers catches
    /// up with what they stored since it loaded the document. Positions are
    /// the backend's insertion order (0 is before every row), and a backend
    /// shared by several writers hands them out in commit order, so a row
    /// never appears below a position a reader has already seen; a row whose
    /// bytes were folded into the snapshot comes with `bytes: None`.
    fn changes_since(&self, id: &DocumentId, after: i64) -> Result<Vec<ChangeAt>, StoreError>;
}

/// One change row of a document, as [`Store::changes_since`] hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeAt {
    /// The row's position in the backend's insertion order (above 0).
    pub position: i64,
    /// The change's hash, hex.
    pub hash: String,
    /// The change's bytes, or `None` when compacted into the snapshot.
    pub bytes: Option<Vec<u8>>,
}

/// Loads a survey document from a store, writing as `actor`; `None` if
/// nothing is stored for it.
pub fn load_survey(
    store: &dyn Store,
    id: &DocumentId,
    actor: automerge::ActorId,
) -> Result<Option<crate::survey::SurveyDocument>, StoreError> {
    let Some(stored) = store.load_document(id)? else { return Ok(None) };
    crate::survey::SurveyDocument::load(
        id.clone(),
        actor,
        stored.snapshot.as_deref(),
        stored.changes.iter().map(Vec::as_slice),
    )
    .map(Some)
    .map_err(|e| StoreError::Corrupt(e.to_string()))
}
