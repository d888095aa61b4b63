//! Every row of a store, backend-neutral: what moves a province's database
//! from one backend to another ([`Store::export`](super::Store::export) on
//! the old one, [`Store::import`](super::Store::import) into the new, empty
//! one) and what proves the move lost nothing (the new store's export equals
//! the old one's).
//!
//! **Invariant: an export is ordered.** Changes come in the order they were
//! stored (receipt time, then insertion), every other table by its key, so
//! two stores holding the same rows export equal values whatever backend
//! holds them.

use std::collections::BTreeMap;

use super::RefusedUpload;
use crate::access::{AuditEvent, DeviceRecord};
use crate::registry::Place;

/// Every table a store holds, by its name in both backends.
pub const TABLES: [&str; 11] = [
    "changes",
    "snapshots",
    "sync_states",
    "refused_uploads",
    "places",
    "settings",
    "devices",
    "credentials",
    "actors",
    "admin_tokens",
    "audit_log",
];

/// One stored change row; `bytes` is `None` once compacted into a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRow {
    /// Document id.
    pub document: String,
    /// Hash, hex.
    pub hash: String,
    /// The change, until compaction.
    pub bytes: Option<Vec<u8>>,
    /// Actor, hex.
    pub actor: String,
    /// Author's sequence number.
    pub seq: i64,
    /// Author's timestamp.
    pub time: i64,
    /// When this replica stored it.
    pub stored_at: i64,
}

/// One device credential row (only its hash is ever stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRow {
    /// The device.
    pub device: String,
    /// Its kind as stored ([`super::columns::credential_kind`]).
    pub kind: String,
    /// The secret's hash.
    pub hash: String,
    /// Valid until, if it expires.
    pub expires_at: Option<i64>,
}

/// Every row of a store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Export {
    /// Changes, in the order they were stored.
    pub changes: Vec<ChangeRow>,
    /// Snapshots: (document, bytes, made_at), by document.
    pub snapshots: Vec<(String, Vec<u8>, i64)>,
    /// Sync sessions: (peer, document, state, updated_at), by peer and document.
    pub sync_states: Vec<(String, String, Vec<u8>, i64)>,
    /// Refused uploads with their ids, by id.
    pub refused: Vec<RefusedUpload>,
    /// The place registry, by id.
    pub places: Vec<Place>,
    /// Settings: (key, value), by key.
    pub settings: Vec<(String, String)>,
    /// Devices, by id.
    pub devices: Vec<DeviceRecord>,
    /// Credentials, by device and kind.
    pub credentials: Vec<CredentialRow>,
    /// Actor bindings: (actor, device, bound_at), by actor.
    pub actors: Vec<(String, String, i64)>,
    /// Administrator tokens: (hash, name, created_at), by hash.
    pub admin_tokens: Vec<(String, String, i64)>,
    /// The audit log with its ids, oldest first.
    pub audit: Vec<(i64, AuditEvent)>,
}

impl Export {
    /// Rows per table, by table name.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("changes", self.changes.len()),
            ("snapshots", self.snapshots.len()),
            ("sync_states", self.sync_states.len()),
            ("refused_uploads", self.refused.len()),
            ("places", self.places.len()),
            ("settings", self.settings.len()),
            ("devices", self.devices.len()),
            ("credentials", self.credentials.len()),
            ("actors", self.actors.len()),
            ("admin_tokens", self.admin_tokens.len()),
            ("audit_log", self.audit.len()),
        ])
    }

    /// Whether the store held nothing at all.
    pub fn is_empty(&self) -> bool {
        self.counts().values().all(|n| *n == 0)
    }
}
